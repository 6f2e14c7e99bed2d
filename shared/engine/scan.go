package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/resp"
)

// seenKeys remembers, as 64-bit hashes (8 bytes a key), every key the planner has sent for the
// shard it is scanning, so that a rescan after a source restart sends only the keys it has not
// sent before: each key is copied and counted once.
type seenKeys struct {
	seed maphash.Seed
	// list is kept in chunks: one growing slice of every hash would be copied (and its new
	// pages faulted in) at each doubling.
	list [][]uint64
	set  map[uint64]struct{}
}

const seenChunk = 8192

func newSeenKeys() *seenKeys { return &seenKeys{seed: maphash.MakeSeed()} }

func (s *seenKeys) add(k []byte) {
	h := maphash.Bytes(s.seed, k)
	if s.set != nil {
		s.set[h] = struct{}{}
		return
	}
	if n := len(s.list); n == 0 || len(s.list[n-1]) == seenChunk {
		s.list = append(s.list, make([]uint64, 0, seenChunk))
	}
	last := &s.list[len(s.list)-1]
	*last = append(*last, h)
}

// index turns the list into a set, for lookups during a rescan.
func (s *seenKeys) index() {
	if s.set != nil {
		return
	}
	s.set = make(map[uint64]struct{}, len(s.list)*seenChunk)
	for _, c := range s.list {
		for _, h := range c {
			s.set[h] = struct{}{}
		}
	}
	s.list = nil
}

func (s *seenKeys) has(k []byte) bool {
	_, ok := s.set[maphash.Bytes(s.seed, k)]
	return ok
}

// waitSource runs f until it succeeds, waiting out a source that is restarting or loading; it
// gives up when the source has been away longer than the budget.
func (e *run) waitSource(ctx context.Context, what string, f func() error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			e.health.ok("source")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !copier.IsBusyReply(err) && copier.IsReplyError(err) {
			return err // a real refusal (ACL, unknown command): no use waiting
		}
		if d, over := e.health.fail("source", err); over {
			return fmt.Errorf("%s: the source has not answered for %s: %s", what, d.Round(time.Second), redact.Error(err))
		}
		if !sleepCtx(ctx, backoff(attempt)) {
			return ctx.Err()
		}
	}
}

// planShard scans one shard and database and sends its batches. It watches the source's run_id
// after every step: a restarted server does not know the old SCAN cursor (continuing with it
// would skip or repeat keys at random), so the scan starts over from cursor 0 and sends only keys
// it has not sent before.
func (e *run) planShard(ctx context.Context, shard int, addr string, db int) error {
	// The node read from: the master, or its replica (--read-from-replica); its run_id is watched.
	readAddr := e.cfg.Source.ReadAddr(addr)
	scan := plan.GoRedisScan(e.cfg.Source.Node(readAddr, db))
	if !e.cfg.Copy.GoRedisOnly {
		scan = rawScan(e.cfg.Source.RawPool(readAddr, db))
	}
	sp := e.shardProgress(shard, addr, db)
	cur := plan.Cursor{Shard: shard, Addr: addr, DB: db}
	if sp != nil {
		cur.Cursor, cur.Step, cur.Done = sp.rec.Cursor, sp.rec.Step, sp.rec.Done
	}
	rid := e.srcRunIDs[addr]
	seen := newSeenKeys()
	epoch := 0
	lim := plan.Limits{MaxKeys: e.cfg.StepKeys}
	for !cur.Done {
		var bs []plan.Batch
		var next plan.Cursor
		err := e.waitSource(ctx, fmt.Sprintf("SCAN of source shard %d (%s) db %d", shard, addr, db), func() error {
			var err error
			t0 := e.paceSource(ctx, 10) // about ten SCAN calls a step
			bs, next, _, err = plan.StepWith(ctx, scan, cur, e.cfg.Plan, lim)
			e.pacedSource(t0, 10, err)
			return err
		})
		if err != nil {
			return err
		}
		var now string
		if err := e.waitSource(ctx, "INFO server", func() error {
			var err error
			now, err = e.cfg.Source.RunID(ctx, readAddr)
			return err
		}); err != nil {
			return err
		}
		restarted := rid != "" && now != rid
		var kept int64
		out := bs[:0]
		if restarted {
			seen.index()
		}
		for _, b := range bs {
			if seen.set != nil {
				// A rescan: send only keys not sent before (a restarted server still rehashing
				// the dataset it loads also returns some keys twice).
				keys := b.Keys[:0]
				for _, k := range b.Keys {
					if seen.has(k) {
						continue
					}
					seen.add(k)
					keys = append(keys, k)
				}
				b.Keys = keys
				b.ID = fmt.Sprintf("r%d-%s", epoch+1, b.ID)
			} else {
				for _, k := range b.Keys {
					seen.add(k)
				}
			}
			if len(b.Keys) == 0 {
				continue
			}
			kept += int64(len(b.Keys))
			out = append(out, b)
		}
		if restarted {
			e.note(fmt.Sprintf("source shard %d (%s) restarted during the copy (run_id changed%s): its scan started over from the beginning, and keys already sent were not sent again", shard, addr, replicaNote(addr, readAddr)))
			e.tracker.freezeShard(sp)
			e.mu.Lock()
			e.sourceRestarts++
			e.mu.Unlock()
			rid = now
			epoch++
			next = plan.Cursor{Shard: shard, Addr: addr, DB: db, Step: next.Step}
		}
		st := &step{shard: sp, n: cur.Step, end: next, scanned: kept, pending: 1 + len(out)}
		e.scanned.Add(kept)
		for _, b := range out {
			select {
			case e.queue <- job{b: b, st: st}:
				e.batches.Add(1)
			case <-ctx.Done():
				return nil
			}
		}
		e.tracker.add(st, copier.Result{}, true)
		cur = next
	}
	return nil
}

