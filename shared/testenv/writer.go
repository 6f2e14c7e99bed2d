package testenv

import (
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// WriterOptions shape a mixed write load.
type WriterOptions struct {
	Prefix  string // key prefix (default "w:")
	Keys    int    // distinct keys per type (default 2000)
	Rate    int    // writes per second over all goroutines; 0 = as fast as possible
	Workers int    // goroutines (default 2)
	Seed    int64
	// FlushAfter runs one FLUSHDB (on every master) after this many writes; 0 = never.
	FlushAfter int64
	// BigList is the length the big list is kept around (LPUSH + LTRIM); default 5000.
	BigList int
	// NoShortTTL leaves out the keys that expire within a second (for comparisons taken while
	// the source is paused).
	NoShortTTL bool
}

// Writer runs a mixed load against a source while a test migrates it: SET, INCR, DEL,
// EXPIRE/PERSIST, RENAME, HSET/HDEL, LPUSH/LTRIM on a big list, ZADD, XADD, keys that expire
// within a second, and optionally one FLUSHDB. Keys carry hash tags so RENAME works on a cluster.
type Writer struct {
	c      redis.UniversalClient
	o      WriterOptions
	cancel context.CancelFunc
	wg     sync.WaitGroup
	Writes atomic.Int64
	Errors atomic.Int64
	// Flushed is set once the FLUSHDB ran.
	Flushed  atomic.Bool
	lastErr  atomic.Value
	flushMux sync.Mutex
}

// StartWriter starts the load; Stop ends it.
func StartWriter(c redis.UniversalClient, o WriterOptions) *Writer {
	if o.Prefix == "" {
		o.Prefix = "w:"
	}
	if o.Keys <= 0 {
		o.Keys = 2000
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.BigList <= 0 {
		o.BigList = 5000
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Writer{c: c, o: o, cancel: cancel}
	for i := 0; i < o.Workers; i++ {
		w.wg.Add(1)
		go w.run(ctx, rand.New(rand.NewSource(o.Seed+int64(i)*7919)))
	}
	return w
}

// Stop ends the load and waits for the goroutines; it returns the number of writes sent.
func (w *Writer) Stop() int64 {
	w.cancel()
	w.wg.Wait()
	return w.Writes.Load()
}

// LastError is the last error a write got (nil if none).
func (w *Writer) LastError() error {
	if e, ok := w.lastErr.Load().(errBox); ok {
		return e.err
	}
	return nil
}

type errBox struct{ err error } // atomic.Value needs one concrete type

func (w *Writer) key(kind string, r *rand.Rand) string {
	n := r.Intn(w.o.Keys)
	return fmt.Sprintf("%s{%d}:%s:%d", w.o.Prefix, n%97, kind, n)
}

func (w *Writer) run(ctx context.Context, r *rand.Rand) {
	defer w.wg.Done()
	var tick <-chan time.Time
	batch := 1
	if w.o.Rate > 0 {
		// Send in small bursts every 10ms to reach the rate without a timer per write.
		per := float64(w.o.Rate) / float64(w.o.Workers) / 100
		batch = max(1, int(per+0.5))
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	bigList := fmt.Sprintf("%s{biglist}:list", w.o.Prefix)
	for ctx.Err() == nil {
		if tick != nil {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
		}
		pipe := w.c.Pipeline()
		for i := 0; i < batch; i++ {
			w.one(ctx, pipe, r, bigList)
		}
		n := int64(pipe.Len())
		cmds, err := pipe.Exec(ctx)
		if err != nil && ctx.Err() == nil {
			for _, c := range cmds {
				if c.Err() != nil && c.Err() != redis.Nil {
					w.Errors.Add(1)
					w.lastErr.Store(errBox{c.Err()})
				}
			}
		}
		total := w.Writes.Add(n)
		if w.o.FlushAfter > 0 && total >= w.o.FlushAfter && !w.Flushed.Load() {
			w.flushMux.Lock()
			if !w.Flushed.Load() {
				w.flush(ctx)
				w.Flushed.Store(true)
			}
			w.flushMux.Unlock()
		}
	}
}

func (w *Writer) flush(ctx context.Context) {
	if cc, ok := w.c.(*redis.ClusterClient); ok {
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return m.FlushDB(ctx).Err() })
		return
	}
	w.c.FlushDB(ctx)
}

func (w *Writer) one(ctx context.Context, p redis.Pipeliner, r *rand.Rand, bigList string) {
	switch op := r.Intn(16); op {
	case 0, 1:
		p.Set(ctx, w.key("s", r), strconv.Itoa(r.Int())+string(make([]byte, r.Intn(64))), 0)
	case 2:
		p.Incr(ctx, w.key("n", r))
	case 3:
		p.Del(ctx, w.key("s", r))
	case 4:
		p.Expire(ctx, w.key("s", r), time.Duration(30+r.Intn(300))*time.Second)
	case 5:
		p.Persist(ctx, w.key("s", r))
	case 6:
		// Keys that expire while the test runs.
		ttl := time.Duration(200+r.Intn(800)) * time.Millisecond
		if w.o.NoShortTTL {
			ttl = time.Hour
		}
		p.Set(ctx, w.key("e", r), "short", ttl)
	case 7:
		n := r.Intn(w.o.Keys)
		a := fmt.Sprintf("%s{%d}:s:%d", w.o.Prefix, n%97, n)
		b := fmt.Sprintf("%s{%d}:r:%d", w.o.Prefix, n%97, n)
		if r.Intn(2) == 0 {
			a, b = b, a
		}
		p.Rename(ctx, a, b) // "no such key" errors are expected and ignored
	case 8, 9:
		p.HSet(ctx, w.key("h", r), "f"+strconv.Itoa(r.Intn(20)), r.Int())
	case 10:
		p.HDel(ctx, w.key("h", r), "f"+strconv.Itoa(r.Intn(20)))
	case 11:
		p.LPush(ctx, bigList, r.Int())
		p.LTrim(ctx, bigList, 0, int64(w.o.BigList-1))
	case 12:
		p.ZAdd(ctx, w.key("z", r), redis.Z{Score: float64(r.Intn(1000)), Member: strconv.Itoa(r.Intn(50))})
	case 13:
		p.XAdd(ctx, &redis.XAddArgs{Stream: w.key("x", r), MaxLen: 50, Approx: false, Values: []any{"v", r.Int()}})
	case 14:
		p.SAdd(ctx, w.key("t", r), r.Intn(30))
	case 15:
		p.Set(ctx, w.key("b", r)+"\x00\xfe\n", []byte{0, 0xff, byte(r.Intn(256)), 10, 32}, 0)
	}
}
