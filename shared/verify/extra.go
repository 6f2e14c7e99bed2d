package verify

import (
	"context"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/copier"
)

// scanExtras looks for keys that exist only in the target. A target db whose size equals the
// number of checked keys found there holds nothing else and is not scanned; any other is scanned
// on every master, and each key that maps back to a source name (its db's prefix, the match
// pattern) is looked up in the source: absent there, it is an extra key.
func (v *verifier) scanExtras(ctx context.Context) error {
	bySrc := map[int][]int{} // target db -> source dbs mapped into it
	for _, db := range v.o.DBMap.Sources() {
		tdb := v.o.DBMap.Target[db]
		bySrc[tdb] = append(bySrc[tdb], db)
	}
	tdbs := make([]int, 0, len(bySrc))
	for tdb := range bySrc {
		tdbs = append(tdbs, tdb)
	}
	sort.Ints(tdbs)
	for _, tdb := range tdbs {
		n, err := v.dst.DBSize(ctx, tdb)
		if err != nil {
			return readErr("target DBSIZE", err)
		}
		if n <= v.found[tdb] {
			continue
		}
		for _, addr := range v.dst.Masters() {
			if err := v.scanExtrasOn(ctx, v.dst.Node(addr, tdb), bySrc[tdb]); err != nil {
				return err
			}
		}
	}
	return nil
}

type candidate struct {
	key  string // target name
	db   int    // source db
	name string // source name
}

func (v *verifier) scanExtrasOn(ctx context.Context, node *redis.Client, srcDBs []int) error {
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, "", 1000).Result()
		if err != nil {
			return readErr("target SCAN", err)
		}
		var cands []candidate
		for _, k := range keys {
			for _, db := range srcDBs {
				p := v.o.DBMap.Prefix[db]
				if !strings.HasPrefix(k, p) {
					continue
				}
				name := k[len(p):]
				if v.o.Match != "" && !Glob(v.o.Match, name) {
					continue
				}
				cands = append(cands, candidate{k, db, name})
			}
		}
		if err := v.checkCandidates(ctx, node, cands); err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// checkCandidates looks target keys up in the source and records those found nowhere.
func (v *verifier) checkCandidates(ctx context.Context, node *redis.Client, cands []candidate) error {
	if len(cands) == 0 {
		return nil
	}
	exists := make([]*redis.IntCmd, len(cands))
	pipes := map[int]redis.Pipeliner{}
	for i, c := range cands {
		p, ok := pipes[c.db]
		if !ok {
			p = v.src.Keys(c.db).Pipeline()
			pipes[c.db] = p
		}
		exists[i] = p.Exists(ctx, c.name)
	}
	for _, p := range pipes {
		if _, err := p.Exec(ctx); err != nil {
			return readErr("source EXISTS", err)
		}
	}
	inSource := map[string]bool{}
	for i, c := range cands {
		if exists[i].Val() > 0 {
			inSource[c.key] = true
		}
	}
	var extra []string
	seen := map[string]bool{}
	for _, c := range cands {
		if !inSource[c.key] && !seen[c.key] {
			seen[c.key] = true
			extra = append(extra, c.key)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	types := make([]*redis.StatusCmd, len(extra))
	pipe := node.Pipeline()
	for i, k := range extra {
		types[i] = pipe.Type(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil && !isReplyErr(err) {
		return readErr("target TYPE", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for i, k := range extra {
		t := types[i].Val()
		if t == "none" || (v.o.Type != "" && t != v.o.Type) {
			continue // gone meanwhile, or of a type this run does not check
		}
		v.rep.Extra++
		if len(v.rep.Differences) < v.o.MaxReported {
			v.rep.Differences = append(v.rep.Differences, Difference{Key: copier.PrintableKey([]byte(k)), Kind: "extra",
				Detail: "only in the target (the source has no such key)"})
		}
	}
	return nil
}
