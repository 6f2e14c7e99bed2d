// Command demo is `make demo`: it starts two local redis-servers, fills the source with a mixed
// sample dataset (every type, TTLs, binary names), copies it with the real CLI, verifies the
// target key by key against the source, prints the outcome and stops the servers.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/cli"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

func main() {
	r := &testenv.Runner{}
	defer r.Close()
	ctx := context.Background()
	say := func(format string, args ...any) { fmt.Printf("demo: "+format+"\n", args...) }

	src, dst := testenv.StartRedis(r), testenv.StartRedis(r)
	say("source redis-server on %s, target on %s", src.Addr, dst.Addr)
	sc := src.Client(r, 0)
	n, err := testenv.FillAllTypes(ctx, sc, "demo:")
	if err != nil {
		r.Fatalf("fill: %v", err)
	}
	if err := testenv.FillBulk(ctx, sc, "demo:", 50000, 42); err != nil {
		r.Fatalf("fill: %v", err)
	}
	say("source filled: %d keys (strings, lists, sets, hashes, zsets, a stream with consumer groups, HLL, bitmap; 20%% with TTLs)", n+50000)

	args := []string{"copy", "--source", src.URL(), "--target", dst.URL()}
	say("running: redis-migrate %s %s %s %s %s", args[0], args[1], args[2], args[3], args[4])
	code := cli.Main(args, &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr})
	if code != 0 {
		r.Fatalf("copy exited %d", code)
	}

	say("running: redis-migrate verify --full (every key: type, value and TTL; DUMP payloads compared, decoded where they differ)")
	if code := cli.Main([]string{"verify", "--source", src.URL(), "--target", dst.URL(), "--full"}, &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr}); code != 0 {
		r.Fatalf("verify exited %d", code)
	}
	start := time.Now()
	testenv.AssertSameData(ctx, r, []*redis.Client{sc}, []*redis.Client{dst.Client(r, 0)}, nil, 1)
	a, _ := sc.Do(ctx, "DEBUG", "DIGEST").Text()
	b, _ := dst.Client(r, 0).Do(ctx, "DEBUG", "DIGEST").Text()
	if a != b {
		r.Fatalf("DEBUG DIGEST differs: %s vs %s", a, b)
	}
	say("independent check with DEBUG DIGEST-VALUE per key in %.1fs: target identical to source (DEBUG DIGEST %s)", time.Since(start).Seconds(), a[:12])
	runFunctionAppDemo(ctx, r, say, src, sc)
	say("done; servers stopped")
}

// runFunctionAppDemo runs the same migration through the function app: the local host harness
// serves the functions over HTTP, queues stand in for Service Bus, Azurite holds the state.
func runFunctionAppDemo(ctx context.Context, r *testenv.Runner, say func(string, ...any), src *testenv.Server, sc *redis.Client) {
	az := testenv.StartAzurite(r)
	dst := testenv.StartRedis(r)
	say("function app: Azurite on port %d, new empty target on %s; POST /api/migrations, then polling status", az.Port, dst.Addr)
	start := time.Now()
	st, err := functions.RunDemo(ctx, functions.DemoOptions{SourceURL: src.URL(), TargetURL: dst.URL(), Storage: az.ConnectionString})
	if err != nil {
		r.Fatalf("function app: %v", err)
	}
	say("function app: migration %s %s in %.1fs: %d keys copied, %d failed, %d batches",
		st.ID, st.State, time.Since(start).Seconds(), st.Keys.Copied, st.Keys.Failed, st.Batches.Done)
	if st.State != "completed" {
		r.Fatalf("function app migration ended %s", st.State)
	}
	testenv.AssertSameData(ctx, r, []*redis.Client{sc}, []*redis.Client{dst.Client(r, 0)}, nil, 1)
	say("function app: verified key by key: target identical to source")
}
