package state

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/redis-migrate/redis-migrate/shared/copier"
)

// EndpointRef says how a function reaches an endpoint. Settings are resolved on every invocation
// (a rotated key is picked up), so only their names are stored. URL is set only for inline URLs
// (allowed by ALLOW_INLINE_URLS): it is never shown in status.
type EndpointRef struct {
	Setting  string `json:"setting,omitempty"`
	URL      string `json:"url,omitempty"`
	Host     string `json:"host,omitempty"` // host:port, with Entra
	ObjectID string `json:"objectId,omitempty"`
	ClientID string `json:"clientId,omitempty"`
	Topology string `json:"topology,omitempty"`
}

// Describe names the endpoint without secrets, for status.
func (e EndpointRef) Describe() string {
	switch {
	case e.Setting != "":
		return "setting " + e.Setting
	case e.Host != "":
		return "rediss://" + e.Host + " (Entra ID " + e.ObjectID + ")"
	case e.URL != "":
		return "inline URL"
	}
	return ""
}

// Options are the copy options of a migration, as the request gave them.
type Options struct {
	Match         string `json:"match,omitempty"`
	Type          string `json:"type,omitempty"`
	Existing      string `json:"existing"`
	DBMap         string `json:"dbMap,omitempty"`
	DBPrefix      string `json:"dbPrefix,omitempty"`
	AllowDBMerge  bool   `json:"allowDbMerge,omitempty"`
	BatchKeys     int    `json:"batchKeys"`
	ExplicitDBMap bool   `json:"explicitDbMap,omitempty"`
	// BigKeyBytes is the copier's big-key threshold (MEMORY USAGE); 0 = the copier's default,
	// -1 = no chunked copy.
	BigKeyBytes int64 `json:"bigKeyBytes,omitempty"`
	// MaxSourceOps caps the migration's commands a second to the source; 0 = no limit.
	MaxSourceOps int `json:"maxSourceOps,omitempty"`
	// Import only: FUNCTION libraries (skip, load, replace), module values (fail, skip), CRC64.
	Functions    string `json:"functions,omitempty"`
	Modules      string `json:"modules,omitempty"`
	SkipChecksum bool   `json:"skipChecksum,omitempty"`
}

// Migration is the record of one migration.
type Migration struct {
	ID   string `json:"id"`
	Kind string `json:"kind"` // "copy" or "import"
	// Mode is "online" for a copy that keeps syncing changes (sync chains, see online.go).
	Mode          string      `json:"mode,omitempty"`
	CreatedAt     time.Time   `json:"createdAt"`
	Source        EndpointRef `json:"source"`
	Target        EndpointRef `json:"target"`
	Options       Options     `json:"options"`
	Shards        []string    `json:"shards"` // shard keys, see ShardKey
	EstimatedKeys int64       `json:"estimatedKeys"`
	// Error is set when the migration cannot go on (a shard's planning failed for good).
	Error string `json:"error,omitempty"`
	// Import is the checkpoint of an RDB import (ImportRdb); nil for a copy.
	Import *ImportCheckpoint `json:"import,omitempty"`
	// Verify is the latest verification run (POST /api/migrations/{id}/verify); VerifyRuns
	// counts the runs started, so each gets a new id.
	Verify     *VerifyRun `json:"verify,omitempty"`
	VerifyRuns int        `json:"verifyRuns,omitempty"`
	// Resumes counts the resume requests (POST /api/migrations/{id}/resume) that sent work
	// again; ResumedAt is the latest. Messages a resume sends carry the count in their ids.
	Resumes   int       `json:"resumes,omitempty"`
	ResumedAt time.Time `json:"resumedAt"`
	// TargetRunIDs is each target master's run_id at the start. A copy batch that finds another
	// one records it in TargetRestarts: keys written before that restart may be gone (all of
	// them on a target without persistence), so the migration cannot end "completed".
	TargetRunIDs   map[string]string `json:"targetRunIds,omitempty"`
	TargetRestarts []TargetRestart   `json:"targetRestarts,omitempty"`
	// TargetEvictedAtStart is the target's evicted_keys (INFO stats, summed over its masters)
	// at the start; nil when it does not report them. A copy batch or an import checkpoint that
	// finds more records TargetEvictions: keys written may have been evicted, and no error names
	// them, so the migration cannot end "completed".
	TargetEvictedAtStart *int64           `json:"targetEvictedAtStart,omitempty"`
	TargetEvictions      *TargetEvictions `json:"targetEvictions,omitempty"`
	// MemoryWarning is the kickoff's estimate that the source's data (engine.MemoryShortfall) or
	// an import's file (engine.FileShortfall) will not fit under the target's maxmemory; status
	// repeats it while the migration plans and copies.
	MemoryWarning string `json:"memoryWarning,omitempty"`
}

