// Package notifyfeed is the change feed built on keyspace notifications, for sources that refuse
// replication (Azure Cache for Redis, ElastiCache, Azure Managed Redis as a source). Cluster
// notifications are node-local, so every source master gets its own subscription, opened before
// the initial copy starts.
//
// What it cannot see is made explicit: a broken or killed subscription (pub/sub output-buffer
// limit) is reported as a Gap once the subscription is back; FLUSHDB, FLUSHALL and SWAPDB publish
// no notification, so the feed watches INFO commandstats (and DBSIZE) and reports a Gap when one
// ran. A barrier is a PING on the subscribed connection: its reply follows every notification
// published before it.
package notifyfeed

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/changefeed"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// Needed are the notify-keyspace-events classes the feed relies on: generic commands (DEL,
// EXPIRE, RENAME...), every type, expired and evicted keys. "A" stands for all of them.
const Needed = "g$lshzxet"

// Recommended is the value the refusal message suggests (keyspace events, all classes).
const Recommended = "KA"

// Options tune the feed.
type Options struct {
	// Enable sets notify-keyspace-events with CONFIG SET when it does not cover Needed
	// (--enable-notifications); without it such a source is refused.
	Enable bool
	// Declared is the notify-keyspace-events value the user says the source has, for servers
	// that refuse CONFIG GET (Azure Cache for Redis); "" = read it with CONFIG GET.
	Declared string
	// DBs are the source databases to capture; nil = all.
	DBs []int
	// LinkTimeout: a barrier unanswered this long means the link is dead. Default 10s.
	LinkTimeout time.Duration
}

// Feed is the notify feed over a set of source masters.
type Feed struct {
	src    *redisconn.Conn
	shards []string
	o      Options
	dbs    map[int]bool

	mu      sync.Mutex
	sink    changefeed.Sink
	subs    map[string]*shardSub
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
}

// New builds a feed for the given masters of src (nil = every master).
func New(src *redisconn.Conn, shards []string, o Options) *Feed {
	if shards == nil {
		shards = src.Masters()
	}
	if o.LinkTimeout <= 0 {
		o.LinkTimeout = 10 * time.Second
	}
	f := &Feed{src: src, shards: shards, o: o, subs: map[string]*shardSub{}}
	if o.DBs != nil {
		f.dbs = map[int]bool{}
		for _, db := range o.DBs {
			f.dbs[db] = true
		}
	}
	return f
}

// Name implements changefeed.Feed.
func (f *Feed) Name() string { return "notify" }

// Shards implements changefeed.Feed.
func (f *Feed) Shards() []string { return append([]string(nil), f.shards...) }

// Check reads notify-keyspace-events on every shard and refuses (a *changefeed.RefusedError)
// when it does not cover Needed, or cannot be read; with Enable it sets the missing classes.
// It returns the pattern to subscribe to (keyspace or keyevent channels).
func (f *Feed) Check(ctx context.Context) (string, error) {
	keyspace := true
	for _, addr := range f.shards {
		val := f.o.Declared
		if val == "" {
			m, err := f.src.Node(addr, 0).ConfigGet(ctx, "notify-keyspace-events").Result()
			if err != nil {
				return "", &changefeed.RefusedError{Feed: "notify", Msg: fmt.Sprintf(
					"source %s refuses CONFIG GET notify-keyspace-events (%s), so keyspace notifications cannot be checked: "+
						"make sure notify-keyspace-events is %q (%s) and pass --notify-keyspace-events %s to say so",
					addr, oneLine(err), Recommended, whereToSet, Recommended)}
			}
			val = m["notify-keyspace-events"]
		}
		missing := Missing(val)
		if missing != "" && f.o.Enable && f.o.Declared == "" {
			want := val + missing
			if !strings.ContainsAny(val, "KE") {
				want += "K"
			}
			if err := f.src.Node(addr, 0).ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
				return "", &changefeed.RefusedError{Feed: "notify", Msg: fmt.Sprintf(
					"source %s refuses CONFIG SET notify-keyspace-events %s (%s): set it yourself (%s)",
					addr, want, oneLine(err), whereToSet)}
			}
			val, missing = want, ""
		}
		if missing != "" {
			return "", &changefeed.RefusedError{Feed: "notify", Msg: fmt.Sprintf(
				"source %s has notify-keyspace-events %q, which misses %q: set it to %q (%s), or pass --enable-notifications to let redis-migrate set it with CONFIG SET",
				addr, val, missing, Recommended, whereToSet)}
		}
		if !strings.Contains(val, "K") {
			keyspace = false
		}
	}
	if keyspace {
		return "__keyspace@*__:*", nil
	}
	return "__keyevent@*__:*", nil
}

