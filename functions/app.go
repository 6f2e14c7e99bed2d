// Package functions is the Azure Functions face of redis-migrate: it adapts the custom-handler
// invocations of MigrationStart, MigrationStatus, MigrationVerify, MigrationResume, MigrationCutover,
// MigrationStop, PlanShard, CopyBatch, SyncShard (online mode, online.go) and its timer SyncWatchdog (watchdog.go), the dead-letter
// recorders, ImportStart and ImportRdb to the engine (plan, copier, importer) and to the state
// kept in Blob storage. The bindings live
// in <Name>/function.json beside this file and are embedded, so the binary can serve or emulate
// the whole app from anywhere.
package functions

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

//go:embed */function.json
var definitions embed.FS

// Definitions is the app's function folders (<Name>/function.json), as the host reads them.
func Definitions() fs.FS { return definitions }

// App settings the function app reads. SOURCE_REDIS / TARGET_REDIS are only the conventional
// names of the settings a request points at.
const (
	SettingStorage          = "AzureWebJobsStorage"
	SettingServiceBus       = "ServiceBusConnection"
	SettingStateContainer   = "STATE_CONTAINER"
	SettingAllowInlineURLs  = "ALLOW_INLINE_URLS"
	SettingMaxDeliveries    = "SERVICEBUS_MAX_DELIVERY_COUNT"
	SettingPlanStepSeconds  = "PLAN_STEP_SECONDS"
	SettingPlanStepMaxKeys  = "PLAN_STEP_MAX_KEYS"
	SettingHandlerPort      = "FUNCTIONS_CUSTOMHANDLER_PORT"
	SettingLocalFunctionKey = "LOCAL_FUNCTION_KEY"
	// SettingStallSeconds: a planning or copying migration with no recorded progress for this
	// long is reported as stalled (default 600).
	SettingStallSeconds     = "STALL_SECONDS"
	SettingEndpointSettings = "REDIS_ENDPOINT_SETTINGS"
	// SettingRetryBaseMs and SettingRetryMaxMs shape the backoff of a failed queue invocation:
	// delivery n waits min(base*2^(n-1), max) (+-20%) before answering non-2xx, so the host's
	// immediate redelivery comes after it (defaults 1000 and 30000).
	SettingRetryBaseMs = "RETRY_BASE_MS"
	SettingRetryMaxMs  = "RETRY_MAX_MS"
)

// dependencyTimeout bounds one attempt to open the state store when an invocation needs it.
var dependencyTimeout = 30 * time.Second

// Config is what an App is built from. Store and Sender may be given, or opened lazily by
// OpenStore and OpenSender on the first invocation that needs them: `serve` listens first (the
// host gives the handler about 30 s to answer its first GET /) and a dependency that cannot be
// reached fails the invocations that need it, named in their error, instead of the start.
type Config struct {
	Getenv     func(string) string // app settings
	Store      *state.Store
	Sender     queue.Sender
	OpenStore  func(ctx context.Context) (*state.Store, error)
	OpenSender func() (queue.Sender, error)
	Log        io.Writer // stderr; everything written is redacted
}

// App serves the custom-handler protocol.
type App struct {
	getenv        func(string) string
	store         *state.Store
	sender        queue.Sender
	log           io.Writer
	maxDeliveries int
	stepTime      time.Duration
	stepKeys      int
	conns         *connCache
	triggers      map[string]triggerFunc
	retryBase     time.Duration
	retryMax      time.Duration

	depMu      sync.Mutex
	openStore  func(ctx context.Context) (*state.Store, error)
	openSender func() (queue.Sender, error)
	ownSender  bool // opened here: closed by Close

	dlqMu       sync.Mutex
	dlqFailures map[string]int // failed deliveries of dead-letter-queue messages, in this process
}

// triggerFunc handles a non-HTTP invocation. A nil error with retry=false completes it; retry
// answers non-2xx so the host redelivers (or dead-letters) the message.
type triggerFunc func(ctx context.Context, inv *hostproto.Invocation, reply *hostproto.Reply) (retry bool, err error)

// extraTriggers lets later files of this package (ImportRdb) add trigger functions:
// registerTrigger("ImportRdb", (*App).importRdb) in an init function.
var extraTriggers = map[string]func(*App) triggerFunc{}

