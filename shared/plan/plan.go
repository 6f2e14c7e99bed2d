// Package plan walks a source shard's key space with SCAN and cuts the keys into copy batches.
// A plan step is bounded in keys and time and returns a continuation, so the same code serves
// the CLI (which loops) and the PlanShard function (which re-enqueues itself).
package plan

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options shape the scan and the batches.
type Options struct {
	Match      string // SCAN MATCH glob; "" = every key
	Type       string // SCAN TYPE filter; "" = every type
	ScanCount  int64  // SCAN COUNT hint; default 1000
	BatchKeys  int    // keys per batch; default 500
	BatchBytes int    // key-name bytes per batch; default 128 KiB (base64 in a 256 KB Service Bus message)
}

func (o Options) withDefaults() Options {
	if o.ScanCount <= 0 {
		o.ScanCount = 1000
	}
	if o.BatchKeys <= 0 {
		o.BatchKeys = 500
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 128 << 10
	}
	return o
}

// Cursor is where a shard's scan stands: which shard (index and node address), which source
// database, and the SCAN cursor. Done is set once SCAN has returned cursor 0.
type Cursor struct {
	Shard  int    `json:"shard"`
	Addr   string `json:"addr"`
	DB     int    `json:"db"`
	Cursor uint64 `json:"cursor"`
	Step   int    `json:"step"`
	Done   bool   `json:"done,omitempty"`
}

// Batch is a unit of copy work: keys of one source database. Keys are binary-safe ([]byte
// marshals as base64 in JSON). ID is deterministic, so a replayed plan step produces the same IDs.
type Batch struct {
	ID    string   `json:"id"`
	Shard int      `json:"shard"`
	DB    int      `json:"db"`
	Keys  [][]byte `json:"keys"`
	Big   bool     `json:"big,omitempty"`
	Bytes int      `json:"-"`
}

// Limits bound one step.
type Limits struct {
	MaxKeys int           // stop after about this many keys; 0 = no bound
	MaxTime time.Duration // stop after this long; 0 = no bound
}

// Step scans from cur until the limits are reached or the scan ends, and returns the batches
// it cut and the continuation. The batch IDs derive from the step's start cursor, so replaying a
// step after a crash yields batches with the same IDs.
func Step(ctx context.Context, node *redis.Client, cur Cursor, o Options, lim Limits) ([]Batch, Cursor, int, error) {
	return StepWith(ctx, GoRedisScan(node), cur, o, lim)
}

// ScanFunc is one SCAN call: the keys it returned and the next cursor. The keys are not changed
// afterwards, so they may share one buffer.
type ScanFunc func(ctx context.Context, cursor uint64, match string, count int64, typ string) ([][]byte, uint64, error)

// GoRedisScan is SCAN through a go-redis client.
func GoRedisScan(node *redis.Client) ScanFunc {
	return func(ctx context.Context, c uint64, match string, count int64, typ string) ([][]byte, uint64, error) {
		var keys []string
		var next uint64
		var err error
		if typ != "" {
			keys, next, err = node.ScanType(ctx, c, match, count, typ).Result()
		} else {
			keys, next, err = node.Scan(ctx, c, match, count).Result()
		}
		out := make([][]byte, len(keys))
		for i, k := range keys {
			out[i] = []byte(k)
		}
		return out, next, err
	}
}

// StepWith is Step with its SCAN calls made by scan.
func StepWith(ctx context.Context, scan ScanFunc, cur Cursor, o Options, lim Limits) ([]Batch, Cursor, int, error) {
	o = o.withDefaults()
	if cur.Done {
		return nil, cur, 0, nil
	}
	start := time.Now()
	idBase := fmt.Sprintf("s%d-d%d-c%d", cur.Shard, cur.DB, cur.Cursor)
	var batches []Batch
	var pending Batch
	scanned := 0
	flush := func() {
		if len(pending.Keys) == 0 {
			return
		}
		pending.ID = fmt.Sprintf("%s-%d", idBase, len(batches))
		pending.Shard, pending.DB = cur.Shard, cur.DB
		batches = append(batches, pending)
		pending = Batch{}
	}
	c := cur.Cursor
	for {
		keys, next, err := scan(ctx, c, o.Match, o.ScanCount, o.Type)
		if err != nil {
			return nil, cur, 0, fmt.Errorf("SCAN shard %d (%s) db %d at cursor %d: %w", cur.Shard, cur.Addr, cur.DB, c, err)
		}
		for _, k := range keys {
			if len(pending.Keys) >= o.BatchKeys || (pending.Bytes+len(k) > o.BatchBytes && len(pending.Keys) > 0) {
				flush()
			}
			if pending.Keys == nil {
				pending.Keys = make([][]byte, 0, min(o.BatchKeys, 1024)) // not grown by doubling
			}
			pending.Keys = append(pending.Keys, k)
			pending.Bytes += len(k)
		}
		scanned += len(keys)
		c = next
		if c == 0 {
			break
		}
		if (lim.MaxKeys > 0 && scanned >= lim.MaxKeys) || (lim.MaxTime > 0 && time.Since(start) >= lim.MaxTime) {
			break
		}
	}
	flush()
	out := cur
	out.Cursor = c
	out.Step++
	out.Done = c == 0
	return batches, out, scanned, nil
}
