package syncer

import (
	"testing"
	"time"
)

// The dirty set's guarantees, step by step: a key changed many times is queued once (hot keys
// coalesce), a key in flight is not handed to a second worker, a key changed while in flight is
// queued again once its copy ends, and a barrier counts as applied only when every change before
// it has been copied by a copy that started after the change.
func TestDirtySetCoalescesAndRecopies(t *testing.T) {
	d := newDirtySet(1, 100)
	k := dkey{0, "hot"}
	for i := 0; i < 10000; i++ {
		if !d.mark(0, k) {
			t.Fatal("mark refused below the bound")
		}
	}
	if n := d.len(); n != 1 {
		t.Fatalf("10,000 changes of one key: %d entries, want 1", n)
	}
	d.barrier(0, barrier{t: time.Unix(1, 0)})
	got := d.take(10)
	if len(got) != 1 || got[0] != k {
		t.Fatalf("take: %v", got)
	}
	// In flight: a second worker gets nothing (it would block), even after more changes.
	d.mark(0, k) // changed during the copy
	d.barrier(0, barrier{t: time.Unix(2, 0)})
	if other := takeNow(d); other != nil {
		t.Fatalf("a key in flight was handed to a second worker: %v", other)
	}
	if _, ok := d.applied(0); ok {
		t.Fatal("a barrier counted as applied while its key was still being copied")
	}
	d.done(got)
	// The first barrier is applied (its change was copied); the second is not: the change made
	// during the copy may be missing from it.
	if b, ok := d.applied(0); !ok || !b.t.Equal(time.Unix(1, 0)) {
		t.Fatalf("applied after the first copy: %v %v, want the first barrier", b.t, ok)
	}
	again := takeNow(d)
	if len(again) != 1 || again[0] != k {
		t.Fatalf("a key changed during its copy was not queued again: %v", again)
	}
	d.done(again)
	if b, ok := d.applied(0); !ok || !b.t.Equal(time.Unix(2, 0)) {
		t.Fatalf("applied after the second copy: %v %v, want the second barrier", b.t, ok)
	}
	if n := d.len(); n != 0 {
		t.Fatalf("%d keys left", n)
	}
	// The bound: a new key beyond it is refused (the caller opens a gap); a known one is not.
	small := newDirtySet(1, 2)
	small.mark(0, dkey{0, "a"})
	small.mark(0, dkey{0, "b"})
	if small.mark(0, dkey{0, "c"}) {
		t.Fatal("a third key fit in a set of two")
	}
	if !small.mark(0, dkey{0, "a"}) {
		t.Fatal("a key already queued was refused")
	}
}

// takeNow takes what is queued without waiting (nil when nothing is).
func takeNow(d *dirtySet) []dkey {
	out := make(chan []dkey, 1)
	go func() { out <- d.take(10) }()
	select {
	case ks := <-out:
		return ks
	case <-time.After(100 * time.Millisecond):
		d.close() // ends the waiting take
		<-out
		d.mu.Lock()
		d.closed = false
		d.mu.Unlock()
		return nil
	}
}
