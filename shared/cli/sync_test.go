package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// syncRun is a `redis-migrate sync` running in the test process.
type syncRun struct {
	t       *testing.T
	cutover chan struct{}
	done    chan int
	out     *syncBuffer
	errb    *syncBuffer
}

func startSync(t *testing.T, args ...string) *syncRun {
	t.Helper()
	r := &syncRun{t: t, cutover: make(chan struct{}), done: make(chan int, 1), out: &syncBuffer{}, errb: &syncBuffer{}}
	args = append([]string{"sync", "--state", t.TempDir() + "/state.json"}, args...)
	go func() {
		r.done <- Main(args, &Env{Stdout: r.out, Stderr: r.errb, Cutover: r.cutover})
	}()
	return r
}

// finish asks for the cutover and returns the exit code and the cutover summary.
func (r *syncRun) finish(timeout time.Duration) (int, cutoverResult) {
	r.t.Helper()
	close(r.cutover)
	var code int
	select {
	case code = <-r.done:
	case <-time.After(timeout):
		r.t.Fatalf("sync did not finish within %s:\n%s", timeout, r.errb.String())
	}
	r.t.Logf("sync -> %d\n%s", code, r.errb.String())
	var res cutoverResult
	// With --json the last stdout line is the summary (status lines come before it).
	out := strings.TrimSpace(r.out.String())
	if i := strings.LastIndex(out, "\n{\n"); i >= 0 {
		out = out[i+1:]
	} else if !strings.HasPrefix(out, "{\n") {
		out = ""
	}
	if out != "" {
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			r.t.Fatalf("cutover summary is not JSON: %v\n%s", err, out)
		}
	}
	return code, res
}

// waitPhase waits until the sync's stderr shows text.
func (r *syncRun) waitLog(text string, timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(r.errb.String(), text) {
			return
		}
		select {
		case code := <-r.done:
			r.t.Fatalf("sync ended (exit %d) before %q:\n%s", code, text, r.errb.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	r.t.Fatalf("no %q within %s:\n%s", text, timeout, r.errb.String())
}

type endpoint struct {
	url   string
	nodes []*redis.Client
	keys  redis.UniversalClient
}

func standalone(t *testing.T, extra ...string) endpoint {
	s := testenv.StartRedis(t, extra...)
	return endpoint{s.URL(), []*redis.Client{s.Client(t, 0)}, s.Client(t, 0)}
}

func cluster(t *testing.T, extra ...string) endpoint {
	cl := testenv.StartCluster(t, extra...)
	return endpoint{cl.URL(), testenv.ClusterMasters(ctx, t, cl.Masters[0].Addr), cl.Client(t)}
}

// The heart of online migration: a mixed write load runs during the initial copy and during
// sync (with one FLUSHDB); once it stops and sync has caught up, the target equals the source
// key by key.
func TestSyncNotifyUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name       string
		src, dst   func(*testing.T, ...string) endpoint
		keys, rate int
		flush      bool
	}{
		{"standalone-to-standalone", standalone, standalone, 20000, 4000, true},
		{"cluster-to-cluster", cluster, cluster, 20000, 4000, false},
		{"standalone-to-cluster", standalone, cluster, 20000, 4000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src(t, "--notify-keyspace-events", "KA")
			dst := tc.dst(t)
			if err := testenv.FillBulk(ctx, src.keys, "b:", tc.keys, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := testenv.FillAllTypes(ctx, src.keys, "t:"); err != nil {
				t.Fatal(err)
			}
			var flushAfter int64
			if tc.flush {
				flushAfter = int64(tc.rate * 2)
			}
			w := testenv.StartWriter(src.keys, testenv.WriterOptions{Rate: tc.rate, FlushAfter: flushAfter, Seed: 3})
			time.Sleep(300 * time.Millisecond) // writes before the copy starts, too
			r := startSync(t, "--source", src.url, "--target", dst.url, "--feed", "notify", "--json", "--verify-full")
			r.waitLog("initial copy done", 60*time.Second)
			time.Sleep(2 * time.Second)
			n := w.Stop()
			if tc.flush && !w.Flushed.Load() {
				t.Fatalf("the writer never ran its FLUSHDB (%d writes)", n)
			}
			code, res := r.finish(60 * time.Second)
			if code != 0 || !res.Matches {
				t.Fatalf("exit %d, result %+v", code, res)
			}
			if tc.flush && res.Status.Gaps == 0 {
				t.Fatalf("the FLUSHDB was not seen as a gap: %+v", res.Status)
			}
			if !tc.flush && res.Status.Applied == 0 {
				t.Fatalf("no change was applied: %+v", res.Status)
			}
			t.Logf("%d writes; applied %d keys, %d gaps, %d repairs", n, res.Status.Applied, res.Status.Gaps, res.Status.Repairs)
			time.Sleep(1200 * time.Millisecond) // keys with sub-second TTLs expire on both sides
			testenv.AssertSameData(ctx, t, src.nodes, dst.nodes, nil, 5)
		})
	}
}
