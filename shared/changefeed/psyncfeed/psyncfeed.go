// Package psyncfeed is the psync change feed: one replication link (shared/replica) per source
// master. The master's snapshot is the initial copy (handed to the engine's Loader), and every
// write command of the replication stream becomes Changed for the keys it writes (shared/cmdkeys
// reads them from the server's own command table). A reconnect that the master continues
// (+CONTINUE) loses nothing; a full resynchronisation, a command whose keys cannot be known or
// a SWAPDB is reported as a Gap. Barriers come from the master's replication offset.
package psyncfeed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/changefeed"
	"github.com/redis-migrate/redis-migrate/shared/cmdkeys"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/replica"
)

// Options tune the feed.
type Options struct {
	// Shards are the masters to capture (addresses as src.Masters() gives them); nil = all.
	Shards []string
	// DBs are the source databases to report; nil = all.
	DBs []int
	// Log receives one-line notes (reconnects, full resyncs); nil = none.
	Log func(string)
	// ReadTimeout: a link on which the master sends nothing for this long is dead (default 30s;
	// masters ping their replicas every repl-ping-replica-period, 10s by default).
	ReadTimeout time.Duration
	// MaxBackoff between reconnect attempts (default 5s).
	MaxBackoff time.Duration
	// NoSnapshot: the caller copies the data itself (the function app's SCAN copy over its
	// queues) and wants only the stream. Each link asks for an empty snapshot (REPLCONF
	// rdb-filter-only, Redis 7.0+ and Valkey) and discards whatever snapshot arrives; the loader
	// is never called and the feed is not a SnapshotFeed. A full resynchronisation after a break
	// is still a Gap.
	NoSnapshot bool
	// ResumeOverlaps: the positions given to Resume come from a predecessor that keeps capturing
	// until this feed's Start has returned (a function-app handover). A full resynchronisation
	// answering the first PSYNC is then no gap: the new stream starts at the master's offset of
	// that moment, before the predecessor stops. Any later one is a gap as always.
	ResumeOverlaps bool
}

// Feed is the psync feed over a set of source masters. It implements changefeed.Feed,
// changefeed.SnapshotFeed and changefeed.Resumer.
type Feed struct {
	src    *redisconn.Conn
	loader changefeed.Loader
	o      Options
	shards []string
	dbs    map[int]bool

	mu      sync.Mutex
	resume  map[string]replica.Position
	links   map[string]*shardLink
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
}

var (
	_ changefeed.SnapshotFeed = (*Feed)(nil)
	_ changefeed.Resumer      = (*Feed)(nil)
)

// New builds the feed for src's masters; loader writes each shard's snapshot into the target.
func New(src *redisconn.Conn, loader changefeed.Loader, o Options) *Feed {
	shards := o.Shards
	if shards == nil {
		shards = src.Masters()
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
	f := &Feed{src: src, loader: loader, o: o, shards: shards, links: map[string]*shardLink{}, resume: map[string]replica.Position{}}
	if o.DBs != nil {
		f.dbs = map[int]bool{}
		for _, db := range o.DBs {
			f.dbs[db] = true
		}
	}
	return f
}

// Name implements changefeed.Feed.
func (f *Feed) Name() string { return "psync" }

// Shards implements changefeed.Feed.
func (f *Feed) Shards() []string { return append([]string(nil), f.shards...) }

// DeliversSnapshot implements changefeed.SnapshotFeed: the master's RDB is the initial copy,
// unless Options.NoSnapshot.
func (f *Feed) DeliversSnapshot() bool { return !f.o.NoSnapshot }

// EncodePosition is the checkpoint form of a replication position (JSON, no secret).
func EncodePosition(p replica.Position) changefeed.Position {
	b, _ := json.Marshal(p)
	return b
}

// DecodePosition reads what EncodePosition wrote.
func DecodePosition(b changefeed.Position) (replica.Position, error) {
	var p replica.Position
	if err := json.Unmarshal(b, &p); err != nil || p.ReplID == "" || p.Offset < 0 {
		return replica.Position{}, fmt.Errorf("not a psync position: %.60q", string(b))
	}
	return p, nil
}

// Resume implements changefeed.Resumer: shards with a saved position continue from it
// (PSYNC <replid> <offset+1>); one the master can no longer continue is reported as a Gap and
// its snapshot reloaded. Positions that do not decode are ignored (a full sync and a Gap).
func (f *Feed) Resume(pos map[string]changefeed.Position) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for shard, b := range pos {
		if p, err := DecodePosition(b); err == nil {
			f.resume[shard] = p
		}
	}
}

