// Package pace protects a source server from the copy: a rate limit on the commands sent to it
// (--max-source-ops, per process) and an adaptive backoff that slows every reader down when the
// source answers slowly or says it is busy (BUSY, LOADING, OOM, TRYAGAIN), and speeds back up
// as it recovers.
package pace

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// Options for a Pacer.
type Options struct {
	// MaxOps is the most commands a second sent to the source; 0 = no limit.
	MaxOps int
	// SlowAfter: a round trip slower than this (plus 100µs per command in it) counts as the
	// source struggling. Default 250ms.
	SlowAfter time.Duration
	// MaxDelay caps the adaptive pause before each round trip. Default 2s.
	MaxDelay time.Duration
}

// Pacer is shared by every reader of one source.
type Pacer struct {
	o       Options
	limiter *rate.Limiter

	mu    sync.Mutex
	delay time.Duration
	slows int64
}

// New returns a pacer; with MaxOps 0 it only adapts.
func New(o Options) *Pacer {
	if o.SlowAfter <= 0 {
		o.SlowAfter = 250 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 2 * time.Second
	}
	p := &Pacer{o: o}
	if o.MaxOps > 0 {
		p.limiter = rate.NewLimiter(rate.Limit(o.MaxOps), max(o.MaxOps/10, 1))
	}
	return p
}

// Wait blocks until n more commands may be sent (or ctx ends).
func (p *Pacer) Wait(ctx context.Context, n int) {
	p.mu.Lock()
	d := p.delay
	p.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
	if p.limiter == nil {
		return
	}
	burst := p.limiter.Burst()
	for n > 0 {
		k := min(n, burst)
		if err := p.limiter.WaitN(ctx, k); err != nil {
			return
		}
		n -= k
	}
}

// Done reports a round trip of n commands that started at start and ended with err (nil, or the
// pipeline's first error).
func (p *Pacer) Done(start time.Time, n int, err error) {
	took := time.Since(start)
	struggling := Busy(err) || took > p.o.SlowAfter+time.Duration(n)*100*time.Microsecond
	p.mu.Lock()
	defer p.mu.Unlock()
	if struggling {
		p.slows++
		p.delay = min(max(2*p.delay, 20*time.Millisecond), p.o.MaxDelay)
		return
	}
	if p.delay > 0 && err == nil {
		p.delay /= 2
		if p.delay < 5*time.Millisecond {
			p.delay = 0
		}
	}
}

// Slowdowns counts the round trips that made the pacer back off.
func (p *Pacer) Slowdowns() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slows
}

// Busy reports a server's "not now" answer: BUSY, LOADING, OOM, TRYAGAIN, MASTERDOWN, CLUSTERDOWN.
func Busy(err error) bool {
	var re redis.Error
	if err == nil || !errors.As(err, &re) {
		return false
	}
	code, _, _ := strings.Cut(re.Error(), " ")
	switch code {
	case "BUSY", "LOADING", "OOM", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN":
		return true
	}
	return false
}
