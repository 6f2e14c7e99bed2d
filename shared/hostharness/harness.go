// Package hostharness is a local stand-in for the Azure Functions host. It reads the app's
// function.json files and host.json, starts the custom handler's HTTP server, waits for its
// readiness answer on GET /, and then drives it only over HTTP, the way the host does:
//
//   - HTTP triggers: serves http://127.0.0.1:<port>/api/<route>, checks function keys for
//     authLevel function/admin (x-functions-key header or ?code=, left in place as the host
//     does), and proxies the request (enableProxyingHttpRequest), forwards a rebuilt copy
//     (enableForwardingHttpRequest, legacy) or sends a Data.req invocation to POST /<Function>.
//   - Service Bus triggers: delivers messages from an in-memory queue (queue.Memory) as
//     POST /<Function> with the host's Data/Metadata encoding (values serialized twice,
//     DeliveryCount, MessageId, ...), completes on 2xx, abandons (redelivers) otherwise,
//     dead-letters after the max delivery count, honouring maxConcurrentCalls.
//   - Event Grid: for each BlobEventSubscription, lists the container and sends a
//     Microsoft.Storage.BlobCreated event (Event Grid or CloudEvents schema) into the Service Bus
//     queue it names when a blob version is written, as an Event Grid subscription into a queue
//     does. Blob triggers are not emulated: the app has none (see README, "Importing an RDB").
//   - Timer triggers: the NCRONTAB schedule (six fields, with seconds; %SETTING% resolved, and a
//     timer whose setting is unset is not run, as the host does not index it) invokes
//     POST /<Function> with the host's TimerInfo payload, one run at a time (timer.go).
//     RunTimer runs one now, like the host's admin API.
//
// The handler runs in this process (NewHandler: an http.Server on its own port, sending to the
// in-memory queue directly) or, with Options.Process, as a child process started the way the
// host starts it (FUNCTIONS_CUSTOMHANDLER_PORT, the settings as its environment), reaching the
// queues over AMQP through shared/queue/amqptest, which hands every message to Harness.Queue.
// Only a child process can be killed truthfully (KillHandler, Fault KillDuringCall): a crash
// of an instance ends everything in it at once, every goroutine, connection and half-written
// request, which cancelling contexts in one process cannot promise (a goroutine that ignores
// its context, a pooled Redis connection, a blob upload in flight would live on and write
// after the "crash"). SIGKILL gives the real thing; the harness then lets the dead
// invocations' message locks lapse (redelivery after LockDuration, DeliveryCount+1) and starts
// the handler again, as the host restarts its worker.
//
// The harness never calls the app's Go code directly; tests and `serve --local` use it alike.
package hostharness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/queue/amqptest"
	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// HandlerFactory builds the custom handler given the app settings and the Service Bus stand-in
// it must send to. The harness serves the returned handler on its own port and only talks to
// it over HTTP. close is called at shutdown.
type HandlerFactory func(getenv func(string) string, sender queue.Sender, log io.Writer) (h http.Handler, close func(), err error)

// Fault is what a test's fault hook asks the harness to do with one delivery.
type Fault int

const (
	Deliver        Fault = iota // deliver normally
	FailBeforeCall              // count the delivery as failed without calling the handler
	DropReply                   // call the handler, then treat the invocation as failed (a crash after the work)
	DeliverTwice                // deliver, and after it succeeds deliver the same message again
	DuplicateNow                // enqueue a second copy before delivering, so both may run at once (a lost lock)
	Lose                        // complete the message without calling the handler: it is lost (a local host killed, a message purged or expired)
	// KillDuringCall delivers, and KillAfter into the call kills the handler process
	// (KillHandler): the instance crashed mid-run, the message's lock lapses and it comes back
	// after LockDuration. Needs Options.Process.
	KillDuringCall
)

// DeliveryInfo describes a delivery to the fault hook.
type DeliveryInfo struct {
	Function      string
	Queue         string
	MessageID     string
	DeliveryCount int
	Body          []byte
}

