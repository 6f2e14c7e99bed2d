package hostharness_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/redis-migrate/redis-migrate/shared/blobevent"
	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// recorder is a minimal custom handler: it records every invocation's raw body and fails the
// ones its fail function picks.
type recorder struct {
	mu    sync.Mutex
	calls map[string][][]byte
	fail  func(name string, inv *hostproto.Invocation) bool
}

func (r *recorder) handler(sender queue.Sender) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("POST /api/enqueue", func(w http.ResponseWriter, req *http.Request) {
		_ = sender.Send(req.Context(), "work", []queue.Message{{ID: "m1", Body: []byte(`{"n":1}`), Properties: map[string]any{"migration": "x"}}})
		w.WriteHeader(202)
	})
	mux.HandleFunc("POST /{fn}", func(w http.ResponseWriter, req *http.Request) {
		name := req.PathValue("fn")
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.calls[name] = append(r.calls[name], body)
		r.mu.Unlock()
		inv, err := hostproto.Decode(bytes.NewReader(body))
		if err != nil || (r.fail != nil && r.fail(name, inv)) {
			hostproto.NewReply().Write(w, 500)
			return
		}
		hostproto.NewReply().Write(w, 200)
	})
	return mux
}

func (r *recorder) get(name string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.calls[name]...)
}

var testFunctions = fstest.MapFS{
	"Enqueue/function.json":   {Data: []byte(`{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":"anonymous","methods":["post"],"route":"enqueue"},{"type":"http","direction":"out","name":"res"}]}`)},
	"Work/function.json":      {Data: []byte(`{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"msg","queueName":"%WORK_QUEUE%","connection":"SB"}]}`)},
	"WorkDLQ/function.json":   {Data: []byte(`{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"msg","queueName":"work/$DeadLetterQueue","connection":"SB"}]}`)},
	"ImportRdb/function.json": {Data: []byte(`{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"msg","queueName":"imports","connection":"SB"}]}`)},
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Service Bus deliveries carry the host's Metadata and double encoding, are redelivered on
// failure with DeliveryCount+1, and reach the dead-letter queue's function after the maximum.
// A blob landing in the container raises one BlobCreated event per blob version into the queue
// of the modelled Event Grid subscription (never the content); a metadata change raises none.
func TestHarnessDeliversLikeTheHost(t *testing.T) {
	az := testenv.StartAzurite(t)
	rec := &recorder{calls: map[string][][]byte{}, fail: func(name string, _ *hostproto.Invocation) bool { return name == "Work" }}
	h, err := hostharness.Start(context.Background(), hostharness.Options{
		Functions: testFunctions,
		Settings:  map[string]string{"WORK_QUEUE": "work", "SERVICEBUS_MAX_DELIVERY_COUNT": "3", "AzureWebJobsStorage": az.ConnectionString},
		NewHandler: func(_ func(string) string, s queue.Sender, _ io.Writer) (http.Handler, func(), error) {
			return rec.handler(s), func() {}, nil
		},
		Log: io.Discard, BlobPollInterval: 100 * time.Millisecond,
		BlobEvents: []hostharness.BlobEventSubscription{{Connection: "AzureWebJobsStorage", Container: "rdb-imports", Queue: "imports"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	resp, err := http.Post(h.URL+"/api/enqueue", "application/json", nil)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("enqueue: %v %v", resp, err)
	}
	resp.Body.Close()
	waitFor(t, "dead letter delivery", func() bool { return len(rec.get("WorkDLQ")) == 1 })
	work := rec.get("Work")
	if len(work) != 3 {
		t.Fatalf("Work delivered %d times, want 3", len(work))
	}
	for i, raw := range work {
		// The raw shape: the body and strings encoded twice, numbers as strings.
		var shape struct {
			Data     map[string]string
			Metadata map[string]json.RawMessage
		}
		if err := json.Unmarshal(raw, &shape); err != nil {
			t.Fatal(err)
		}
		if shape.Data["msg"] != `"{\"n\":1}"` || string(shape.Metadata["MessageId"]) != `"\"m1\""` {
			t.Fatalf("encoding: %s", raw)
		}
		inv, _ := hostproto.Decode(bytes.NewReader(raw))
		m, err := inv.ServiceBus("msg")
		if err != nil || m.DeliveryCount != i+1 || m.Properties["migration"] != "x" || string(m.Body) != `{"n":1}` {
			t.Fatalf("delivery %d: %+v %v", i+1, m, err)
		}
	}
	inv, _ := hostproto.Decode(bytes.NewReader(rec.get("WorkDLQ")[0]))
	dl, _ := inv.ServiceBus("msg")
	if dl.DeadLetterReason != "MaxDeliveryCountExceeded" || dl.MessageID != "m1" {
		t.Fatalf("dead letter: %+v", dl)
	}

	// A blob arrives.
	bc, err := azblob.NewClientFromConnectionString(az.ConnectionString, nil)
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("REDIS0011"), 1000)
	if _, err := bc.UploadBuffer(context.Background(), "rdb-imports", "dir/dump.rdb", content, &blockblob.UploadBufferOptions{
		Metadata: map[string]*string{"migration": to.Ptr("m-1")}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "blob event", func() bool { return len(rec.get("ImportRdb")) >= 1 })
	// A metadata change is not a BlobCreated; more polls must not raise the same version again.
	if _, err := bc.ServiceClient().NewContainerClient("rdb-imports").NewBlobClient("dir/dump.rdb").SetMetadata(context.Background(),
		map[string]*string{"migration": to.Ptr("m-2")}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	calls := rec.get("ImportRdb")
	if len(calls) != 1 {
		t.Fatalf("%d events for one blob version", len(calls))
	}
	if bytes.Contains(calls[0], []byte("UkVESVMwMDEx")) || bytes.Contains(calls[0], []byte("REDIS0011")) {
		t.Fatalf("the invocation carries the blob content: %.200s", calls[0])
	}
	inv, _ = hostproto.Decode(bytes.NewReader(calls[0]))
	m, err := inv.ServiceBus("msg")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := blobevent.Parse(m.Body)
	if err != nil {
		t.Fatalf("%v: %s", err, m.Body)
	}
	if ev.Type != blobevent.TypeBlobCreated || ev.Container != "rdb-imports" || ev.Blob != "dir/dump.rdb" || ev.Size != int64(len(content)) ||
		!strings.HasSuffix(ev.URL, "/devstoreaccount1/rdb-imports/dir/dump.rdb") || ev.ETag == "" || m.MessageID != ev.ID {
		t.Fatalf("event: %+v (message %s)", ev, m.MessageID)
	}
	// Overwriting the blob is a new version: a second event.
	if _, err := bc.UploadBuffer(context.Background(), "rdb-imports", "dir/dump.rdb", append(content, 'x'), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second blob event", func() bool { return len(rec.get("ImportRdb")) == 2 })
}

// echoHandler answers forwarded or proxied requests with what arrived, and records invocations.
func echoHandler(invocations *sync.Map) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "query": r.URL.RawQuery, "header": r.Header, "body": string(body)})
	})
	mux.HandleFunc("POST /{fn}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		invocations.Store(r.PathValue("fn"), string(b))
		reply := hostproto.NewReply()
		reply.Outputs["res"] = hostproto.HTTPResponse{StatusCode: 200, Body: "invoked"}
		reply.Write(w, 200)
	})
	return mux
}

