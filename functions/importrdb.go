package functions

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/redis-migrate/redis-migrate/shared/blobsrc"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/importer"
	"github.com/redis-migrate/redis-migrate/shared/rdb"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// App settings of RDB imports. The IMPORT_* defaults apply to a blob dropped into rdb-imports
// without a migration record (no POST /api/imports): IMPORT_TARGET_SETTING names the app setting
// that holds the target URL; without it such blobs are not imported.
const (
	SettingImportTarget    = "IMPORT_TARGET_SETTING"
	SettingImportExisting  = "IMPORT_EXISTING"
	SettingImportDBMap     = "IMPORT_DB_MAP"
	SettingImportDBPrefix  = "IMPORT_DB_PREFIX"
	SettingImportMatch     = "IMPORT_MATCH"
	SettingImportFunctions = "IMPORT_FUNCTIONS"
	SettingImportModules   = "IMPORT_MODULES"
	// SettingImportSeconds bounds one invocation; keep it below host.json's functionTimeout.
	SettingImportSeconds = "IMPORT_INVOCATION_SECONDS"
	// SettingImportCheckpointMs is how often the checkpoint is written to the migration record.
	SettingImportCheckpointMs = "IMPORT_CHECKPOINT_MS"
	// SettingImportMaxAttempts matches host.json's blobs.poisonBlobThreshold.
	SettingImportMaxAttempts = "IMPORT_MAX_ATTEMPTS"
)

const (
	// ImportContainer is the ImportRdb trigger's container (functions/ImportRdb/function.json).
	ImportContainer = "rdb-imports"
	importBinding   = "rdb"
	// MetadataMigration is the blob metadata naming the import's migration record.
	MetadataMigration = "migration"
	metadataRequested = "importrequested"

	importLease = 2 * time.Minute
	// A metadata rewrite older than this was abandoned (its writer died).
	touchGrace = time.Minute
)

func init() { registerTrigger("ImportRdb", func(a *App) triggerFunc { return a.importRdb }) }

// importCheckpointHook, when set (tests), runs after every checkpoint written; true interrupts
// the invocation there, as a functionTimeout or a crash would.
var importCheckpointHook func(id string, ck state.ImportCheckpoint) bool

var (
	errBudget      = errors.New("the invocation's time budget (" + SettingImportSeconds + ") ran out")
	errInterrupted = errors.New("interrupted")
	errLeaseLost   = errors.New("another invocation took the import over")
)

// importRdb is the blob trigger: it imports rdb-imports/{name} into the target its migration
// record names, from the record's checkpoint when an earlier invocation was cut short. Only the
// blob's name, Uri and properties are read from the invocation; the content is streamed from
// storage with ranged reads.
func (a *App) importRdb(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	b, err := inv.Blob(importBinding)
	if err != nil {
		return false, err
	}
	if b.HadContent {
		// A binding without supportsDeferredBinding: the host read the whole blob. Ignore it.
		a.logf("ImportRdb: the host sent the blob's content; ignored (declare supportsDeferredBinding)")
	}
	if a.store == nil {
		return true, errors.New("the function app has no state storage configured (AzureWebJobsStorage)")
	}
	container := b.Container
	if container == "" {
		container = ImportContainer
	}
	conn := SettingStorage
	if b.Descriptor != nil && b.Descriptor.Connection != "" {
		conn = b.Descriptor.Connection
	}
	bc, err := a.importBlobClient(conn, container, b.BlobName)
	if err != nil {
		return true, err
	}
	src, err := blobsrc.OpenClient(ctx, bc)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) || strings.Contains(err.Error(), "BlobNotFound") {
			reply.Log("blob %s/%s is gone; nothing to import", container, b.BlobName)
			return false, nil
		}
		return true, err
	}
	mig, err := a.importRecord(ctx, b, container, src)
	if err != nil || mig == nil {
		return false, err
	}
	return a.runImport(ctx, mig.ID, bc, src, reply)
}

