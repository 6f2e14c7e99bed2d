package hostharness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/redis-migrate/redis-migrate/shared/blobevent"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// BlobEventSubscription models an Event Grid subscription on a storage account (system topic
// Microsoft.Storage.StorageAccounts) that delivers Microsoft.Storage.BlobCreated events for one
// container into a Service Bus queue, as infra/main.bicep creates it. The harness has no Event
// Grid: it lists the container and raises one event per new blob version.
type BlobEventSubscription struct {
	Connection string // app setting of the storage account (e.g. AzureWebJobsStorage)
	Container  string // subject filter /blobServices/default/containers/<Container>/
	Queue      string // the Service Bus queue the events go to
	Schema     string // blobevent.SchemaEventGrid (default) or blobevent.SchemaCloudEvents
}

// receiptsContainer is where the harness remembers the blob versions it raised events for, so a
// restarted `serve --local` does not raise them again (Event Grid delivers each write once).
const receiptsContainer = "azure-webjobs-hosts"

type seenBlob struct {
	etag, md5 string
	size      int64
}

type eventState struct {
	mu   sync.Mutex
	last map[string]seenBlob // container/name -> the version an event was raised for
}

// startBlobEvents polls a subscription's container and sends a BlobCreated event to its queue
// for each blob version written since (PutBlob, PutBlockList, CopyBlob). Event Grid raises
// nothing for a metadata or property change; the listing cannot tell such a change from a
// rewrite for sure, so a new ETag with the same length and the same (non-empty) Content-MD5 as
// the last event's is taken as a metadata change and raises nothing.
func (h *Harness) startBlobEvents(ctx context.Context, sub BlobEventSubscription) error {
	if sub.Connection == "" {
		sub.Connection = "AzureWebJobsStorage"
	}
	conn := state.ConnectionString(h.settings[sub.Connection])
	if conn == "" {
		return fmt.Errorf("event subscription on %s: storage connection setting %s is not set", sub.Container, sub.Connection)
	}
	state.RegisterSecrets(conn)
	c, err := container.NewClientFromConnectionString(conn, sub.Container, nil)
	if err != nil {
		return fmt.Errorf("event subscription on %s: storage connection %s: %s", sub.Container, sub.Connection, describeErr(err))
	}
	receipts, err := container.NewClientFromConnectionString(conn, receiptsContainer, nil)
	if err != nil {
		return fmt.Errorf("event subscription on %s: storage connection %s: %s", sub.Container, sub.Connection, describeErr(err))
	}
	for _, cl := range []*container.Client{c, receipts} {
		if _, err := cl.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return fmt.Errorf("event subscription on %s: creating container: %s", sub.Container, describeErr(err))
		}
	}
	st := &eventState{last: map[string]seenBlob{}}
	interval := h.opts.BlobPollInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	endpoint := strings.TrimSuffix(c.URL(), "/")
	endpoint = endpoint[:strings.LastIndex(endpoint, "/")]
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			h.pollEvents(ctx, sub, c, receipts, endpoint, st)
			select {
			case <-ctx.Done():
				return
			case <-time.After(interval):
			}
		}
	}()
	h.logf("event subscription: BlobCreated in container %s -> queue %s (%s)", sub.Container, sub.Queue, schemaName(sub.Schema))
	return nil
}

func schemaName(s string) string {
	if s == "" {
		return blobevent.SchemaEventGrid
	}
	return s
}

func describeErr(err error) string {
	if re, ok := err.(*azcore.ResponseError); ok {
		return fmt.Sprintf("storage answered %d %s", re.StatusCode, re.ErrorCode)
	}
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i > 0 {
		s = s[:i]
	}
	return s
}

func (h *Harness) pollEvents(ctx context.Context, sub BlobEventSubscription, c, receipts *container.Client, endpoint string, st *eventState) {
	pager := c.NewListBlobsFlatPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			if ctx.Err() == nil {
				h.logf("event subscription on %s: listing: %s", sub.Container, describeErr(err))
			}
			return
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || it.Properties == nil || it.Properties.ETag == nil {
				continue
			}
			p := it.Properties
			v := seenBlob{etag: strings.Trim(string(*p.ETag), `"`)}
			if p.ContentLength != nil {
				v.size = *p.ContentLength
			}
			if len(p.ContentMD5) > 0 {
				v.md5 = hex.EncodeToString(p.ContentMD5)
			}
			key := sub.Container + "/" + *it.Name
			st.mu.Lock()
			prev, seen := st.last[key]
			st.mu.Unlock()
			if seen && prev.etag == v.etag {
				continue
			}
			if seen && prev.md5 != "" && prev.md5 == v.md5 && prev.size == v.size {
				st.mu.Lock()
				st.last[key] = v // metadata only: no event
				st.mu.Unlock()
				continue
			}
			sum := sha256.Sum256([]byte(sub.Queue + "\x00" + key + "\x00" + v.etag))
			id := hex.EncodeToString(sum[:16])
			id = id[:8] + "-" + id[8:12] + "-" + id[12:16] + "-" + id[16:20] + "-" + id[20:32]
			receipt := "eventgrid-local/" + sub.Queue + "/" + id
			if _, err := receipts.NewBlobClient(receipt).GetProperties(ctx, nil); err == nil {
				st.mu.Lock()
				st.last[key] = v
				st.mu.Unlock()
				continue
			}
			ct := ""
			if p.ContentType != nil {
				ct = *p.ContentType
			}
			body := blobevent.Build(blobevent.Spec{Schema: sub.Schema, ID: id, Endpoint: endpoint, Container: sub.Container, Blob: *it.Name,
				ETag: v.etag, Size: v.size, ContentType: ct,
				Topic: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/local"})
			if err := h.Queue.Send(ctx, sub.Queue, []queue.Message{{ID: id, Body: body,
				Properties: map[string]any{"aeg-event-type": "Notification"}}}); err != nil {
				return
			}
			_, _ = receipts.NewBlockBlobClient(receipt).Upload(ctx, streaming.NopCloser(bytes.NewReader(nil)), &uploadCreateOnly)
			st.mu.Lock()
			st.last[key] = v
			st.mu.Unlock()
			h.logf("event %s: BlobCreated %s/%s -> queue %s", id, sub.Container, *it.Name, sub.Queue)
		}
	}
}

var uploadCreateOnly = blockblob.UploadOptions{AccessConditions: &blob.AccessConditions{
	ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}}
