package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

type syncBuffer = testenv.SyncBuffer

// run executes the command line as a user would and returns exit code, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb syncBuffer
	code := Main(args, &Env{Stdout: &out, Stderr: &errb})
	t.Logf("redis-migrate %s -> %d\n%s", strings.Join(args, " "), code, errb.String())
	return code, out.String(), errb.String()
}

// runJSON runs a command with --json and decodes the summary.
func runJSON(t *testing.T, args ...string) (int, engine.Summary, string) {
	t.Helper()
	code, out, errs := run(t, append(args, "--json")...)
	var s engine.Summary
	if out != "" {
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("summary is not JSON: %v\n%s", err, out)
		}
	}
	return code, s, errs
}

var ctx = context.Background()
