package functions

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/engine"
	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// MaxRequestBytes caps a kickoff request body.
const MaxRequestBytes = 64 << 10

// maxBigKeyBytes bounds bigKeyBytes: no single Redis value is near 1 TiB.
const maxBigKeyBytes = 1 << 40

// StartRequest is the body of POST /api/migrations. Every CLI copy option is a field.
type StartRequest struct {
	ID           string       `json:"id,omitempty"`
	Source       *EndpointReq `json:"source"`
	Target       *EndpointReq `json:"target"`
	Match        string       `json:"match,omitempty"`
	Type         string       `json:"type,omitempty"`
	Existing     string       `json:"existing,omitempty"`
	DBMap        string       `json:"dbMap,omitempty"`
	DBPrefix     string       `json:"dbPrefix,omitempty"`
	AllowDBMerge bool         `json:"allowDbMerge,omitempty"`
	BatchKeys    int          `json:"batchKeys,omitempty"`
	// BigKeyBytes: keys whose MEMORY USAGE reaches it are copied in chunks, each in its own
	// batch (default 8 MiB; -1 turns chunked copy off), like the CLI's --big-key-bytes.
	BigKeyBytes int64 `json:"bigKeyBytes,omitempty"`
	// MaxSourceOps caps the commands a second this migration sends to the source, like the CLI's
	// --max-source-ops: each copy invocation paces itself to its share (see sourceOpsShare).
	MaxSourceOps int `json:"maxSourceOps,omitempty"`
	// Mode "online" keeps syncing changes after the copy (sync chains) until a cutover; the
	// default "copy" moves a snapshot. Feed is the online mode's change feed: notify (the
	// default), psync, or auto (psync where the source lets a client replicate, else notify).
	Mode string `json:"mode,omitempty"`
	Feed string `json:"feed,omitempty"`
}

// EndpointReq names an endpoint: an app setting holding its URL, an inline URL (only with
// ALLOW_INLINE_URLS=true), or an Azure Managed Redis host reached with an Entra ID identity.
type EndpointReq struct {
	Setting  string    `json:"setting,omitempty"`
	URL      string    `json:"url,omitempty"`
	Host     string    `json:"host,omitempty"`
	Entra    *EntraReq `json:"entra,omitempty"`
	Topology string    `json:"topology,omitempty"`
}

// EntraReq is the identity used for Entra ID authentication.
type EntraReq struct {
	ObjectID string `json:"objectId"`
	ClientID string `json:"clientId,omitempty"`
}

// StartResponse is the 202 body.
type StartResponse struct {
	ID            string `json:"id"`
	StatusURL     string `json:"statusUrl"`
	State         string `json:"state"`
	Shards        int    `json:"shards"`
	EstimatedKeys int64  `json:"estimatedKeys"`
	// Warning: the source's data may not fit under the target's maxmemory (an estimate).
	Warning string `json:"warning,omitempty"`
}

type errorJSON struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func errorBody(msg, field string) string {
	b, _ := json.Marshal(errorJSON{Error: redact.String(msg), Field: field})
	return string(b)
}

func writeError(w http.ResponseWriter, status int, msg, field string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, errorBody(msg, field)+"\n")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error(), "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(redact.String(string(b)) + "\n"))
}

// checkFields refuses a value that is not an object or has a field outside known; errors name
// the field by its full path (prefix + name).
func checkFields(data []byte, prefix string, known []string) error {
	field := strings.TrimSuffix(prefix, ".")
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if field == "" {
				return fieldErrf("", "the body must be a JSON object")
			}
			return fieldErrf(field, "%s: want a JSON object, not %s", field, te.Value)
		}
		return fieldErrf(field, "invalid JSON: %v", err)
	}
	names := make([]string, 0, len(raw))
	for k := range raw {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !contains(known, k) {
			return fieldErrf(prefix+k, "unknown field %q (known: %s)", prefix+k, strings.Join(known, ", "))
		}
	}
	return nil
}

