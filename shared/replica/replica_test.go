package replica_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/replica"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// recorder is a Handler that keeps what it saw: the snapshot's keys, the SETs of the stream
// (with their db) and the last position.
type recorder struct {
	mu        sync.Mutex
	fulls     int
	continues int
	snapKeys  map[string]int // "db/key" -> times seen (snapshots and stream together)
	last      replica.Position
	cmds      int
	lastSnap  int // keys in the last snapshot
	names     map[string]int
}

func newRecorder() *recorder {
	return &recorder{snapKeys: map[string]int{}, names: map[string]int{}}
}

func (r *recorder) FullSync(ctx context.Context, pos replica.Position, body io.Reader) error {
	rd, err := rdb.NewReader(body, rdb.Options{})
	if err != nil {
		return err
	}
	seen := map[string]int{}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if e.Kind == rdb.KindKey && e.Last {
			seen[fmt.Sprintf("%d/%s", e.DB, e.Key)]++
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fulls++
	r.lastSnap = len(seen)
	// A full sync replaces everything seen before.
	r.snapKeys = seen
	r.last = pos
	return nil
}

func (r *recorder) Continued(pos replica.Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.continues++
	r.last = pos
}

func (r *recorder) Command(db int, argv [][]byte, end replica.Position) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := strings.ToUpper(string(argv[0]))
	r.names[name]++
	if name == "SET" {
		r.snapKeys[fmt.Sprintf("%d/%s", db, argv[1])]++
	}
	if end.Offset <= r.last.Offset {
		return fmt.Errorf("offset went from %d to %d", r.last.Offset, end.Offset)
	}
	r.last = end
	r.cmds++
	return nil
}

func (r *recorder) counts() (fulls, continues, cmds int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fulls, r.continues, r.cmds
}

func (r *recorder) pos() replica.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// writer SETs unique keys w:<i> (every 5th in db 3) until stopped.
type writer struct {
	mu      sync.Mutex
	written []string
	stop    chan struct{}
	done    chan struct{}
}

func startWriter(t *testing.T, s *testenv.Server, start, max int, pause time.Duration) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	c0, c3 := s.Client(t, 0), s.Client(t, 3)
	go func() {
		defer close(w.done)
		ctx := context.Background()
		for i := start; i < start+max; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			key := "w:" + strconv.Itoa(i)
			c, db := c0, 0
			if i%5 == 0 {
				c, db = c3, 3
			}
			if err := c.Set(ctx, key, i, 0).Err(); err != nil {
				t.Errorf("writer: %v", err)
				return
			}
			w.mu.Lock()
			w.written = append(w.written, fmt.Sprintf("%d/%s", db, key))
			w.mu.Unlock()
			if pause > 0 {
				time.Sleep(pause)
			}
		}
	}()
	return w
}

// finish stops the writer and returns what it wrote.
func (w *writer) finish() []string {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	return w.wait()
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.written)
}

// wait waits until the writer has written all it was asked to.
func (w *writer) wait() []string {
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.written...)
}

func masterOffset(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "master_repl_offset:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no master_repl_offset")
	return 0
}

func infoField(t *testing.T, c *redis.Client, field string) string {
	t.Helper()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
			return v
		}
	}
	return ""
}

// waitCaughtUp waits until the recorder's offset reaches the master's.
func waitCaughtUp(t *testing.T, c *redis.Client, r *recorder, errc <-chan error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		want := masterOffset(t, c)
		if got := r.pos().Offset; got == want {
			return
		} else if got > want {
			t.Fatalf("handled offset %d is past the master's %d", got, want)
		}
		select {
		case err := <-errc:
			t.Fatalf("sync ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not caught up: handled %d, master at %d", r.pos().Offset, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func checkExactlyOnce(t *testing.T, written []string, r *recorder) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]bool{}
	for _, k := range written {
		want[k] = true
	}
	missing, dup := 0, 0
	for k := range want {
		switch n := r.snapKeys[k]; {
		case n == 0:
			missing++
			if missing < 5 {
				t.Errorf("write %s never reached the replica", k)
			}
		case n > 1:
			dup++
			if dup < 5 {
				t.Errorf("write %s seen %d times", k, n)
			}
		}
	}
	for k := range r.snapKeys {
		if !want[k] {
			t.Errorf("replica saw %s, which was never written", k)
		}
	}
	if missing+dup > 0 {
		t.Fatalf("%d writes missing, %d repeated, of %d", missing, dup, len(want))
	}
}

func startSync(ctx context.Context, cfg replica.Config, from *replica.Position, h replica.Handler) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- replica.Sync(ctx, cfg, from, h) }()
	return errc
}

