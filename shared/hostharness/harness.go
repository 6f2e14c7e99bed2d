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
}

// Harness is a running local host.
type Harness struct {
	URL         string // http://127.0.0.1:<port>
	FunctionKey string
	Queue       *queue.Memory

	opts       Options
	host       hostConfig
	functions  []*function
	settings   map[string]string
	handlerURL string
	client     *http.Client
	front      *http.Server
	back       *http.Server
	closeApp   func()
	log        io.Writer
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// Setting returns an app setting as the handler sees it.
func (h *Harness) Setting(name string) string { return h.settings[name] }

// Start starts the handler and the host emulation.
func Start(ctx context.Context, o Options) (*Harness, error) {
	if o.NewHandler == nil || o.Functions == nil {
		return nil, errors.New("hostharness: Functions and NewHandler are required")
	}
	logw := o.Log
	if logw == nil {
		logw = os.Stderr
	}
	h := &Harness{opts: o, log: redact.Writer(logw), settings: map[string]string{}, client: &http.Client{}}
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
	h.handlerURL = "http://" + bl.Addr().String()
	h.back = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.back.Serve(bl) }()
	if err := h.waitReady(ctx); err != nil {
		h.shutdownServers()
		return nil, err
	}

	fl, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", o.Port))
	if err != nil {
		h.shutdownServers()
		return nil, fmt.Errorf("listening on port %d: %v", o.Port, err)
	}
	h.URL = "http://" + fl.Addr().String()
	h.front = &http.Server{Handler: http.HandlerFunc(h.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.front.Serve(fl) }()

	runCtx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	for _, f := range h.functions {
		switch f.kind {
		case "serviceBusTrigger":
			for i := 0; i < h.host.maxConcurrentCalls; i++ {
				h.wg.Add(1)
				go h.pump(runCtx, f)
			}
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

// waitReady polls GET / until the handler answers, as the host does after starting it.
func (h *Harness) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.handlerURL+"/", nil)
		resp, err := h.client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the custom handler did not answer GET / within 30s: %v", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
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
		case "":
			return nil, fmt.Errorf("%s: no trigger binding", p)
		default:
			// Other triggers (timer, queue, ...) are not emulated; the function is listed only.
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