// decodeStrict decodes data into v, refusing unknown fields and naming a mistyped field.
func decodeStrict(data []byte, v any, prefix string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			f := prefix + te.Field
			return fieldErrf(f, "%s: want a JSON %s, not %s", f, jsonKind(te.Type.Kind()), te.Value)
		}
		return fieldErrf(strings.TrimSuffix(prefix, "."), "invalid JSON: %v", err)
	}
	return nil
}

func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return k.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// readBody reads a request body of at most MaxRequestBytes; on failure it has answered 400.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("request body larger than %d bytes", MaxRequestBytes), "body")
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "reading the request body: "+err.Error(), "body")
		return nil, false
	}
	return body, true
}

// parseObject checks that body is one JSON value with nothing after it and that its field names
// are known, returning it and its fields.
func parseObject(body []byte, emptyHint string, known []string) (json.RawMessage, map[string]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, nil, fieldErrf("", "empty body: %s", emptyHint)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	var whole json.RawMessage
	if err := dec.Decode(&whole); err != nil {
		return nil, nil, fieldErrf("", "invalid JSON: %v", err)
	}
	if dec.More() {
		return nil, nil, fieldErrf("", "invalid JSON: data after the object")
	}
	// A key given twice, at any depth, is refused before anything reads the body.
	if err := checkDuplicateKeys(whole); err != nil {
		return nil, nil, err
	}
	// Field names first, so an unknown field is named by its path.
	if err := checkFields(whole, "", known); err != nil {
		return nil, nil, err
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(whole, &raw)
	return whole, raw, nil
}

func isNull(r json.RawMessage) bool { return string(bytes.TrimSpace(r)) == "null" }

// checkEndpointFields checks the field names of an endpoint object (side: "source", "target"),
// its entra object included; required says whether it may be missing.
func checkEndpointFields(raw map[string]json.RawMessage, side string, required bool) error {
	r, ok := raw[side]
	if !ok || isNull(r) {
		if !required {
			return nil
		}
		return fieldErrf(side, "%s is required, e.g. {\"setting\":\"%s_REDIS\"}", side, strings.ToUpper(side))
	}
	if err := checkFields(r, side+".", []string{"setting", "url", "host", "entra", "topology"}); err != nil {
		return err
	}
	var epRaw map[string]json.RawMessage
	_ = json.Unmarshal(r, &epRaw)
	if e, ok := epRaw["entra"]; ok && !isNull(e) {
		if err := checkFields(e, side+".entra.", []string{"objectId", "clientId"}); err != nil {
			return err
		}
	}
	return nil
}

// parseStartRequest reads and checks the body, naming the offending field in every error.
func parseStartRequest(body []byte) (*StartRequest, error) {
	whole, raw, err := parseObject(body, "want a JSON object with source and target", []string{"id", "source", "target",
		"match", "type", "existing", "dbMap", "dbPrefix", "allowDbMerge", "batchKeys", "bigKeyBytes", "maxSourceOps", "mode", "feed"})
	if err != nil {
		return nil, err
	}
	for _, side := range []string{"source", "target"} {
		if err := checkEndpointFields(raw, side, true); err != nil {
			return nil, err
		}
	}
	var req StartRequest
	if err := decodeStrict(whole, &req, ""); err != nil {
		return nil, err
	}
	return &req, checkStartRequest(&req)
}

var (
	guidLikeRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

func checkID(id string) error {
	if id != "" && !state.ValidID(id) {
		return fieldErrf("id", "id %q: want 1-63 lower-case letters, digits and '-', starting with a letter or digit", id)
	}
	return nil
}

// checkEndpoint checks one endpoint of a request; side names it in errors.
func checkEndpoint(side string, ep *EndpointReq) error {
	n := 0
	for _, set := range []bool{ep.Setting != "", ep.URL != "", ep.Host != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fieldErrf(side, "%s: give exactly one of setting, url, or host (with entra)", side)
	}
	if ep.Host != "" && ep.Entra == nil {
		return fieldErrf(side+".entra", "%s.entra: a host needs an Entra ID identity: {\"objectId\":\"...\",\"clientId\":\"...\"} "+
			"(for access keys, put a rediss:// URL in an app setting)", side)
	}
	if ep.Host == "" && ep.Entra != nil {
		return fieldErrf(side+".entra", "%s.entra: only used with host", side)
	}
	if ep.Host == "" && ep.Topology != "" {
		return fieldErrf(side+".topology", "%s.topology: only used with host (a URL takes ?topology=)", side)
	}
	if ep.Entra != nil {
		if ep.Entra.ObjectID == "" || !guidLikeRE.MatchString(ep.Entra.ObjectID) {
			return fieldErrf(side+".entra.objectId", "%s.entra.objectId: the identity's object id is required", side)
		}
		if ep.Entra.ClientID != "" && !guidLikeRE.MatchString(ep.Entra.ClientID) {
			return fieldErrf(side+".entra.clientId", "%s.entra.clientId: not a client id", side)
		}
	}
	switch config.Topology(ep.Topology) {
	case "", config.TopologyAuto, config.TopologyStandalone, config.TopologyCluster:
	default:
		return fieldErrf(side+".topology", "%s.topology %q: want auto, standalone or cluster", side, ep.Topology)
	}
	return nil
}

// keyOptions are the options a copy and an import share: what to do with existing keys, which
// keys, and where each source database goes.
type keyOptions struct {
	existing, match, dbMap, dbPrefix string
	allowDBMerge                     bool
}

func checkKeyOptions(o keyOptions) error {
	if _, err := copier.ParseExisting(o.existing); err != nil {
		return fieldErrf("existing", "%v", err)
	}
	if len(o.match) > 1024 {
		return fieldErrf("match", "match: longer than 1024 bytes")
	}
	m, err := config.ParseDBMap(o.dbMap)
	if err != nil {
		return fieldErrf("dbMap", "dbMap: %v", err)
	}
	if err := m.ParseDBPrefixes(o.dbPrefix); err != nil {
		return fieldErrf("dbPrefix", "dbPrefix: %v", err)
	}
	if err := m.Check(o.allowDBMerge); err != nil {
		return fieldErrf("dbMap", "dbMap: %v", err)
	}
	return nil
}

func checkStartRequest(r *StartRequest) error {
	if err := checkID(r.ID); err != nil {
		return err
	}
	for _, side := range []struct {
		name string
		ep   *EndpointReq
	}{{"source", r.Source}, {"target", r.Target}} {
		if err := checkEndpoint(side.name, side.ep); err != nil {
			return err
		}
	}
	if err := config.CheckKeyType(r.Type); err != nil {
		return fieldErrf("type", "type: %v", err)
	}
	if r.BatchKeys < 0 || r.BatchKeys > 10000 {
		return fieldErrf("batchKeys", "batchKeys %d: want 1..10000", r.BatchKeys)
	}
	switch r.Mode {
	case "", "copy", "online":
	default:
		return fieldErrf("mode", "mode %q: want copy or online", r.Mode)
	}
	switch {
	case r.Feed != "" && r.Mode != "online":
		return fieldErrf("feed", "feed: only used with mode online")
	case r.Feed != "" && r.Feed != "notify" && r.Feed != "psync" && r.Feed != "auto":
		return fieldErrf("feed", "feed %q: want notify, psync or auto", r.Feed)
	}
	if r.MaxSourceOps < 0 || (r.MaxSourceOps > 0 && r.MaxSourceOps < 100) {
		return fieldErrf("maxSourceOps", "maxSourceOps %d: want 0 (no limit) or at least 100", r.MaxSourceOps)
	}
	if r.BigKeyBytes < -1 || r.BigKeyBytes > maxBigKeyBytes {
		return fieldErrf("bigKeyBytes", "bigKeyBytes %d: want a size in bytes (1..%d), or -1 to turn chunked copy off", r.BigKeyBytes, int64(maxBigKeyBytes))
	}
	return checkKeyOptions(keyOptions{existing: r.Existing, match: r.Match, dbMap: r.DBMap, dbPrefix: r.DBPrefix, allowDBMerge: r.AllowDBMerge})
}

func (e *EndpointReq) ref() state.EndpointRef {
	r := state.EndpointRef{Setting: e.Setting, URL: e.URL, Host: e.Host, Topology: e.Topology}
	if e.Entra != nil {
		r.ObjectID, r.ClientID = e.Entra.ObjectID, e.Entra.ClientID
	}
	return r
}

// planMessage is the body of a plan queue message: one step of one shard. Kind "verify" (with
// Run) plans a verification run's batches instead of copy batches.
type planMessage struct {
	Migration string      `json:"migration"`
	Key       string      `json:"key"`
	Cursor    plan.Cursor `json:"cursor"`
	Kind      string      `json:"kind,omitempty"`
	Run       string      `json:"run,omitempty"`
	// A repair pass's step (kind "repair"): its chain, whether it scans the target, and the
	// chain's source master (see copyMessage).
	Chain  string `json:"chain,omitempty"`
	Target bool   `json:"target,omitempty"`
	Owner  string `json:"owner,omitempty"`
}

func planMessageID(id, key string, step int) string {
	return fmt.Sprintf("%s.%s.step%d", id, key, step)
}

// newID names a migration ("m") or an import ("i"): sortable by time, unique by the random part.
func newID(kind string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return kind + "-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// migrationStart is POST /api/migrations.
func (a *App) migrationStart(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := parseStartRequest(body)
	if err != nil {
		a.requestError(w, err)
		return
	}
	if a.store == nil || a.sender == nil {
		writeError(w, http.StatusServiceUnavailable, "the function app has no state storage or queue configured (AzureWebJobsStorage, ServiceBusConnection)", "")
		return
	}
	id := req.ID
	if id == "" {
		id = newID("m")
	}
	// HTTP triggers must answer within 230 s: keep the preflight well inside.
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	st, err := a.start(ctx, id, req)
	if err != nil {
		a.requestError(w, err)
		return
	}
	loc := statusURL(r, id)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusAccepted, StartResponse{ID: id, StatusURL: loc, State: state.StatePlanning, Shards: st.shards, EstimatedKeys: st.estimated, Warning: st.warning})
}

func (a *App) requestError(w http.ResponseWriter, err error) {
	a.requestErrorOf("MigrationStart", w, err)
}

// requestErrorOf answers a refused request of function fn: 400 naming the field, 409 for a
// taken id, 500 otherwise.
func (a *App) requestErrorOf(fn string, w http.ResponseWriter, err error) {
	var fe *fieldError
	if errors.As(err, &fe) {
		a.logf("%s: refused: %s", fn, fe.msg)
		writeError(w, http.StatusBadRequest, fe.msg, fe.field)
		return
	}
	if errors.Is(err, state.ErrExists) {
		writeError(w, http.StatusConflict, "a migration with this id exists", "id")
		return
	}
	a.logf("%s: %s", fn, redact.Error(err))
	writeError(w, http.StatusInternalServerError, redact.Error(err), "")
}

// statusURL is the absolute status URL as the caller reached us (without the function key).
func statusURL(r *http.Request, id string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	host := r.Host
	if h := r.Header.Get("X-Forwarded-Host"); h != "" {
		host = h
	}
	if host == "" {
		return "/api/migrations/" + id
	}
	return scheme + "://" + host + "/api/migrations/" + id
}

type started struct {
	shards    int
	estimated int64
	warning   string
}

// start runs the preflight, writes the record and the shards' progress, and enqueues one plan
// message per shard and source database.
func (a *App) start(ctx context.Context, id string, req *StartRequest) (*started, error) {
	online := req.Mode == "online"
	mig := &state.Migration{ID: id, Kind: "copy", CreatedAt: time.Now().UTC(), Source: req.Source.ref(), Target: req.Target.ref(),
		Options: state.Options{Match: req.Match, Type: req.Type, Existing: req.Existing, DBMap: req.DBMap, DBPrefix: req.DBPrefix,
			AllowDBMerge: req.AllowDBMerge, BatchKeys: req.BatchKeys, ExplicitDBMap: req.DBMap != "", BigKeyBytes: req.BigKeyBytes,
			MaxSourceOps: req.MaxSourceOps}}
	if mig.Options.Existing == "" {
		mig.Options.Existing = string(copier.ExistingFail)
	}
	if mig.Options.BatchKeys == 0 {
		mig.Options.BatchKeys = 500
	}
	srcEP, err := a.resolveEndpoint(mig.Source, "source")
	if err != nil {
		return nil, err
	}
	if _, err := a.resolveEndpoint(mig.Target, "target"); err != nil {
		return nil, err
	}
	if srcEP.DBSet && req.DBMap == "" {
		// Like the CLI: a source URL naming db 3 means "copy db 3" into db 0.
		mig.Options.DBMap = fmt.Sprintf("%d:0", srcEP.DB)
		mig.Options.ExplicitDBMap = true
	}
	dbMap, err := dbMapOf(mig.Options)
	if err != nil {
		return nil, fieldErrf("dbPrefix", "%v", err)
	}
	src, err := a.openEndpoint(ctx, mig.Source, "source")
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, err := a.openEndpoint(ctx, mig.Target, "target")
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	cfg := engine.Config{Source: src, Target: dst, Copy: copier.Options{Existing: copier.Existing(mig.Options.Existing), DBMap: dbMap},
		ExplicitDBMap: mig.Options.ExplicitDBMap, AllowDBMerge: mig.Options.AllowDBMerge}
	pf, err := engine.Check(ctx, &cfg)
	if err != nil {
		return nil, fieldErrf(preflightField(err), "preflight: %s", redact.Error(err))
	}
	mig.EstimatedKeys = pf.Estimated
	// Watched by the copy batches (checkTargetRestart, checkTargetEvictions).
	mig.TargetRunIDs, mig.TargetEvictedAtStart = targetRunIDs(ctx, dst), evictionsAtStart(ctx, dst)
	cfg.Plan.Match, cfg.Plan.Type = mig.Options.Match, mig.Options.Type
	if mig.MemoryWarning = engine.MemoryShortfall(ctx, cfg); mig.MemoryWarning != "" {
		a.logf("MigrationStart: %s: warning: %s", id, mig.MemoryWarning)
	}
	feed := ""
	if online {
		if feed, err = a.checkOnlineFeed(ctx, src, dbMap.Sources(), req.Feed); err != nil {
			return nil, err
		}
		mig.Mode = "online"
	}
	var shards []state.ShardProgress
	for i, addr := range src.Masters() {
		for _, db := range dbMap.Sources() {
			if _, has := pf.SourceDBs[db]; !has {
				continue
			}
			key := state.ShardKey(i, db)
			shards = append(shards, state.ShardProgress{Key: key, Shard: i, Addr: addr, DB: db})
			mig.Shards = append(mig.Shards, key)
		}
	}
	if err := a.store.CreateMigration(ctx, mig); err != nil {
		return nil, err
	}
	if online {
		for _, p := range shards {
			if err := a.store.CreateShard(ctx, id, p); err != nil {
				return nil, a.failStart(ctx, id, err)
			}
		}
		if err := a.startOnline(ctx, mig, src.Masters(), feed); err != nil {
			return nil, a.failStart(ctx, id, fmt.Errorf("starting the sync chains: %s", redact.Error(err)))
		}
		a.logf("MigrationStart: %s: online %s -> %s, feed %s, %d shard(s), %d sync chain(s), about %d keys", id, mig.Source.Describe(), mig.Target.Describe(),
			feed, len(shards), len(src.Masters()), pf.Estimated)
		return &started{shards: len(shards), estimated: pf.Estimated, warning: mig.MemoryWarning}, nil
	}
	var msgs []queue.Message
	for _, p := range shards {
		if err := a.store.CreateShard(ctx, id, p); err != nil {
			return nil, a.failStart(ctx, id, err)
		}
		body, _ := json.Marshal(planMessage{Migration: id, Key: p.Key, Cursor: plan.Cursor{Shard: p.Shard, Addr: p.Addr, DB: p.DB}})
		msgs = append(msgs, queue.Message{ID: planMessageID(id, p.Key, 0), Body: body,
			Properties: map[string]any{"migration": id, "kind": "plan"}})
	}
	if len(msgs) > 0 {
		if err := a.sender.Send(ctx, queue.Plan, msgs); err != nil {
			return nil, a.failStart(ctx, id, fmt.Errorf("enqueueing the plan messages: %s", redact.Error(err)))
		}
	}
	a.logf("MigrationStart: %s: %s -> %s, %d shard(s), about %d keys", id, mig.Source.Describe(), mig.Target.Describe(), len(shards), pf.Estimated)
	return &started{shards: len(shards), estimated: pf.Estimated, warning: mig.MemoryWarning}, nil
}

// failStart marks a migration whose kickoff broke half way, so status says so.
func (a *App) failStart(ctx context.Context, id string, err error) error {
	_, _ = a.store.UpdateMigration(ctx, id, func(m *state.Migration) (bool, error) {
		m.Error = "kickoff failed: " + redact.Error(err)
		return true, nil
	})
	return err
}

func preflightField(err error) string {
	m := err.Error()
	switch {
	case strings.Contains(m, "same server"):
		return "target"
	case strings.Contains(m, "already holds"):
		return "existing"
	case strings.Contains(m, "db map") || strings.Contains(m, "outside db 0") || strings.Contains(m, "db-map"):
		return "dbMap"
	}
	return ""
}

// batchEndpoints reads a batch's migration and opens what a copier invocation works with: its
// source and target connections and its db map.
func (a *App) batchEndpoints(ctx context.Context, id string) (mig *state.Migration, src, dst *redisconn.Conn, dbMap config.DBMap, err error) {
	if mig, err = a.store.GetMigration(ctx, id); err != nil {
		return
	}
	if src, err = a.conns.get(ctx, mig, "source"); err != nil {
		return
	}
	if dst, err = a.conns.get(ctx, mig, "target"); err != nil {
		return
	}
	dbMap, err = dbMapOf(mig.Options)
	return
}

func dbMapOf(o state.Options) (config.DBMap, error) {
	m, err := config.ParseDBMap(o.DBMap)
	if err != nil {
		return m, err
	}
	return m, m.ParseDBPrefixes(o.DBPrefix)
}

// migrationStatus is GET /api/migrations/{id}.
func (a *App) migrationStatus(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if a.store == nil {
		writeError(w, http.StatusServiceUnavailable, "the function app has no state storage configured (AzureWebJobsStorage)", "")
		return
	}
	if !state.ValidID(id) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no migration %q", id), "id")
		return
	}
	st, err := a.store.Status(r.Context(), id)
	if errors.Is(err, state.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no migration %q", id), "id")
		return
	}
	if err != nil {
		a.logf("MigrationStatus: %s: %s", id, redact.Error(err))
		writeError(w, http.StatusInternalServerError, redact.Error(err), "")
		return
	}
	if mig, err := a.store.GetMigration(r.Context(), id); err == nil && mig.Mode == "online" {
		ost, err := a.onlineStatus(r.Context(), id, st, "MigrationStatus")
		if err != nil {
			a.logf("MigrationStatus: %s: %s", id, redact.Error(err))
			writeError(w, http.StatusInternalServerError, redact.Error(err), "")
			return
		}
		writeJSON(w, http.StatusOK, ost)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
