// Package importer streams an RDB file into a target Redis. Keys go in with pipelined RESTORE of
// the file's own value bytes when the target reads that encoding (the fast path), re-encoded for
// the target when it does not, and rebuilt with type commands when a value is too big for one
// command or cannot be re-encoded. Progress is checkpointed at entry boundaries, so an
// interrupted import resumes where it stopped with exact counts.
package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"sync"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/fallback"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// Policy values for functions and module values.
const (
	FunctionsSkip    = "skip"
	FunctionsLoad    = "load"
	FunctionsReplace = "replace"
	ModulesSkip      = "skip"
	ModulesFail      = "fail"
)

// Options configure an import.
type Options struct {
	Existing      copier.Existing
	DBMap         config.DBMap
	ExplicitDBMap bool
	Match         string // glob on key names; "" = all
	Type          string // only keys of this SCAN TYPE name (string, list, ...); "" = all
	VerifyCompare string // verify.CompareDump (default) or verify.CompareDigest, for Verify
	// WroteAll tells Verify the import wrote every key it read (none failed or was skipped), so
	// the target holds the file's values and a small one needs no MEMORY USAGE before its DUMP.
	WroteAll     bool
	Functions    string // skip (default), load, replace
	Modules      string // fail (default), skip
	SkipChecksum bool
	Workers      int // parallel pipelined writers; default 4
	// Checkpoint is called about every CheckpointEvery with a position from which the import
	// can resume and the exact counts up to it.
	Checkpoint      func(Checkpoint) error
	CheckpointEvery time.Duration
	// Resume continues from a checkpoint instead of the start of the file; the reader passed to
	// Import must then start at Resume.Offset. Keys after the checkpoint that the interrupted run
	// wrote are overwritten under --existing fail (exact counts); under skip they cannot be told
	// from the target's own keys and are counted as skipped.
	Resume *Checkpoint
	// Progress is called with bytes consumed and running counts.
	Progress func(offset int64, counts copier.Result)
	// Now is the clock (tests).
	Now func() time.Time
}

// Checkpoint is a resumable position: every entry before Offset is written and counted.
type Checkpoint struct {
	Offset  int64         `json:"offset"`
	DB      int           `json:"db"`
	Version int           `json:"version"`
	Valkey  bool          `json:"valkey,omitempty"`
	Counts  copier.Result `json:"counts"`
	Scanned int64         `json:"scanned"`
	// What was met before Offset besides keys, so a resumed import reports whole-file totals
	// without counting anything twice.
	Aux AuxCounts `json:"aux,omitempty"`
}

// AuxCounts are the non-key totals of an import.
type AuxCounts struct {
	EmptySkipped   int           `json:"empty_collections_skipped,omitempty"`
	ModuleAux      int           `json:"module_aux_skipped,omitempty"`
	Functions      int           `json:"functions_loaded,omitempty"`
	FunctionsFound int           `json:"functions_found,omitempty"`
	NotCopied      map[int]int64 `json:"not_copied,omitempty"`
}

func (a AuxCounts) clone() AuxCounts {
	if a.NotCopied != nil {
		m := make(map[int]int64, len(a.NotCopied))
		for k, v := range a.NotCopied {
			m[k] = v
		}
		a.NotCopied = m
	}
	return a
}

// Summary is an import's outcome.
type Summary struct {
	copier.Result
	Scanned        int64            `json:"keys_scanned"`
	Functions      int              `json:"functions_loaded"`
	FunctionsFound int              `json:"functions_found"`
	ModuleAux      int              `json:"module_aux_skipped,omitempty"`
	EmptySkipped   int              `json:"empty_collections_skipped,omitempty"`
	NotCopiedDBs   map[string]int64 `json:"not_copied_dbs,omitempty"`
	RDBVersion     int              `json:"rdb_version"`
	Notes          []string         `json:"notes,omitempty"`
	Offset         int64            `json:"offset"`
}

