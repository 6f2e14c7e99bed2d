package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/blobsrc"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/importer"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// ImportRequest is the body of POST /api/imports: import (or restart the import of) an RDB
// blob already in the rdb-imports container. The options are the CLI import's.
type ImportRequest struct {
	ID           string       `json:"id,omitempty"`
	Blob         *BlobRef     `json:"blob,omitempty"`
	Target       *EndpointReq `json:"target,omitempty"`
	Existing     string       `json:"existing,omitempty"`
	DBMap        string       `json:"dbMap,omitempty"`
	DBPrefix     string       `json:"dbPrefix,omitempty"`
	Match        string       `json:"match,omitempty"`
	Functions    string       `json:"functions,omitempty"`
	Modules      string       `json:"modules,omitempty"`
	SkipChecksum bool         `json:"skipChecksum,omitempty"`
}

// BlobRef names a blob: "rdb-imports/dump.rdb" (a bare name is in rdb-imports), or
// {"container":"rdb-imports","name":"dump.rdb"}.
type BlobRef struct {
	Container string `json:"container,omitempty"`
	Name      string `json:"name"`
	short     bool   // given as a string
}

// UnmarshalJSON accepts both forms.
func (b *BlobRef) UnmarshalJSON(data []byte) error {
	var s string
	if json.Unmarshal(data, &s) == nil {
		b.short = true
		if c, n, ok := strings.Cut(s, "/"); ok {
			b.Container, b.Name = c, n
		} else {
			b.Name = s
		}
		return nil
	}
	var o struct {
		Container string `json:"container"`
		Name      string `json:"name"`
	}
	if err := json.Unmarshal(data, &o); err != nil {
		return err
	}
	b.Container, b.Name = o.Container, o.Name
	return nil
}

func (b *BlobRef) String() string { return b.Container + "/" + b.Name }

// ImportResponse is the 202 body of POST /api/imports.
type ImportResponse struct {
	ID         string `json:"id"`
	StatusURL  string `json:"statusUrl"`
	State      string `json:"state"`
	Blob       string `json:"blob"`
	Size       int64  `json:"size"`
	ResumeFrom int64  `json:"resumeFrom"` // the checkpoint offset a restarted import goes on from
	Note       string `json:"note,omitempty"`
	// Warning: the blob is bigger than the room under the target's maxmemory (engine.FileShortfall).
	Warning string `json:"warning,omitempty"`
}

// conflictError is a request that is well formed but clashes with an existing import (409).
type conflictError struct{ field, msg string }

func (e *conflictError) Error() string { return e.msg }

func conflictf(field, format string, args ...any) error {
	return &conflictError{field: field, msg: fmt.Sprintf(format, args...)}
}

var importFields = []string{"id", "blob", "target", "existing", "dbMap", "dbPrefix", "match", "functions", "modules", "skipChecksum"}

// parseImportRequest reads and checks the body, naming the offending field in every error.
// blob and target may be left out only to restart an existing import (checked later).
func parseImportRequest(body []byte) (*ImportRequest, error) {
	whole, raw, err := parseObject(body, `want a JSON object with blob and target, e.g. {"blob":"rdb-imports/dump.rdb","target":{"setting":"TARGET_REDIS"}}`, importFields)
	if err != nil {
		return nil, err
	}
	if r, ok := raw["blob"]; ok && !isNull(r) {
		switch strings.TrimSpace(string(r))[0] {
		case '"':
		case '{':
			if err := checkFields(r, "blob.", []string{"container", "name"}); err != nil {
				return nil, err
			}
		default:
			return nil, fieldErrf("blob", `blob: want "rdb-imports/<name>" or {"container":"rdb-imports","name":"<name>"}`)
		}
	}
	if err := checkEndpointFields(raw, "target", false); err != nil {
		return nil, err
	}
	var req ImportRequest
	if err := decodeStrict(whole, &req, ""); err != nil {
		return nil, err
	}
	if err := checkID(req.ID); err != nil {
		return nil, err
	}
	if req.Blob != nil {
		if err := checkBlobRef(req.Blob); err != nil {
			return nil, err
		}
	}
	if req.Target != nil {
		if err := checkEndpoint("target", req.Target); err != nil {
			return nil, err
		}
	}
	return &req, checkImportOptions(&req)
}

func checkBlobRef(b *BlobRef) error {
	cField, nField := "blob.container", "blob.name"
	if b.short {
		cField, nField = "blob", "blob"
	}
	if b.Container == "" {
		b.Container = ImportContainer
	}
	if b.Container != ImportContainer {
		return fieldErrf(cField, "%s: imports read from container %s (the ImportRdb trigger's), not %q", cField, ImportContainer, b.Container)
	}
	if strings.TrimSpace(b.Name) == "" {
		return fieldErrf(nField, `%s: the blob name is required, e.g. "rdb-imports/dump.rdb"`, nField)
	}
	if len(b.Name) > 1024 || strings.HasSuffix(b.Name, "/") {
		return fieldErrf(nField, "%s: %q is not a blob name", nField, b.Name)
	}
	return nil
}

