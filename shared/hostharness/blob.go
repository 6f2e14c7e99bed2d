package hostharness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// receiptsContainer is where the host keeps blob receipts; the harness uses the same place so a
// restarted `serve --local` does not trigger on blobs it already processed.
const receiptsContainer = "azure-webjobs-hosts"

type blobState struct {
	mu       sync.Mutex
	failures map[string]int  // by blob version key
	done     map[string]bool // receipts seen in this process
	warned   map[string]bool
}

// startBlobTrigger polls the function's container and invokes it for each new blob version.
func (h *Harness) startBlobTrigger(ctx context.Context, f *function) error {
	conn := state.ConnectionString(h.settings[f.connection])
	if conn == "" {
		return fmt.Errorf("%s: blob trigger connection setting %s is not set", f.name, f.connection)
	}
	state.RegisterSecrets(conn)
	c, err := container.NewClientFromConnectionString(conn, f.container, nil)
	if err != nil {
		return fmt.Errorf("%s: storage connection %s: %s", f.name, f.connection, describeErr(err))
	}
	receipts, err := container.NewClientFromConnectionString(conn, receiptsContainer, nil)
	if err != nil {
		return fmt.Errorf("%s: storage connection %s: %s", f.name, f.connection, describeErr(err))
	}
	for _, cl := range []*container.Client{c, receipts} {
		if _, err := cl.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return fmt.Errorf("%s: creating container: %s", f.name, describeErr(err))
		}
	}
	if h.blobs == nil {
		h.blobs = &blobState{failures: map[string]int{}, done: map[string]bool{}, warned: map[string]bool{}}
	}
	if !f.deferred {
		h.logf("%s: the blobTrigger binding lacks \"properties\": {\"supportsDeferredBinding\": true}; the real host would load "+
			"whole blobs into memory. The harness sends a reference only.", f.name)
	}
	interval := h.opts.BlobPollInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		sem := make(chan struct{}, h.host.blobParallelism)
		var inflight sync.WaitGroup
		defer inflight.Wait()
		for {
			h.pollBlobs(ctx, f, c, receipts, sem, &inflight)
			select {
			case <-ctx.Done():
				return
			case <-time.After(interval):
			}
		}
	}()
	return nil
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

func (h *Harness) pollBlobs(ctx context.Context, f *function, c, receipts *container.Client, sem chan struct{}, inflight *sync.WaitGroup) {
	prefix, suffix, param := splitPattern(f.pattern)
	pager := c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr(prefix), Include: container.ListBlobsInclude{Metadata: true}})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			if ctx.Err() == nil {
				h.logf("%s: listing %s: %s", f.name, f.container, describeErr(err))
			}
			return
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || it.Properties == nil || !strings.HasSuffix(*it.Name, suffix) {
				continue
			}
			etag := ""
			if it.Properties.ETag != nil {
				etag = strings.Trim(string(*it.Properties.ETag), `"`)
			}
			key := f.name + "/" + etag + "/" + f.container + "/" + *it.Name
			h.blobs.mu.Lock()
			skip := h.blobs.done[key] || h.blobs.failures[key] >= h.host.poisonThreshold
			h.blobs.mu.Unlock()
			if skip {
				continue
			}
			receipt := "blobreceipts/local-harness/" + key
			if _, err := receipts.NewBlobClient(receipt).GetProperties(ctx, nil); err == nil {
				h.markBlob(key, true)
				continue
			}
			item := it
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				defer func() { <-sem }()
				h.triggerBlob(ctx, f, c, receipts, item, key, receipt, param, prefix, suffix)
			}()
		}
	}
}

func (h *Harness) markBlob(key string, done bool) int {
	h.blobs.mu.Lock()
	defer h.blobs.mu.Unlock()
	if done {
		h.blobs.done[key] = true
		return 0
	}
	h.blobs.failures[key]++
	return h.blobs.failures[key]
}