// Positions returns the position each shard has handled up to (for a checkpoint; prefer the
// one a Barrier carries, which is known to be applied once its keys are). A shard loading a
// new snapshot has none: the position before it is one the master could not continue.
func (f *Feed) Positions() map[string]changefeed.Position {
	out := map[string]changefeed.Position{}
	for _, ls := range f.Links() {
		if ls.Position != nil {
			out[ls.Shard] = EncodePosition(*ls.Position)
		}
	}
	return out
}

// LinkStatus is where one shard's replication link stands.
type LinkStatus struct {
	Shard string
	// Position is what the link has handled (every command up to it was passed to the sink);
	// nil before the first PSYNC was answered and while a new snapshot loads.
	Position *replica.Position
	// MasterOffset is the master's master_repl_offset at the last barrier request (-1: none);
	// MasterOffset - Position.Offset is how many bytes of the stream the link is behind.
	MasterOffset int64
	// Continues counts PSYNCs the master continued (+CONTINUE), FullSyncs the snapshots it
	// sent (+FULLRESYNC); Resumed says the feed was given a saved position for this shard.
	Continues, FullSyncs int
	Resumed              bool
}

// Links reports every shard's link, in the order of Shards.
func (f *Feed) Links() []LinkStatus {
	f.mu.Lock()
	links := make([]*shardLink, 0, len(f.links))
	for _, a := range f.shards {
		if l := f.links[a]; l != nil {
			links = append(links, l)
		}
	}
	f.mu.Unlock()
	out := make([]LinkStatus, 0, len(links))
	for _, l := range links {
		l.mu.Lock()
		ls := LinkStatus{Shard: l.addr, MasterOffset: l.masterOff, Continues: l.continues, FullSyncs: l.loads, Resumed: l.wasResumed}
		if l.havePos && !l.loading {
			p := l.pos
			ls.Position = &p
		}
		l.mu.Unlock()
		out = append(out, ls)
	}
	return out
}

// Check tells whether the feed can run on this source, as Start would begin but without
// capturing anything: the command table readable (COMMAND) and every master accepting this
// user's PSYNC (each probe link is closed at the master's first answer, before a snapshot is
// sent). It returns a *changefeed.RefusedError naming what to change, as Start does.
func (f *Feed) Check(ctx context.Context) error {
	if len(f.shards) == 0 {
		return errors.New("psyncfeed: no source master")
	}
	if _, err := f.loadTable(ctx); err != nil {
		return err
	}
	for _, addr := range f.shards {
		user, pass, err := f.src.Credentials(ctx)
		if err == nil {
			err = replica.Probe(ctx, f.linkConfig(addr, user, pass))
		}
		if err != nil {
			return refusal(addr, err)
		}
	}
	return nil
}

func (f *Feed) linkConfig(addr, user, pass string) replica.Config {
	return replica.Config{
		Addr: addr, Username: user, Password: pass, TLS: f.src.TLSConfig(),
		ReadTimeout: f.o.ReadTimeout, EmptySnapshot: f.o.NoSnapshot,
	}
}