// Check refuses imports that would clobber data: with --existing fail, the mapped target
// databases must be empty; cluster targets only have db 0.
func Check(ctx context.Context, dst *redisconn.Conn, o Options) error {
	m := o.DBMap
	if m.Target == nil {
		m = config.DefaultDBMap()
	}
	if err := m.Check(false); err != nil {
		return err
	}
	seen := map[int]bool{}
	for _, s := range m.Sources() {
		tdb := m.Target[s]
		if dst.Cluster && tdb != 0 {
			return fmt.Errorf("db map sends db %d to target db %d, but the target is a cluster and only has db 0", s, tdb)
		}
		if seen[tdb] || o.Resume != nil {
			continue
		}
		seen[tdb] = true
		n, err := dst.DBSize(ctx, tdb)
		if err != nil {
			return err
		}
		if n > 0 && (o.Existing == "" || o.Existing == copier.ExistingFail) {
			return fmt.Errorf("target db %d already holds %d keys; refusing to import into a non-empty database "+
				"(use --existing skip to keep the target's keys, or --existing replace to overwrite them)", tdb, n)
		}
	}
	return nil
}

// batch is a run of entries written together.
type batch struct {
	seq     int
	start   int64 // offset of the first entry
	db      int
	aux     AuxCounts // non-key totals before start (for a checkpoint at start)
	scanned int64
	items   []copier.Payload // the file's own value bytes
	reenc   []copier.Payload // re-encoded for the target (counted as fallback)
	bytes   int
	tdb     int
	prefix  string
	result  copier.Result
	err     error
	done    bool
}

// Import reads an RDB stream and writes it into dst.
func Import(ctx context.Context, r io.Reader, dst *redisconn.Conn, o Options) (*Summary, error) {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DBMap.Target == nil {
		o.DBMap = config.DefaultDBMap()
	}
	if o.Functions == "" {
		o.Functions = FunctionsSkip
	}
	if o.Modules == "" {
		o.Modules = ModulesFail
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 2 * time.Second
	}
	if o.Existing == "" {
		o.Existing = copier.ExistingFail
	}
	// Values the target RESTOREs as the file's own bytes are not decoded (only walked and checked);
	// the others are decoded when they are met (im.value).
	ropts := rdb.Options{SkipChecksum: o.SkipChecksum, RawValues: true, ReuseEntries: true}
	var rd *rdb.Reader
	var err error
	sum := &Summary{}
	var base AuxCounts
	if o.Resume != nil {
		rd, err = rdb.NewReaderAt(r, o.Resume.Offset, o.Resume.Version, o.Resume.Valkey, o.Resume.DB, ropts)
		sum.Result = o.Resume.Counts
		sum.Result.Failures = append([]copier.KeyFailure(nil), o.Resume.Counts.Failures...)
		sum.Scanned = o.Resume.Scanned
		base = o.Resume.Aux.clone()
	} else {
		rd, err = rdb.NewReader(r, ropts)
	}
	if err != nil {
		return sum, err
	}
	sum.RDBVersion = rd.Version()
	// Resuming under --existing fail: the target was empty when the import began, so a key
	// after the checkpoint that exists now was written by the interrupted run (its batch was
	// not acknowledged, so not counted). Overwrite it rather than fail it.
	existing := o.Existing
	if o.Resume != nil && existing == copier.ExistingFail {
		existing = copier.ExistingReplace
	}
	cp := copier.New(nil, dst, copier.Options{Existing: existing, DBMap: o.DBMap, Fallback: fallback.New(dst), Reencode: fallback.Reencoder(dst)})
	cp.Now = o.Now
	im := &importer{o: o, existing: existing, dst: dst, cp: cp, rd: rd, sum: sum, targetRDB: dst.Version.RDB,
		aux: base, baseEmpty: base.EmptySkipped}
	if im.aux.NotCopied == nil {
		im.aux.NotCopied = map[int]int64{}
	}
	return im.run(ctx)
}

type importer struct {
	o         Options
	existing  copier.Existing // o.Existing, or replace when resuming under fail
	dst       *redisconn.Conn
	cp        *copier.Copier
	rd        *rdb.Reader
	sum       *Summary
	targetRDB int

	mu         sync.Mutex
	pending    map[int]*batch // by seq, not yet folded into sum
	nextFold   int
	lastCkpt   time.Time
	ckptErr    error
	aux        AuxCounts // non-key totals so far (EmptySkipped comes from the reader)
	baseEmpty  int       // empty collections skipped before the resume point
	progressed int64     // furthest batch start reported to Progress
}