func registerTrigger(name string, f func(*App) triggerFunc) { extraTriggers[name] = f }

// New builds an App.
func New(cfg Config) *App {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	a := &App{getenv: cfg.Getenv, store: cfg.Store, sender: cfg.Sender, log: redact.Writer(cfg.Log),
		openStore: cfg.OpenStore, openSender: cfg.OpenSender}
	a.maxDeliveries = a.intSetting(SettingMaxDeliveries, 10)
	a.stepTime = time.Duration(a.intSetting(SettingPlanStepSeconds, 20)) * time.Second
	a.stepKeys = a.intSetting(SettingPlanStepMaxKeys, 200000)
	a.retryBase = time.Duration(a.intSetting(SettingRetryBaseMs, 1000)) * time.Millisecond
	a.retryMax = time.Duration(a.intSetting(SettingRetryMaxMs, 30000)) * time.Millisecond
	if a.store != nil {
		a.configureStore(a.store)
	}
	a.conns = newConnCache(a)
	a.triggers = map[string]triggerFunc{
		"PlanShard":      a.planShard,
		"CopyBatch":      a.copyBatch,
		"CopyDeadLetter": a.copyDeadLetter,
		"PlanDeadLetter": a.planDeadLetter,
	}
	for name, f := range extraTriggers {
		a.triggers[name] = f(a)
	}
	return a
}

func (a *App) intSetting(name string, def int) int {
	if v := strings.TrimSpace(a.getenv(name)); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
		a.logf("setting %s=%q is not a positive number; using %d", name, v, def)
	}
	return def
}

func (a *App) configureStore(st *state.Store) {
	st.SetStallAfter(time.Duration(a.intSetting(SettingStallSeconds, int(state.DefaultStallAfter/time.Second))) * time.Second)
}

// ready opens the dependencies not opened yet (state storage, the Service Bus sender). A failure
// is not kept: the next invocation tries again.
func (a *App) ready(ctx context.Context) error {
	a.depMu.Lock()
	defer a.depMu.Unlock()
	var errs []error
	if a.store == nil && a.openStore != nil {
		octx, cancel := context.WithTimeout(ctx, dependencyTimeout)
		st, err := a.openStore(octx)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("state storage (%s): %s", SettingStorage, redact.Error(err)))
		} else {
			a.configureStore(st)
			a.store = st
		}
	}
	if a.sender == nil && a.openSender != nil {
		snd, err := a.openSender()
		if err != nil {
			errs = append(errs, fmt.Errorf("Service Bus (%s): %s", SettingServiceBus, redact.Error(err)))
		} else {
			a.sender, a.ownSender = snd, true
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("the function app cannot reach %w", errors.Join(errs...))
	}
	return nil
}

// withDeps answers 503, naming the dependency, when one cannot be reached.
func (a *App) withDeps(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := a.ready(r.Context()); err != nil {
			msg := strings.ReplaceAll(redact.Error(err), "\n", "; ")
			a.logf("%s %s: %s", r.Method, r.URL.Path, msg)
			writeError(w, http.StatusServiceUnavailable, msg, "")
			return
		}
		h(w, r)
	}
}

// Close releases the cached Redis connections and a sender the app opened.
func (a *App) Close() {
	a.conns.closeAll()
	a.depMu.Lock()
	defer a.depMu.Unlock()
	if a.ownSender && a.sender != nil {
		_ = a.sender.Close(context.Background())
	}
}

func (a *App) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	fmt.Fprintf(a.log, "%s %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), strings.TrimRight(line, "\n"))
}