func (f *Feed) loadTable(ctx context.Context) (*cmdkeys.Table, error) {
	tab, err := cmdkeys.Load(ctx, f.src.Node(f.shards[0], 0))
	if err != nil {
		msg := redact.Error(err)
		if strings.Contains(msg, "NOPERM") || strings.Contains(strings.ToLower(msg), "unknown command") {
			return nil, &changefeed.RefusedError{Feed: "psync", Msg: fmt.Sprintf("psync feed: the source refuses COMMAND (%s): the user needs +command (and +psync +replconf +sync)", oneLine(msg))}
		}
		return nil, fmt.Errorf("psync feed: %s", msg)
	}
	return tab, nil
}

// refusal turns a link's failure into the one-line error Start and Check give.
func refusal(addr string, err error) error {
	var re *replica.RefusedError
	if errors.As(err, &re) {
		return &changefeed.RefusedError{Feed: "psync", Msg: fmt.Sprintf(
			"psync feed: source master %s refuses replication: %s %s (the user needs +psync +replconf +sync; Azure Cache for Redis, ElastiCache and Azure Managed Redis never allow it: use --feed notify)",
			addr, re.Command, oneLine(redact.String(re.Msg)))}
	}
	return fmt.Errorf("psync feed: source master %s: %s", addr, oneLine(redact.Error(err)))
}

// Start loads the command table, opens one replication link per master and returns once every
// master has accepted PSYNC (from then on every write is in the snapshot or the stream). A
// source that refuses replication gives a *changefeed.RefusedError naming what to change.
func (f *Feed) Start(ctx context.Context, sink changefeed.Sink) error {
	f.mu.Lock()
	if f.started {
		f.mu.Unlock()
		return errors.New("psyncfeed: started twice")
	}
	f.started = true
	f.mu.Unlock()
	if len(f.shards) == 0 {
		return errors.New("psyncfeed: no source master")
	}
	tab, err := f.loadTable(ctx)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	f.mu.Lock()
	f.cancel = cancel
	ready := make(chan error, len(f.shards))
	for _, addr := range f.shards {
		l := &shardLink{f: f, addr: addr, sink: sink, tab: tab, ready: ready}
		if p, ok := f.resume[addr]; ok {
			l.pos, l.havePos, l.resumed, l.wasResumed = p, true, true, true
		}
		l.masterOff = -1
		f.links[addr] = l
		f.wg.Add(1)
		go l.run(runCtx)
	}
	f.mu.Unlock()
	for range f.shards {
		select {
		case err := <-ready:
			if err != nil {
				_ = f.Close()
				return err
			}
		case <-ctx.Done():
			_ = f.Close()
			return ctx.Err()
		}
	}
	return nil
}

