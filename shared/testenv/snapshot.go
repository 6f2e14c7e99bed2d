package testenv

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// KeyState is what a user cares about for one key: its type, a digest of its value (DEBUG
// DIGEST-VALUE, which is encoding-independent) and its absolute expiry in ms (-1 = none).
type KeyState struct {
	Type     string
	Digest   string
	ExpireAt int64
}

// Snapshot reads the full state of database db on the given nodes (one node for a standalone
// server, every master of a cluster), key by key. Key names are mapped through rename if non-nil.
func Snapshot(ctx context.Context, nodes []*redis.Client, rename func(string) string) (map[string]KeyState, error) {
	out := map[string]KeyState{}
	for _, node := range nodes {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, "*", 1000).Result()
			if err != nil {
				return nil, err
			}
			if len(keys) > 0 {
				pipe := node.Pipeline()
				types := make([]*redis.StatusCmd, len(keys))
				digests := make([]*redis.Cmd, len(keys))
				exps := make([]*redis.DurationCmd, len(keys))
				for i, k := range keys {
					types[i] = pipe.Type(ctx, k)
					digests[i] = pipe.Do(ctx, "DEBUG", "DIGEST-VALUE", k)
					exps[i] = pipe.PExpireTime(ctx, k)
				}
				if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
					return nil, err
				}
				for i, k := range keys {
					if types[i].Val() == "none" {
						continue // expired or deleted while we looked
					}
					d, _ := digests[i].Slice()
					exp := exps[i].Val()
					st := KeyState{Type: types[i].Val(), Digest: fmt.Sprint(d), ExpireAt: int64(exp / 1e6)}
					if exp < 0 {
						st.ExpireAt = -1
					}
					name := k
					if rename != nil {
						name = rename(k)
					}
					out[name] = st
				}
			}
			cursor = next
			if cursor == 0 {
				break
			}
		}
	}
	return out, nil
}

// DiffSnapshots lists the differences between want and got; ttlTolerance is in ms.
func DiffSnapshots(want, got map[string]KeyState, ttlToleranceMs int64) []string {
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %q", k))
		case g.Type != w.Type:
			diffs = append(diffs, fmt.Sprintf("type %q: want %s got %s", k, w.Type, g.Type))
		case g.Digest != w.Digest:
			diffs = append(diffs, fmt.Sprintf("value %q differs", k))
		case (w.ExpireAt < 0) != (g.ExpireAt < 0) || abs(w.ExpireAt-g.ExpireAt) > ttlToleranceMs:
			diffs = append(diffs, fmt.Sprintf("ttl %q: want %d got %d", k, w.ExpireAt, g.ExpireAt))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %q", k))
		}
	}
	sort.Strings(diffs)
	return diffs
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// ClusterMasters returns a client per master of the cluster that addr belongs to.
func ClusterMasters(ctx context.Context, t TB, addr string) []*redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	nodes, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		t.Fatalf("cluster nodes: %v", err)
	}
	var out []*redis.Client
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.Contains(f[2], "master") {
			continue
		}
		a := strings.SplitN(f[1], "@", 2)[0]
		mc := redis.NewClient(&redis.Options{Addr: a, ReadTimeout: 2 * time.Minute})
		t.Cleanup(func() { mc.Close() })
		out = append(out, mc)
	}
	return out
}

// AssertSameData fails the test unless the two node sets hold exactly the same keys, values and
// TTLs (within ttlToleranceMs).
func AssertSameData(ctx context.Context, t TB, src, dst []*redis.Client, rename func(string) string, ttlToleranceMs int64) {
	t.Helper()
	want, err := Snapshot(ctx, src, rename)
	if err != nil {
		t.Fatalf("snapshot source: %v", err)
	}
	got, err := Snapshot(ctx, dst, nil)
	if err != nil {
		t.Fatalf("snapshot target: %v", err)
	}
	if d := DiffSnapshots(want, got, ttlToleranceMs); len(d) > 0 {
		if len(d) > 20 {
			d = append(d[:20], fmt.Sprintf("... and %d more", len(d)-20))
		}
		t.Fatalf("target differs from source (%d source keys, %d target keys):\n%s", len(want), len(got), strings.Join(d, "\n"))
	}
	if len(want) == 0 {
		t.Logf("note: compared two empty datasets")
	}
}