const whereToSet = "self-hosted: notify-keyspace-events in redis.conf or CONFIG SET; " +
	"Azure Cache for Redis: portal > Advanced settings > Keyspace notifications; " +
	"ElastiCache: the parameter group's notify-keyspace-events; Azure Managed Redis: the database's notify-keyspace-events setting where the tier offers it"

// Missing returns the classes of Needed (and K or E) that a notify-keyspace-events value lacks.
func Missing(val string) string {
	var miss strings.Builder
	if !strings.ContainsAny(val, "KE") {
		miss.WriteByte('K')
	}
	if strings.Contains(val, "A") {
		return miss.String()
	}
	for _, c := range Needed {
		if !strings.ContainsRune(val, c) {
			miss.WriteRune(c)
		}
	}
	return miss.String()
}

// Start checks the setting, subscribes on every shard and returns once every subscription is
// confirmed by the server.
func (f *Feed) Start(ctx context.Context, sink changefeed.Sink) error {
	pattern, err := f.Check(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	if f.started {
		f.mu.Unlock()
		return errors.New("notifyfeed: started twice")
	}
	f.started = true
	f.sink = sink
	runCtx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.mu.Unlock()

	if st := f.src.Streaming(); st != nil {
		st.OnRefresh(func() { f.Rotate(runCtx) })
	}
	ready := make(chan error, len(f.shards))
	for _, addr := range f.shards {
		s := &shardSub{f: f, addr: addr, pattern: pattern, barriers: map[string]time.Time{}, pongs: make(chan pong, 64)}
		s.flush = f.readFlushCounters(ctx, addr)
		f.mu.Lock()
		f.subs[addr] = s
		f.mu.Unlock()
		f.wg.Add(2)
		go s.run(runCtx, ready)
		go s.barrierLoop(runCtx)
	}
	for range f.shards {
		select {
		case err := <-ready:
			if err != nil {
				f.Close()
				return err
			}
		case <-ctx.Done():
			f.Close()
			return ctx.Err()
		}
	}
	return nil
}

// RequestBarrier sends a PING on every shard's subscription.
func (f *Feed) RequestBarrier(ctx context.Context) error {
	f.mu.Lock()
	subs := make([]*shardSub, 0, len(f.subs))
	for _, s := range f.subs {
		subs = append(subs, s)
	}
	f.mu.Unlock()
	var first error
	for _, s := range subs {
		if err := s.ping(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Rotate moves every shard's subscription to a new connection without a gap.
func (f *Feed) Rotate(ctx context.Context) {
	f.mu.Lock()
	subs := make([]*shardSub, 0, len(f.subs))
	for _, s := range f.subs {
		subs = append(subs, s)
	}
	f.mu.Unlock()
	for _, s := range subs {
		s.rotate(ctx)
	}
}

// Close ends every subscription.
func (f *Feed) Close() error {
	f.mu.Lock()
	cancel := f.cancel
	subs := f.subs
	f.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	for _, s := range subs {
		s.closePS()
	}
	f.wg.Wait()
	return nil
}

// flushCounters are the calls of the commands that empty databases without a notification.
type flushCounters struct {
	calls int64 // flushdb + flushall + swapdb calls; -1 when INFO commandstats is refused
	sizes map[int]int64
}

func (f *Feed) readFlushCounters(ctx context.Context, addr string) flushCounters {
	fc := flushCounters{calls: -1, sizes: map[int]int64{}}
	node := f.src.Node(addr, 0)
	if info, err := node.Info(ctx, "commandstats").Result(); err == nil {
		fc.calls = 0
		for _, line := range strings.Split(info, "\n") {
			for _, cmd := range []string{"cmdstat_flushdb:", "cmdstat_flushall:", "cmdstat_swapdb:"} {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
					if v, ok := strings.CutPrefix(strings.SplitN(rest, ",", 2)[0], "calls="); ok {
						n, _ := strconv.ParseInt(v, 10, 64)
						fc.calls += n
					}
				}
			}
		}
	}
	if info, err := node.Info(ctx, "keyspace").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok || !strings.HasPrefix(k, "db") {
				continue
			}
			db, err := strconv.Atoi(k[2:])
			if err != nil {
				continue
			}
			n, _ := strconv.ParseInt(strings.TrimPrefix(strings.SplitN(v, ",", 2)[0], "keys="), 10, 64)
			fc.sizes[db] = n
		}
	}
	return fc
}

// flushedSince says why the source may have been emptied without a notification since prev.
func flushedSince(prev, now flushCounters) string {
	if prev.calls >= 0 && now.calls >= 0 && now.calls != prev.calls {
		return "FLUSHDB, FLUSHALL or SWAPDB ran on the source (they publish no keyspace notification)"
	}
	for db, n := range prev.sizes {
		if n > 0 && now.sizes[db] == 0 {
			return fmt.Sprintf("source db %d went from %d keys to empty (a FLUSH publishes no keyspace notification)", db, n)
		}
	}
	return ""
}

type pong struct {
	id string
	t  time.Time
}

// shardSub is one master's subscription.
type shardSub struct {
	f       *Feed
	addr    string
	pattern string

	mu       sync.Mutex
	ps       *redis.PubSub
	next     *redis.PubSub        // the successor of a rotation
	barriers map[string]time.Time // PING payload -> time it was sent
	seq      atomic.Int64
	stale    atomic.Bool
	pongs    chan pong
	flush    flushCounters // touched only by barrierLoop after Start
}

func (s *shardSub) closePS() {
	s.mu.Lock()
	ps, next := s.ps, s.next
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	if next != nil {
		_ = next.Close()
	}
}

func (s *shardSub) ping(ctx context.Context) error {
	s.mu.Lock()
	ps := s.ps
	if ps == nil {
		s.mu.Unlock()
		return nil // reconnecting: the Gap will follow
	}
	now := time.Now()
	for _, t := range s.barriers {
		if now.Sub(t) > s.f.o.LinkTimeout {
			// A PING unanswered this long: the link is dead even if TCP does not say so.
			s.stale.Store(true)
			s.mu.Unlock()
			_ = ps.Close()
			return nil
		}
	}
	id := "b" + strconv.FormatInt(s.seq.Add(1), 10)
	s.barriers[id] = now
	s.mu.Unlock()
	return ps.Ping(ctx, id)
}

// subscribe opens a subscription and waits for the server's confirmation.
func (s *shardSub) subscribe(ctx context.Context) (*redis.PubSub, error) {
	node := s.f.src.Node(s.addr, 0)
	ps := node.PSubscribe(ctx, s.pattern)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		msg, err := ps.ReceiveTimeout(cctx, 10*time.Second)
		if err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("subscribing to keyspace notifications on source %s: %s", s.addr, oneLine(err))
		}
		if sub, ok := msg.(*redis.Subscription); ok && sub.Kind == "psubscribe" {
			return ps, nil
		}
	}
}

