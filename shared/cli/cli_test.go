package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/redis-migrate/redis-migrate/shared/engine"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers (progress and summary).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

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
