// Package state keeps a migration's record, its per-shard planning progress and one result per
// copy batch in Azure Blob storage (Azurite locally). Results are written create-if-absent, so a
// redelivered message or a replayed plan step never counts a batch twice, and each result
// carries its counts in blob metadata, so status is one listing, not a GET per batch.
//
// Layout, in one container (default "migrations"):
//
//	<id>/migration.json         the record: request, options, shards, import checkpoint, error
//	<id>/shards/<shard>.json    planning progress of one shard and source db (cursor, step, counts)
//	<id>/results/<batch>.json   one per finished batch; metadata holds the counts
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// DefaultContainer holds the migrations' state.
const DefaultContainer = "migrations"

// Errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// DevelopmentStorage is what UseDevelopmentStorage=true means: Azurite's well-known public
// development account on its default port. azblob does not understand the shorthand.
const DevelopmentStorage = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"

// ConnectionString translates the Functions shorthand UseDevelopmentStorage=true into a
// connection string azblob accepts; other values are returned unchanged.
func ConnectionString(s string) string {
	s = strings.TrimSpace(s)
	if strings.EqualFold(strings.TrimSuffix(s, ";"), "UseDevelopmentStorage=true") {
		return DevelopmentStorage
	}
	return s
}

// RegisterSecrets tells the redact package about the secret parts of a storage connection string.
func RegisterSecrets(conn string) {
	for _, part := range strings.Split(conn, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "accountkey", "sharedaccesssignature":
			redact.Register(strings.TrimSpace(v))
			if strings.HasPrefix(v, "?") {
				redact.Register(v[1:])
			}
		}
	}
}

// Store reads and writes migration state in one container.
type Store struct {
	c *container.Client

	mu       sync.Mutex
	inflight map[string][]chan statusResult // status aggregations running, by migration
	stall    time.Duration                  // see SetStallAfter
	steps    map[string]stepMeta            // step manifests' metadata (immutable), by blob name
}

// DefaultStallAfter is how long a planning or copying migration may go without recorded
// progress before status reports it as stalled.
const DefaultStallAfter = 10 * time.Minute

// SetStallAfter sets the stall bound (0 or less: DefaultStallAfter).
func (s *Store) SetStallAfter(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stall = d
}

func (s *Store) stallAfter() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stall <= 0 {
		return DefaultStallAfter
	}
	return s.stall
}

// Open connects with a connection string (UseDevelopmentStorage=true is accepted) and creates
// the container if it is missing.
func Open(ctx context.Context, connString, containerName string) (*Store, error) {
	conn := ConnectionString(connString)
	if conn == "" {
		return nil, fmt.Errorf("no storage connection string (set AzureWebJobsStorage)")
	}
	RegisterSecrets(conn)
	if containerName == "" {
		containerName = DefaultContainer
	}
	c, err := container.NewClientFromConnectionString(conn, containerName, nil)
	if err != nil {
		return nil, fmt.Errorf("storage connection string: %s", redact.Error(err))
	}
	return ensure(ctx, c)
}

// OpenWithCredential connects to serviceURL (https://<account>.blob.core.windows.net) with an
// Entra ID credential (managed identity), for apps that use identity-based AzureWebJobsStorage.
func OpenWithCredential(ctx context.Context, serviceURL string, cred azcore.TokenCredential, containerName string) (*Store, error) {
	if containerName == "" {
		containerName = DefaultContainer
	}
	c, err := container.NewClient(strings.TrimRight(serviceURL, "/")+"/"+containerName, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("storage %s: %s", serviceURL, redact.Error(err))
	}
	return ensure(ctx, c)
}

func ensure(ctx context.Context, c *container.Client) (*Store, error) {
	_, err := c.Create(ctx, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return nil, fmt.Errorf("creating state container: %s", describe(err))
	}
	return &Store{c: c}, nil
}

// describe shortens an azblob error (which repeats the request, headers and all) to its code.
func describe(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("storage answered %d %s", re.StatusCode, re.ErrorCode)
	}
	return redact.Error(err)
}

// Container is the container client, for callers that keep their own blobs beside the state.
func (s *Store) Container() *container.Client { return s.c }

// putJSON writes v; ifNoneMatch makes it create-only, ifMatch makes it conditional on an ETag.
func (s *Store) putJSON(ctx context.Context, name string, v any, meta map[string]*string, cond *blob.AccessConditions) (azcore.ETag, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	resp, err := s.c.NewBlockBlobClient(name).Upload(ctx, streaming.NopCloser(bytes.NewReader(body)), &blockblob.UploadOptions{
		Metadata:         meta,
		HTTPHeaders:      &blob.HTTPHeaders{BlobContentType: to.Ptr("application/json")},
		AccessConditions: cond,
	})
	if err != nil {
		switch {
		case bloberror.HasCode(err, bloberror.BlobAlreadyExists):
			return "", ErrExists
		case bloberror.HasCode(err, bloberror.ConditionNotMet):
			return "", errConflict
		}
		return "", fmt.Errorf("writing %s: %s", name, describe(err))
	}
	if resp.ETag == nil {
		return "", nil
	}
	return *resp.ETag, nil
}

var errConflict = errors.New("changed concurrently")

func createOnly() *blob.AccessConditions {
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
}

func ifMatch(e azcore.ETag) *blob.AccessConditions {
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &e}}
}

func (s *Store) getJSON(ctx context.Context, name string, v any) (azcore.ETag, error) {
	resp, err := s.c.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return "", ErrNotFound
		}
		return "", fmt.Errorf("reading %s: %s", name, describe(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("reading %s: %s", name, redact.Error(err))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return "", fmt.Errorf("reading %s: %v", name, err)
	}
	var etag azcore.ETag
	if resp.ETag != nil {
		etag = *resp.ETag
	}
	return etag, nil
}

func (s *Store) exists(ctx context.Context, name string) (bool, error) {
	_, err := s.c.NewBlobClient(name).GetProperties(ctx, nil)
	if err == nil {
		return true, nil
	}
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return false, nil
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.StatusCode == 404 {
		return false, nil
	}
	return false, fmt.Errorf("checking %s: %s", name, describe(err))
}

// update applies fn to a fresh copy of the JSON blob under optimistic concurrency (If-Match),
// retrying on conflicts. fn returns false to leave the blob unchanged.
func update[T any](ctx context.Context, s *Store, name string, fn func(*T) (bool, error)) (*T, error) {
	for attempt := 0; ; attempt++ {
		v := new(T)
		etag, err := s.getJSON(ctx, name, v)
		if err != nil {
			return nil, err
		}
		write, err := fn(v)
		if err != nil || !write {
			return v, err
		}
		_, err = s.putJSON(ctx, name, v, nil, ifMatch(etag))
		if err == nil {
			return v, nil
		}
		if err != errConflict || attempt >= 50 {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(5+attempt*5) * time.Millisecond):
		}
	}
}
