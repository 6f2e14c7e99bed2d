package syncer

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/changefeed/notifyfeed"
	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// startPair starts a source (keyspace notifications on) and a target and a Syncer over them.
func startPair(t *testing.T, cfg Config) (*Syncer, *redis.Client, *redis.Client) {
	t.Helper()
	ctx := context.Background()
	s, d := testenv.StartRedis(t, "--notify-keyspace-events", "KA"), testenv.StartRedis(t)
	open := func(url, role string) *redisconn.Conn {
		ep, err := config.ParseEndpoint(url)
		if err != nil {
			t.Fatal(err)
		}
		c, err := redisconn.Open(ctx, ep, redisconn.Options{Role: role, LongLived: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cfg.Source, cfg.Target = open(s.URL(), "source"), open(d.URL(), "target")
	cfg.Feed = notifyfeed.New(cfg.Source, nil, notifyfeed.Options{})
	cfg.Copy = copier.Options{DBMap: config.DefaultDBMap()}
	sy := New(cfg)
	if err := sy.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sy.Close() })
	return sy, s.Client(t, 0), d.Client(t, 0)
}

// A key written 20,000 times is re-copied a handful of times, not 20,000: changes coalesce in
// the dirty set. The target ends with the last value.
func TestHotKeyCoalesces(t *testing.T) {
	ctx := context.Background()
	sy, sc, dc := startPair(t, Config{})
	if _, err := sy.WaitCaughtUp(ctx, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	// A copy reads a string with GETRANGE, any other type with DUMP.
	reads := func() int64 {
		calls := testenv.CommandCalls(ctx, sc)
		return calls["dump"] + calls["getrange"]
	}
	dumps := reads()
	const writes = 20000
	for i := 0; i < writes/200; i++ {
		p := sc.Pipeline()
		for j := 0; j < 200; j++ {
			p.Incr(ctx, "hot")
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := sy.WaitCaughtUp(wctx, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	copies := reads() - dumps
	t.Logf("%d writes of one key, %d copies", writes, copies)
	if copies == 0 || copies > writes/20 {
		t.Fatalf("%d copies (GETRANGE or DUMP) for %d writes of one key: changes did not coalesce", copies, writes)
	}
	if got := dc.Get(ctx, "hot").Val(); got != fmt.Sprint(writes) {
		t.Fatalf("target hot = %q, want %d", got, writes)
	}
}

// More changed keys than MaxPending while the appliers are held: a gap ("the dirty set is
// full"), never reported caught up while it is open; its repair pass brings the target equal.
func TestDirtySetOverflowIsAGap(t *testing.T) {
	ctx := context.Background()
	gate := make(chan struct{})
	sy, sc, dc := startPair(t, Config{MaxPending: 1000, Gate: gate})
	if err := testenv.FillBulk(ctx, sc, "k:", 3000, 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := sy.Status()
		if st.Gaps > 0 && strings.Contains(st.Shards[0].GapReason, "dirty set is full") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no gap for an overflowing dirty set: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := sy.CaughtUp(time.Time{}); ok {
		t.Fatal("caught up with a gap open")
	}
	close(gate)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := sy.WaitCaughtUp(wctx, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	if st := sy.Status(); st.Repairs == 0 || st.GapsOpen != 0 {
		t.Fatalf("caught up without a finished repair: %+v", st)
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, []*redis.Client{dc}, nil, 5)
}