// checkImportOptions checks the options of an import request (or of the IMPORT_* settings).
func checkImportOptions(r *ImportRequest) error {
	switch r.Functions {
	case "", importer.FunctionsSkip, importer.FunctionsLoad, importer.FunctionsReplace:
	default:
		return fieldErrf("functions", "functions %q: want skip, load or replace", r.Functions)
	}
	switch r.Modules {
	case "", importer.ModulesSkip, importer.ModulesFail:
	default:
		return fieldErrf("modules", "modules %q: want fail or skip", r.Modules)
	}
	return checkKeyOptions(keyOptions{existing: r.Existing, match: r.Match, dbMap: r.DBMap, dbPrefix: r.DBPrefix})
}

// importStart is POST /api/imports: it writes (or updates) the import's record and sends its
// import message to the imports queue, the same message a BlobCreated event leads to; the import
// itself runs in ImportRdb, since an HTTP call must answer within 230 s.
func (a *App) importStart(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := parseImportRequest(body)
	if err != nil {
		a.importRequestError(w, err)
		return
	}
	if a.store == nil {
		writeError(w, http.StatusServiceUnavailable, "the function app has no state storage configured (AzureWebJobsStorage)", "")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	var resp *ImportResponse
	if req.ID == "" {
		resp, err = a.newImport(ctx, newID("i"), req)
	} else {
		var mig *state.Migration
		mig, err = a.store.GetMigration(ctx, req.ID)
		switch {
		case err == nil:
			resp, err = a.restartImport(ctx, mig, req)
		case errors.Is(err, state.ErrNotFound):
			resp, err = a.newImport(ctx, req.ID, req)
		}
	}
	if err != nil {
		a.importRequestError(w, err)
		return
	}
	resp.StatusURL = statusURL(r, resp.ID)
	w.Header().Set("Location", resp.StatusURL)
	writeJSON(w, http.StatusAccepted, resp)
}

func (a *App) importRequestError(w http.ResponseWriter, err error) {
	var ce *conflictError
	switch {
	case errors.As(err, &ce):
		a.logf("ImportStart: refused: %s", ce.msg)
		writeError(w, http.StatusConflict, ce.msg, ce.field)
	default:
		a.requestErrorOf("ImportStart", w, err)
	}
}

// openImportBlob opens a request's blob; a missing one is the request's fault.
func (a *App) openImportBlob(ctx context.Context, b *BlobRef, field string) (*blobsrc.Blob, error) {
	bc, err := a.importBlobClient(SettingStorage, b.Container, b.Name)
	if err != nil {
		return nil, err
	}
	src, err := blobsrc.OpenClient(ctx, bc)
	if err != nil {
		if blobMissing(err) {
			return nil, fieldErrf(field, "%s: there is no blob %s in storage (upload the RDB file there first)", field, b)
		}
		return nil, err
	}
	return src, nil
}

// preflightImport checks the target as the trigger will: reachable, and empty unless existing
// says what to do with its keys. It returns the warning when the blob will not fit under the
// target's maxmemory.
func (a *App) preflightImport(ctx context.Context, mig *state.Migration) (string, error) {
	o, err := importOptions(mig)
	if err != nil {
		return "", fieldErrf("dbPrefix", "%v", err)
	}
	dst, err := a.openEndpoint(ctx, mig.Target, "target")
	if err != nil {
		return "", err
	}
	defer dst.Close()
	if err := importer.Check(ctx, dst, o); err != nil {
		field := preflightField(err)
		if field == "" {
			field = "target"
		}
		return "", fieldErrf(field, "preflight: %s", redact.Error(err))
	}
	return engine.FileShortfall(ctx, dst, mig.Import.Size, o.Match), nil
}

func (a *App) newImport(ctx context.Context, id string, req *ImportRequest) (*ImportResponse, error) {
	if req.Blob == nil {
		return nil, fieldErrf("blob", `blob is required, e.g. "rdb-imports/dump.rdb"`)
	}
	if req.Target == nil {
		return nil, fieldErrf("target", `target is required, e.g. {"setting":"TARGET_REDIS"}`)
	}
	if _, err := a.resolveEndpoint(req.Target.ref(), "target"); err != nil {
		return nil, err
	}
	src, err := a.openImportBlob(ctx, req.Blob, "blob")
	if err != nil {
		return nil, err
	}
	mig := newImportRecord(id, req, req.Blob.Container, req.Blob.Name, src)
	warning, err := a.preflightImport(ctx, mig)
	if err != nil {
		return nil, err
	}
	mig.MemoryWarning = warning
	if err := a.store.CreateMigration(ctx, mig); err != nil {
		return nil, err
	}
	if err := a.kickImport(ctx, mig.ID, 1, nil); err != nil {
		return nil, err
	}
	a.logf("ImportStart: import %s of blob %s (%d bytes) into %s", id, req.Blob, src.Size, mig.Target.Describe())
	return &ImportResponse{ID: id, State: state.StateCopying, Blob: req.Blob.String(), Size: src.Size, Warning: warning}, nil
}

// kickImport applies prep to the record (if any), then sends import message seq; a failure to
// send is recorded in the import's status.
func (a *App) kickImport(ctx context.Context, id string, seq int, prep func(*state.ImportCheckpoint)) error {
	var err error
	if prep != nil {
		_, err = a.updateImport(ctx, id, func(ck *state.ImportCheckpoint) (bool, error) {
			prep(ck)
			return true, nil
		})
	}
	if err == nil {
		err = a.sendImport(ctx, id, seq)
	}
	if err != nil {
		_, _ = a.updateImport(context.WithoutCancel(ctx), id, func(ck *state.ImportCheckpoint) (bool, error) {
			if ck.Done || ck.Error != "" {
				return false, nil
			}
			ck.Error = "kickoff failed: " + redact.Error(err)
			return true, nil
		})
	}
	return err
}

// restartImport restarts an existing import: from its checkpoint when the blob is unchanged,
// from the beginning otherwise. An import that never wrote a key takes the request's options;
// a started one keeps its own (changing them half way would mix two imports).
func (a *App) restartImport(ctx context.Context, mig *state.Migration, req *ImportRequest) (*ImportResponse, error) {
	id := mig.ID
	im := mig.Import
	if mig.Kind != "import" || im == nil {
		return nil, conflictf("id", "migration %s is a %s, not an import; choose another id", id, mig.Kind)
	}
	if req.Blob != nil && (req.Blob.Container != im.Container || req.Blob.Name != im.Blob) {
		return nil, conflictf("blob", "import %s reads %s/%s; start a new import (another id) for another blob", id, im.Container, im.Blob)
	}
	if im.Done {
		return nil, conflictf("id", "import %s completed (%d keys copied); to import the blob again, start a new import with another id "+
			`(with "existing":"replace" or "skip", since the target now holds the keys)`, id, im.Result.Copied)
	}
	if im.Runner != "" && time.Now().Before(im.LeaseUntil) {
		return nil, conflictf("id", "import %s is running (runner %s); its status is at /api/migrations/%s", id, im.Runner, id)
	}
	target, opts := mig.Target, mig.Options
	if req.Target != nil {
		target = req.Target.ref()
	}
	changed := ""
	set := func(field string, isSet bool, apply func()) {
		if isSet {
			before := opts
			apply()
			if before != opts && changed == "" {
				changed = field
			}
		}
	}
	set("existing", req.Existing != "", func() { opts.Existing = req.Existing })
	set("dbMap", req.DBMap != "", func() { opts.DBMap, opts.ExplicitDBMap = req.DBMap, true })
	set("dbPrefix", req.DBPrefix != "", func() { opts.DBPrefix = req.DBPrefix })
	set("match", req.Match != "", func() { opts.Match = req.Match })
	set("functions", req.Functions != "", func() { opts.Functions = req.Functions })
	set("modules", req.Modules != "", func() { opts.Modules = req.Modules })
	set("skipChecksum", req.SkipChecksum, func() { opts.SkipChecksum = true })
	if target != mig.Target && changed == "" {
		changed = "target"
	}
	if changed != "" && im.Started {
		return nil, conflictf(changed, "import %s has started with other settings (%s differs); it resumes only with its own. "+
			"Send just {\"id\":%q}, or start a new import with another id", id, changed, id)
	}
	src, err := a.openImportBlob(ctx, &BlobRef{Container: im.Container, Name: im.Blob}, "blob")
	if err != nil {
		return nil, err
	}
	warning := ""
	if changed != "" || !im.Started {
		next := *mig
		next.Target, next.Options = target, opts
		if _, err := a.resolveEndpoint(target, "target"); err != nil {
			return nil, err
		}
		if warning, err = a.preflightImport(ctx, &next); err != nil {
			return nil, err
		}
		if _, err := a.store.UpdateMigration(ctx, id, func(m *state.Migration) (bool, error) {
			m.Target, m.Options, m.MemoryWarning = target, opts, warning
			return true, nil
		}); err != nil {
			return nil, err
		}
	}
	resp := &ImportResponse{ID: id, State: state.StateCopying, Blob: im.Container + "/" + im.Blob, Size: src.Size, ResumeFrom: im.Offset,
		Warning: warning}
	if src.ETag != im.ETag && (im.Offset > 0 || im.Started) {
		resp.ResumeFrom, resp.Note = 0, "the blob changed since the checkpoint: the import starts over from the beginning"
	} else if im.Offset > 0 {
		resp.Note = fmt.Sprintf("resumes from the checkpoint at offset %d (%d keys done)", im.Offset, im.Result.Keys())
	}
	err = a.kickImport(ctx, id, im.Seq+1, func(ck *state.ImportCheckpoint) {
		ck.Error, ck.LastError, ck.Attempts = "", "", 0
		addNote(ck, fmt.Sprintf("restarted by POST /api/imports at %s", time.Now().UTC().Format(time.RFC3339)))
	})
	if err != nil {
		return nil, err
	}
	a.logf("ImportStart: import %s restarted (resume from offset %d)", id, resp.ResumeFrom)
	return resp, nil
}