// TargetEvictions is how many keys the target evicted during a migration, as last seen.
type TargetEvictions struct {
	Keys   int64     `json:"keys"`
	SeenAt time.Time `json:"seenAt"` // when the count last grew
}

// TargetRestart is a target server seen with a new run_id during a migration.
type TargetRestart struct {
	Addr   string    `json:"addr"`
	RunID  string    `json:"runId"`
	SeenAt time.Time `json:"seenAt"`
}

// ImportCheckpoint is where an RDB import stands, updated with UpdateMigration as the stream is
// consumed, so a restarted import resumes at Offset instead of the beginning.
type ImportCheckpoint struct {
	Container string        `json:"container"`
	Blob      string        `json:"blob"`
	ETag      string        `json:"etag,omitempty"` // the blob version being imported
	Size      int64         `json:"size,omitempty"`
	Offset    int64         `json:"offset"` // bytes consumed and written to the target
	DB        int           `json:"db"`     // the source database at Offset
	Result    copier.Result `json:"result"` // keys written so far (by the importer itself)
	Done      bool          `json:"done,omitempty"`
	Error     string        `json:"error,omitempty"`
	UpdatedAt time.Time     `json:"updatedAt"`

	// What a resumed reader needs besides Offset and DB, and the keys read up to Offset.
	RDBVersion int   `json:"rdbVersion,omitempty"`
	Valkey     bool  `json:"valkey,omitempty"`
	Scanned    int64 `json:"scanned"`
	// Aux is the importer's non-key totals up to Offset (functions, module AUX, skipped dbs),
	// kept opaque here.
	Aux json.RawMessage `json:"aux,omitempty"`
	// Started: an invocation may have written keys, so later ones no longer expect an empty target.
	Started bool `json:"started,omitempty"`
	// Attempts counts the invocations on this blob version; ResumedFrom is the offset the latest
	// one started at (0: from the beginning); LastError is the last retried failure.
	Attempts      int      `json:"attempts"`
	ResumedFrom   int64    `json:"resumedFrom"`
	Continuations int      `json:"continuations,omitempty"`
	LastError     string   `json:"lastError,omitempty"`
	Notes         []string `json:"notes,omitempty"`
	// Runner holds the import until LeaseUntil (renewed while it runs): one invocation at a time.
	Runner     string    `json:"runner,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil"`
	// Seq is the sequence number of the latest imports-queue message that claimed the import
	// (start, continuation or restart: MessageId <id>.import<seq>); an older message is stale.
	Seq int `json:"seq,omitempty"`
}

// ShardProgress is the planning progress of one source shard and database.
type ShardProgress struct {
	Key         string    `json:"key"`
	Shard       int       `json:"shard"`
	Addr        string    `json:"addr"`
	DB          int       `json:"db"`
	Cursor      uint64    `json:"cursor"`
	Step        int       `json:"step"` // the next step to run
	Done        bool      `json:"done"`
	KeysScanned int64     `json:"keysScanned"`
	BatchesSent int64     `json:"batchesSent"`
	Error       string    `json:"error,omitempty"`
	UpdatedAt   time.Time `json:"updatedAt"`
	// Sample is the number of random keys a sampling verification draws from this shard (0 for
	// a scan of every key).
	Sample int `json:"sample,omitempty"`
	// RunID is the run_id of the source server the scan's first step read: a cursor is only
	// valid for that process, so a later step that finds another one fails the shard.
	RunID string `json:"runId,omitempty"`
}

// ShardKey names a shard's progress blob.
func ShardKey(shard, db int) string { return fmt.Sprintf("s%d-d%d", shard, db) }

// BatchResult is the outcome of one batch.
type BatchResult struct {
	Batch        string        `json:"batch"`
	Shard        int           `json:"shard"`
	DB           int           `json:"db"`
	Keys         int           `json:"keys"`
	Result       copier.Result `json:"result"`
	DeadLettered bool          `json:"deadLettered,omitempty"`
	Reason       string        `json:"reason,omitempty"`
	Delivery     int           `json:"delivery"`
	FinishedAt   time.Time     `json:"finishedAt"`
	// BatchKeys keeps a dead-lettered batch's key names, so it can be copied again later.
	BatchKeys [][]byte `json:"batchKeys,omitempty"`
	// Spawned is the number of big-key batches this batch sent to the copy queue (each copies
	// one of its keys in chunks and records its own result); status counts them as sent.
	Spawned int `json:"spawned,omitempty"`
}

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidID reports whether id is usable as a migration id (lower-case letters, digits, '-').
func ValidID(id string) bool { return idRE.MatchString(id) }