// rawScan is SCAN over the hand-written RESP path: the keys of one call are read into one buffer
// and sliced from it, rather than a string and a copy of it per key.
func rawScan(pool *resp.Pool) plan.ScanFunc {
	return func(ctx context.Context, cursor uint64, match string, count int64, typ string) ([][]byte, uint64, error) {
		cn, err := pool.Get(ctx)
		if err != nil {
			return nil, 0, err
		}
		defer pool.Put(cn)
		n := 4
		if match != "" {
			n += 2
		}
		if typ != "" {
			n += 2
		}
		cn.Array(n)
		cn.String("SCAN")
		cn.Int(int64(cursor))
		if match != "" {
			cn.String("MATCH")
			cn.String(match)
		}
		cn.String("COUNT")
		cn.Int(count)
		if typ != "" {
			cn.String("TYPE")
			cn.String(typ)
		}
		if err := cn.Flush(); err != nil {
			return nil, 0, err
		}
		bad := func() error { cn.Close(); return errors.New("redis: unexpected SCAN reply") }
		r, _, err := cn.ReadArray(nil)
		switch {
		case err != nil:
			return nil, 0, err
		case r.Err != nil:
			return nil, 0, r.Err
		case r.Type != '*' || r.Int != 2:
			return nil, 0, bad()
		}
		r, _, err = cn.Elem(nil)
		if err != nil {
			return nil, 0, err
		}
		next, perr := strconv.ParseUint(string(r.Bytes), 10, 64)
		if r.Type != '$' || perr != nil {
			return nil, 0, bad()
		}
		r, _, err = cn.ElemArray(nil)
		if err != nil {
			return nil, 0, err
		}
		if r.Type != '*' {
			return nil, 0, bad()
		}
		arena := make([]byte, 0, r.Int*24)
		keys := make([][]byte, 0, r.Int)
		for i := int64(0); i < r.Int; i++ {
			var e resp.Reply
			if e, arena, err = cn.Elem(arena); err != nil {
				return nil, 0, err
			}
			if e.Type != '$' {
				return nil, 0, bad()
			}
			keys = append(keys, e.Bytes[:len(e.Bytes):len(e.Bytes)])
		}
		return keys, next, nil
	}
}

func replicaNote(master, read string) string {
	if master == read {
		return ""
	}
	return "; read from its replica " + read
}