func waitNoReplica(t *testing.T, c *redis.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for infoField(t, c, "connected_slaves") != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("the master still counts a replica after Sync returned")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var servers = []struct {
	name  string
	start func(t *testing.T) *testenv.Server
}{
	{"redis-diskless", func(t *testing.T) *testenv.Server {
		return testenv.StartRedis(t, "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
	}},
	{"redis-disk", func(t *testing.T) *testenv.Server {
		return testenv.StartRedis(t, "--repl-diskless-sync", "no")
	}},
	{"valkey", func(t *testing.T) *testenv.Server {
		return testenv.StartValkey(t, "--repl-diskless-sync-delay", "0")
	}},
}

// A full sync while a writer runs, then the stream: every write arrives exactly once, either
// in the snapshot or as a command, with its database; stopping closes the link.
func TestFullSyncThenStream(t *testing.T) {
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			s := sv.start(t)
			c := s.Client(t, 0)
			pre := startWriter(t, s, 0, 2000, 0)
			written := pre.wait()
			w := startWriter(t, s, 100000, 1<<30, 200*time.Microsecond)
			r := newRecorder()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			waitFor(t, func() bool { return w.count() >= 50 }, nil)
			errc := startSync(ctx, replica.Config{Addr: s.Addr}, nil, r)
			waitFor(t, func() bool { f, _, _ := r.counts(); return f == 1 }, errc)
			time.Sleep(200 * time.Millisecond)
			written = append(written, w.finish()...)
			waitCaughtUp(t, c, r, errc)
			if f, co, _ := r.counts(); f != 1 || co != 0 {
				t.Fatalf("full syncs %d, continues %d", f, co)
			}
			checkExactlyOnce(t, written, r)
			// The writer ran across the snapshot: some of its keys are in it, some came after.
			if r.lastSnap <= 2000 || r.names["SET"] == 0 {
				t.Fatalf("snapshot held %d keys, %d SETs came after: the writer did not straddle the snapshot", r.lastSnap, r.names["SET"])
			}
			t.Logf("%d keys in the snapshot, %d SETs after it", r.lastSnap, r.names["SET"])
			if r.names["SELECT"] == 0 {
				t.Errorf("no SELECT in the stream: %v", r.names)
			}
			// WAIT is answered through REPLCONF GETACK.
			if err := c.Set(ctx, "after", "1", 0).Err(); err != nil {
				t.Fatal(err)
			}
			n, err := c.Wait(ctx, 1, 10000).Result()
			if err != nil || n != 1 {
				t.Fatalf("WAIT 1: %d %v", n, err)
			}
			if infoField(t, c, "connected_slaves") != "1" {
				t.Fatalf("connected_slaves = %s", infoField(t, c, "connected_slaves"))
			}
			// REPLCONF ACK every second, unasked: after 3 idle seconds the master has heard
			// from us within the last one (lag= counts seconds since the last ACK).
			time.Sleep(3 * time.Second)
			if slave := infoField(t, c, "slave0"); !strings.Contains(slave+",", "lag=0,") && !strings.Contains(slave+",", "lag=1,") {
				t.Fatalf("no ACK within a second after idle seconds: slave0 %s", slave)
			}
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("Sync after cancel: %v", err)
			}
			waitNoReplica(t, c)
		})
	}
}

// The link killed by the master (CLIENT KILL TYPE replica) and closed by us: each resume is a
// +CONTINUE, and no write is lost or repeated.
func TestPartialResync(t *testing.T) {
	s := testenv.StartRedis(t, "--repl-diskless-sync-delay", "0")
	c := s.Client(t, 0)
	w := startWriter(t, s, 0, 1<<30, 300*time.Microsecond)
	r := newRecorder()
	cfg := replica.Config{Addr: s.Addr}

	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	errc := startSync(ctx1, cfg, nil, r)
	waitFor(t, func() bool { _, _, n := r.counts(); return n > 200 }, errc)
	if err := c.Do(context.Background(), "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil || errors.Is(err, replica.ErrRefused) {
			t.Fatalf("Sync after CLIENT KILL: %v", err)
		}
		t.Logf("link killed: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Sync did not return after CLIENT KILL")
	}

	// Resume; then close our side mid-stream and resume again.
	for round := 0; round < 2; round++ {
		pos := r.pos()
		ctx, cancel := context.WithCancel(context.Background())
		errc = startSync(ctx, cfg, &pos, r)
		_, _, before := r.counts()
		waitFor(t, func() bool { _, _, n := r.counts(); return n > before+200 }, errc)
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Sync: %v", err)
		}
	}
	pos := r.pos()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc = startSync(ctx, cfg, &pos, r)
	written := w.finish()
	// The last resume must have been answered before "caught up" means anything: when no write
	// came after the previous link's last command, the handled offset already equals the master's.
	waitFor(t, func() bool { _, co, _ := r.counts(); return co == 3 }, errc)
	waitCaughtUp(t, c, r, errc)
	if f, co, _ := r.counts(); f != 1 || co != 3 {
		t.Fatalf("full syncs %d (want 1), continues %d (want 3)", f, co)
	}
	checkExactlyOnce(t, written, r)
	cancel()
	<-errc
}

