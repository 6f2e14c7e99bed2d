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

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/redis-migrate/redis-migrate/shared/blobevent"
	"github.com/redis-migrate/redis-migrate/shared/blobsrc"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/importer"
	"github.com/redis-migrate/redis-migrate/shared/queue"
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
	// SettingImportMaxAttempts: failed invocations of one import before it is marked failed (the
	// last delivery of its message marks it failed too).
	SettingImportMaxAttempts = "IMPORT_MAX_ATTEMPTS"
)

const (
	// ImportContainer is the container whose BlobCreated events reach ImportRdb (through the
	// Event Grid subscription into the imports queue; infra/main.bicep).
	ImportContainer = "rdb-imports"
	// MetadataMigration is the blob metadata naming the import's migration record.
	MetadataMigration = "migration"
	kindImport        = "import"

	importLease = 2 * time.Minute
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

// importMessage is the body of an imports-queue message the app sends itself: start (POST
// /api/imports, or a BlobCreated event turned into an import), continuation after a time budget,
// restart. Seq orders them: MessageId <id>.import<seq> is deterministic, so a re-sent one is
// dropped by duplicate detection, and a message older than the record's Seq is stale.
type importMessage struct {
	Kind      string `json:"kind"`
	Migration string `json:"migration"`
	Seq       int    `json:"seq"`
}

func importMessageID(id string, seq int) string { return fmt.Sprintf("%s.import%d", id, seq) }

// sendImport sends import message seq of import id to the imports queue.
func (a *App) sendImport(ctx context.Context, id string, seq int) error {
	body, _ := json.Marshal(importMessage{Kind: kindImport, Migration: id, Seq: seq})
	err := a.sender.Send(ctx, queue.Imports, []queue.Message{{ID: importMessageID(id, seq), Body: body,
		Properties: map[string]any{"migration": id, "kind": kindImport}}})
	if err != nil {
		return fmt.Errorf("sending to the %s queue: %s", queue.Imports, redact.Error(err))
	}
	return nil
}

// importRdb is the imports-queue trigger. A message is either a Microsoft.Storage.BlobCreated
// event (Event Grid schema or CloudEvents, delivered by the Event Grid subscription on the
// storage account), which becomes an import of that blob, or one of the app's own import
// messages, which runs the import from its checkpoint for one time budget. No blob content ever
// passes through the host: the blob is streamed from storage with ranged reads.
func (a *App) importRdb(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (bool, error) {
	msg, err := inv.ServiceBus(messageBinding)
	if err != nil {
		return false, err
	}
	if blobevent.Looks(msg.Body) {
		return a.importEvent(ctx, msg, reply)
	}
	var im importMessage
	if err := json.Unmarshal(msg.Body, &im); err != nil || im.Kind != kindImport || im.Migration == "" || im.Seq < 1 {
		return false, fmt.Errorf("message %s is neither a BlobCreated event nor an import message; dropped", msg.MessageID)
	}
	mig, err := a.store.GetMigration(ctx, im.Migration)
	if errors.Is(err, state.ErrNotFound) {
		return false, fmt.Errorf("import message for unknown import %s; dropped", im.Migration)
	}
	if err != nil {
		return true, err
	}
	if mig.Kind != kindImport || mig.Import == nil {
		return false, fmt.Errorf("import message for %s, which is not an import; dropped", im.Migration)
	}
	bc, err := a.importBlobClient(SettingStorage, mig.Import.Container, mig.Import.Blob)
	if err != nil {
		return true, err
	}
	src, err := blobsrc.OpenClient(ctx, bc)
	if err != nil {
		if blobMissing(err) {
			_, uerr := a.updateImport(ctx, mig.ID, func(ck *state.ImportCheckpoint) (bool, error) {
				if ck.Done || ck.Error != "" {
					return false, nil
				}
				ck.Error = fmt.Sprintf("the blob %s/%s is gone", ck.Container, ck.Blob)
				return true, nil
			})
			reply.Log("import %s: blob %s/%s is gone; nothing to import", mig.ID, mig.Import.Container, mig.Import.Blob)
			return uerr != nil, uerr
		}
		return true, err
	}
	return a.runImport(ctx, mig.ID, im.Seq, msg, src, reply)
}

func blobMissing(err error) bool {
	return bloberror.HasCode(err, bloberror.BlobNotFound) || strings.Contains(err.Error(), "BlobNotFound")
}

func normETag(e string) string { return strings.Trim(strings.TrimPrefix(e, "W/"), `"`) }

// importEvent turns a BlobCreated event for the imports container into an import: it finds or
// creates the blob version's record and sends its first import message, once per blob version
// (Event Grid delivers at least once, and a redelivered event finds the record claimed).
func (a *App) importEvent(ctx context.Context, msg *hostproto.ServiceBusMessage, reply *hostproto.Reply) (bool, error) {
	ev, err := blobevent.Parse(msg.Body)
	if err != nil {
		return false, fmt.Errorf("message %s: %v; dropped", msg.MessageID, err)
	}
	if ev.Type != blobevent.TypeBlobCreated {
		reply.Log("event %s of type %s ignored (only %s starts an import)", ev.ID, ev.Type, blobevent.TypeBlobCreated)
		return false, nil
	}
	if ev.Container != ImportContainer {
		a.logf("ImportRdb: event %s is for container %q, not %s; ignored (check the Event Grid subscription's subject filter)",
			ev.ID, ev.Container, ImportContainer)
		return false, nil
	}
	bc, err := a.importBlobClient(SettingStorage, ev.Container, ev.Blob)
	if err != nil {
		return true, err
	}
	if ev.URL != "" && !blobevent.SameAccount(ev.URL, bc.URL()) {
		a.logf("ImportRdb: event %s is for %s, a blob in another storage account than %s reads; ignored",
			ev.ID, redact.String(ev.URL), SettingStorage)
		return false, nil
	}
	src, err := blobsrc.OpenClient(ctx, bc)
	if err != nil {
		if blobMissing(err) {
			reply.Log("blob %s/%s of event %s is gone; nothing to import", ev.Container, ev.Blob, ev.ID)
			return false, nil
		}
		return true, err
	}
	if ev.ETag != "" && normETag(ev.ETag) != normETag(src.ETag) {
		// Overwritten since: the new version raised its own event.
		reply.Log("blob %s/%s changed since event %s; the newer version's event imports it", ev.Container, ev.Blob, ev.ID)
		return false, nil
	}
	mig, err := a.importRecord(ctx, ev.Container, ev.Blob, src)
	if err != nil || mig == nil {
		return err != nil, err
	}
	im := mig.Import
	switch {
	case normETag(im.ETag) == normETag(src.ETag) && im.Seq > 0:
		reply.Log("import %s of blob %s/%s is under way or done (event %s delivered again)", mig.ID, ev.Container, ev.Blob, ev.ID)
		return false, nil
	case normETag(im.ETag) != normETag(src.ETag) && im.Runner != "" && time.Now().Before(im.LeaseUntil):
		return true, fmt.Errorf("import %s is running on an older version of blob %s/%s; the event is retried", mig.ID, ev.Container, ev.Blob)
	}
	if err := a.sendImport(ctx, mig.ID, im.Seq+1); err != nil {
		return true, err
	}
	reply.Log("event %s: import %s of blob %s/%s started", ev.ID, mig.ID, ev.Container, ev.Blob)
	return false, nil
}

// importRecord finds the migration record of a new blob version: the one its metadata names
// (created by POST /api/imports, or by an earlier event from the IMPORT_* defaults), or one with
// an id derived from the blob version. nil without error: nothing to do (logged).
func (a *App) importRecord(ctx context.Context, container, name string, src *blobsrc.Blob) (*state.Migration, error) {
	id := ""
	for k, v := range src.Metadata {
		if strings.EqualFold(k, MetadataMigration) {
			id = strings.TrimSpace(v)
		}
	}
	if id != "" && !state.ValidID(id) {
		a.logf("ImportRdb: blob %s/%s: metadata migration=%q is not a migration id; not imported", container, name, id)
		return nil, nil
	}
	if id == "" {
		id = defaultImportID(container, name, src.ETag)
	}
	mig, err := a.store.GetMigration(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		mig, err = a.createDefaultImport(ctx, id, container, name, src)
	}
	if err != nil || mig == nil {
		return nil, err
	}
	if mig.Kind != kindImport || mig.Import == nil {
		a.logf("ImportRdb: blob %s/%s names migration %s, which is not an import; not imported", container, name, id)
		return nil, nil
	}
	if mig.Import.Container != container || mig.Import.Blob != name {
		a.logf("ImportRdb: blob %s/%s names import %s, which imports %s/%s; not imported", container, name, id,
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

// claimImport takes the import's lease for the invocation of message seq and decides where it
// starts. It waits (up to a lease) for another invocation that holds it. skip is set when there is
// nothing to do: the import is done or failed, or the message is stale (a later one claimed it).
func (a *App) claimImport(ctx context.Context, id, me string, seq int, src *blobsrc.Blob) (mig *state.Migration, skip string, err error) {
	giveUp := time.Now().Add(importLease + 15*time.Second)
	for {
		var wait string
		mig, err = a.updateImport(ctx, id, func(im *state.ImportCheckpoint) (bool, error) {
			wait, skip = "", ""
			now := time.Now().UTC()
			if seq < im.Seq {
				skip = fmt.Sprintf("message %d is stale (message %d has claimed the import)", seq, im.Seq)
				return false, nil
			}
			if im.Runner != "" && im.Runner != me && now.Before(im.LeaseUntil) {
				wait = "another invocation is importing it (runner " + im.Runner + ")"
				return false, nil
			}
			if normETag(im.ETag) != normETag(src.ETag) {
				if im.Offset > 0 || im.Done || im.Started || im.Error != "" || im.Result.Keys() > 0 {
					addNote(im, fmt.Sprintf("the blob changed since the checkpoint (ETag %s, now %s): the import started over from the beginning",
						im.ETag, src.ETag))
					*im = state.ImportCheckpoint{Container: im.Container, Blob: im.Blob, Started: im.Started, Notes: im.Notes,
						Seq: im.Seq, Continuations: im.Continuations}
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
			im.Seq = seq
			im.Runner, im.LeaseUntil = me, now.Add(importLease)
			im.Attempts++
			im.ResumedFrom = im.Offset
			return true, nil
		})
		if err != nil || wait == "" {
			return mig, skip, err
		}
		if time.Now().After(giveUp) {
			return nil, "", fmt.Errorf("import %s: %s; the message is retried later", id, wait)
		}
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
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

// runImport runs one invocation of an import for message seq: claim, preflight on a fresh
// start, stream from the checkpoint, and record the outcome. retry=true answers non-2xx so the
// host redelivers the message.
func (a *App) runImport(ctx context.Context, id string, seq int, msg *hostproto.ServiceBusMessage, src *blobsrc.Blob, reply *hostproto.Reply) (bool, error) {
	me := newRunnerID()
	mig, skip, err := a.claimImport(ctx, id, me, seq, src)
	if err != nil {
		return true, err
	}
	last := a.lastDelivery(msg)
	failed := func(cause error, permanent bool) (bool, error) {
		return a.importFailed(ctx, id, me, cause, permanent, last)
	}
	if skip != "" {
		reply.Log("import %s: %s", id, skip)
		return false, nil
	}
	im := *mig.Import
	o, err := importOptions(mig)
	if err != nil {
		return failed(fmt.Errorf("import options: %s", err), true)
	}
	// Its own connection, not the per-migration cache: a restart may have changed the target.
	dst, err := a.openEndpoint(ctx, mig.Target, "target")
	if err != nil {
		return failed(fmt.Errorf("target: %s", redact.Error(err)), false)
	}
	defer dst.Close()
	if !im.Started {
		if err := importer.Check(ctx, dst, o); err != nil {
			return failed(fmt.Errorf("preflight: %s", redact.Error(err)), true)
		}
		// Watched at every checkpoint and attempt (checkTarget), as a copy's batches do.
		rids, evicted := targetRunIDs(ctx, dst), evictionsAtStart(ctx, dst)
		// Before anything is written, as the copy kickoff does; also for imports a blob event started.
		warning := engine.FileShortfall(ctx, dst, im.Size, o.Match)
		if warning != "" {
			a.logf("ImportRdb: %s: warning: %s", id, warning)
		}
		m, err := a.store.UpdateMigration(ctx, id, func(m *state.Migration) (bool, error) {
			if m.Import == nil {
				return false, fmt.Errorf("migration %s is not an import", id)
			}
			m.Import.Started, m.Import.UpdatedAt, m.TargetRunIDs, m.TargetEvictedAtStart = true, time.Now().UTC(), rids, evicted
			m.MemoryWarning = warning
			return true, nil
		})
		if err != nil {
			return failed(err, false)
		}
		mig = m
	} else {
		// A target that restarted since the last attempt may have lost what it wrote.
		a.checkTarget(ctx, "ImportRdb", mig, dst)
	}
	if im.Started && o.Existing == copier.ExistingFail {
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
		if err == nil {
			a.checkTarget(ictx, "ImportRdb", mig, dst)
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
			return a.continueImport(ctx, id, me, seq, err, last)
		case cause != nil:
			return failed(fmt.Errorf("%v: %s", cause, redact.Error(err)), false)
		case in.err == nil && permanentImportError(err):
			return failed(fmt.Errorf("%s", redact.Error(err)), true)
		}
		return failed(fmt.Errorf("%s", redact.Error(err)), false)
	}
	// A restart after the last checkpoint is seen here, before the import says it is done.
	a.checkTarget(ctx, "ImportRdb", mig, dst)
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
// last is set on the message's last delivery: the host dead-letters it if this one fails too, so
// the import is marked failed now (resumable with POST /api/imports).
func (a *App) importFailed(ctx context.Context, id, me string, cause error, permanent, last bool) (bool, error) {
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
		case ck.Attempts >= maxAttempts || last:
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

// continueImport ends an invocation whose time budget ran out: its checkpoint stands, and the
// next import message (seq+1) goes to the imports queue, where a new invocation resumes there.
// The message is sent before the lease is released (the next invocation waits for it), so a
// failed send leaves this invocation's own message to be retried. Each invocation starts with
// fresh attempts, so a file of any size imports in as many invocations as it takes.
func (a *App) continueImport(ctx context.Context, id, me string, seq int, cause error, last bool) (bool, error) {
	ctx = context.WithoutCancel(ctx)
	m, err := a.store.GetMigration(ctx, id)
	if err != nil {
		return true, err
	}
	if m.Import.Runner != me || m.Import.Offset <= m.Import.ResumedFrom {
		// No checkpoint in a whole invocation: continuing would loop; count it as a failure.
		return a.importFailed(ctx, id, me, fmt.Errorf("%v before any progress: %s", errBudget, redact.Error(cause)), false, last)
	}
	if err := a.sendImport(ctx, id, seq+1); err != nil {
		return a.importFailed(ctx, id, me, fmt.Errorf("%v; continuing: %s", errBudget, redact.Error(err)), false, last)
	}
	if _, err := a.updateImport(ctx, id, func(ck *state.ImportCheckpoint) (bool, error) {
		if ck.Runner != me {
			return false, nil
		}
		ck.Runner, ck.LeaseUntil = "", time.Time{}
		ck.Attempts = 0
		ck.Continuations++
		return true, nil
	}); err != nil {
		// The next message is out; it takes the import over when the lease lapses.
		a.logf("ImportRdb: import %s: releasing the lease: %s", id, redact.Error(err))
	}
	a.logf("ImportRdb: import %s paused at offset %d of %d (%s); message %d continues it", id, m.Import.Offset, m.Import.Size, errBudget, seq+1)
	return false, nil
}

func to[T any](v T) *T { return &v }
