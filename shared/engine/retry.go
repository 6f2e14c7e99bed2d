package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// health tracks how long each server has been failing without a single success in between. A
// server that comes back (a restart, a failover, the end of LOADING) is waited for; one that stays
// away longer than the budget stops the run, instead of every remaining batch waiting in turn.
type health struct {
	budget time.Duration
	mu     sync.Mutex
	since  map[string]time.Time // side -> first failure of the current outage
	last   map[string]error
}

func newHealth(budget time.Duration) *health {
	return &health{budget: budget, since: map[string]time.Time{}, last: map[string]error{}}
}

func (h *health) ok(side string) {
	h.mu.Lock()
	delete(h.since, side)
	delete(h.last, side)
	h.mu.Unlock()
}

// fail records a failure and says whether the outage has outlasted the budget.
func (h *health) fail(side string, err error) (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.since[side]
	if !ok {
		t = time.Now()
		h.since[side] = t
	}
	h.last[side] = err
	d := time.Since(t)
	return d, d > h.budget
}

// backoff is the wait before retry number attempt (1, 2, ...): 100 ms doubling up to 5 s.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt-1, 6)
	return min(d, 5*time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// errStopped marks a run stopped because a server stayed away.
type errStopped struct{ msg string }

func (e errStopped) Error() string { return e.msg }

// copyWithRetry copies a batch, waiting out servers that are restarting, loading, busy or failing
// over: a batch whose attempt failed on a server is retried whole (the retry copier treats the
// keys an earlier attempt wrote as its own). Only a server that stays away longer than the budget
// ends the wait; then the run stops (stop is called) and the batch's keys are reported with the
// server's last error. ok is false when the run is stopping and the result must not be recorded
// as a finished step.
func (e *run) copyWithRetry(ctx context.Context, b plan.Batch) (copier.Result, bool) {
	var last error
	for attempt := 0; ; attempt++ {
		cp := e.cps[min(attempt, 1)]
		if e.resumed {
			cp = e.cps[1]
		}
		r, err := cp.Copy(ctx, b)
		if err == nil {
			e.health.ok("source")
			e.health.ok("target")
			return r, true
		}
		last = err
		if ctx.Err() != nil {
			break
		}
		var se *copier.ServerError
		if !errors.As(err, &se) {
			if attempt+1 >= e.cfg.BatchAttempts {
				break
			}
		} else {
			side := se.Side
			if side == "" {
				side = "server"
			}
			if d, over := e.health.fail(side, err); over {
				e.stop(fmt.Sprintf("the %s has not answered for %s (last error: %s); stopped", side, d.Round(time.Second), redact.Error(err)))
				break
			}
			e.waited(side, err)
		}
		if !sleepCtx(ctx, backoff(attempt+1)) {
			break
		}
	}
	reason := redact.Error(last)
	if ctx.Err() != nil && !errors.Is(last, context.Canceled) {
		reason += " (the run stopped before this batch could be retried)"
	}
	return FailBatch(b, fmt.Sprintf("batch %s: %s", b.ID, reason)), ctx.Err() == nil
}

// waited counts a batch attempt the side could not serve and that is tried again, for the summary.
func (e *run) waited(side string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.waits == nil {
		e.waits = map[string]serverWait{}
	}
	w := e.waits[side]
	e.waits[side] = serverWait{n: w.n + 1, last: redact.Error(err)}
}
