// Package blobsrc reads a blob (an RDB file in Azure Blob storage) as a stream of sequential
// ranged downloads, so a file of any size is never held in memory and a read can start at any
// offset (a resumed import).
package blobsrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// RangeSize is how much one ranged GET reads.
const RangeSize = 8 << 20

// Blob is one blob to read.
type Blob struct {
	client *blob.Client
	Name   string
	Size   int64
	ETag   string
	// Metadata is the blob's user metadata (x-ms-meta-*), as read when it was opened.
	Metadata map[string]string
}

// Open opens a blob by URL. A URL with a SAS (sig=) is used as is; otherwise a storage
// connection string (connString, e.g. AzureWebJobsStorage; UseDevelopmentStorage=true works)
// for the same account supplies the key, and failing that Entra ID (DefaultAzureCredential).
func Open(ctx context.Context, rawURL, connString string) (*Blob, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("blob URL %q: want https://<account>.blob.core.windows.net/<container>/<blob>", redact.String(rawURL))
	}
	if sig := u.Query().Get("sig"); sig != "" {
		redact.Register(sig)
	}
	var c *blob.Client
	switch {
	case u.Query().Get("sig") != "":
		c, err = blob.NewClientWithNoCredential(rawURL, nil)
	case connString != "":
		container, name, perr := splitPath(u)
		if perr != nil {
			return nil, perr
		}
		conn := state.ConnectionString(connString)
		state.RegisterSecrets(conn)
		var svc *service.Client
		svc, err = service.NewClientFromConnectionString(conn, nil)
		if err == nil {
			c = svc.NewContainerClient(container).NewBlobClient(name)
		}
	default:
		var cred azcore.TokenCredential
		cred, err = azidentity.NewDefaultAzureCredential(nil)
		if err == nil {
			c, err = blob.NewClient(rawURL, cred, nil)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("blob %s: %s", redact.String(u.Path), redact.Error(err))
	}
	return OpenClient(ctx, c)
}

// OpenClient reads the blob's properties through an existing client.
func OpenClient(ctx context.Context, c *blob.Client) (*Blob, error) {
	props, err := c.GetProperties(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %s", redact.String(c.URL()), describe(err))
	}
	b := &Blob{client: c, Name: c.URL(), Metadata: map[string]string{}}
	for k, v := range props.Metadata {
		if v != nil {
			b.Metadata[k] = *v
		}
	}
	if props.ContentLength != nil {
		b.Size = *props.ContentLength
	}
	if props.ETag != nil {
		b.ETag = string(*props.ETag)
	}
	if u, err := url.Parse(c.URL()); err == nil {
		b.Name = u.Path
	}
	return b, nil
}

func splitPath(u *url.URL) (string, string, error) {
	p := strings.TrimPrefix(u.Path, "/")
	// Azurite's path-style URLs carry the account first: /devstoreaccount1/container/blob.
	if strings.HasPrefix(p, "devstoreaccount1/") {
		p = strings.TrimPrefix(p, "devstoreaccount1/")
	}
	container, name, ok := strings.Cut(p, "/")
	if !ok || container == "" || name == "" {
		return "", "", fmt.Errorf("blob URL path %q: want /<container>/<blob>", u.Path)
	}
	return container, name, nil
}

func describe(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("%s (HTTP %d)", re.ErrorCode, re.StatusCode)
	}
	return redact.Error(err)
}

// Reader returns a reader of the blob's bytes from offset to the end, fetched RangeSize at a
// time; a failed range is retried a few times before the read fails.
func (b *Blob) Reader(ctx context.Context, offset int64) io.Reader {
	return &rangeReader{ctx: ctx, b: b, off: offset}
}

type rangeReader struct {
	ctx  context.Context
	b    *Blob
	off  int64
	body io.ReadCloser
	left int64
}

func (r *rangeReader) Read(p []byte) (int, error) {
	for r.body == nil || r.left == 0 {
		if r.body != nil {
			r.body.Close()
			r.body = nil
		}
		if r.off >= r.b.Size {
			return 0, io.EOF
		}
		n := min(int64(RangeSize), r.b.Size-r.off)
		var err error
		for attempt := 0; attempt < 4; attempt++ {
			var resp blob.DownloadStreamResponse
			resp, err = r.b.client.DownloadStream(r.ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: r.off, Count: n}})
			if err == nil {
				r.body, r.left = resp.Body, n
				break
			}
			if r.ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 300 * time.Millisecond)
		}
		if err != nil {
			return 0, fmt.Errorf("reading blob at offset %d: %s", r.off, describe(err))
		}
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	r.left -= int64(n)
	if err == io.EOF {
		if r.left > 0 {
			return n, fmt.Errorf("blob range ended early at offset %d", r.off)
		}
		err = nil
	}
	return n, err
}