func (h *Harness) triggerBlob(ctx context.Context, f *function, c, receipts *container.Client, it *container.BlobItem,
	key, receipt, param, prefix, suffix string) {
	name := *it.Name
	props := map[string]any{}
	if p := it.Properties; p != nil {
		if p.ContentLength != nil {
			props["ContentLength"] = *p.ContentLength
			props["Length"] = *p.ContentLength
		}
		if p.ContentType != nil {
			props["ContentType"] = *p.ContentType
		}
		if p.ETag != nil {
			props["ETag"] = string(*p.ETag)
		}
		if p.LastModified != nil {
			props["LastModified"] = p.LastModified.UTC().Format(time.RFC3339)
		}
		if p.CreationTime != nil {
			props["CreatedOn"] = p.CreationTime.UTC().Format(time.RFC3339)
		}
	}
	userMD := map[string]string{}
	for k, v := range it.Metadata {
		if v != nil {
			userMD[k] = *v
		}
	}
	// The host's Uri keeps '/' in blob paths; escape each segment only.
	segs := strings.Split(name, "/")
	for i, sg := range segs {
		segs[i] = url.PathEscape(sg)
	}
	uri := strings.TrimRight(c.URL(), "/") + "/" + strings.Join(segs, "/")
	descriptor := map[string]any{
		"Source": "AzureStorageBlobs", "Version": "1.0", "ContentType": "application/json",
		"Content": map[string]string{"Connection": f.connection, "ContainerName": f.container, "BlobName": name},
	}
	md := map[string]json.RawMessage{
		"Uri":        hostproto.HostString(uri),
		"Properties": hostproto.HostObject(props),
		"Metadata":   hostproto.HostObject(userMD),
		"sys":        hostproto.HostObject(sysMetadata(f.name)),
	}
	if param != "" {
		md[param] = hostproto.HostString(strings.TrimSuffix(strings.TrimPrefix(name, prefix), suffix))
	}
	inv := map[string]any{"Data": map[string]any{f.bindingIn: descriptor}, "Metadata": md}
	payload, _ := json.Marshal(inv)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.handlerURL+"/"+f.name, bytes.NewReader(payload))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	status := 0
	resp, err := h.client.Do(req)
	if err == nil {
		status = resp.StatusCode
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if reply, derr := hostproto.DecodeReply(b); derr == nil && status/100 == 2 {
			for _, l := range reply.Logs {
				h.logf("%s: %s", f.name, l)
			}
		}
	}
	if err == nil && status/100 == 2 {
		h.markBlob(key, true)
		_, _ = receipts.NewBlockBlobClient(receipt).Upload(ctx, streaming.NopCloser(bytes.NewReader(nil)), &blobUploadCreateOnly)
		h.logf("%s: blob %s/%s processed", f.name, f.container, name)
		return
	}
	n := h.markBlob(key, false)
	h.logf("%s: blob %s/%s failed (attempt %d of %d, status %d)", f.name, f.container, name, n, h.host.poisonThreshold, status)
	if n >= h.host.poisonThreshold {
		h.logf("%s: blob %s/%s is poison after %d attempts; it will not be retried", f.name, f.container, name, n)
		body, _ := json.Marshal(map[string]string{"FunctionId": f.name, "BlobType": "BlockBlob", "ContainerName": f.container, "BlobName": name, "ETag": fmt.Sprint(props["ETag"])})
		_ = h.Queue.Send(ctx, "webjobs-blobtrigger-poison", []queue.Message{{ID: key, Body: body}})
	}
}

var blobUploadCreateOnly = blockblob.UploadOptions{AccessConditions: &blob.AccessConditions{
	ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}}

// splitPattern splits "prefix/{name}.rdb" into prefix, suffix and the parameter name.
func splitPattern(p string) (prefix, suffix, param string) {
	i := strings.Index(p, "{")
	j := strings.LastIndex(p, "}")
	if i < 0 || j < i {
		return p, "", ""
	}
	return p[:i], p[j+1:], p[i+1 : j]
}