// importRecord finds the migration record of a triggered blob: the one its metadata names
// (created by POST /api/imports, or by the first invocation from the IMPORT_* defaults), or one
// with an id derived from the blob version. nil without error: nothing to do (logged).
func (a *App) importRecord(ctx context.Context, b *hostproto.BlobTrigger, container string, src *blobsrc.Blob) (*state.Migration, error) {
	id := ""
	for k, v := range b.Metadata {
		if strings.EqualFold(k, MetadataMigration) {
			id = strings.TrimSpace(v)
		}
	}
	if id != "" && !state.ValidID(id) {
		a.logf("ImportRdb: blob %s/%s: metadata migration=%q is not a migration id; not imported", container, b.BlobName, id)
		return nil, nil
	}
	if id == "" {
		id = defaultImportID(container, b.BlobName, src.ETag)
	}
	mig, err := a.store.GetMigration(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		mig, err = a.createDefaultImport(ctx, id, container, b.BlobName, src)
	}
	if err != nil || mig == nil {
		return nil, err
	}
	if mig.Kind != "import" || mig.Import == nil {
		a.logf("ImportRdb: blob %s/%s names migration %s, which is not an import; not imported", container, b.BlobName, id)
		return nil, nil
	}
	if mig.Import.Container != container || mig.Import.Blob != b.BlobName {
		a.logf("ImportRdb: blob %s/%s names import %s, which imports %s/%s; not imported", container, b.BlobName, id,
			mig.Import.Container, mig.Import.Blob)
		return nil, nil
	}
	return mig, nil
}

// createDefaultImport writes the record of a blob that arrived without one, from the IMPORT_*
// settings. Invalid settings give a failed record (status says which setting); no target
// setting means imports are only started by POST /api/imports.
func (a *App) createDefaultImport(ctx context.Context, id, container, name string, src *blobsrc.Blob) (*state.Migration, error) {
	target := strings.TrimSpace(a.getenv(SettingImportTarget))
	if target == "" {
		a.logf("ImportRdb: blob %s/%s not imported: no migration record (POST /api/imports) and %s is not set", container, name, SettingImportTarget)
		return nil, nil
	}
	req := &ImportRequest{Target: &EndpointReq{Setting: target}, Existing: a.getenv(SettingImportExisting),
		DBMap: a.getenv(SettingImportDBMap), DBPrefix: a.getenv(SettingImportDBPrefix), Match: a.getenv(SettingImportMatch),
		Functions: a.getenv(SettingImportFunctions), Modules: a.getenv(SettingImportModules)}
	mig := newImportRecord(id, req, container, name, src)
	err := checkImportOptions(req)
	if err == nil {
		_, err = a.resolveEndpoint(mig.Target, "target")
	}
	if err != nil {
		var fe *fieldError
		msg := redact.Error(err)
		if errors.As(err, &fe) {
			msg = fmt.Sprintf("app setting %s: %s", settingOfField(fe.field), fe.msg)
		}
		mig.Import.Error = "import settings: " + msg
	}
	if err := a.store.CreateMigration(ctx, mig); errors.Is(err, state.ErrExists) {
		return a.store.GetMigration(ctx, id)
	} else if err != nil {
		return nil, err
	}
	a.logf("ImportRdb: import %s of blob %s/%s (%d bytes) into %s; status at /api/migrations/%s", id, container, name, src.Size,
		mig.Target.Describe(), id)
	return mig, nil
}

func settingOfField(field string) string {
	switch strings.SplitN(field, ".", 2)[0] {
	case "existing":
		return SettingImportExisting
	case "dbMap":
		return SettingImportDBMap
	case "dbPrefix":
		return SettingImportDBPrefix
	case "match":
		return SettingImportMatch
	case "functions":
		return SettingImportFunctions
	case "modules":
		return SettingImportModules
	}
	return SettingImportTarget
}

