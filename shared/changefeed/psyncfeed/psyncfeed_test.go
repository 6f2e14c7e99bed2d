package psyncfeed_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/changefeed"
	"github.com/redis-migrate/redis-migrate/shared/changefeed/psyncfeed"
	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// rec is the engine's side in these tests: a Sink, and a Loader that reads the snapshot's keys.
type rec struct {
	mu       sync.Mutex
	loads    int
	snap     map[string]bool // "shard db/key" of every snapshot key
	changed  map[string]int  // "db/key" -> Changed calls
	byShard  map[string]int  // Changed calls per shard
	flushed  []int
	gaps     []string
	barriers map[string][]changefeed.Position
	logs     []string
}

func newRec() *rec {
	return &rec{snap: map[string]bool{}, changed: map[string]int{}, byShard: map[string]int{}, barriers: map[string][]changefeed.Position{}}
}

func (r *rec) load(ctx context.Context, shard string, body io.Reader) error {
	rd, err := rdb.NewReader(body, rdb.Options{})
	if err != nil {
		return err
	}
	keys := map[string]bool{}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if e.Kind == rdb.KindKey && e.Last {
			keys[fmt.Sprintf("%d/%s", e.DB, e.Key)] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loads++
	for k := range keys {
		r.snap[k] = true
	}
	return nil
}

func (r *rec) Changed(shard string, db int, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changed[fmt.Sprintf("%d/%s", db, key)]++
	r.byShard[shard]++
}

func (r *rec) Flushed(shard string, db int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushed = append(r.flushed, db)
}

func (r *rec) Gap(shard, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaps = append(r.gaps, reason)
}

func (r *rec) Barrier(shard string, t time.Time, pos changefeed.Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.barriers[shard] = append(r.barriers[shard], pos)
}

func (r *rec) log(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, s)
}

func (r *rec) nBarriers(shard string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.barriers[shard])
}

