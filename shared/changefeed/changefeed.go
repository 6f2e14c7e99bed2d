// Package changefeed defines how an online migration learns which keys changed on a source:
// a Feed captures changes on one or more source masters ("shards") and passes them to a Sink.
// The engine (shared/syncer) re-copies each changed key's current value, so a feed only has to
// say *which* keys changed, never how. Feeds: notify (keyspace notifications, in
// changefeed/notifyfeed) and psync (the replication stream, in changefeed/psyncfeed).
//
// The package has no Azure types: the CLI's `sync` and the function app's SyncShard both use it.
// A feed can be built for a single shard (one source master), run for a bounded time, and
// resumed from a Position saved in a checkpoint, so a chain of short invocations can hand over.
package changefeed

import (
	"context"
	"io"
	"time"
)

// Sink receives what a feed captures. Its methods are called from the feed's goroutines, possibly
// several at once (one per shard), and must not block for long: the engine coalesces keys in a
// bounded set and reports a Gap itself when the set overflows.
type Sink interface {
	// Changed: key (binary-safe) in source database db of shard may have changed (written,
	// deleted, expired, evicted, renamed from or to).
	Changed(shard string, db int, key string)
	// Flushed: database db of shard was emptied (db < 0: every database).
	Flushed(shard string, db int)
	// Gap: the feed may have missed changes on shard (a disconnect, a buffer-limit kill, a full
	// resync, a resume that was not possible). The engine runs a repair pass; "in sync" is not
	// reported for the shard until the repair that started after the gap has finished.
	Gap(shard, reason string)
	// Barrier: every change made on shard's source before t has been passed to Changed/Flushed
	// (or covered by a Gap reported before this call). pos is where the feed stands at that
	// point (nil when the feed cannot resume from a position, e.g. notify); once every key
	// dirtied before this barrier is applied, a checkpoint may save pos.
	Barrier(shard string, t time.Time, pos Position)
}

// Position is a shard's feed position, opaque to the engine (the feed defines its content, e.g.
// a replication id and offset) and safe to store in a checkpoint (no secret in it).
type Position []byte

// Feed captures changes on the source masters it was built for.
type Feed interface {
	// Name is "notify" or "psync".
	Name() string
	// Shards are the source masters (addresses) the feed captures; Sink calls name one of them.
	Shards() []string
	// Start puts capture in place on every shard and returns once it is: a copy started after
	// Start returns misses nothing. It returns an error (one line, naming the setting to change)
	// when capture is not possible; nothing has been written then. After Start, failures are
	// reported as Gaps and the feed reconnects by itself until Close.
	Start(ctx context.Context, sink Sink) error
	// RequestBarrier asks every shard for a barrier; each arrives later through Sink.Barrier.
	RequestBarrier(ctx context.Context) error
	// Close stops capture and releases connections.
	Close() error
}

// Loader writes a shard's snapshot (an RDB stream) into the target. A SnapshotFeed calls it
// synchronously from the goroutine that reads the shard, before any Changed for changes made
// after the snapshot, so the engine's re-copies always come after the snapshot's values.
type Loader func(ctx context.Context, shard string, rdb io.Reader) error

// SnapshotFeed is a feed that delivers the initial copy itself (psync streams an RDB): the engine
// does not SCAN-copy the shards of such a feed. The feed is given the Loader when it is built.
// A shard's snapshot is complete when its first Barrier arrives. A later full resync (the backlog
// no longer holds the gap) loads a new snapshot through the Loader and also reports a Gap, so
// keys deleted meanwhile are removed by the repair pass.
type SnapshotFeed interface {
	Feed
	DeliversSnapshot() bool
}

// Resumer is a feed that can continue from saved positions (psync: PSYNC <replid> <offset+1>).
// Resume is called before Start; a shard whose position can no longer be continued is reported
// through Sink.Gap (and, for a SnapshotFeed, reloaded), never silently skipped.
type Resumer interface {
	Resume(pos map[string]Position)
}

// Snapshots reports whether f delivers the initial copy itself.
func Snapshots(f Feed) bool {
	s, ok := f.(SnapshotFeed)
	return ok && s.DeliversSnapshot()
}

// RefusedError is a feed that cannot run on this source (notifications off, CONFIG blocked,
// PSYNC refused): the CLI exits 2, and `--feed auto` may try another feed.
type RefusedError struct {
	Feed string
	Msg  string // one line, naming the setting and where to change it
}

func (e *RefusedError) Error() string { return e.Msg }
