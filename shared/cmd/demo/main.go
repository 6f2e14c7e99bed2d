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

	start := time.Now()
	testenv.AssertSameData(ctx, r, []*redis.Client{sc}, []*redis.Client{dst.Client(r, 0)}, nil, 1)
	a, _ := sc.Do(ctx, "DEBUG", "DIGEST").Text()
	b, _ := dst.Client(r, 0).Do(ctx, "DEBUG", "DIGEST").Text()
	if a != b {
		r.Fatalf("DEBUG DIGEST differs: %s vs %s", a, b)
	}
	say("verified key by key (type, value digest, TTL) in %.1fs: target identical to source (DEBUG DIGEST %s)", time.Since(start).Seconds(), a[:12])
	runFunctionAppDemo(ctx, r, say)
	say("done; servers stopped")
}

// runFunctionAppDemo is replaced when the function app's local harness is linked in.
var runFunctionAppDemo = func(context.Context, *testenv.Runner, func(string, ...any)) {}