// auxNow is the non-key totals up to the reader's position (caller holds mu).
func (im *importer) auxNow() AuxCounts {
	a := im.aux.clone()
	a.EmptySkipped = im.baseEmpty + im.rd.EmptySkipped()
	return a
}

func (im *importer) run(ctx context.Context) (*Summary, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	im.pending = map[int]*batch{}
	im.lastCkpt = time.Now()
	work := make(chan *batch, im.o.Workers)
	var wg sync.WaitGroup
	for i := 0; i < im.o.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				dst := im.dst.Keys(b.tdb)
				err := im.cp.Restore(ctx, dst, b.prefix, b.items, &b.result)
				if err == nil && len(b.reenc) > 0 {
					// Every key written from a payload re-encoded for the target is a fallback key.
					var r copier.Result
					err = im.cp.Restore(ctx, dst, b.prefix, b.reenc, &r)
					r.Fallback = r.Copied
					b.result.Add(r)
				}
				b.items, b.reenc = nil, nil
				im.mu.Lock()
				b.err = err // read by the reader (writerErr) under mu
				im.mu.Unlock()
				im.finish(b)
				if err != nil {
					cancel()
				}
			}
		}()
	}
	readErr := im.read(ctx, work)
	close(work)
	wg.Wait()
	im.mu.Lock()
	defer im.mu.Unlock()
	a := im.auxNow()
	im.sum.EmptySkipped, im.sum.ModuleAux = a.EmptySkipped, a.ModuleAux
	im.sum.Functions, im.sum.FunctionsFound = a.Functions, a.FunctionsFound
	for db, n := range a.NotCopied {
		if im.sum.NotCopiedDBs == nil {
			im.sum.NotCopiedDBs = map[string]int64{}
		}
		im.sum.NotCopiedDBs[fmt.Sprintf("db%d", db)] = n
	}
	for _, b := range im.pending {
		if b.err != nil {
			msg := redact.Error(b.err)
			if !strings.HasPrefix(msg, "writing to target") { // the copier's errors say it already
				msg = "writing to target: " + msg
			}
			return im.sum, errors.New(msg)
		}
	}
	if readErr != nil {
		return im.sum, readErr
	}
	if im.ckptErr != nil {
		return im.sum, im.ckptErr
	}
	return im.sum, nil
}

// finish records a finished batch and folds every contiguous finished batch into the summary;
// the first unfinished batch's start is the resumable checkpoint.
func (im *importer) finish(b *batch) {
	im.mu.Lock()
	defer im.mu.Unlock()
	b.done = true
	im.pending[b.seq] = b
	for {
		nb, ok := im.pending[im.nextFold]
		if !ok || !nb.done || nb.err != nil {
			break
		}
		im.sum.Result.Add(nb.result)
		im.sum.Scanned += nb.scanned
		delete(im.pending, im.nextFold)
		im.nextFold++
	}
	if im.o.Progress != nil {
		// Writers finish out of order: report the furthest point, so a progress bar never
		// moves back.
		im.progressed = max(im.progressed, b.start)
		im.o.Progress(im.progressed, im.sum.Result)
	}
}

// checkpointDue reports whether the checkpoint interval has passed.
func (im *importer) checkpointDue() bool {
	if im.o.Checkpoint == nil {
		return false
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	return time.Since(im.lastCkpt) >= im.o.CheckpointEvery
}

// checkpoint reports the position of the first batch not yet folded (called by the reader
// between batches, so the next batch's start is known).
func (im *importer) checkpoint(next int64, db int, force bool) {
	if im.o.Checkpoint == nil {
		return
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if !force && time.Since(im.lastCkpt) < im.o.CheckpointEvery {
		return
	}
	off, cdb, aux := next, db, im.auxNow()
	if b, ok := im.pending[im.nextFold]; ok {
		off, cdb, aux = b.start, b.db, b.aux.clone()
	}
	im.lastCkpt = time.Now()
	res := im.sum.Result
	res.Failures = append([]copier.KeyFailure(nil), res.Failures...)
	if len(aux.NotCopied) == 0 {
		aux.NotCopied = nil
	}
	if err := im.o.Checkpoint(Checkpoint{Offset: off, DB: cdb, Version: im.rd.Version(), Valkey: im.rd.IsValkey(),
		Counts: res, Scanned: im.sum.Scanned, Aux: aux}); err != nil {
		im.ckptErr = err
	}
}
