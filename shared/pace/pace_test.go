package pace

import (
	"context"
	"testing"
	"time"
)

func TestRateLimit(t *testing.T) {
	p := New(Options{MaxOps: 2000})
	start := time.Now()
	for i := 0; i < 20; i++ {
		p.Wait(context.Background(), 100) // 2,000 commands: about one second after the burst
	}
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("2,000 commands at 2,000/s took %s", d)
	}
}

func TestBacksOffWhenSlowAndRecovers(t *testing.T) {
	p := New(Options{SlowAfter: 10 * time.Millisecond})
	p.Done(time.Now().Add(-time.Second), 1, nil)
	p.Done(time.Now().Add(-time.Second), 1, nil)
	if p.delay < 40*time.Millisecond || p.Slowdowns() != 2 {
		t.Fatalf("delay %s after two slow answers", p.delay)
	}
	for i := 0; i < 10; i++ {
		p.Done(time.Now(), 1, nil)
	}
	if p.delay != 0 {
		t.Fatalf("delay %s after fast answers", p.delay)
	}
}