type echoed struct {
	Path, Query, Body string
	Header            http.Header
}

// Forwarded and proxied requests arrive as the host sends them: the function key left in place
// (code= and x-functions-key), the host's headers added, a chunked body lost when forwarding
// (copied only with Content-Length > 0) and kept when proxying; a function with another binding
// besides httpTrigger and http is invoked the classic way.
func TestHarnessHTTPAsTheHost(t *testing.T) {
	fns := fstest.MapFS{
		"Echo/function.json": {Data: []byte(`{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":"function","methods":["post"],"route":"echo"},{"type":"http","direction":"out","name":"res"}]}`)},
		"EchoExtra/function.json": {Data: []byte(`{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":"function","methods":["post"],"route":"echo2"},{"type":"http","direction":"out","name":"res"},
			{"type":"serviceBus","direction":"out","name":"out","queueName":"q","connection":"SB"}]}`)},
	}
	const key = "harness-test-key-0123456789"
	for _, mode := range []string{"proxy", "forward"} {
		t.Run(mode, func(t *testing.T) {
			hj := `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler"},"enableForwardingHttpRequest":true}}`
			if mode == "proxy" {
				hj = `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler"},"enableProxyingHttpRequest":true,"enableForwardingHttpRequest":true}}`
			}
			var invocations sync.Map
			h, err := hostharness.Start(context.Background(), hostharness.Options{Functions: fns, HostJSON: []byte(hj),
				Settings: map[string]string{"LOCAL_FUNCTION_KEY": key},
				NewHandler: func(_ func(string) string, _ queue.Sender, _ io.Writer) (http.Handler, func(), error) {
					return echoHandler(&invocations), func() {}, nil
				}, Log: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			send := func(path string, body io.Reader, length int64) echoed {
				req, _ := http.NewRequest("POST", h.URL+path, body)
				req.ContentLength = length
				req.Header.Set("x-functions-key", key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var e echoed
				b, _ := io.ReadAll(resp.Body)
				if err := json.Unmarshal(b, &e); err != nil {
					t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
				}
				return e
			}
			// Content-Length body, key in query and header, a repeated query parameter.
			e := send("/api/echo?code="+key+"&a=1&a=2", strings.NewReader(`{"x":1}`), 7)
			if e.Path != "/api/echo" || !strings.Contains(e.Query, "code="+key) || e.Header.Get("X-Functions-Key") != key || e.Body != `{"x":1}` {
				t.Fatalf("request as it arrived: %+v", e)
			}
			if e.Header.Get("X-Azure-Functions-InvocationId") == "" || e.Header.Get("X-Azure-Functions-HostVersion") == "" {
				t.Fatalf("no host headers: %v", e.Header)
			}
			// A chunked body (no Content-Length).
			chunked := send("/api/echo", io.MultiReader(strings.NewReader(`{"chunked":`), strings.NewReader(`true}`)), -1)
			switch mode {
			case "forward":
				if chunked.Body != "" || !strings.Contains(e.Query, "a=1%2C2") || !strings.HasPrefix(e.Header.Get("User-Agent"), "Azure-Functions-Host/") {
					t.Fatalf("forwarding: chunked body %q (want lost), query %q, user agent %q", chunked.Body, e.Query, e.Header.Get("User-Agent"))
				}
			case "proxy":
				if chunked.Body != `{"chunked":true}` || !strings.Contains(e.Query, "a=1&a=2") {
					t.Fatalf("proxying: chunked body %q (want kept), query %q", chunked.Body, e.Query)
				}
			}
			// Three bindings: neither forwarded nor proxied, but invoked with Data.req.
			req, _ := http.NewRequest("POST", h.URL+"/api/echo2?code="+key, strings.NewReader(`{}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			inv, ok := invocations.Load("EchoExtra")
			if string(b) != "invoked" || !ok || !strings.Contains(inv.(string), "code="+key) {
				t.Fatalf("EchoExtra: %s, invocation %v", b, inv)
			}
		})
	}
}
