package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/keywriter"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/verify"
)

// Batch limits: RESTOREs per pipeline and payload bytes held per batch.
const (
	batchItems = 256
	batchBytes = 4 << 20
)

// read parses the file and hands batches to the writers; big values, module values and
// functions are written inline, in file order.
func (im *importer) read(ctx context.Context, work chan<- *batch) error {
	seq := 0
	var cur *batch
	newBatch := func(start int64, db int) *batch {
		b := &batch{seq: seq, start: start, db: db}
		seq++
		im.mu.Lock()
		b.aux = im.auxNow()
		im.pending[b.seq] = b
		im.mu.Unlock()
		return b
	}
	issue := func() error {
		if cur == nil {
			return nil
		}
		b := cur
		cur = nil
		if len(b.items)+len(b.reenc) == 0 {
			im.finish(b) // only counted entries (expired, filtered): nothing to write
			return nil
		}
		select {
		case work <- b:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// inline records a key written by the reader itself as a one-key batch, so checkpoints stay
	// exact.
	inline := func(start int64, db int, res copier.Result) {
		b := newBatch(start, db)
		b.result, b.scanned = res, 1
		im.finish(b)
	}
	var big *keywriter.Builder // the value being delivered in parts
	defer func() {
		if big != nil {
			big.Abort(ctx) // stopped inside a value in parts: leave no scratch key behind
		}
	}()
	var bigDropped int
	skipping := false         // the rest of a value in parts is read past: expired, or failed
	var skipped copier.Result // what to count for it at its last part
	now := im.o.Now().UnixMilli()
	for {
		if err := ctx.Err(); err != nil {
			_ = issue()
			return im.writerErr(err)
		}
		if big == nil && !skipping && !im.rd.InKeyPrefix() {
			// Never inside a value in parts, nor between a key's expire prefix and its value
			// (an AUX there, as KeyDB writes, would otherwise lose the key's TTL on resume).
			// A checkpoint that is due sends the batch being filled off first: with most keys
			// filtered out (match, dbMap) it could otherwise hold the checkpoint back for a
			// long stretch of the file.
			if cur != nil && im.checkpointDue() {
				if err := issue(); err != nil {
					return im.writerErr(err)
				}
			}
			im.checkpoint(im.rd.Offset(), im.rd.DB(), false)
		}
		e, err := im.rd.Next()
		if err == io.EOF {
			return issue()
		}
		if err != nil {
			_ = issue()
			return err
		}
		switch e.Kind {
		case rdb.KindFunction:
			if err := issue(); err != nil {
				return err
			}
			im.function(ctx, e)
			continue
		case rdb.KindModuleAux:
			im.mu.Lock()
			im.aux.ModuleAux++
			im.mu.Unlock()
			continue
		case rdb.KindKey:
		default:
			continue
		}
		tdb, mapped := im.o.DBMap.Target[e.DB]
		if !mapped {
			if !im.o.ExplicitDBMap {
				_ = issue()
				return fmt.Errorf("the file has keys in db %d (first: %q at offset %d); the target serves one database, so say where they go, "+
					"e.g. --db-map 0:0,%d:0 --db-prefix %d:db%d: (or list only the dbs to import in --db-map); keys before it were imported",
					e.DB, copier.PrintableKey(e.Key), e.Offset, e.DB, e.DB, e.DB)
			}
			if e.Last {
				im.mu.Lock()
				im.aux.NotCopied[e.DB]++
				im.mu.Unlock()
			}
			continue
		}
		if im.o.Match != "" && !verify.Glob(im.o.Match, string(e.Key)) {
			continue
		}
		if im.o.Type != "" && e.Type.String() != im.o.Type {
			continue
		}
		prefix := im.o.DBMap.Prefix[e.DB]
		target := prefix + string(e.Key)
		dst := im.dst.Keys(tdb)
		// Hash fields whose own TTL has passed are left out, as a loading server leaves them.
		if h, ok := e.Value.(*rdb.Hash); ok {
			if live := liveFields(h, now); live != h {
				e.Value, e.Raw = live, nil
			}
		}

		// A value in parts: build it in a scratch key, one part at a time. One already expired
		// is not written at all (a loading server drops it too).
		if !skipping && e.Part == 0 && !e.Last && e.ExpireAtMs > 0 && e.ExpireAtMs <= now {
			if err := issue(); err != nil {
				return err
			}
			skipping, skipped = true, copier.Result{Expired: 1}
		}
		if skipping {
			if e.Last {
				inline(e.Offset, e.DB, skipped)
				skipping = false
			}
			continue
		}
		if big != nil || !e.Last {
			if big == nil {
				if err := issue(); err != nil {
					return err
				}
				big, bigDropped = keywriter.New(dst, target), 0
			}
			d, err := big.AddValue(ctx, e.Value, keywriter.ValueOptions{FieldTTL: im.fieldTTL()})
			bigDropped += max(d, im.droppedFieldTTLs(e.Value))
			if err != nil {
				big.Abort(ctx)
				big = nil
				if !isReply(err) {
					// Not this key's fault (the target went away): stop, resumable.
					return im.writerErr(fmt.Errorf("writing big key %q: %w", copier.PrintableKey([]byte(target)), err))
				}
				// The target refused this value: fail the key, read past its other parts.
				skipping, skipped = true, failed(target, "writing a big value in parts: "+err.Error())
				if e.Last {
					inline(e.Offset, e.DB, skipped)
					skipping = false
				}
				continue
			}
			if e.Last {
				res, err := im.commit(ctx, big, e.ExpireAtMs, now, bigDropped, true)
				big = nil
				if err != nil {
					return im.writerErr(err)
				}
				inline(e.Offset, e.DB, res)
			}
			continue
		}

		if cur == nil {
			cur = newBatch(e.Offset, e.DB)
		}
		if cur.tdb != tdb || cur.prefix != prefix {
			if len(cur.items)+len(cur.reenc) > 0 || cur.scanned > 0 {
				if err := issue(); err != nil {
					return err
				}
				cur = newBatch(e.Offset, e.DB)
			}
			cur.tdb, cur.prefix = tdb, prefix
		}
		cur.scanned++
		if e.ExpireAtMs > 0 && e.ExpireAtMs <= now {
			cur.result.Expired++ // a loading server drops it too
			continue
		}
		if h, ok := e.Value.(*rdb.Hash); ok && len(h.Fields) == 0 {
			cur.result.Expired++ // every field had expired (the reader skips empty hashes)
			continue
		}
		payload, how, err := im.payload(e)
		if err != nil {
			_ = issue()
			return err
		}
		switch how {
		case "restore", "reencode":
			p := copier.Payload{Key: e.Key, Data: noCopyString(payload), ExpireAt: e.ExpireAtMs, Idle: e.Idle, Freq: e.Freq}
			if how == "restore" {
				if cur.items == nil {
					cur.items = make([]copier.Payload, 0, batchItems) // not grown by doubling
				}
				cur.items = append(cur.items, p)
			} else {
				cur.reenc = append(cur.reenc, p)
			}
			cur.bytes += len(payload)
		case "module":
			cur.scanned--
			if err := issue(); err != nil {
				return err
			}
			res, err := im.module(ctx, dst, target, e, payload)
			if err != nil {
				return im.writerErr(err)
			}
			inline(e.Offset, e.DB, res)
		default: // rebuild with commands
			cur.scanned--
			if err := issue(); err != nil {
				return err
			}
			b := keywriter.New(dst, target)
			dropped, err := b.AddValue(ctx, e.Value, keywriter.ValueOptions{FieldTTL: im.fieldTTL()})
			if err != nil {
				b.Abort(ctx)
				if !isReply(err) {
					return im.writerErr(fmt.Errorf("writing %q: %w", copier.PrintableKey([]byte(target)), err))
				}
				inline(e.Offset, e.DB, failed(target, "writing with commands: "+err.Error()))
				continue
			}
			res, err := im.commit(ctx, b, e.ExpireAtMs, now, max(dropped, im.droppedFieldTTLs(e.Value)), false)
			if err != nil {
				return im.writerErr(err)
			}
			inline(e.Offset, e.DB, res)
		}
		if cur != nil && (len(cur.items)+len(cur.reenc) >= batchItems || cur.bytes >= batchBytes) {
			if err := issue(); err != nil {
				return err
			}
		}
	}
}

// payload picks how a single-part value is written: its own bytes when the target reads the
// encoding, re-encoded when it does not, or commands. Only the last two need the value decoded
// (e.Value is set for them).
func (im *importer) payload(e *rdb.Entry) ([]byte, string, error) {
	if e.Type == rdb.TypeModule {
		if e.Raw == nil {
			return nil, "commands", nil
		}
		return rdb.BuildDump(e.TypeByte, e.Raw, uint16(im.payloadVersion())), "module", nil
	}
	if rdb.HasFieldTTLs(e.Value) {
		return nil, "commands", nil
	}
	if e.Raw != nil && e.TypeByte < 22 {
		if min := rdb.TypeMinVersion(e.TypeByte, im.rd.IsValkey()); min > 0 && min <= im.targetRDB {
			return e.Dump(uint16(im.payloadVersion())), "restore", nil
		}
	}
	v, err := im.rd.Decode(e)
	if err != nil {
		return nil, "", err
	}
	e.Value = v
	if p, err := rdb.EncodeDump(e.Value, im.targetRDB); err == nil {
		return p, "reencode", nil
	}
	return nil, "commands", nil
}

// liveFields returns h without the fields whose TTL is at or before now (h itself if none).
func liveFields(h *rdb.Hash, now int64) *rdb.Hash {
	for i, f := range h.Fields {
		if f.ExpireAtMs <= 0 || f.ExpireAtMs > now {
			continue
		}
		live := &rdb.Hash{Fields: append([]rdb.HashField(nil), h.Fields[:i]...)}
		for _, f := range h.Fields[i+1:] {
			if f.ExpireAtMs <= 0 || f.ExpireAtMs > now {
				live.Fields = append(live.Fields, f)
			}
		}
		return live
	}
	return h
}

// droppedFieldTTLs counts the hash field TTLs a target without field TTLs loses (counted here:
// keywriter's AddValue does not return its count for hashes).
func (im *importer) droppedFieldTTLs(v rdb.Value) int {
	h, ok := v.(*rdb.Hash)
	if !ok || im.fieldTTL() {
		return 0
	}
	n := 0
	for _, f := range h.Fields {
		if f.ExpireAtMs > 0 {
			n++
		}
	}
	return n
}

// payloadVersion labels fast-path payloads: the file's version, capped at what the target reads
// (an encoding keeps its meaning across versions; only new type codes are new).
func (im *importer) payloadVersion() int {
	v := im.rd.Version()
	if im.rd.IsValkey() || v > im.targetRDB {
		v = im.targetRDB
	}
	return v
}

func (im *importer) fieldTTL() bool {
	return im.dst.Version.HasFieldTTL()
}

// commit renames a value built with commands over its key; parts says it came in parts (a big
// key) rather than whole (a fallback key: no payload the target reads). The error is for a
// target gone away: the key is then not counted, so a resumed import writes it again.
func (im *importer) commit(ctx context.Context, b *keywriter.Builder, expireAt, now int64, dropped int, parts bool) (copier.Result, error) {
	var r copier.Result
	if !b.Started() {
		// Nothing written: every field of a hash had expired (the reader skips empty values).
		r.Expired++
		return r, nil
	}
	if expireAt > 0 && expireAt <= now {
		b.Abort(ctx)
		r.Expired++
		return r, nil
	}
	mode := keywriter.Fail
	switch im.existing {
	case copier.ExistingReplace:
		mode = keywriter.Replace
	case copier.ExistingSkip:
		mode = keywriter.Skip
	}
	err := b.Commit(ctx, expireAt, mode)
	switch {
	case errors.Is(err, keywriter.ErrExists) && mode == keywriter.Skip:
		r.Skipped++
	case err != nil && !errors.Is(err, keywriter.ErrExists) && !isReply(err):
		return r, fmt.Errorf("writing %q: %w", copier.PrintableKey([]byte(b.Key)), err)
	case err != nil:
		return failed(b.Key, err.Error()), nil
	case dropped > 0:
		return failed(b.Key, fmt.Sprintf("written without its %d hash field TTLs: the target has no field TTLs (Redis 7.4+ needed)", dropped)), nil
	case parts:
		r.Copied++
		r.Big++
	default:
		r.Copied++
		r.Fallback++
	}
	return r, nil
}

// isReply reports an error reply from the server about this key, as opposed to a connection
// problem or a cancelled context (go-redis reports some of those as "redis: ..." errors too).
func isReply(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	m := re.Error()
	return !strings.HasPrefix(m, "redis: ") || strings.HasPrefix(m, "redis: nil")
}

// module RESTOREs a module value; a target without the module refuses it, and --modules says
// whether that skips or fails the key.
func (im *importer) module(ctx context.Context, dst redis.UniversalClient, target string, e *rdb.Entry, payload []byte) (copier.Result, error) {
	var r copier.Result
	args := []any{"RESTORE", target, e.ExpireAtMs, payload}
	if e.ExpireAtMs > 0 {
		args = append(args, "ABSTTL")
	}
	if im.existing == copier.ExistingReplace {
		args = append(args, "REPLACE")
	}
	cmd := redisconn.NewOnce(ctx, args...) // a re-sent RESTORE that landed would say BUSYKEY
	_ = dst.Process(ctx, cmd)
	err := cmd.Err()
	if err != nil && !isReply(err) {
		return r, fmt.Errorf("writing module value %q: %w", copier.PrintableKey([]byte(target)), err)
	}
	name := "unknown"
	if m, ok := e.Value.(*rdb.Module); ok {
		name = m.Name
	}
	switch {
	case err == nil:
		r.Copied++
		r.Bytes += int64(len(payload))
	case strings.HasPrefix(err.Error(), "BUSYKEY") && im.existing == copier.ExistingSkip:
		r.Skipped++
	case im.o.Modules == ModulesSkip:
		r.Skipped++
		im.note(fmt.Sprintf("skipped module value %q (module %s): %v", copier.PrintableKey([]byte(target)), name, err))
	default:
		return failed(target, fmt.Sprintf("module value (module %s) refused by the target: %v (use --modules skip to leave such keys out)", name, err)), nil
	}
	return r, nil
}

// function loads a FUNCTION2 library when asked (on every master of a cluster).
func (im *importer) function(ctx context.Context, e *rdb.Entry) {
	im.mu.Lock()
	im.aux.FunctionsFound++
	im.mu.Unlock()
	if im.o.Functions == FunctionsSkip {
		return
	}
	load := func(c *redis.Client) error {
		if im.o.Functions == FunctionsReplace {
			return c.FunctionLoadReplace(ctx, string(e.Function)).Err()
		}
		err := c.FunctionLoad(ctx, string(e.Function)).Err()
		if err != nil && strings.Contains(err.Error(), "already exists") && sameLibrary(ctx, c, e.Function) {
			return nil // this very code is loaded (an earlier or interrupted run of this import)
		}
		return err
	}
	var err error
	for _, m := range im.dst.Masters() {
		if err = load(im.dst.Node(m, 0)); err != nil {
			break
		}
	}
	if err != nil {
		im.note("function library not loaded: " + err.Error())
		return
	}
	im.mu.Lock()
	im.aux.Functions++
	im.mu.Unlock()
}

// sameLibrary reports whether the target holds a library with exactly this code.
func sameLibrary(ctx context.Context, c *redis.Client, code []byte) bool {
	// The name is in the first line: "#!lua name=mylib ...".
	first, _, _ := strings.Cut(string(code), "\n")
	name := ""
	for _, f := range strings.Fields(first) {
		if v, ok := strings.CutPrefix(f, "name="); ok {
			name = v
		}
	}
	if name == "" {
		return false
	}
	libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: name, WithCode: true}).Result()
	if err != nil {
		return false
	}
	for _, l := range libs {
		if l.Name == name && l.Code == string(code) {
			return true
		}
	}
	return false
}

func (im *importer) note(s string) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if len(im.sum.Notes) < 50 {
		im.sum.Notes = append(im.sum.Notes, s)
	}
}

func (im *importer) writerErr(err error) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	for _, b := range im.pending {
		if b.err != nil {
			return b.err
		}
	}
	return err
}

func failed(key, reason string) copier.Result {
	var r copier.Result
	r.Failed = 1
	r.Failures = []copier.KeyFailure{{Key: copier.PrintableKey([]byte(key)), Reason: reason}}
	return r
}

// noCopyString views a freshly built payload as a string without copying it: the payload is
// never written after it is built, and a copy per key showed in the import's CPU profile.
func noCopyString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