// Handler is the custom handler's HTTP server: GET / (readiness), the forwarded HTTP routes,
// and POST /<FunctionName> invocations.
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "redis-migrate handler ready\n")
	})
	// Forwarded HTTP triggers (enableForwardingHttpRequest): the caller's request as it came.
	mux.HandleFunc("POST /api/migrations", a.withDeps(a.migrationStart))
	mux.HandleFunc("GET /api/migrations/{id}", a.withDeps(a.migrationStatus))
	mux.HandleFunc("POST /api/migrations/{id}/verify", a.withDeps(a.migrationVerify))
	mux.HandleFunc("POST /api/migrations/{id}/resume", a.withDeps(a.migrationResume))
	mux.HandleFunc("POST /api/migrations/{id}/cutover", a.withDeps(a.migrationCutover))
	mux.HandleFunc("POST /api/migrations/{id}/stop", a.withDeps(a.migrationStop))
	mux.HandleFunc("POST /api/imports", a.withDeps(a.importStart))
	// The same functions invoked the classic way (Data.req / Outputs.res), for hosts that do not forward.
	mux.HandleFunc("POST /MigrationStart", a.httpInvocation(a.withDeps(a.migrationStart), "", "req", "res"))
	mux.HandleFunc("POST /MigrationStatus", a.httpInvocation(a.withDeps(a.migrationStatus), "id", "req", "res"))
	mux.HandleFunc("POST /MigrationVerify", a.httpInvocation(a.withDeps(a.migrationVerify), "id", "req", "res"))
	mux.HandleFunc("POST /MigrationResume", a.httpInvocation(a.withDeps(a.migrationResume), "id", "req", "res"))
	mux.HandleFunc("POST /MigrationCutover", a.httpInvocation(a.withDeps(a.migrationCutover), "id", "req", "res"))
	mux.HandleFunc("POST /MigrationStop", a.httpInvocation(a.withDeps(a.migrationStop), "id", "req", "res"))
	mux.HandleFunc("POST /ImportStart", a.httpInvocation(a.withDeps(a.importStart), "", "req", "res"))
	mux.HandleFunc("POST /{function}", a.invoke)
	return mux
}

// deadLetterFunctions read a dead-letter queue. A message there cannot be dead-lettered again
// (Service Bus), so a failing one would be redelivered without end: their retries are capped
// (by DeliveryCount and by countDeadLetterFailure).
var deadLetterFunctions = map[string]bool{"CopyDeadLetter": true, "PlanDeadLetter": true}

// invoke runs a trigger function. An invocation that could not be read is never answered 2xx
// (that would complete its message unread): it fails, and the error goes to the log and, when
// the message names its migration, into that migration's status.
func (a *App) invoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("function")
	f, ok := a.triggers[name]
	if !ok {
		http.Error(w, "no function "+name, http.StatusNotFound)
		return
	}
	reply := hostproto.NewReply()
	inv, err := hostproto.Decode(r.Body)
	if err != nil {
		msg := redact.Error(err)
		a.logf("%s: %s", name, msg)
		reply.Log("%s: %s", name, msg)
		reply.Write(w, http.StatusInternalServerError)
		return
	}
	delivery := 1
	if n, ok := hostproto.Int(inv.Metadata, "DeliveryCount"); ok && n > 0 {
		delivery = int(n)
	}
	var retry bool
	switch {
	case inv.OversizeError() != nil:
		err, retry = inv.OversizeError(), true
		a.recordUnreadable(r.Context(), name, inv, err)
	default:
		if err = a.ready(r.Context()); err != nil {
			retry = true
		} else {
			retry, err = f(r.Context(), inv, reply)
		}
	}
	if err != nil {
		msg := redact.Error(err)
		a.logf("%s: %s", name, msg)
		reply.Log("%s: %s", name, msg)
	}
	if deadLetterFunctions[name] {
		delivery = max(delivery, a.countDeadLetterFailure(name, inv, retry))
	}
	if retry && deadLetterFunctions[name] && delivery >= a.maxDeliveries {
		a.logf("%s: giving up on the message after %d failed deliveries (a dead-letter queue cannot dead-letter it; it is completed)", name, delivery)
		retry = false
		a.countDeadLetterFailure(name, inv, false)
	}
	if retry {
		a.backoff(r.Context(), name, delivery)
		reply.Write(w, http.StatusInternalServerError)
		return
	}
	reply.Write(w, http.StatusOK)
}

// countDeadLetterFailure counts the failed deliveries of one dead-letter-queue message in this
// process (failed=false forgets it) and returns the count. The cap on a dead-letter function's
// retries must not rest on DeliveryCount alone: a message received again from a dead-letter
// queue has been reported to keep DeliveryCount 1 (Azure/azure-sdk-for-net#53437), which would
// make it loop without end. Each instance gives up after SERVICEBUS_MAX_DELIVERY_COUNT failures.
func (a *App) countDeadLetterFailure(name string, inv *hostproto.Invocation, failed bool) int {
	id, seq := hostproto.String(inv.Metadata, "MessageId"), hostproto.String(inv.Metadata, "SequenceNumber")
	if id == "" && seq == "" {
		return 0
	}
	key := name + "\x00" + id + "\x00" + seq
	a.dlqMu.Lock()
	defer a.dlqMu.Unlock()
	if !failed {
		delete(a.dlqFailures, key)
		return 0
	}
	if a.dlqFailures == nil || len(a.dlqFailures) >= 10000 {
		a.dlqFailures = map[string]int{} // bounded: only ever-failing messages stay here
	}
	a.dlqFailures[key]++
	return a.dlqFailures[key]
}

