package engine

import (
	"sync"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/resume"
)

// step is one plan step in flight: its batches (and the big-key batches they spawn) are pending
// until each has a result; then the step is finished and, in order, recorded in the state file.
type step struct {
	shard   *shardProgress
	n       int         // step number within the shard
	end     plan.Cursor // where the scan stands after it
	scanned int64
	mu      sync.Mutex
	pending int // batches without a result, +1 while the planner still sends
	res     copier.Result
	broken  bool // a batch did not finish (the run stopped): never recorded
}

// shardProgress is a shard's record in the state file and the steps finished out of order.
type shardProgress struct {
	rec      *resume.Shard
	finished map[int]*step
	frozen   bool // the shard's source restarted: its saved cursor stays the old process's
}

// tracker records finished steps in the state file (when there is one).
type tracker struct {
	path string
	mu   sync.Mutex
	file *resume.File
	err  error
	// frozen: the target restarted, so nothing written before is known to be there; the state
	// was reset and records nothing more in this run.
	frozen bool
}

// add folds a batch result into its step; the last one finishes the step.
func (t *tracker) add(s *step, r copier.Result, ok bool) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.res.Add(r)
	if !ok || r.Failed > 0 {
		// A step with a failed key is not recorded: a rerun copies it again (the cause may be
		// fixed by then), and the counts stay those of that rerun.
		s.broken = true
	}
	s.pending--
	done := s.pending == 0
	s.mu.Unlock()
	if done {
		t.finish(s)
	}
}

func (t *tracker) more(s *step, n int) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.pending += n
	s.mu.Unlock()
}

func (t *tracker) finish(s *step) {
	if t == nil || t.file == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	sp := s.shard
	if t.frozen || sp.frozen {
		return
	}
	sp.finished[s.n] = s
	changed := false
	for {
		next, ok := sp.finished[sp.rec.Step]
		if !ok || next.broken {
			break
		}
		delete(sp.finished, sp.rec.Step)
		sp.rec.Cursor, sp.rec.Step, sp.rec.Done = next.end.Cursor, next.end.Step, next.end.Done
		sp.rec.Scanned += next.scanned
		sp.rec.Result.Add(next.res)
		sp.rec.Result.BigKeys = nil
		changed = true
	}
	if changed {
		t.saveLocked()
	}
}

func (t *tracker) saveLocked() {
	if err := t.file.Save(t.path); err != nil && t.err == nil {
		t.err = err
	}
}

// freezeShard stops recording a shard whose source restarted: its saved cursor is the dead
// process's, so a rerun sees another run_id and starts the shard over.
func (t *tracker) freezeShard(sp *shardProgress) {
	if t == nil || t.file == nil || sp == nil {
		return
	}
	t.mu.Lock()
	sp.frozen = true
	t.mu.Unlock()
}

// targetRestarted forgets every finished step: keys written before the restart may be gone, so
// a rerun with the same state file copies everything again.
func (t *tracker) targetRestarted() {
	if t == nil || t.file == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.frozen {
		return
	}
	t.frozen = true
	for i := range t.file.Shards {
		s := &t.file.Shards[i]
		*s = resume.Shard{Shard: s.Shard, Addr: s.Addr, DB: s.DB, RunID: s.RunID}
	}
	t.saveLocked()
}
