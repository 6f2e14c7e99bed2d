package syncer

import (
	"sync"
)

// dkey names a source key: its database and (binary-safe) name.
type dkey struct {
	db  int
	key string
}

// entry is a dirty key. epoch is the oldest barrier epoch of a change not yet applied to it;
// again is set when the key changed while a worker was copying it (againEpoch: that change's).
type entry struct {
	shard      int
	epoch      int64
	inFlight   bool
	again      bool
	againEpoch int64
}

// shardBook counts, per barrier epoch, the dirty keys of one shard still waiting for a copy that
// started after their change. A barrier that ended epoch E is applied once no epoch <= E is open.
type shardBook struct {
	epoch    int64            // current epoch: changes now are tagged with it
	open     map[int64]int    // epoch -> keys not yet applied
	barriers []pendingBarrier // barriers not yet applied, oldest first
}

type pendingBarrier struct {
	epoch int64
	b     barrier
}

// dirtySet coalesces changed keys: a key is queued once however often it changes, is handed to
// one worker at a time, and is queued again if it changes while being copied.
type dirtySet struct {
	mu     sync.Mutex
	cond   *sync.Cond
	max    int
	items  map[dkey]*entry
	queue  []dkey // FIFO of keys waiting (may hold keys already taken: skipped)
	books  []shardBook
	closed bool
}

func newDirtySet(shards, max int) *dirtySet {
	d := &dirtySet{max: max, items: map[dkey]*entry{}, books: make([]shardBook, shards)}
	for i := range d.books {
		d.books[i].open = map[int64]int{}
	}
	d.cond = sync.NewCond(&d.mu)
	return d
}

// mark records a change; it returns false when the set is full (the caller opens a gap).
func (d *dirtySet) mark(shard int, k dkey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := &d.books[shard]
	if e, ok := d.items[k]; ok {
		if e.inFlight && !e.again {
			eb := &d.books[e.shard]
			e.again, e.againEpoch = true, eb.epoch
			eb.open[eb.epoch]++
		}
		return true
	}
	if len(d.items) >= d.max {
		return false
	}
	d.items[k] = &entry{shard: shard, epoch: b.epoch}
	b.open[b.epoch]++
	d.queue = append(d.queue, k)
	d.cond.Signal()
	return true
}

// take waits for up to n queued keys and marks them in flight; nil when closed.
func (d *dirtySet) take(n int) []dkey {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		if d.closed {
			return nil
		}
		var out []dkey
		for len(d.queue) > 0 && len(out) < n {
			k := d.queue[0]
			d.queue = d.queue[1:]
			e, ok := d.items[k]
			if !ok || e.inFlight {
				continue
			}
			e.inFlight = true
			out = append(out, k)
		}
		if len(d.queue) == 0 && cap(d.queue) > 1024 {
			d.queue = nil // let a burst's backing array go
		}
		if len(out) > 0 {
			return out
		}
		d.cond.Wait()
	}
}

// done finishes a worker's copy of keys: a key changed meanwhile is queued again.
func (d *dirtySet) done(keys []dkey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range keys {
		e, ok := d.items[k]
		if !ok {
			continue
		}
		b := &d.books[e.shard]
		b.close(e.epoch)
		if e.again {
			e.epoch, e.again, e.inFlight = e.againEpoch, false, false
			d.queue = append(d.queue, k)
			d.cond.Signal()
			continue
		}
		delete(d.items, k)
	}
}

// requeue gives keys back untouched (the copy could not run); they stay counted.
func (d *dirtySet) requeue(keys []dkey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range keys {
		e, ok := d.items[k]
		if !ok {
			continue
		}
		if e.again {
			d.books[e.shard].close(e.againEpoch)
			e.again = false
		}
		e.inFlight = false
		d.queue = append(d.queue, k)
	}
	d.cond.Broadcast()
}

func (b *shardBook) close(epoch int64) {
	if b.open[epoch]--; b.open[epoch] <= 0 {
		delete(b.open, epoch)
	}
}

// barrier records that every change of shard before t has been marked; it ends the epoch.
func (d *dirtySet) barrier(shard int, br barrier) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := &d.books[shard]
	b.barriers = append(b.barriers, pendingBarrier{b.epoch, br})
	b.epoch++
}

// applied returns the newest barrier of shard whose changes are all in the target, and drops
// older ones.
func (d *dirtySet) applied(shard int) (barrier, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := &d.books[shard]
	minOpen := b.epoch
	for e := range b.open {
		if e < minOpen {
			minOpen = e
		}
	}
	var last barrier
	found := false
	i := 0
	for ; i < len(b.barriers) && b.barriers[i].epoch < minOpen; i++ {
		last, found = b.barriers[i].b, true
	}
	b.barriers = b.barriers[i:]
	return last, found
}

func (d *dirtySet) size() (pending int, perShard []int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	perShard = make([]int, len(d.books))
	for _, e := range d.items {
		perShard[e.shard]++
	}
	return len(d.items), perShard
}

func (d *dirtySet) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.items)
}

// snapshot lists the keys not yet applied (for a checkpoint).
func (d *dirtySet) snapshot() []DirtyKey {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]DirtyKey, 0, len(d.items))
	for k, e := range d.items {
		out = append(out, DirtyKey{Shard: e.shard, DB: k.db, Key: []byte(k.key)})
	}
	return out
}

func (d *dirtySet) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cond.Broadcast()
}
