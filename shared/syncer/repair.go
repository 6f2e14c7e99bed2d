package syncer

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// repairLoop runs a repair pass over the shards with a gap, one round at a time, while capture
// and the appliers go on. A gap that arrives during a round is covered by the next round.
func (s *Syncer) repairLoop() {
	defer s.wg.Done()
	if !s.waitGate() {
		return
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.repairCh:
		}
		// A repair needs the initial copy done (its values may predate the gap).
		for !s.allInitialDone() {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		var round []*shard
		for _, sh := range s.shards {
			sh.mu.Lock()
			if sh.needRepair {
				sh.needRepair, sh.repairing = false, true
				round = append(round, sh)
			}
			sh.mu.Unlock()
		}
		if len(round) == 0 {
			continue
		}
		start := time.Now()
		fixed, err := s.repair(s.ctx, round)
		if s.ctx.Err() != nil {
			return
		}
		var names []string
		for _, sh := range round {
			names = append(names, sh.addr)
			sh.mu.Lock()
			sh.repairing = false
			if err != nil {
				sh.needRepair = true
			} else if !sh.needRepair {
				sh.gapOpen, sh.gapReason, sh.repairedAt = false, "", time.Now()
			}
			sh.mu.Unlock()
			if err == nil {
				sh.repairs.Add(1)
			}
		}
		if err != nil {
			s.cfg.Log(fmt.Sprintf("repair of %s stopped: %s; retrying", strings.Join(names, ", "), redact.Error(err)))
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		} else {
			s.cfg.Log(fmt.Sprintf("repair of %s done in %.1fs: %d keys differed and were re-copied or deleted",
				strings.Join(names, ", "), time.Since(start).Seconds(), fixed))
		}
		for _, sh := range s.shards {
			sh.mu.Lock()
			again := sh.needRepair
			sh.mu.Unlock()
			if again {
				select {
				case s.repairCh <- struct{}{}:
				default:
				}
				break
			}
		}
	}
}

func (s *Syncer) allInitialDone() bool {
	for _, sh := range s.shards {
		if !sh.initialDone.Load() {
			return false
		}
	}
	return true
}

// repair scans the round's source shards and queues every key whose type, value or expiry
// differs in the target; then it scans the target and queues every key of ours the source no
// longer has (the appliers delete it). Queued keys go through the same dirty set as changes, so
// a key is still never copied by two workers at once.
func (s *Syncer) repair(ctx context.Context, round []*shard) (int64, error) {
	var fixed int64
	dbs := s.cfg.Copy.DBMap.Sources()
	for _, sh := range round {
		for _, db := range dbs {
			node := s.cfg.Source.Node(sh.addr, db)
			cur := plan.Cursor{Addr: sh.addr, DB: db}
			for !cur.Done {
				bs, next, _, err := plan.Step(ctx, node, cur, s.cfg.Plan, plan.Limits{MaxKeys: 5000})
				if err != nil {
					return fixed, err
				}
				for _, b := range bs {
					n, err := s.repairBatch(ctx, sh.addr, db, b.Keys)
					if err != nil {
						return fixed, err
					}
					fixed += n
				}
				cur = next
			}
		}
	}
	n, err := s.repairTarget(ctx, round[0].addr)
	return fixed + n, err
}