// barrier asks for a barrier and waits for it on every shard.
func barrier(t *testing.T, f *psyncfeed.Feed, r *rec) {
	t.Helper()
	before := map[string]int{}
	for _, s := range f.Shards() {
		before[s] = r.nBarriers(s)
	}
	if err := f.RequestBarrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, s := range f.Shards() {
		for r.nBarriers(s) <= before[s] {
			if time.Now().After(deadline) {
				t.Fatalf("no barrier from %s", s)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func open(t *testing.T, url string) *redisconn.Conn {
	t.Helper()
	ep, err := config.ParseEndpoint(url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := redisconn.Open(context.Background(), ep, redisconn.Options{Role: "source"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func start(t *testing.T, src *redisconn.Conn, r *rec, resume map[string]changefeed.Position) *psyncfeed.Feed {
	t.Helper()
	f := psyncfeed.New(src, r.load, psyncfeed.Options{Log: r.log})
	if resume != nil {
		f.Resume(resume)
	}
	if err := f.Start(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func sortedKeys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// A scripted set of writes: every written key is reported (with its db), reads and PUBLISH
// are not, FLUSHDB is Flushed, SWAPDB a gap; all of it before the barrier that follows.
func TestChangesOfScriptedWrites(t *testing.T) {
	t.Run("redis", func(t *testing.T) { scriptedWrites(t, testenv.StartRedis(t, "--repl-diskless-sync-delay", "0")) })
	t.Run("valkey", func(t *testing.T) { scriptedWrites(t, testenv.StartValkey(t, "--repl-diskless-sync-delay", "0")) })
}

func scriptedWrites(t *testing.T, s *testenv.Server) {
	ctx := context.Background()
	c0, c2 := s.Client(t, 0), s.Client(t, 2)
	c0.Set(ctx, "before", "1", 0)
	r := newRec()
	f := start(t, open(t, s.URL()), r, nil)
	barrier(t, f, r)
	if r.loads != 1 || !r.snap["0/before"] || len(r.changed) != 0 {
		t.Fatalf("snapshot: loads %d, keys %v, changed %v", r.loads, r.snap, r.changed)
	}
	do := func(c *redis.Client, args ...any) {
		t.Helper()
		if err := c.Do(ctx, args...).Err(); err != nil && err != redis.Nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	do(c0, "SET", "a", "1")
	do(c0, "INCR", "n")
	do(c0, "DEL", "a")
	do(c0, "EXPIRE", "n", "100")
	do(c0, "PERSIST", "n")
	do(c0, "RENAME", "n", "n2")
	do(c0, "HSET", "h", "f", "v", "g", "w")
	do(c0, "HDEL", "h", "f")
	do(c0, "RPUSH", "l", "c", "b", "a")
	do(c0, "LTRIM", "l", "0", "1")
	do(c0, "ZADD", "z", "1", "m")
	do(c0, "XADD", "s", "*", "f", "v")
	do(c0, "XTRIM", "s", "MAXLEN", "0")
	do(c0, "MSET", "m1", "1", "m2", "2")
	do(c0, "SORT", "l", "ALPHA", "STORE", "sorted")
	do(c0, "ZUNIONSTORE", "zu", "1", "z")
	do(c0, "COPY", "h", "hc")
	do(c0, "LMOVE", "l", "l2", "LEFT", "RIGHT")
	do(c0, "SADD", "s1", "x")
	do(c0, "SMOVE", "s1", "s2", "x")
	do(c0, "EVAL", "redis.call('SET', KEYS[1], 'x') return 1", "1", "ev")
	do(c0, "PUBLISH", "chan", "hello")
	do(c0, "GET", "m1")
	do(c0, "SET", "mv", "1")
	do(c0, "MOVE", "mv", "1")
	do(c2, "SET", "in2", "1")
	do(c2, "FLUSHDB")
	do(c0, "SWAPDB", "3", "4")
	barrier(t, f, r)

	want := []string{"0/a", "0/n", "0/n2", "0/h", "0/l", "0/z", "0/s", "0/m1", "0/m2", "0/sorted", "0/zu",
		"0/hc", "0/l2", "0/s1", "0/s2", "0/ev", "0/mv", "1/mv", "2/in2"}
	sort.Strings(want)
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := sortedKeys(r.changed); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("changed keys:\n got %v\nwant %v", got, want)
	}
	if fmt.Sprint(r.flushed) != "[2]" {
		t.Errorf("flushed %v, want [2]", r.flushed)
	}
	if len(r.gaps) != 1 || !strings.Contains(r.gaps[0], "SWAPDB 3 4") {
		t.Errorf("gaps %q, want one for SWAPDB", r.gaps)
	}
	if r.loads != 1 {
		t.Errorf("%d snapshots", r.loads)
	}
}

// writer SETs unique keys until stopped.
func writeKeys(t *testing.T, c redis.UniversalClient, prefix string, stop <-chan struct{}, max int) []string {
	var out []string
	for i := 0; i < max; i++ {
		select {
		case <-stop:
			return out
		default:
		}
		k := prefix + strconv.Itoa(i)
		if err := c.Set(context.Background(), k, i, 0).Err(); err != nil {
			t.Errorf("writer: %v", err)
			return out
		}
		out = append(out, "0/"+k)
		time.Sleep(200 * time.Microsecond)
	}
	return out
}

func checkAllSeen(t *testing.T, r *rec, written []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	missing := 0
	for _, k := range written {
		if !r.snap[k] && r.changed[k] == 0 {
			missing++
			if missing < 5 {
				t.Errorf("write %s not seen", k)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d writes not seen", missing, len(written))
	}
}

// The link killed by the master twice while a writer runs: the feed continues each time
// (+CONTINUE), reports no gap, loads one snapshot, and misses no write.
func TestLinkKilledContinues(t *testing.T) {
	s := testenv.StartRedis(t, "--repl-diskless-sync-delay", "0")
	c := s.Client(t, 0)
	r := newRec()
	stop := make(chan struct{})
	done := make(chan []string)
	go func() { done <- writeKeys(t, c, "w:", stop, 1<<30) }()
	f := start(t, open(t, s.URL()), r, nil)
	for i := 0; i < 2; i++ {
		time.Sleep(300 * time.Millisecond)
		waitOnline(t, c)
		if err := c.Do(context.Background(), "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	written := <-done
	barrier(t, f, r)
	checkAllSeen(t, r, written)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.gaps) != 0 || r.loads != 1 {
		t.Fatalf("gaps %q, snapshots %d: want none and 1", r.gaps, r.loads)
	}
	reconnects := 0
	for _, l := range r.logs {
		if strings.Contains(l, "reconnecting") {
			reconnects++
		}
	}
	if reconnects < 2 {
		t.Fatalf("the link was not broken twice: %q", r.logs)
	}
}

// A break the backlog cannot cover: the feed reports a gap and loads a new snapshot that holds
// the writes made meanwhile.
func TestBacklogExceededIsAGap(t *testing.T) {
	s := testenv.StartRedis(t, "--repl-diskless-sync-delay", "0", "--repl-backlog-size", "16384")
	c := s.Client(t, 0)
	r := newRec()
	f := start(t, open(t, s.URL()), r, nil)
	barrier(t, f, r)
	// Kill the link and write 100 kB before the feed can reconnect: one pipeline.
	pipe := c.Pipeline()
	pipe.Do(context.Background(), "CLIENT", "KILL", "TYPE", "replica")
	big := strings.Repeat("x", 1000)
	var written []string
	for i := 0; i < 100; i++ {
		pipe.Set(context.Background(), "big:"+strconv.Itoa(i), big, 0)
		written = append(written, "0/big:"+strconv.Itoa(i))
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.mu.Lock()
		loads := r.loads
		r.mu.Unlock()
		if loads == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no second snapshot: %q", r.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	barrier(t, f, r)
	checkAllSeen(t, r, written)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.gaps) != 1 || !strings.Contains(r.gaps[0], "full resynchronisation") {
		t.Fatalf("gaps %q, want one full resynchronisation", r.gaps)
	}
}

// A position saved from a barrier resumes a new feed with +CONTINUE: no snapshot, no gap, the
// writes made while no feed ran are reported. A position the master no longer holds is a gap.
func TestResumeFromBarrierPosition(t *testing.T) {
	s := testenv.StartRedis(t, "--repl-diskless-sync-delay", "0", "--repl-backlog-size", "16384")
	c := s.Client(t, 0)
	src := open(t, s.URL())
	r := newRec()
	f := start(t, src, r, nil)
	c.Set(context.Background(), "k1", "1", 0)
	barrier(t, f, r)
	r.mu.Lock()
	saved := map[string]changefeed.Position{}
	for shard, ps := range r.barriers {
		saved[shard] = ps[len(ps)-1]
	}
	r.mu.Unlock()
	if _, err := psyncfeed.DecodePosition(saved[s.Addr]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c.Set(context.Background(), "k2", "1", 0)

	r2 := newRec()
	f2 := start(t, src, r2, saved)
	barrier(t, f2, r2)
	r2.mu.Lock()
	if r2.loads != 0 || len(r2.gaps) != 0 || r2.changed["0/k2"] != 1 || r2.changed["0/k1"] != 0 {
		t.Fatalf("resume: snapshots %d, gaps %q, changed %v", r2.loads, r2.gaps, r2.changed)
	}
	r2.mu.Unlock()
	pos2 := f2.Positions()
	f2.Close()

	// Now more than the backlog is written while no feed runs.
	big := strings.Repeat("y", 1000)
	for i := 0; i < 50; i++ {
		c.Set(context.Background(), "big:"+strconv.Itoa(i), big, 0)
	}
	r3 := newRec()
	f3 := start(t, src, r3, pos2)
	barrier(t, f3, r3)
	r3.mu.Lock()
	defer r3.mu.Unlock()
	if r3.loads != 1 || len(r3.gaps) != 1 || !strings.Contains(r3.gaps[0], "saved replication position") || !r3.snap["0/big:49"] {
		t.Fatalf("stale resume: snapshots %d, gaps %q", r3.loads, r3.gaps)
	}
}

// A cluster of 3 masters: one link each; every key is reported by the master that owns it.
func TestCluster(t *testing.T) {
	cl := testenv.StartCluster(t)
	cc := cl.Client(t)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		cc.Set(ctx, "pre:"+strconv.Itoa(i), i, 0)
	}
	src := open(t, cl.URL())
	if len(src.Masters()) != 3 {
		t.Fatalf("masters %v", src.Masters())
	}
	r := newRec()
	f := start(t, src, r, nil)
	var written []string
	for i := 0; i < 300; i++ {
		k := "k:" + strconv.Itoa(i)
		if err := cc.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		written = append(written, "0/"+k)
	}
	barrier(t, f, r)
	for i := 0; i < 100; i++ {
		written = append(written, "0/pre:"+strconv.Itoa(i))
	}
	checkAllSeen(t, r, written)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.loads != 3 || len(r.byShard) != 3 || len(r.gaps) != 0 {
		t.Fatalf("snapshots %d, shards reporting %v, gaps %q", r.loads, r.byShard, r.gaps)
	}
	for k, n := range r.changed {
		if n != 1 {
			t.Errorf("%s reported %d times", k, n)
		}
	}
}

// A user without the replication commands: Start refuses with a changefeed.RefusedError that
// names what is missing and never the password.
func TestRefused(t *testing.T) {
	s := testenv.StartRedis(t)
	c := s.Client(t, 0)
	if err := c.Do(context.Background(), "ACL", "SETUSER", "reader", "on", ">s3cret-pw", "~*", "+@read", "+ping", "+info", "+command").Err(); err != nil {
		t.Fatal(err)
	}
	src := open(t, "redis://reader:s3cret-pw@"+s.Addr)
	f := psyncfeed.New(src, newRec().load, psyncfeed.Options{})
	err := f.Start(context.Background(), newRec())
	var re *changefeed.RefusedError
	if !errors.As(err, &re) || re.Feed != "psync" || !strings.Contains(err.Error(), "+psync") || strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("Start: %v", err)
	}
	t.Log(err)
	f.Close()
	src.Close()
	time.Sleep(100 * time.Millisecond)
	if n := infoClients(t, c); n != 1 {
		t.Fatalf("%d clients connected after the refusal, want only the test's", n)
	}
}

func infoClients(t *testing.T, c *redis.Client) int {
	info, err := c.Info(context.Background(), "clients").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "connected_clients:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return -1
}

// waitOnline waits until the master has one replica online (the feed's link is back).
func waitOnline(t *testing.T, c *redis.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := c.Info(context.Background(), "replication").Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the feed's link is not back: %s", info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// NoSnapshot (the function app's SCAN copy does the data): the loader is never called, every
// write after Start is reported, Links tells the position and the master's offset, and a feed
// resumed from that position continues (+CONTINUE) and counts it. Check accepts the default
// user and refuses one without PSYNC as Start would, without a replica being left behind.
func TestNoSnapshotAndCheck(t *testing.T) {
	ctx := context.Background()
	s := testenv.StartRedis(t, "--repl-diskless-sync-delay", "0")
	c := s.Client(t, 0)
	for i := 0; i < 500; i++ {
		c.Set(ctx, "pre:"+strconv.Itoa(i), "v", 0)
	}
	src := open(t, s.URL())
	noLoad := func(context.Context, string, io.Reader) error { return errors.New("the loader was called") }
	if err := psyncfeed.New(src, noLoad, psyncfeed.Options{NoSnapshot: true}).Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	r := newRec()
	f := psyncfeed.New(src, noLoad, psyncfeed.Options{NoSnapshot: true, Log: r.log})
	if changefeed.Snapshots(f) {
		t.Fatal("a NoSnapshot feed says it delivers the snapshot")
	}
	if err := f.Start(ctx, r); err != nil {
		t.Fatal(err)
	}
	c.Set(ctx, "k1", "1", 0)
	barrier(t, f, r)
	ls := f.Links()
	if len(ls) != 1 || ls[0].Position == nil || ls[0].FullSyncs != 1 || ls[0].Continues != 0 || ls[0].MasterOffset < 0 || ls[0].Position.Offset < ls[0].MasterOffset {
		t.Fatalf("links: %+v", ls)
	}
	r.mu.Lock()
	if len(r.gaps) != 0 || r.changed["0/k1"] != 1 || r.changed["0/pre:1"] != 0 {
		t.Fatalf("gaps %q, changed %v", r.gaps, r.changed)
	}
	r.mu.Unlock()
	saved := f.Positions()
	f.Close()
	c.Set(ctx, "k2", "1", 0)
	r2 := newRec()
	f2 := psyncfeed.New(src, noLoad, psyncfeed.Options{NoSnapshot: true})
	f2.Resume(saved)
	if err := f2.Start(ctx, r2); err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	barrier(t, f2, r2)
	if ls := f2.Links(); ls[0].Continues != 1 || ls[0].FullSyncs != 0 || !ls[0].Resumed {
		t.Fatalf("resumed links: %+v", ls)
	}
	r2.mu.Lock()
	if len(r2.gaps) != 0 || r2.changed["0/k2"] != 1 {
		t.Fatalf("resume: gaps %q, changed %v", r2.gaps, r2.changed)
	}
	r2.mu.Unlock()

	if err := c.Do(ctx, "ACL", "SETUSER", "reader", "on", ">s3cret-pw", "~*", "+@read", "+ping", "+info", "+command", "+replconf").Err(); err != nil {
		t.Fatal(err)
	}
	ro := open(t, "redis://reader:s3cret-pw@"+s.Addr)
	err := psyncfeed.New(ro, noLoad, psyncfeed.Options{NoSnapshot: true}).Check(ctx)
	var re *changefeed.RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "+psync") || strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("Check of a user without PSYNC: %v", err)
	}
}

// ResumeOverlaps (a function-app handover: the predecessor captures until this feed runs): a
// stale position answered by a full resynchronisation is no gap. A full resynchronisation after
// a broken link is one, also on a feed whose first PSYNC was continued.
func TestResumeOverlapsAndLaterResync(t *testing.T) {
	ctx := context.Background()
	s := testenv.StartRedis(t, "--repl-diskless-sync-delay", "0", "--repl-backlog-size", "16384")
	c := s.Client(t, 0)
	src := open(t, s.URL())
	noLoad := func(context.Context, string, io.Reader) error { return errors.New("the loader was called") }
	big := strings.Repeat("z", 1000)
	overflow := func(kill bool) {
		pipe := c.Pipeline()
		if kill {
			pipe.Do(ctx, "CLIENT", "KILL", "TYPE", "replica")
		}
		for i := 0; i < 100; i++ {
			pipe.Set(ctx, "big:"+strconv.Itoa(i), big, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r := newRec()
	f := psyncfeed.New(src, noLoad, psyncfeed.Options{NoSnapshot: true})
	if err := f.Start(ctx, r); err != nil {
		t.Fatal(err)
	}
	barrier(t, f, r)
	saved := f.Positions()
	f.Close()
	overflow(false)

	r2 := newRec()
	f2 := psyncfeed.New(src, noLoad, psyncfeed.Options{NoSnapshot: true, ResumeOverlaps: true})
	f2.Resume(saved)
	if err := f2.Start(ctx, r2); err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	c.Set(ctx, "k3", "1", 0)
	barrier(t, f2, r2)
	r2.mu.Lock()
	if len(r2.gaps) != 0 || r2.changed["0/k3"] != 1 {
		t.Fatalf("overlapping resume: gaps %q, changed %v", r2.gaps, r2.changed)
	}
	r2.mu.Unlock()
	if ls := f2.Links(); ls[0].FullSyncs != 1 || ls[0].Continues != 0 {
		t.Fatalf("links: %+v", ls)
	}
	pos := f2.Positions()
	f2.Close()

	// A feed whose saved position is continued, then loses its link beyond the backlog.
	r3 := newRec()
	f3 := psyncfeed.New(src, noLoad, psyncfeed.Options{NoSnapshot: true, ResumeOverlaps: true})
	f3.Resume(pos)
	if err := f3.Start(ctx, r3); err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	barrier(t, f3, r3)
	overflow(true)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r3.mu.Lock()
		n := len(r3.gaps)
		r3.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no gap after a broken link beyond the backlog: links %+v", f3.Links())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ls := f3.Links(); ls[0].Continues != 1 || ls[0].FullSyncs != 1 {
		t.Fatalf("links: %+v", ls)
	}
	r3.mu.Lock()
	defer r3.mu.Unlock()
	if !strings.Contains(r3.gaps[0], "full resynchronisation") {
		t.Fatalf("gaps %q", r3.gaps)
	}
}