// backoff waits before a failed delivery is answered, so the host's immediate redelivery comes
// later each time: delivery n waits min(RETRY_BASE_MS*2^(n-1), RETRY_MAX_MS), +-20%. The last
// delivery before dead-lettering does not wait. Messages stay exactly as they are (no resend),
// so duplicate detection and the batch accounting are untouched.
func (a *App) backoff(ctx context.Context, name string, delivery int) {
	if delivery >= a.maxDeliveries && !deadLetterFunctions[name] {
		return
	}
	d := a.retryBase
	for i := 1; i < delivery && d < a.retryMax; i++ {
		d *= 2
	}
	d = min(d, a.retryMax)
	d = time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
	a.logf("%s: delivery %d failed; retrying in %s", name, delivery, d.Round(time.Millisecond))
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// recordUnreadable puts the error of an invocation that could not be read into the status of
// the migration its message names (application property "migration"), failing it: the work in
// that message is lost.
func (a *App) recordUnreadable(ctx context.Context, name string, inv *hostproto.Invocation, cause error) {
	props := hostproto.Object(inv.Metadata, "ApplicationProperties")
	if props == nil {
		props = hostproto.Object(inv.Metadata, "UserProperties")
	}
	id := hostproto.String(props, "migration")
	if id == "" || !state.ValidID(id) || a.ready(ctx) != nil {
		return
	}
	msg := fmt.Sprintf("a %s invocation could not be read (%s); its message cannot be processed", name, redact.Error(cause))
	if _, err := a.store.UpdateMigration(context.WithoutCancel(ctx), id, func(m *state.Migration) (bool, error) {
		if m.Error != "" {
			return false, nil
		}
		m.Error = msg
		return true, nil
	}); err != nil && !errors.Is(err, state.ErrNotFound) {
		a.logf("%s: recording the unreadable invocation in %s: %s", name, id, redact.Error(err))
	}
}

// httpInvocation adapts a plain HTTP handler to the non-forwarded invocation form.
func (a *App) httpInvocation(h http.HandlerFunc, param, in, out string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		reply := hostproto.NewReply()
		inv, err := hostproto.Decode(r.Body)
		var req *http.Request
		if err == nil {
			var hr *hostproto.HTTPRequest
			if hr, err = inv.HTTP(in); err == nil {
				if req, err = hr.Request(); err == nil && param != "" {
					v := hr.Params[param]
					if v == "" {
						v = migrationSegment(req.URL.Path)
					}
					req.SetPathValue(param, v)
				}
			}
		}
		if err != nil {
			a.logf("%s", redact.Error(err))
			reply.Outputs[out] = hostproto.HTTPResponse{StatusCode: http.StatusBadRequest, Body: errorBody(redact.Error(err), "")}
			reply.Write(w, http.StatusOK)
			return
		}
		rec := &recorder{header: http.Header{}, status: http.StatusOK}
		h(rec, req.WithContext(r.Context()))
		headers := map[string]string{}
		for k := range rec.header {
			headers[k] = rec.header.Get(k)
		}
		reply.Outputs[out] = hostproto.HTTPResponse{StatusCode: rec.status, Body: rec.body.String(), Headers: headers}
		reply.Write(w, http.StatusOK)
	}
}

// migrationSegment is the id in a path without route parameters: the segment after
// "migrations" (.../migrations/{id}/verify), else the last one.
func migrationSegment(p string) string {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	for i, s := range segs[:len(segs)-1] {
		if s == "migrations" {
			return segs[i+1]
		}
	}
	return segs[len(segs)-1]
}

type recorder struct {
	header http.Header
	status int
	body   strings.Builder
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int) {
	if !r.wrote {
		r.status, r.wrote = s, true
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}
