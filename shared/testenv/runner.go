package testenv

import (
	"fmt"
	"os"
	"sync"
)

// Runner lets commands (make demo, make bench) use the same helpers as tests: it collects
// cleanups and stops the process on a fatal error after running them.
type Runner struct {
	mu       sync.Mutex
	cleanups []func()
	dirs     []string
}

func (r *Runner) Helper() {}

func (r *Runner) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func (r *Runner) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
	r.Close()
	os.Exit(1)
}

func (r *Runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *Runner) TempDir() string {
	d, err := os.MkdirTemp("", "redis-migrate-")
	if err != nil {
		r.Fatalf("temp dir: %v", err)
	}
	r.mu.Lock()
	r.dirs = append(r.dirs, d)
	r.mu.Unlock()
	return d
}

// Close runs the cleanups in reverse order and removes the temporary directories.
func (r *Runner) Close() {
	r.mu.Lock()
	cs, ds := r.cleanups, r.dirs
	r.cleanups, r.dirs = nil, nil
	r.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	for _, d := range ds {
		_ = os.RemoveAll(d)
	}
}