// Options configure a harness.
type Options struct {
	Functions  fs.FS  // <Name>/function.json for each function
	HostJSON   []byte // host.json; nil = defaults (proxying on, maxConcurrentCalls 16)
	Settings   map[string]string
	Port       int // 0 = a free port
	NewHandler HandlerFactory
	Log        io.Writer // harness log lines; default stderr (redacted)
	// Fault is the test-only fault hook, consulted before each queue delivery.
	Fault func(DeliveryInfo) Fault
	// BlobEvents are the Event Grid subscriptions to model (storage -> Service Bus queue).
	BlobEvents []BlobEventSubscription
	// BlobPollInterval is how often their containers are listed; default 2s.
	BlobPollInterval time.Duration
	// Process runs the handler as a child process instead of NewHandler (see ProcessOptions);
	// only then can it be killed (KillHandler, KillDuringCall).
	Process *ProcessOptions
	// LockDuration is the queues' message lock: how long after a killed invocation its message
	// is delivered again (default 1 minute, as infra/main.bicep's queues).
	LockDuration time.Duration
	// KillAfter is how long into a KillDuringCall invocation the handler is killed (default 1s).
	KillAfter time.Duration
}

// Harness is a running local host.
type Harness struct {
	URL         string // http://127.0.0.1:<port>
	FunctionKey string
	Queue       *queue.Memory

	opts      Options
	host      hostConfig
	functions []*function
	settings  map[string]string
	client    *http.Client
	front     *http.Server
	back      *http.Server // the in-process handler's server
	amqp      *amqptest.Server
	closeApp  func()
	log       io.Writer
	runCtx    context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	wmu       sync.Mutex
	cur       *worker
	ready     chan struct{} // closed while cur is ready; replaced during a restart
	restartMu sync.Mutex

	cmu   sync.Mutex
	calls map[string]int // invocations per function
}

// Setting returns an app setting as the handler sees it.
func (h *Harness) Setting(name string) string { return h.settings[name] }

// Start starts the handler and the host emulation.
func Start(ctx context.Context, o Options) (*Harness, error) {
	if (o.NewHandler == nil && o.Process == nil) || o.Functions == nil {
		return nil, errors.New("hostharness: Functions and NewHandler (or Process) are required")
	}
	logw := o.Log
	if logw == nil {
		logw = os.Stderr
	}
	h := &Harness{opts: o, log: redact.Writer(logw), settings: map[string]string{}, client: &http.Client{}, calls: map[string]int{}, ready: make(chan struct{})}
	for k, v := range o.Settings {
		h.settings[k] = v
	}
	var err error
	if h.host, err = parseHostJSON(o.HostJSON); err != nil {
		return nil, err
	}
	if h.functions, err = loadFunctions(o.Functions, h.settings); err != nil {
		return nil, err
	}
	h.FunctionKey = h.settings["LOCAL_FUNCTION_KEY"]
	if h.FunctionKey == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		h.FunctionKey = hex.EncodeToString(b[:])
	}
	maxDeliveries, _ := strconv.Atoi(h.settings["SERVICEBUS_MAX_DELIVERY_COUNT"])
	h.Queue = queue.NewMemory(queue.MemoryOptions{MaxDeliveryCount: maxDeliveries})

	var w *worker
	if o.Process != nil {
		if err := h.startServiceBus(); err != nil {
			return nil, err
		}
		if w, err = h.startProcess(ctx); err != nil {
			h.shutdownServers()
			return nil, err
		}
	} else {
		// The handler's own server, on the port the host would put in FUNCTIONS_CUSTOMHANDLER_PORT.
		bl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		h.settings["FUNCTIONS_CUSTOMHANDLER_PORT"] = strconv.Itoa(bl.Addr().(*net.TCPAddr).Port)
		getenv := func(k string) string { return h.settings[k] }
		handler, closeApp, err := o.NewHandler(getenv, h.Queue, logw)
		if err != nil {
			bl.Close()
			return nil, err
		}
		h.closeApp = closeApp
		w = &worker{url: "http://" + bl.Addr().String()}
		h.back = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = h.back.Serve(bl) }()
		if err := h.waitReady(ctx, w); err != nil {
			h.shutdownServers()
			return nil, err
		}
	}
	h.cur = w
	close(h.ready)

	fl, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", o.Port))
	if err != nil {
		h.shutdownServers()
		return nil, fmt.Errorf("listening on port %d: %v", o.Port, err)
	}
	h.URL = "http://" + fl.Addr().String()
	h.front = &http.Server{Handler: http.HandlerFunc(h.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.front.Serve(fl) }()

	runCtx, cancel := context.WithCancel(context.Background())
	h.runCtx, h.cancel = runCtx, cancel
	for _, f := range h.functions {
		switch f.kind {
		case "serviceBusTrigger":
			for i := 0; i < h.host.maxConcurrentCalls; i++ {
				h.wg.Add(1)
				go h.pump(runCtx, f)
			}
		case "timerTrigger":
			if f.timerErr != nil {
				// The host reports the function as errored and runs the others.
				h.logf("%s: not scheduled: %v", f.name, f.timerErr)
				continue
			}
			h.wg.Add(1)
			go h.runTimer(runCtx, f)
		case "blobTrigger":
			h.logf("%s: blob triggers are not emulated (a custom handler gets the whole blob, or an undocumented "+
				"deferred-binding descriptor); deliver blob events through Service Bus instead", f.name)
		}
	}
	for _, sub := range o.BlobEvents {
		if err := h.startBlobEvents(runCtx, sub); err != nil {
			h.Close()
			return nil, err
		}
	}
	h.logf("host harness: %d functions, API at %s/%s/", len(h.functions), h.URL, h.host.routePrefix)
	return h, nil
}