// RequestBarrier reads every master's replication offset (INFO replication on a normal
// connection) at time t; each shard's Barrier(t) follows once its link has handled that offset.
func (f *Feed) RequestBarrier(ctx context.Context) error {
	f.mu.Lock()
	links := make([]*shardLink, 0, len(f.links))
	for _, l := range f.links {
		links = append(links, l)
	}
	f.mu.Unlock()
	var first error
	for _, l := range links {
		if err := l.requestBarrier(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Close stops every link (each connection is closed, so the master forgets the replica).
func (f *Feed) Close() error {
	f.mu.Lock()
	cancel := f.cancel
	f.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	f.wg.Wait()
	return nil
}

// shardLink is one master's replication link and what it has handled.
type shardLink struct {
	f     *Feed
	addr  string
	sink  changefeed.Sink
	tab   *cmdkeys.Table
	ready chan<- error // first accepted PSYNC (nil) or first failure; used once

	readyOnce sync.Once
	signalled atomic.Bool // Start has its answer: a later failure is a reconnect
	loads     int         // snapshots started (one after an answered PSYNC is a gap)
	linkStart time.Time   // when the current link sent PSYNC

	mu         sync.Mutex
	pos        replica.Position
	havePos    bool
	resumed    bool // pos came from Resume and was not yet continued or replaced
	wasResumed bool // the feed was given a saved position for this shard
	answered   bool // a PSYNC of this link was answered (a later snapshot follows a break)
	continues  int
	masterOff  int64 // master_repl_offset at the last barrier request
	loading    bool  // a snapshot is being loaded: pos is not where the target stands
	lastLog    string
	lastLogT   time.Time
	pending    []barrier
}

type barrier struct {
	t      time.Time
	offset int64
}

func (l *shardLink) signal(err error) {
	l.readyOnce.Do(func() { l.signalled.Store(true); l.ready <- err })
}

func (l *shardLink) run(ctx context.Context) {
	defer l.f.wg.Done()
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		user, pass, err := l.f.src.Credentials(ctx)
		cfg := l.f.linkConfig(l.addr, user, pass)
		if err == nil {
			l.mu.Lock()
			var from *replica.Position
			if l.havePos {
				p := l.pos
				from = &p
			}
			l.mu.Unlock()
			l.linkStart = time.Now()
			err = replica.Sync(ctx, cfg, from, l)
		}
		if ctx.Err() != nil {
			l.signal(ctx.Err())
			return
		}
		msg := oneLine(redact.Error(err))
		if !l.signalled.Load() {
			// The first link failed: Start returns this error (one line) and closes the feed.
			l.signal(refusal(l.addr, err))
			return
		}
		l.f.o.Log(fmt.Sprintf("psync %s: link ended (%s); reconnecting", l.addr, msg))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > l.f.o.MaxBackoff {
			backoff = l.f.o.MaxBackoff
		}
	}
}

// FullSync implements replica.Handler: the snapshot goes to the Loader. Any snapshot but the
// first of a shard that had no saved position is a gap (keys deleted meanwhile stay in the
// target until the repair pass).
func (l *shardLink) FullSync(ctx context.Context, pos replica.Position, rdb io.Reader) error {
	l.mu.Lock()
	resumed, first := l.resumed, !l.answered
	l.resumed, l.loading, l.answered = false, true, true
	l.loads++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.loading = false
		l.mu.Unlock()
	}()
	// The gap is reported before Start returns, so a caller sees it as soon as capture is on.
	switch {
	case resumed && first && l.f.o.ResumeOverlaps:
		l.f.o.Log(fmt.Sprintf("psync %s: the source could not continue from the saved position (its backlog no longer holds it): a new stream from offset %d, which the predecessor's capture overlaps", l.addr, pos.Offset))
	case resumed:
		l.gap("the source could not continue from the saved replication position (its backlog no longer holds it, or it restarted): full resynchronisation")
	case !first:
		l.gap("the source could not continue the replication stream after a broken link (repl-backlog-size too small for the outage): full resynchronisation")
	}
	l.signal(nil)
	if l.f.o.NoSnapshot {
		// The data is copied another way: the snapshot (empty where the master knows
		// rdb-filter-only) is read and dropped.
		if _, err := io.Copy(io.Discard, rdb); err != nil {
			return fmt.Errorf("reading the snapshot: %w", err)
		}
	} else if err := l.loadSnapshot(ctx, pos, rdb); err != nil {
		return err
	}
	l.mu.Lock()
	l.pos, l.havePos = pos, true
	// Barriers asked before this link began are covered by the snapshot (and any Gap).
	var fire []barrier
	keep := l.pending[:0]
	for _, b := range l.pending {
		if !b.t.After(l.linkStart) || b.offset <= pos.Offset {
			fire = append(fire, b)
		} else {
			keep = append(keep, b)
		}
	}
	l.pending = keep
	l.mu.Unlock()
	for _, b := range fire {
		l.sink.Barrier(l.addr, b.t, EncodePosition(pos))
	}
	return nil
}

func (l *shardLink) loadSnapshot(ctx context.Context, pos replica.Position, rdb io.Reader) error {
	l.f.o.Log(fmt.Sprintf("psync %s: loading the source's snapshot (replication id %s, offset %d)", l.addr, pos.ReplID, pos.Offset))
	if err := l.f.loader(ctx, l.addr, rdb); err != nil {
		l.gap("loading the source's snapshot failed: " + oneLine(redact.Error(err)))
		return fmt.Errorf("loading the snapshot: %w", err)
	}
	return nil
}

// Continued implements replica.Handler: the master continues the stream, nothing was lost.
func (l *shardLink) Continued(pos replica.Position) {
	l.mu.Lock()
	l.pos, l.havePos, l.resumed, l.answered = pos, true, false, true
	l.continues++
	l.mu.Unlock()
	l.signal(nil)
}

// Command implements replica.Handler.
func (l *shardLink) Command(db int, argv [][]byte, end replica.Position) error {
	op, err := l.tab.Classify(db, argv)
	switch {
	case err != nil:
		l.gap(fmt.Sprintf("%s in the replication stream: %s", commandName(argv), oneLine(err.Error())))
	case op.Kind == cmdkeys.KindKeys:
		for _, k := range op.Keys {
			if l.wants(k.DB) {
				l.sink.Changed(l.addr, k.DB, string(k.Key))
			}
		}
	case op.Kind == cmdkeys.KindFlushDB:
		if l.wants(op.DB) {
			l.sink.Flushed(l.addr, op.DB)
		}
	case op.Kind == cmdkeys.KindFlushAll:
		l.sink.Flushed(l.addr, -1)
	case op.Kind == cmdkeys.KindSwapDB:
		if l.wants(op.DB) || l.wants(op.DB2) {
			l.gap(fmt.Sprintf("SWAPDB %d %d: every key of both databases changed", op.DB, op.DB2))
		}
	}
	l.mu.Lock()
	l.pos, l.havePos = end, true
	var fire []barrier
	if len(l.pending) > 0 {
		keep := l.pending[:0]
		for _, b := range l.pending {
			if b.offset <= end.Offset {
				fire = append(fire, b)
			} else {
				keep = append(keep, b)
			}
		}
		l.pending = keep
	}
	l.mu.Unlock()
	for _, b := range fire {
		l.sink.Barrier(l.addr, b.t, EncodePosition(end))
	}
	return nil
}

func (l *shardLink) wants(db int) bool { return l.f.dbs == nil || l.f.dbs[db] }

// gap reports a gap; the log note is not repeated for the same reason within 10s (a module
// command written 10,000 times a second is one note, and still 10,000 gaps for the engine).
func (l *shardLink) gap(reason string) {
	l.mu.Lock()
	note := reason != l.lastLog || time.Since(l.lastLogT) > 10*time.Second
	if note {
		l.lastLog, l.lastLogT = reason, time.Now()
	}
	l.mu.Unlock()
	if note {
		l.f.o.Log(fmt.Sprintf("psync %s: gap: %s", l.addr, reason))
	}
	l.sink.Gap(l.addr, reason)
}

func (l *shardLink) requestBarrier(ctx context.Context) error {
	t := time.Now()
	info, err := l.f.src.Node(l.addr, 0).Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("psync feed: INFO replication on %s: %s", l.addr, oneLine(redact.Error(err)))
	}
	off := int64(-1)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "master_repl_offset:"); ok {
			off, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if off < 0 {
		return fmt.Errorf("psync feed: INFO replication on %s gives no master_repl_offset", l.addr)
	}
	l.mu.Lock()
	l.masterOff = off
	if l.havePos && !l.resumed && !l.loading && l.pos.Offset >= off {
		pos := l.pos
		l.mu.Unlock()
		l.sink.Barrier(l.addr, t, EncodePosition(pos))
		return nil
	}
	l.pending = append(l.pending, barrier{t, off})
	l.mu.Unlock()
	return nil
}

func commandName(argv [][]byte) string {
	if len(argv) == 0 {
		return "an empty command"
	}
	n := string(argv[0])
	if len(n) > 40 {
		n = n[:40]
	}
	return strings.ToUpper(strconv.Quote(n))
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