func recordName(id string) string        { return id + "/migration.json" }
func shardName(id, key string) string    { return id + "/shards/" + key + ".json" }
func resultPrefix(id string) string      { return id + "/results/" }
func resultName(id, batch string) string { return resultPrefix(id) + batch + ".json" }
func spawnName(id, batch string) string  { return id + "/spawned/" + batch + ".json" }

// CreateMigration writes a new record; ErrExists if the id is taken.
func (s *Store) CreateMigration(ctx context.Context, m *Migration) error {
	_, err := s.putJSON(ctx, recordName(m.ID), m, nil, createOnly())
	return err
}

// GetMigration reads a record; ErrNotFound if there is none.
func (s *Store) GetMigration(ctx context.Context, id string) (*Migration, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	var m Migration
	if _, err := s.getJSON(ctx, recordName(id), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// UpdateMigration applies fn to the record under optimistic concurrency (fn may run several
// times; return false to write nothing). An RDB import stores its checkpoint this way.
func (s *Store) UpdateMigration(ctx context.Context, id string, fn func(*Migration) (bool, error)) (*Migration, error) {
	return update(ctx, s, recordName(id), fn)
}

// CreateShard writes a shard's initial progress; an existing one is kept (a retried kickoff).
func (s *Store) CreateShard(ctx context.Context, id string, p ShardProgress) error {
	return s.createShardAt(ctx, shardName(id, p.Key), p)
}

// GetShard reads a shard's progress.
func (s *Store) GetShard(ctx context.Context, id, key string) (*ShardProgress, error) {
	return s.getShardAt(ctx, shardName(id, key))
}

// UpdateShard applies fn to a shard's progress under optimistic concurrency.
func (s *Store) UpdateShard(ctx context.Context, id, key string, fn func(*ShardProgress) (bool, error)) (*ShardProgress, error) {
	return s.updateShardAt(ctx, shardName(id, key), fn)
}

// Shards reads every shard's progress of a migration, in key order.
func (s *Store) Shards(ctx context.Context, m *Migration) ([]ShardProgress, error) {
	return s.shardsAt(ctx, m.Shards, func(key string) string { return shardName(m.ID, key) }, false)
}

// The shard helpers work on a blob name, so a copy's planning and a verification run's share them.
func (s *Store) createShardAt(ctx context.Context, name string, p ShardProgress) error {
	p.UpdatedAt = time.Now().UTC()
	_, err := s.putJSON(ctx, name, p, nil, createOnly())
	if err == ErrExists {
		return nil
	}
	return err
}

func (s *Store) getShardAt(ctx context.Context, name string) (*ShardProgress, error) {
	var p ShardProgress
	if _, err := s.getJSON(ctx, name, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func (s *Store) updateShardAt(ctx context.Context, name string, fn func(*ShardProgress) (bool, error)) (*ShardProgress, error) {
	return update(ctx, s, name, func(p *ShardProgress) (bool, error) {
		w, err := fn(p)
		if w {
			p.UpdatedAt = time.Now().UTC()
		}
		return w, err
	})
}

// shardsAt reads the progress of keys in parallel; with missingOK a progress not written yet
// reads as a shard at step 0 (a verification run's kickoff is still writing them).
func (s *Store) shardsAt(ctx context.Context, keys []string, name func(string) string, missingOK bool) ([]ShardProgress, error) {
	out := make([]ShardProgress, len(keys))
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := s.getShardAt(ctx, name(key))
			if err == ErrNotFound && missingOK {
				out[i] = ShardProgress{Key: key}
				return
			}
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = *p
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SpawnedBig returns the positions (in the batch's key list) of the keys a batch sent off as
// big-key batches on an earlier delivery; nil if it sent none.
func (s *Store) SpawnedBig(ctx context.Context, id, batch string) ([]int, error) {
	var rec spawnRecord
	if _, err := s.getJSON(ctx, spawnName(id, batch), &rec); err != nil {
		if err == ErrNotFound {
			return nil, nil
		}
		return nil, err
	}
	return rec.Keys, nil
}

// RecordSpawnedBig adds positions to the batch's spawn record and returns all of them. The
// record outlives a delivery that crashed after sending: a redelivery must not copy those keys
// inline (a key's size can change between deliveries), or they would be counted twice.
func (s *Store) RecordSpawnedBig(ctx context.Context, id, batch string, keys []int) ([]int, error) {
	name := spawnName(id, batch)
	rec := spawnRecord{Keys: sortedUnion(nil, keys)}
	if _, err := s.putJSON(ctx, name, rec, nil, createOnly()); err == nil {
		return rec.Keys, nil
	} else if err != ErrExists {
		return nil, err
	}
	got, err := update(ctx, s, name, func(r *spawnRecord) (bool, error) {
		u := sortedUnion(r.Keys, keys)
		if len(u) == len(r.Keys) {
			return false, nil
		}
		r.Keys = u
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return got.Keys, nil
}

type spawnRecord struct {
	Keys []int `json:"keys"` // positions in the batch's key list
}

func sortedUnion(a, b []int) []int {
	seen := map[int]bool{}
	var out []int
	for _, l := range [][]int{a, b} {
		for _, v := range l {
			if !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	sort.Ints(out)
	return out
}

// HasResult reports whether a batch's result is recorded.
func (s *Store) HasResult(ctx context.Context, id, batch string) (bool, error) {
	return s.exists(ctx, resultName(id, batch))
}

// RecordResult writes a batch's result if none is recorded yet (If-None-Match: *). It returns
// false when a result was already there: the first recorded result stands, so a batch counts
// once however often it is delivered.
func (s *Store) RecordResult(ctx context.Context, id string, r BatchResult) (bool, error) {
	if r.FinishedAt.IsZero() {
		r.FinishedAt = time.Now().UTC()
	}
	_, err := s.putJSON(ctx, resultName(id, r.Batch), r, resultMeta(r), createOnly())
	if err == ErrExists {
		return false, nil
	}
	return err == nil, err
}

// The counts travel in blob metadata, so status lists results without reading them.
func resultMeta(r BatchResult) map[string]*string {
	n := func(v int64) *string { return to.Ptr(strconv.FormatInt(v, 10)) }
	m := map[string]*string{
		"keys": n(int64(r.Keys)), "copied": n(r.Result.Copied), "skipped": n(r.Result.Skipped),
		"missing": n(r.Result.Missing), "expired": n(r.Result.Expired), "failed": n(r.Result.Failed),
		"fallback": n(r.Result.Fallback), "bytes": n(r.Result.Bytes), "finished": n(r.FinishedAt.UnixMilli()),
		"big": n(r.Result.Big), "spawned": n(int64(r.Spawned)),
	}
	if r.DeadLettered {
		m["deadlettered"] = to.Ptr("1")
	}
	return m
}

// GetResult reads one batch result.
func (s *Store) GetResult(ctx context.Context, id, batch string) (*BatchResult, error) {
	var r BatchResult
	if _, err := s.getJSON(ctx, resultName(id, batch), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// resultSummary is what one listed result contributes.
type resultSummary struct {
	batch    string
	res      copier.Result
	dead     bool
	finished int64
	spawned  int64
}

// listResults lists every result with its metadata: about one request per 5,000 batches.
func (s *Store) listResults(ctx context.Context, id string) ([]resultSummary, error) {
	var out []resultSummary
	err := s.listMeta(ctx, resultPrefix(id), func(batch string, md metadata) {
		out = append(out, summaryOf(batch, md))
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].batch < out[j].batch })
	return out, nil
}

// metadata is a listed blob's metadata, names lower-cased.
type metadata map[string]*string

func (m metadata) num(k string) int64 {
	if v := m[k]; v != nil {
		n, _ := strconv.ParseInt(*v, 10, 64)
		return n
	}
	return 0
}

func (m metadata) has(k string) bool { return m[k] != nil }

// listMeta calls fn with the name (without prefix and ".json") and metadata of every blob under
// prefix that is directly in it (not in a sub-folder).
func (s *Store) listMeta(ctx context.Context, prefix string, fn func(name string, md metadata)) error {
	pager := s.c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix: to.Ptr(prefix), Include: container.ListBlobsInclude{Metadata: true},
	})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing results: %s", describe(err))
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil {
				continue
			}
			rest := strings.TrimPrefix(*it.Name, prefix)
			if strings.Contains(rest, "/") {
				continue
			}
			fn(strings.TrimSuffix(rest, ".json"), lowerKeys(it.Metadata))
		}
	}
	return nil
}

// Metadata names come back with the service's casing; compare them case-insensitively.
func lowerKeys(m map[string]*string) map[string]*string {
	out := make(map[string]*string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}