// defaultImportID names the import of a blob version without a record: rdb-<name>-<hash>.
func defaultImportID(container, name, etag string) string {
	h := sha256.Sum256([]byte(container + "/" + name + "\x00" + etag))
	var sb strings.Builder
	dash := false
	for _, r := range strings.ToLower(path.Base(name)) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			sb.WriteRune(r)
			dash = false
		} else if !dash && sb.Len() > 0 {
			sb.WriteByte('-')
			dash = true
		}
		if sb.Len() >= 40 {
			break
		}
	}
	slug := strings.Trim(sb.String(), "-")
	if slug == "" {
		slug = "blob"
	}
	return "rdb-" + slug + "-" + hex.EncodeToString(h[:4])
}

func newImportRecord(id string, req *ImportRequest, container, name string, src *blobsrc.Blob) *state.Migration {
	existing := req.Existing
	if existing == "" {
		existing = string(copier.ExistingFail)
	}
	now := time.Now().UTC()
	return &state.Migration{ID: id, Kind: "import", CreatedAt: now, Target: req.Target.ref(),
		Options: state.Options{Existing: existing, DBMap: req.DBMap, DBPrefix: req.DBPrefix, ExplicitDBMap: req.DBMap != "",
			Match: req.Match, Functions: req.Functions, Modules: req.Modules, SkipChecksum: req.SkipChecksum},
		Import: &state.ImportCheckpoint{Container: container, Blob: name, ETag: src.ETag, Size: src.Size, UpdatedAt: now}}
}

// importBlobClient reaches a blob through the storage connection named conn (a connection
// string, or identity-based <conn>__blobServiceUri).
func (a *App) importBlobClient(conn, container, name string) (*blob.Client, error) {
	if cs := strings.TrimSpace(a.getenv(conn)); cs != "" {
		cs = state.ConnectionString(cs)
		state.RegisterSecrets(cs)
		svc, err := service.NewClientFromConnectionString(cs, nil)
		if err != nil {
			return nil, fmt.Errorf("storage connection %s: %s", conn, redact.Error(err))
		}
		return svc.NewContainerClient(container).NewBlobClient(name), nil
	}
	uri, cred, err := storageIdentity(a.getenv, conn)
	if err != nil {
		return nil, err
	}
	svc, err := service.NewClient(uri, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("storage %s: %s", uri, redact.Error(err))
	}
	return svc.NewContainerClient(container).NewBlobClient(name), nil
}

// updateImport applies fn to an import's checkpoint, stamping UpdatedAt when it writes.
func (a *App) updateImport(ctx context.Context, id string, fn func(*state.ImportCheckpoint) (bool, error)) (*state.Migration, error) {
	return a.store.UpdateMigration(ctx, id, func(m *state.Migration) (bool, error) {
		if m.Import == nil {
			return false, fmt.Errorf("migration %s is not an import", id)
		}
		w, err := fn(m.Import)
		if w {
			m.Import.UpdatedAt = time.Now().UTC()
		}
		return w, err
	})
}

func addNote(im *state.ImportCheckpoint, note string) {
	if len(im.Notes) >= 20 {
		im.Notes = im.Notes[1:]
	}
	im.Notes = append(im.Notes, note)
}

