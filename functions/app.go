// Package functions is the Azure Functions face of redis-migrate: it adapts the custom-handler
// invocations of MigrationStart, MigrationStatus, MigrationVerify, MigrationResume, PlanShard, CopyBatch, the dead-letter
// recorders, ImportStart and ImportRdb to the engine (plan, copier, importer) and to the state
// kept in Blob storage. The bindings live
// in <Name>/function.json beside this file and are embedded, so the binary can serve or emulate
// the whole app from anywhere.
package functions

import (
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
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
)

// Config is what an App is built from.
type Config struct {
	Getenv func(string) string // app settings
	Store  *state.Store
	Sender queue.Sender
	Log    io.Writer // stderr; everything written is redacted
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
	a := &App{getenv: cfg.Getenv, store: cfg.Store, sender: cfg.Sender, log: redact.Writer(cfg.Log)}
	a.maxDeliveries = a.intSetting(SettingMaxDeliveries, 10)
	a.stepTime = time.Duration(a.intSetting(SettingPlanStepSeconds, 20)) * time.Second
	a.stepKeys = a.intSetting(SettingPlanStepMaxKeys, 200000)
	if a.store != nil {
		a.store.SetStallAfter(time.Duration(a.intSetting(SettingStallSeconds, int(state.DefaultStallAfter/time.Second))) * time.Second)
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

// Close releases the cached Redis connections.
func (a *App) Close() { a.conns.closeAll() }

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
	mux.HandleFunc("POST /api/migrations", a.migrationStart)
	mux.HandleFunc("GET /api/migrations/{id}", a.migrationStatus)
	mux.HandleFunc("POST /api/migrations/{id}/verify", a.migrationVerify)
	mux.HandleFunc("POST /api/migrations/{id}/resume", a.migrationResume)
	mux.HandleFunc("POST /api/imports", a.importStart)
	// The same functions invoked the classic way (Data.req / Outputs.res), for hosts that do not forward.
	mux.HandleFunc("POST /MigrationStart", a.httpInvocation(a.migrationStart, "", "req", "res"))
	mux.HandleFunc("POST /MigrationStatus", a.httpInvocation(a.migrationStatus, "id", "req", "res"))
	mux.HandleFunc("POST /MigrationVerify", a.httpInvocation(a.migrationVerify, "id", "req", "res"))
	mux.HandleFunc("POST /MigrationResume", a.httpInvocation(a.migrationResume, "id", "req", "res"))
	mux.HandleFunc("POST /ImportStart", a.httpInvocation(a.importStart, "", "req", "res"))
	mux.HandleFunc("POST /{function}", a.invoke)
	return mux
}

// invoke runs a trigger function.
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
		// A payload we cannot read will not read better on redelivery.
		a.logf("%s: %v", name, err)
		reply.Log("%s: %s", name, redact.Error(err))
		reply.Write(w, http.StatusOK)
		return
	}
	retry, err := f(r.Context(), inv, reply)
	if err != nil {
		msg := redact.Error(err)
		a.logf("%s: %s", name, msg)
		reply.Log("%s: %s", name, msg)
	}
	if retry {
		reply.Write(w, http.StatusInternalServerError)
		return
	}
	reply.Write(w, http.StatusOK)
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