func (h *Harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "%s [harness] %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// WaitIdle waits until no queue message is waiting or being processed.
func (h *Harness) WaitIdle(ctx context.Context) error {
	var names []string
	for _, f := range h.functions {
		if f.kind == "serviceBusTrigger" {
			names = append(names, f.queue)
		}
	}
	stable := 0
	for {
		if h.Queue.Idle(names...) {
			stable++
			if stable >= 3 {
				return nil
			}
		} else {
			stable = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops delivering, shuts both servers down and closes the app.
func (h *Harness) Close() {
	if h.cancel != nil {
		h.cancel()
	}
	h.Queue.Shutdown()
	h.wg.Wait()
	h.shutdownServers()
}

func (h *Harness) shutdownServers() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if h.front != nil {
		_ = h.front.Shutdown(ctx)
	}
	if h.back != nil {
		_ = h.back.Shutdown(ctx)
	}
	h.stopWorker()
	if h.amqp != nil {
		_ = h.amqp.Close()
		h.amqp = nil
	}
	if h.closeApp != nil {
		h.closeApp()
		h.closeApp = nil
	}
}

// hostConfig is the part of host.json the harness honours.
type hostConfig struct {
	proxying           bool
	forwarding         bool
	routePrefix        string
	maxConcurrentCalls int
}

func parseHostJSON(b []byte) (hostConfig, error) {
	c := hostConfig{proxying: true, routePrefix: "api", maxConcurrentCalls: 16}
	if b == nil {
		return c, nil
	}
	var hj struct {
		CustomHandler struct {
			EnableForwardingHTTPRequest *bool `json:"enableForwardingHttpRequest"`
			EnableProxyingHTTPRequest   *bool `json:"enableProxyingHttpRequest"`
		} `json:"customHandler"`
		Extensions struct {
			HTTP *struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
			ServiceBus *struct {
				MaxConcurrentCalls int `json:"maxConcurrentCalls"`
			} `json:"serviceBus"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(b, &hj); err != nil {
		return c, fmt.Errorf("host.json: %v", err)
	}
	// Both off unless host.json says so (HttpWorkerOptions); with both on, proxying wins.
	c.proxying, c.forwarding = false, false
	if v := hj.CustomHandler.EnableForwardingHTTPRequest; v != nil {
		c.forwarding = *v
	}
	if v := hj.CustomHandler.EnableProxyingHTTPRequest; v != nil {
		c.proxying = *v
	}
	if hj.Extensions.HTTP != nil && hj.Extensions.HTTP.RoutePrefix != nil {
		c.routePrefix = strings.Trim(*hj.Extensions.HTTP.RoutePrefix, "/")
	}
	if sb := hj.Extensions.ServiceBus; sb != nil && sb.MaxConcurrentCalls > 0 {
		c.maxConcurrentCalls = sb.MaxConcurrentCalls
	}
	return c, nil
}

// function is one function folder.
type function struct {
	name       string
	kind       string // trigger binding type
	trigger    map[string]any
	bindingIn  string
	bindingOut string // http output binding name
	// HTTP
	methods   []string
	route     []string // route template segments
	authLevel string
	// Service Bus
	queue string
	// Timer
	schedule *cronSchedule
	timerErr error     // the schedule could not be resolved or parsed: not scheduled
	lastRun  time.Time // the last monitored run (ScheduleStatus.Last)
	// bindings is how many bindings the function has (forwarding needs exactly two).
	bindings int
}

func loadFunctions(fsys fs.FS, settings map[string]string) ([]*function, error) {
	paths, err := fs.Glob(fsys, "*/function.json")
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []*function
	for _, p := range paths {
		raw, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		var fj struct {
			Disabled any              `json:"disabled"`
			Bindings []map[string]any `json:"bindings"`
		}
		if err := json.Unmarshal(raw, &fj); err != nil {
			return nil, fmt.Errorf("%s: %v", p, err)
		}
		if b, ok := fj.Disabled.(bool); ok && b {
			continue
		}
		f := &function{name: path.Dir(p), bindings: len(fj.Bindings)}
		for _, b := range fj.Bindings {
			typ, _ := b["type"].(string)
			dir, _ := b["direction"].(string)
			name, _ := b["name"].(string)
			if strings.HasSuffix(strings.ToLower(typ), "trigger") {
				if f.kind != "" {
					return nil, fmt.Errorf("%s: more than one trigger", p)
				}
				f.kind, f.trigger, f.bindingIn = typ, b, name
			} else if typ == "http" && dir == "out" {
				f.bindingOut = name
			}
		}
		str := func(k string) string { s, _ := f.trigger[k].(string); return resolvePercent(s, settings) }
		switch f.kind {
		case "httpTrigger":
			f.authLevel = strings.ToLower(str("authLevel"))
			route := str("route")
			if route == "" {
				route = f.name
			}
			f.route = strings.Split(strings.Trim(route, "/"), "/")
			if ms, ok := f.trigger["methods"].([]any); ok {
				for _, m := range ms {
					if s, ok := m.(string); ok {
						f.methods = append(f.methods, strings.ToUpper(s))
					}
				}
			}
		case "serviceBusTrigger":
			f.queue = str("queueName")
			if f.queue == "" {
				return nil, fmt.Errorf("%s: serviceBusTrigger without queueName", p)
			}
		case "timerTrigger":
			raw, _ := f.trigger["schedule"].(string)
			sched, err := resolvePercentStrict(raw, settings)
			if err == nil {
				f.schedule, err = parseCron(sched)
			}
			if err != nil {
				f.timerErr = fmt.Errorf("schedule %q: %v", raw, err)
			}
		case "":
			return nil, fmt.Errorf("%s: no trigger binding", p)
		default:
			// Other triggers (queue, ...) are not emulated; the function is listed only.
		}
		out = append(out, f)
	}
	return out, nil
}

// resolvePercent replaces %SETTING% binding expressions with app settings, as the host does.
func resolvePercent(s string, settings map[string]string) string {
	for {
		i := strings.Index(s, "%")
		if i < 0 {
			return s
		}
		j := strings.Index(s[i+1:], "%")
		if j < 0 {
			return s
		}
		name := s[i+1 : i+1+j]
		s = s[:i] + settings[name] + s[i+2+j:]
	}
}

// resolvePercentStrict is resolvePercent for values the host refuses to bind unresolved (a
// timer's schedule: "'%NAME%' does not resolve to a value").
func resolvePercentStrict(s string, settings map[string]string) (string, error) {
	for i := strings.Index(s, "%"); i >= 0; i = strings.Index(s, "%") {
		j := strings.Index(s[i+1:], "%")
		if j < 0 {
			break
		}
		name := s[i+1 : i+1+j]
		if settings[name] == "" {
			return "", fmt.Errorf("%%%s%% does not resolve to a value (set the app setting %s)", name, name)
		}
		s = s[:i] + settings[name] + s[i+2+j:]
	}
	return s, nil
}

// Invocations is how many times the harness has invoked a function so far (HTTP requests
// routed to it, queue deliveries sent to it, timer runs).
func (h *Harness) Invocations(function string) int {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	return h.calls[function]
}

func (h *Harness) counted(function string) {
	h.cmu.Lock()
	h.calls[function]++
	h.cmu.Unlock()
}