func newRunnerID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// claimImport takes the import's lease for this invocation and decides where it starts. It
// waits (up to a lease) for another invocation that holds it, or for a metadata rewrite in
// flight. skip is set when there is nothing to do. The blob's properties are read again before
// an ETag that differs from the checkpoint's counts as a change: a rewrite of the metadata may
// have landed since the invocation read them.
func (a *App) claimImport(ctx context.Context, id, me string, bc *blob.Client, src *blobsrc.Blob) (mig *state.Migration, cur *blobsrc.Blob, skip string, err error) {
	giveUp := time.Now().Add(importLease + 15*time.Second)
	fresh := false
	for {
		var wait string
		recheck := false
		mig, err = a.updateImport(ctx, id, func(im *state.ImportCheckpoint) (bool, error) {
			wait, skip, recheck = "", "", false
			now := time.Now().UTC()
			if im.TouchFrom != "" && now.Sub(im.TouchedAt) < touchGrace {
				wait = "the blob's metadata is being rewritten to restart the import"
				return false, nil
			}
			if im.Runner != "" && im.Runner != me && now.Before(im.LeaseUntil) {
				wait = "another invocation is importing it (runner " + im.Runner + ")"
				return false, nil
			}
			im.TouchFrom = ""
			if im.ETag != src.ETag && !fresh {
				recheck = true
				return false, nil
			}
			if im.ETag != src.ETag {
				if im.Offset > 0 || im.Done || im.Started || im.Error != "" || im.Result.Keys() > 0 {
					addNote(im, fmt.Sprintf("the blob changed since the checkpoint (ETag %s, now %s): the import started over from the beginning",
						im.ETag, src.ETag))
					*im = state.ImportCheckpoint{Container: im.Container, Blob: im.Blob, Started: im.Started, Notes: im.Notes}
				}
				im.ETag, im.Size = src.ETag, src.Size
			}
			switch {
			case im.Done:
				skip = "already imported"
				return false, nil
			case im.Error != "":
				skip = "failed: " + im.Error
				return false, nil
			}
			im.Runner, im.LeaseUntil = me, now.Add(importLease)
			im.Attempts++
			im.ResumedFrom = im.Offset
			return true, nil
		})
		if err == nil && recheck {
			if src, err = blobsrc.OpenClient(ctx, bc); err != nil {
				return nil, nil, "", err
			}
			fresh = true
			continue
		}
		if err != nil || wait == "" {
			return mig, src, skip, err
		}
		if time.Now().After(giveUp) {
			return nil, nil, "", fmt.Errorf("import %s: %s; the host retries later", id, wait)
		}
		select {
		case <-ctx.Done():
			return nil, nil, "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		fresh = false
	}
}

// sourceReader remembers whether reading the blob itself failed, so a storage hiccup is
// retried rather than reported as a corrupt file.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// permanentImportError: the file itself is the problem; another attempt reads the same bytes.
func permanentImportError(err error) bool {
	var re *rdb.Error
	switch {
	case errors.As(err, &re), errors.Is(err, rdb.ErrCorrupt), errors.Is(err, rdb.ErrUnsupported),
		errors.Is(err, rdb.ErrChecksum), errors.Is(err, rdb.ErrLimit), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	// A database the db map does not place (importer's refusal, same every time).
	return strings.Contains(err.Error(), "the file has keys in db")
}

// runImport runs one invocation of an import: claim, preflight on a fresh start, stream from the
// checkpoint, and record the outcome. retry=true answers non-2xx so the host retries the blob.
func (a *App) runImport(ctx context.Context, id string, bc *blob.Client, src *blobsrc.Blob, reply *hostproto.Reply) (bool, error) {
	me := newRunnerID()
	mig, src, skip, err := a.claimImport(ctx, id, me, bc, src)
	if err != nil {
		return true, err
	}
	if skip != "" {
		reply.Log("import %s: %s", id, skip)
		return false, nil
	}
	im := *mig.Import
	o, err := importOptions(mig)
	if err != nil {
		return a.importFailed(ctx, id, me, fmt.Errorf("import options: %s", err), true)
	}
	// Its own connection, not the per-migration cache: a restart may have changed the target.
	dst, err := a.openEndpoint(ctx, mig.Target, "target")
	if err != nil {
		return a.importFailed(ctx, id, me, fmt.Errorf("target: %s", redact.Error(err)), false)
	}
	defer dst.Close()
	if !im.Started {
		if err := importer.Check(ctx, dst, o); err != nil {
			return a.importFailed(ctx, id, me, fmt.Errorf("preflight: %s", redact.Error(err)), true)
		}
		if _, err := a.updateImport(ctx, id, func(c *state.ImportCheckpoint) (bool, error) {
			c.Started = true
			return true, nil
		}); err != nil {
			return a.importFailed(ctx, id, me, err, false)
		}
	} else if o.Existing == copier.ExistingFail {
		// The target was empty at the first attempt; the keys found now past the checkpoint were
		// written by an interrupted attempt. Overwriting them keeps the counts exact.
		o.Existing = copier.ExistingReplace
	}
	if im.Offset > 0 && im.RDBVersion > 0 {
		o.Resume = &importer.Checkpoint{Offset: im.Offset, DB: im.DB, Version: im.RDBVersion, Valkey: im.Valkey,
			Counts: im.Result, Scanned: im.Scanned}
		if len(im.Aux) > 0 {
			_ = json.Unmarshal(im.Aux, &o.Resume.Aux)
		}
	}

	ictx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	budget := time.Duration(a.intSetting(SettingImportSeconds, 1500)) * time.Second
	stopBudget := time.AfterFunc(budget, func() { cancel(errBudget) })
	defer stopBudget.Stop()
	stopRenew := a.renewImportLease(ictx, id, me, cancel)
	defer stopRenew()

	o.CheckpointEvery = time.Duration(a.intSetting(SettingImportCheckpointMs, 2000)) * time.Millisecond
	o.Checkpoint = func(c importer.Checkpoint) error {
		m, err := a.updateImport(ictx, id, func(ck *state.ImportCheckpoint) (bool, error) {
			if ck.Runner != me {
				return false, errLeaseLost
			}
			ck.Offset, ck.DB, ck.RDBVersion, ck.Valkey = c.Offset, c.DB, c.Version, c.Valkey
			ck.Result, ck.Scanned = c.Counts, c.Scanned
			ck.Aux, _ = json.Marshal(c.Aux)
			ck.LeaseUntil = time.Now().UTC().Add(importLease)
			return true, nil
		})
		if errors.Is(err, errLeaseLost) {
			cancel(errLeaseLost)
		}
		if err == nil && importCheckpointHook != nil && importCheckpointHook(id, *m.Import) {
			cancel(errInterrupted)
		}
		return err
	}
	start := time.Now()
	in := &sourceReader{r: src.Reader(ictx, im.Offset)}
	if im.Offset > 0 {
		a.logf("ImportRdb: import %s resumes at offset %d of %d (db %d, %d keys done), attempt %d", id, im.Offset, im.Size, im.DB,
			im.Result.Keys(), im.Attempts)
	}
	sum, err := importer.Import(ictx, in, dst, o)
	if err != nil {
		cause := context.Cause(ictx)
		switch {
		case cause == errBudget:
			return a.continueImport(ctx, id, me, bc, src, err)
		case cause != nil:
			return a.importFailed(ctx, id, me, fmt.Errorf("%v: %s", cause, redact.Error(err)), false)
		case in.err == nil && permanentImportError(err):
			return a.importFailed(ctx, id, me, fmt.Errorf("%s", redact.Error(err)), true)
		}
		return a.importFailed(ctx, id, me, fmt.Errorf("%s", redact.Error(err)), false)
	}
	notes := importNotes(sum)
	_, err = a.updateImport(context.WithoutCancel(ctx), id, func(ck *state.ImportCheckpoint) (bool, error) {
		if ck.Runner != me {
			return false, errLeaseLost
		}
		ck.Done, ck.Offset, ck.Result, ck.Scanned, ck.Aux = true, ck.Size, sum.Result, sum.Scanned, nil
		ck.RDBVersion, ck.LastError, ck.Runner = sum.RDBVersion, "", ""
		for _, n := range notes {
			addNote(ck, n)
		}
		return true, nil
	})
	if err != nil {
		return true, fmt.Errorf("recording the end of import %s: %s", id, redact.Error(err))
	}
	r := sum.Result
	reply.Log("import %s done in %s: %d keys read, %d copied, %d skipped, %d expired, %d failed", id,
		time.Since(start).Round(time.Millisecond), sum.Scanned, r.Copied, r.Skipped, r.Expired, r.Failed)
	a.logf("ImportRdb: import %s done: %d keys read, %d copied, %d skipped, %d expired, %d failed (started at offset %d)", id,
		sum.Scanned, r.Copied, r.Skipped, r.Expired, r.Failed, im.Offset)
	return false, nil
}

func importOptions(m *state.Migration) (importer.Options, error) {
	ex, err := copier.ParseExisting(m.Options.Existing)
	if err != nil {
		return importer.Options{}, err
	}
	dbMap, err := dbMapOf(m.Options)
	if err != nil {
		return importer.Options{}, err
	}
	return importer.Options{Existing: ex, DBMap: dbMap, ExplicitDBMap: m.Options.ExplicitDBMap, Match: m.Options.Match,
		Functions: m.Options.Functions, Modules: m.Options.Modules, SkipChecksum: m.Options.SkipChecksum}, nil
}

func importNotes(s *importer.Summary) []string {
	out := append([]string(nil), s.Notes...)
	if s.FunctionsFound > 0 {
		out = append(out, fmt.Sprintf("%d of %d function libraries loaded (functions option)", s.Functions, s.FunctionsFound))
	}
	if s.ModuleAux > 0 {
		out = append(out, fmt.Sprintf("%d module AUX records (module-global data) were not imported", s.ModuleAux))
	}
	if s.EmptySkipped > 0 {
		out = append(out, fmt.Sprintf("%d empty collections in the file were skipped (Redis does not keep empty keys)", s.EmptySkipped))
	}
	for db, n := range s.NotCopiedDBs {
		out = append(out, fmt.Sprintf("%d keys of %s were left out (not in dbMap)", n, db))
	}
	return out
}

// renewImportLease keeps the lease while the import runs (a huge value can keep the reader
// from checkpointing for a while); losing it stops the import.
func (a *App) renewImportLease(ctx context.Context, id, me string, cancel context.CancelCauseFunc) func() {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(importLease / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, err := a.updateImport(ctx, id, func(ck *state.ImportCheckpoint) (bool, error) {
				if ck.Runner != me {
					return false, errLeaseLost
				}
				ck.LeaseUntil = time.Now().UTC().Add(importLease)
				return true, nil
			})
			if errors.Is(err, errLeaseLost) {
				cancel(errLeaseLost)
				return
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// importFailed records a failed invocation and releases the lease. A permanent failure (the file
// or the settings) fails the import; another is retried by the host until the attempts run out.
func (a *App) importFailed(ctx context.Context, id, me string, cause error, permanent bool) (bool, error) {
	maxAttempts := a.intSetting(SettingImportMaxAttempts, 5)
	msg := redact.Error(cause)
	retry := false
	_, err := a.updateImport(context.WithoutCancel(ctx), id, func(ck *state.ImportCheckpoint) (bool, error) {
		if ck.Runner != me {
			return false, nil // taken over: the other invocation owns the outcome
		}
		ck.Runner, ck.LeaseUntil = "", time.Time{}
		ck.LastError = msg
		switch {
		case permanent:
			ck.Error = msg
		case ck.Attempts >= maxAttempts:
			ck.Error = fmt.Sprintf("%s (gave up after %d attempts; POST /api/imports {\"id\":%q} resumes from offset %d)", msg, ck.Attempts, id, ck.Offset)
		default:
			retry = true
		}
		return true, nil
	})
	if err != nil {
		return true, fmt.Errorf("import %s: %s; recording it: %s", id, msg, redact.Error(err))
	}
	return retry, fmt.Errorf("import %s: %s", id, msg)
}

// continueImport ends an invocation whose time budget ran out: its checkpoint stands, and a
// rewrite of the blob's metadata triggers ImportRdb again, which resumes there. The new blob
// version starts with fresh host retries, so an import of any length goes on.
func (a *App) continueImport(ctx context.Context, id, me string, bc *blob.Client, src *blobsrc.Blob, cause error) (bool, error) {
	ctx = context.WithoutCancel(ctx)
	m, err := a.store.GetMigration(ctx, id)
	if err != nil {
		return true, err
	}
	if m.Import.Runner != me || m.Import.Offset <= m.Import.ResumedFrom {
		// No checkpoint in a whole invocation: continuing would loop; count it as a failure.
		return a.importFailed(ctx, id, me, fmt.Errorf("%v before any progress: %s", errBudget, redact.Error(cause)), false)
	}
	err = a.retrigger(ctx, id, bc, src.ETag, func(ck *state.ImportCheckpoint) {
		ck.Runner, ck.LeaseUntil = "", time.Time{}
		ck.Attempts = 0
		ck.Continuations++
	})
	if err != nil {
		return a.importFailed(ctx, id, me, fmt.Errorf("%v; continuing: %s", errBudget, redact.Error(err)), false)
	}
	a.logf("ImportRdb: import %s paused at offset %d of %d (%s); it continues in a new invocation", id, m.Import.Offset, m.Import.Size, errBudget)
	return false, nil
}

// retrigger makes the host invoke ImportRdb for the blob again by rewriting its metadata (which
// gives it a new ETag, hence a new trigger): metadata migration=id. prep adjusts the record in
// the same write that announces the rewrite. The record's ETag follows the blob's when the
// content is the one checkpointed (fromETag), so the next invocation resumes rather than
// starting over.
func (a *App) retrigger(ctx context.Context, id string, bc *blob.Client, fromETag string, prep func(*state.ImportCheckpoint)) error {
	if _, err := a.updateImport(ctx, id, func(ck *state.ImportCheckpoint) (bool, error) {
		ck.TouchFrom, ck.TouchedAt = fromETag, time.Now().UTC()
		if prep != nil {
			prep(ck)
		}
		return true, nil
	}); err != nil {
		return err
	}
	newETag, terr := touchBlob(ctx, bc, fromETag, id)
	_, err := a.updateImport(ctx, id, func(ck *state.ImportCheckpoint) (bool, error) {
		if terr == nil && ck.ETag == fromETag {
			ck.ETag = newETag
		}
		ck.TouchFrom, ck.TouchedAt = "", time.Time{}
		return true, nil
	})
	if terr != nil {
		return terr
	}
	return err
}

// touchBlob sets metadata migration=id (and the time of the request) on the blob version
// fromETag, keeping its other metadata; it returns the new ETag.
func touchBlob(ctx context.Context, bc *blob.Client, fromETag, id string) (string, error) {
	cond := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: to(azcore.ETag(fromETag))}}
	props, err := bc.GetProperties(ctx, &blob.GetPropertiesOptions{AccessConditions: cond})
	if err != nil {
		return "", touchError(err)
	}
	md := map[string]*string{}
	for k, v := range props.Metadata {
		if !strings.EqualFold(k, MetadataMigration) && !strings.EqualFold(k, metadataRequested) {
			md[k] = v
		}
	}
	md[MetadataMigration] = to(id)
	md[metadataRequested] = to(time.Now().UTC().Format(time.RFC3339Nano))
	resp, err := bc.SetMetadata(ctx, md, &blob.SetMetadataOptions{AccessConditions: cond})
	if err != nil {
		return "", touchError(err)
	}
	if resp.ETag == nil {
		return "", errors.New("setting the blob's metadata: no ETag in the answer")
	}
	return string(*resp.ETag), nil
}

func touchError(err error) error {
	if bloberror.HasCode(err, bloberror.ConditionNotMet) {
		return errBlobChanged
	}
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return errBlobGone
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("setting the blob's metadata: storage answered %d %s", re.StatusCode, re.ErrorCode)
	}
	return fmt.Errorf("setting the blob's metadata: %s", redact.Error(err))
}

var (
	errBlobChanged = errors.New("the blob changed while the import was being restarted; try again")
	errBlobGone    = errors.New("the blob is gone")
)

func to[T any](v T) *T { return &v }