func (s *shardSub) run(ctx context.Context, ready chan<- error) {
	defer s.f.wg.Done()
	first := true
	var gapReason string
	backoff := 100 * time.Millisecond
	var ps *redis.PubSub
	for ctx.Err() == nil {
		if gapReason == rotated {
			// A fresh subscription took over (new token): no gap, see rotate.
			s.mu.Lock()
			ps, s.next = s.next, nil
			s.ps = ps
			s.barriers = map[string]time.Time{} // PINGs sent on the old connection get no reply
			s.mu.Unlock()
			gapReason = s.read(ctx, ps)
			s.mu.Lock()
			s.ps = nil
			s.mu.Unlock()
			_ = ps.Close()
			continue
		}
		var err error
		ps, err = s.subscribe(ctx)
		if err != nil {
			if first {
				ready <- err
				return
			}
			gapReason = err.Error()
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		s.mu.Lock()
		s.ps = ps
		s.barriers = map[string]time.Time{}
		s.stale.Store(false)
		s.mu.Unlock()
		if first {
			first = false
			ready <- nil
		} else {
			// Capture is back: whatever happened while it was down is for the repair pass.
			s.f.sink.Gap(s.addr, "keyspace notification subscription was lost: "+gapReason)
		}
		gapReason = s.read(ctx, ps)
		s.mu.Lock()
		s.ps = nil
		s.mu.Unlock()
		_ = ps.Close()
	}
}

const rotated = "rotated"

// rotate replaces the subscription with a new connection without a gap: the successor subscribes
// first (authenticating with the current token); then a PING on the old one marks the point
// after which everything is on the successor too (duplicates are harmless). A subscribed
// connection cannot re-AUTH over RESP2, so this is how it keeps up with expiring Entra tokens.
func (s *shardSub) rotate(ctx context.Context) {
	s.mu.Lock()
	old := s.ps
	busy := s.next != nil
	s.mu.Unlock()
	if old == nil || busy {
		return
	}
	nps, err := s.subscribe(ctx)
	if err != nil {
		return // the old one goes on; if it breaks, that is a gap like any other
	}
	s.mu.Lock()
	if s.ps != old || s.next != nil {
		s.mu.Unlock()
		_ = nps.Close()
		return
	}
	s.next = nps
	s.mu.Unlock()
	if err := old.Ping(ctx, rotated); err != nil {
		_ = old.Close() // the read loop ends with an error: a gap, and the successor is dropped
		s.mu.Lock()
		if s.next == nps {
			s.next = nil
		}
		s.mu.Unlock()
		_ = nps.Close()
	}
}

// read delivers messages until the subscription breaks, and says why it did.
func (s *shardSub) read(ctx context.Context, ps *redis.PubSub) string {
	sink := s.f.sink
	keyspace := strings.HasPrefix(s.pattern, "__keyspace")
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return "closed"
			}
			if s.stale.Load() {
				return fmt.Sprintf("no reply from source %s for %s", s.addr, s.f.o.LinkTimeout)
			}
			return fmt.Sprintf("source %s: %s (a CLIENT KILL, a restart, or the pub/sub output buffer limit)", s.addr, oneLine(err))
		}
		switch m := msg.(type) {
		case *redis.Message:
			db, key, ok := parseChannel(m.Channel, m.Payload, keyspace)
			if !ok || (s.f.dbs != nil && !s.f.dbs[db]) {
				continue
			}
			sink.Changed(s.addr, db, key)
		case *redis.Pong:
			if m.Payload == rotated {
				// Everything published before the successor subscribed has been read here.
				return rotated
			}
			s.mu.Lock()
			t, ok := s.barriers[m.Payload]
			delete(s.barriers, m.Payload)
			s.mu.Unlock()
			if ok {
				select {
				case s.pongs <- pong{m.Payload, t}:
				default: // barrierLoop is behind: a later barrier covers this one
				}
			}
		case *redis.Subscription:
			if m.Count == 0 {
				return "subscription ended"
			}
		}
	}
}