// A resume the backlog no longer covers becomes a full sync, reported as such.
func TestBacklogExceeded(t *testing.T) {
	s := testenv.StartRedis(t, "--repl-diskless-sync-delay", "0", "--repl-backlog-size", "16384")
	c := s.Client(t, 0)
	r := newRecorder()
	cfg := replica.Config{Addr: s.Addr}
	ctx, cancel := context.WithCancel(context.Background())
	errc := startSync(ctx, cfg, nil, r)
	waitFor(t, func() bool { f, _, _ := r.counts(); return f == 1 }, errc)
	cancel()
	<-errc
	waitNoReplica(t, c)
	big := strings.Repeat("x", 1000)
	for i := 0; i < 100; i++ {
		if err := c.Set(context.Background(), "big:"+strconv.Itoa(i), big, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	pos := r.pos()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	errc = startSync(ctx, cfg, &pos, r)
	waitCaughtUp(t, c, r, errc)
	if f, co, _ := r.counts(); f != 2 || co != 0 {
		t.Fatalf("full syncs %d (want 2), continues %d (want 0)", f, co)
	}
	r.mu.Lock()
	n := len(r.snapKeys)
	r.mu.Unlock()
	if n != 100 {
		t.Fatalf("second snapshot holds %d keys, want 100", n)
	}
}

// A user without the replication commands, and a server where PSYNC is renamed away, give
// ErrRefused with the server's message; a wrong password does not.
func TestRefused(t *testing.T) {
	s := testenv.StartRedis(t)
	c := s.Client(t, 0)
	if err := c.Do(context.Background(), "ACL", "SETUSER", "reader", "on", ">s3cret-pw", "~*", "+@read", "+ping").Err(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err := replica.Sync(ctx, replica.Config{Addr: s.Addr, Username: "reader", Password: "s3cret-pw"}, nil, newRecorder())
	var re *replica.RefusedError
	if !errors.Is(err, replica.ErrRefused) || !errors.As(err, &re) || !strings.Contains(re.Msg, "NOPERM") {
		t.Fatalf("ACL user: %v", err)
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("error shows the password: %v", err)
	}
	t.Logf("ACL: %v", err)

	err = replica.Sync(ctx, replica.Config{Addr: s.Addr, Username: "reader", Password: "wrong"}, nil, newRecorder())
	if err == nil || errors.Is(err, replica.ErrRefused) || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong password: %v", err)
	}

	renamed := testenv.StartRedis(t, "--rename-command", "PSYNC", "")
	err = replica.Sync(ctx, replica.Config{Addr: renamed.Addr}, nil, newRecorder())
	if !errors.Is(err, replica.ErrRefused) || !strings.Contains(strings.ToLower(err.Error()), "unknown command") {
		t.Fatalf("renamed PSYNC: %v", err)
	}
	t.Logf("renamed: %v", err)
}

// A ReadTimeout ends a link whose master went silent; a dead address fails to connect.
func TestDeadMaster(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	err = replica.Sync(context.Background(), replica.Config{Addr: addr, DialTimeout: time.Second}, nil, newRecorder())
	if err == nil || errors.Is(err, replica.ErrRefused) {
		t.Fatalf("dead address: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool, errc <-chan error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		select {
		case err := <-errc:
			t.Fatalf("sync ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TLS, and an ACL user allowed only what a replica needs (the README's advice).
func TestTLSWithReplicationUser(t *testing.T) {
	f := testenv.NewTLSFiles(t, "redis.test")
	s := testenv.StartRedisTLS(t, f, "--repl-diskless-sync-delay", "0")
	c := s.TLSClient(t, f)
	ctx := context.Background()
	if err := c.Do(ctx, "ACL", "SETUSER", "migrator", "on", ">repl-pw", "+psync", "+replconf", "+sync", "+ping").Err(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		c.Set(ctx, "k"+strconv.Itoa(i), i, 0)
	}
	r := newRecorder()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := startSync(sctx, replica.Config{Addr: s.Addr, TLS: f.ClientConfig(), Username: "migrator", Password: "repl-pw"}, nil, r)
	waitFor(t, func() bool { f, _, _ := r.counts(); return f == 1 }, errc)
	c.Set(ctx, "after", "x", 0)
	waitCaughtUp(t, c, r, errc)
	r.mu.Lock()
	n, after := r.lastSnap, r.snapKeys["0/after"]
	r.mu.Unlock()
	if n != 100 || after != 1 {
		t.Fatalf("snapshot %d keys (want 100), SET after seen %d times", n, after)
	}
	cancel()
	<-errc
}

// slowLoader takes its time after reading the snapshot, as an import into a busy target does.
type slowLoader struct {
	*recorder
	wait time.Duration
}

func (s slowLoader) FullSync(ctx context.Context, pos replica.Position, body io.Reader) error {
	err := s.recorder.FullSync(ctx, pos, body)
	time.Sleep(s.wait)
	return err
}

// A load that outlasts the master's repl-timeout after a disk-based transfer keeps the link, and
// the stream follows without a second full sync. (The replica sends newlines while loading, as a
// loading Redis replica does, for masters that time a replica out from the end of the transfer;
// Redis 7.0 itself waits for the first ACK.)
func TestSlowLoadKeepsLink(t *testing.T) {
	s := testenv.StartRedis(t, "--repl-diskless-sync", "no", "--repl-timeout", "2")
	c := s.Client(t, 0)
	c.Set(context.Background(), "k", "v", 0)
	r := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := startSync(ctx, replica.Config{Addr: s.Addr}, nil, slowLoader{r, 5 * time.Second})
	waitFor(t, func() bool { f, _, _ := r.counts(); return f == 1 }, errc)
	c.Set(context.Background(), "after", "v", 0)
	waitCaughtUp(t, c, r, errc)
	if f, co, _ := r.counts(); f != 1 || co != 0 {
		t.Fatalf("full syncs %d, continues %d", f, co)
	}
	cancel()
	<-errc
}

// EmptySnapshot: the master sends a snapshot without keys, then the stream of every write made
// after it, on disk-based and diskless masters and Valkey, and continues it after a break.
// Probe accepts a user allowed to replicate (without a snapshot being sent: the master still
// counts no replica) and refuses one that is not.
func TestEmptySnapshotAndProbe(t *testing.T) {
	ctx := context.Background()
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			s := sv.start(t)
			c := s.Client(t, 0)
			startWriter(t, s, 0, 2000, 0).wait()
			if err := replica.Probe(ctx, replica.Config{Addr: s.Addr, EmptySnapshot: true}); err != nil {
				t.Fatalf("probe: %v", err)
			}
			waitNoReplica(t, c)
			r := newRecorder()
			lctx, cancel := context.WithCancel(ctx)
			errc := startSync(lctx, replica.Config{Addr: s.Addr, EmptySnapshot: true}, nil, r)
			waitFor(t, func() bool { f, _, _ := r.counts(); return f == 1 }, errc)
			if r.lastSnap != 0 {
				t.Fatalf("the empty snapshot held %d keys", r.lastSnap)
			}
			w := startWriter(t, s, 2000, 300, 0)
			written := w.wait()
			waitCaughtUp(t, c, r, errc)
			cancel()
			<-errc
			for _, k := range written {
				if r.snapKeys[k] != 1 {
					t.Fatalf("%s seen %d times in the stream", k, r.snapKeys[k])
				}
			}
			// The next link continues where this one stopped.
			from := r.pos()
			w = startWriter(t, s, 2300, 100, 0)
			written = w.wait()
			lctx, cancel = context.WithCancel(ctx)
			defer cancel()
			errc = startSync(lctx, replica.Config{Addr: s.Addr, EmptySnapshot: true}, &from, r)
			waitCaughtUp(t, c, r, errc)
			if f, co, _ := r.counts(); f != 1 || co != 1 {
				t.Fatalf("full syncs %d, continues %d after a resume", f, co)
			}
			for _, k := range written {
				if r.snapKeys[k] != 1 {
					t.Fatalf("%s seen %d times after the resume", k, r.snapKeys[k])
				}
			}
		})
	}
	s := testenv.StartRedis(t)
	if err := s.Client(t, 0).Do(ctx, "ACL", "SETUSER", "reader", "on", ">s3cret-pw", "~*", "+@read", "+ping", "+replconf").Err(); err != nil {
		t.Fatal(err)
	}
	err := replica.Probe(ctx, replica.Config{Addr: s.Addr, Username: "reader", Password: "s3cret-pw", EmptySnapshot: true})
	var re *replica.RefusedError
	if !errors.As(err, &re) || re.Command != "PSYNC" || !strings.Contains(re.Msg, "NOPERM") || strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("probe of a user without PSYNC: %v", err)
	}
	// The default diskless master waits repl-diskless-sync-delay before its snapshot: the probe
	// answers at its first keepalive.
	t0 := time.Now()
	if err := replica.Probe(ctx, replica.Config{Addr: s.Addr}); err != nil || time.Since(t0) > 4*time.Second {
		t.Fatalf("probe of a diskless master: %v after %v", err, time.Since(t0))
	}
}