// waitRoom keeps a repair from filling the dirty set: changes come first.
func (s *Syncer) waitRoom(ctx context.Context) error {
	for s.dirty.len() > s.cfg.MaxPending/2 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func (s *Syncer) repairBatch(ctx context.Context, addr string, db int, keys [][]byte) (int64, error) {
	if err := s.waitRoom(ctx); err != nil {
		return 0, err
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = string(k)
	}
	diff, err := DifferingKeys(ctx, s.cfg.Source, s.cfg.Target, s.cfg.Copy.DBMap, db, names, s.cfg.TTLTolerance)
	if err != nil {
		return 0, err
	}
	for _, i := range diff {
		s.repairFix.Add(1)
		s.changed(addr, db, names[i])
	}
	return int64(len(diff)), nil
}

// DifferingKeys compares keys of source db with their mapped names in the target (db map and
// prefix) and returns the positions of those whose type, value or expiry (beyond tol) differ,
// or that either side could not read. A repair pass re-copies them.
func DifferingKeys(ctx context.Context, source, target *redisconn.Conn, m config.DBMap, db int, names []string, tol time.Duration) ([]int, error) {
	tdb, ok := m.Target[db]
	if !ok {
		return nil, fmt.Errorf("source db %d is not in the db map", db)
	}
	prefix := m.Prefix[db]
	tnames := make([]string, len(names))
	for i, k := range names {
		tnames[i] = prefix + k
	}
	want, err := verify.ReadStates(ctx, source, source.Keys(db), names, 1000)
	if err != nil {
		return nil, fmt.Errorf("source: %s", redact.Error(err))
	}
	got, err := verify.ReadStates(ctx, target, target.Keys(tdb), tnames, 1000)
	if err != nil {
		return nil, fmt.Errorf("target: %s", redact.Error(err))
	}
	var out []int
	t := tol.Milliseconds()
	for i := range names {
		w, g := want[i], got[i]
		if w.Err == nil && g.Err == nil && w.Type == g.Type && w.Digest == g.Digest &&
			(w.ExpireAt == g.ExpireAt || (w.ExpireAt > 0 && g.ExpireAt > 0 && abs(w.ExpireAt-g.ExpireAt) <= t)) {
			continue
		}
		out = append(out, i)
	}
	return out, nil
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// repairTarget queues the target's keys (under the mapped names) that the source lacks.
func (s *Syncer) repairTarget(ctx context.Context, attribute string) (int64, error) {
	var fixed int64
	for _, tdb := range TargetDBs(s.cfg.Copy.DBMap) {
		for _, addr := range s.cfg.Target.Masters() {
			node := s.cfg.Target.Node(addr, tdb)
			var cursor uint64
			for {
				keys, next, err := node.Scan(ctx, cursor, "", 1000).Result()
				if err != nil {
					return fixed, fmt.Errorf("target SCAN: %s", redact.Error(err))
				}
				if err := s.waitRoom(ctx); err != nil {
					return fixed, err
				}
				gone, err := Orphans(ctx, s.cfg.Source, s.cfg.Copy.DBMap, s.cfg.Plan.Match, s.cfg.Plan.Type, tdb, keys)
				if err != nil {
					return fixed, err
				}
				for _, k := range gone {
					fixed++
					s.repairFix.Add(1)
					s.changed(s.shardOf(k.DB, string(k.Key), attribute), k.DB, string(k.Key))
				}
				if cursor = next; cursor == 0 {
					break
				}
			}
		}
	}
	return fixed, nil
}

// TargetDBs lists the target databases of a db map, in order.
func TargetDBs(m config.DBMap) []int {
	seen := map[int]bool{}
	var out []int
	for _, db := range m.Sources() {
		if t := m.Target[db]; !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	sort.Ints(out)
	return out
}

// Orphans takes key names found in target db tdb and returns, as source keys (db and name
// without the prefix), those that belong to the migration (a mapped db's prefix, match) and that
// the source no longer has (or, with typ, no longer has as that type): the target must lose them.
// A copier's scratch keys are left alone.
func Orphans(ctx context.Context, source *redisconn.Conn, m config.DBMap, match, typ string, tdb int, keys []string) ([]DirtyKey, error) {
	type origin struct {
		db     int
		prefix string
	}
	var origins []origin
	for _, db := range m.Sources() {
		if m.Target[db] == tdb {
			origins = append(origins, origin{db, m.Prefix[db]})
		}
	}
	// The longest prefix first: "a:b:" is more specific than "a:".
	sort.Slice(origins, func(i, j int) bool { return len(origins[i].prefix) > len(origins[j].prefix) })
	bySrc := map[int][]string{}
	for _, k := range keys {
		if strings.Contains(k, "}redis-migrate:tmp:") {
			continue
		}
		for _, o := range origins {
			name, ok := strings.CutPrefix(k, o.prefix)
			if !ok {
				continue
			}
			if match == "" || verify.Glob(match, name) {
				bySrc[o.db] = append(bySrc[o.db], name)
			}
			break
		}
	}
	var out []DirtyKey
	dbs := make([]int, 0, len(bySrc))
	for db := range bySrc {
		dbs = append(dbs, db)
	}
	sort.Ints(dbs)
	for _, db := range dbs {
		names := bySrc[db]
		pipe := source.Keys(db).Pipeline()
		exists := make([]*redis.IntCmd, len(names))
		types := make([]*redis.StatusCmd, len(names))
		for i, k := range names {
			if typ != "" {
				types[i] = pipe.Type(ctx, k)
			} else {
				exists[i] = pipe.Exists(ctx, k)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("source: %s", redact.Error(err))
		}
		for i, k := range names {
			here := false
			if typ != "" {
				here = types[i].Val() == typ
			} else {
				here = exists[i].Val() > 0
			}
			if !here {
				out = append(out, DirtyKey{DB: db, Key: []byte(k)})
			}
		}
	}
	return out, nil
}

// shardOf finds the source master of a key (a cluster's slot owner), or def.
func (s *Syncer) shardOf(db int, key, def string) string {
	if len(s.shards) == 1 || !s.cfg.Source.Cluster {
		return def
	}
	if cc, ok := s.cfg.Source.Keys(db).(*redis.ClusterClient); ok {
		if c, err := cc.MasterForKey(context.Background(), key); err == nil {
			if _, ok := s.index[c.Options().Addr]; ok {
				return c.Options().Addr
			}
		}
	}
	return def
}