// barrierLoop turns answered PINGs into barriers, after checking that no FLUSH ran unseen.
func (s *shardSub) barrierLoop(ctx context.Context) {
	defer s.f.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-s.pongs:
			now := s.f.readFlushCounters(ctx, s.addr)
			if ctx.Err() != nil {
				return
			}
			if why := flushedSince(s.flush, now); why != "" {
				s.f.sink.Gap(s.addr, why)
			}
			s.flush = now
			s.f.sink.Barrier(s.addr, p.t, nil)
		}
	}
}

// parseChannel takes the db and key from a keyspace (__keyspace@<db>__:<key>, payload = event)
// or keyevent (__keyevent@<db>__:<event>, payload = key) message. Keys are binary-safe.
func parseChannel(channel, payload string, keyspace bool) (int, string, bool) {
	at := strings.IndexByte(channel, '@')
	if at < 0 {
		return 0, "", false
	}
	rest := channel[at+1:]
	end := strings.Index(rest, "__:")
	if end < 0 {
		return 0, "", false
	}
	db, err := strconv.Atoi(rest[:end])
	if err != nil {
		return 0, "", false
	}
	if keyspace {
		return db, rest[end+3:], true
	}
	return db, payload, true
}

func oneLine(err error) string {
	return strings.ReplaceAll(redact.Error(err), "\n", " ")
}
