package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/functions"
	"github.com/redis-migrate/redis-migrate/shared/cli"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/state"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// blackhole accepts connections and never answers: a dependency that is slow to reach.
func blackhole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

// startServe runs `serve` as the host does (FUNCTIONS_CUSTOMHANDLER_PORT) and returns its base
// URL once GET / answers, and how long that took.
func startServe(t *testing.T, settings map[string]string) (string, time.Duration, *syncBuffer) {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	settings[functions.SettingHandlerPort] = strconv.Itoa(port)
	log := &syncBuffer{}
	env := &cli.Env{Stdout: io.Discard, Stderr: log, Getenv: func(k string) string { return settings[k] }}
	start := time.Now()
	run := serveUntilCleanup(t, "serve", func(ctx context.Context) error { return functions.ServeHandler(ctx, env) })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base, time.Since(start), log
			}
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("serve never answered GET /: %v\n%s", err, log.String())
		}
		if exited, err := run.exited(); exited {
			t.Fatalf("serve exited: %v\n%s", err, log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sbInvocation is a Service Bus invocation in the host's shape, with body as Data.msg.
func sbInvocation(body string, delivery int, props map[string]any) string {
	inv := map[string]any{"Data": map[string]json.RawMessage{"msg": hostproto.HostString(body)},
		"Metadata": map[string]json.RawMessage{"DeliveryCount": hostproto.HostNumber(int64(delivery)),
			"MessageId": hostproto.HostString("m-1"), "ApplicationProperties": hostproto.HostObject(props)}}
	b, _ := json.Marshal(inv)
	return string(b)
}

// `serve` answers the host's first GET / within a second although its storage never answers:
// storage and Service Bus are opened by the first invocation that needs them, and a broken one
// fails that invocation (non-2xx), named in its error, and HTTP calls with 503.
func TestServeAnswersFirstGETWhileDependenciesHang(t *testing.T) {
	t.Cleanup(functions.SetDependencyTimeout(2 * time.Second))
	hole := blackhole(t)
	base, took, log := startServe(t, hangingDependencies(hole, "RootManageSharedAccessKey", "c2VjcmV0LWtleS12YWx1ZS0xMjM0NQ==", "50", "10"))
	t.Logf("first GET / answered after %s", took)
	if took > time.Second {
		t.Fatalf("first GET / answered after %s; the host allows the handler about 30 s, and it must not wait for storage", took)
	}
	resp, err := http.Post(base+"/CopyBatch", "application/json", strings.NewReader(sbInvocation(`{"migration":"m1","batch":{"id":"b1"}}`, 1, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(string(b), "state storage (AzureWebJobsStorage)") {
		t.Fatalf("invocation with storage unreachable: %d %s", resp.StatusCode, b)
	}
	resp, err = http.Get(base + "/api/migrations/m1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "state storage (AzureWebJobsStorage)") {
		t.Fatalf("status with storage unreachable: %d %s", resp.StatusCode, b)
	}
	if all := log.String() + string(b); strings.Contains(all, "c2VjcmV0LWtleS12YWx1ZS0xMjM0NQ") || strings.Contains(all, testenv.DevStoreKey) {
		t.Fatalf("a key in the output:\n%s", all)
	}
}

// An invocation whose message is over the size the handler keeps is read past (memory stays
// bounded), answered 500, never 200, and the migration its message names is failed with the
// reason in its status.
func TestOversizeInvocationFailsAndIsRecorded(t *testing.T) {
	az := testenv.StartAzurite(t)
	base, _, _ := startServe(t, map[string]string{functions.SettingStorage: az.ConnectionString,
		functions.SettingServiceBus: "Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=x;SharedAccessKey=eHh4eHh4eHh4eHh4", functions.SettingRetryBaseMs: "10"})
	ctx := context.Background()
	st, err := state.Open(ctx, az.ConnectionString, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateMigration(ctx, &state.Migration{ID: "big-msg", Kind: "copy", CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	// {"Data":{"msg":"xxxx...(MaxValueBytes+1 bytes)"},"Metadata":{...}}, streamed.
	head := `{"Data":{"msg":"`
	tail := `"},"Metadata":{"DeliveryCount":"1","MessageId":"\"m-1\"","ApplicationProperties":{"migration":"big-msg"}}}`
	body := io.MultiReader(strings.NewReader(head), io.LimitReader(repeatReader('x'), hostproto.MaxValueBytes+1), strings.NewReader(tail))
	resp, err := http.Post(base+"/CopyBatch", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 == 2 || !strings.Contains(string(b), "Data.msg is") {
		t.Fatalf("oversize invocation: %d %s", resp.StatusCode, b)
	}
	resp, err = http.Get(base + "/api/migrations/big-msg")
	if err != nil {
		t.Fatal(err)
	}
	var status state.Status
	err = json.NewDecoder(resp.Body).Decode(&status)
	resp.Body.Close()
	if err != nil || status.State != state.StateFailed || !strings.Contains(status.Error, "CopyBatch invocation could not be read") {
		t.Fatalf("status: %+v %v", status, err)
	}
	// A body that is not an invocation at all fails too.
	resp, err = http.Post(base+"/PlanShard", "application/json", strings.NewReader(`{"Data":{"msg":`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		t.Fatalf("unreadable invocation answered %d", resp.StatusCode)
	}
}

// A dead-letter function whose every delivery fails gives up after SERVICEBUS_MAX_DELIVERY_COUNT
// failures and completes the message (a dead-letter queue cannot dead-letter it again), whether
// DeliveryCount grows with each delivery (as the harness counts) or stays 1, as has been reported
// for a message received again from a dead-letter queue. Other functions are not capped here:
// their queue's MaxDeliveryCount dead-letters the message.
func TestDeadLetterFunctionsGiveUp(t *testing.T) {
	t.Cleanup(functions.SetDependencyTimeout(500 * time.Millisecond))
	hole := blackhole(t)
	base, _, log := startServe(t, hangingDependencies(hole, "x", "eHh4eHh4eHh4eHh4", "10", "3"))
	post := func(fn, id string, delivery int) int {
		t.Helper()
		inv := map[string]any{"Data": map[string]json.RawMessage{"msg": hostproto.HostString(`{"migration":"m1","batch":{"id":"b1"}}`)},
			"Metadata": map[string]json.RawMessage{"DeliveryCount": hostproto.HostNumber(int64(delivery)),
				"MessageId": hostproto.HostString(id), "SequenceNumber": hostproto.HostNumber(7),
				"ApplicationProperties": hostproto.HostObject(map[string]string{"DeadLetterReason": "MaxDeliveryCountExceeded"})}}
		b, _ := json.Marshal(inv)
		resp, err := http.Post(base+"/"+fn, "application/json", strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		fn, id  string
		growing bool
	}{{"CopyDeadLetter", "stuck", false}, {"PlanDeadLetter", "growing", true}} {
		for i := 1; i <= 3; i++ {
			delivery := 1
			if c.growing {
				delivery = i
			}
			want := http.StatusInternalServerError
			if i == 3 {
				want = http.StatusOK
			}
			if got := post(c.fn, c.id, delivery); got != want {
				t.Fatalf("%s %s: failure %d (DeliveryCount %d) answered %d, want %d\n%s", c.fn, c.id, i, delivery, got, want, log.String())
			}
		}
		if !strings.Contains(log.String(), c.fn+": giving up on the message after 3 failed deliveries") {
			t.Fatalf("%s: no give-up in the log:\n%s", c.fn, log.String())
		}
	}
	// The count starts again for a message given up on, and a queue function is not capped.
	if got := post("CopyDeadLetter", "stuck", 1); got != http.StatusInternalServerError {
		t.Fatalf("the stuck message delivered again answered %d", got)
	}
	for i := 1; i <= 4; i++ {
		if got := post("CopyBatch", "batch", 1); got != http.StatusInternalServerError {
			t.Fatalf("CopyBatch failure %d answered %d", i, got)
		}
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// hangingDependencies are settings whose storage and Service Bus both point at hole (a port that
// accepts and never answers), with the Service Bus key given and the retry settings.
func hangingDependencies(hole, keyName, key, retryBaseMs, maxDeliveries string) map[string]string {
	return map[string]string{
		functions.SettingStorage: "DefaultEndpointsProtocol=http;AccountName=" + testenv.DevStoreAccount + ";AccountKey=" + testenv.DevStoreKey +
			";BlobEndpoint=http://" + hole + "/" + testenv.DevStoreAccount + ";",
		functions.SettingServiceBus:    "Endpoint=sb://" + hole + "/;SharedAccessKeyName=" + keyName + ";SharedAccessKey=" + key,
		functions.SettingRetryBaseMs:   retryBaseMs,
		functions.SettingMaxDeliveries: maxDeliveries,
	}
}

// serveRun is a serve loop running until its test ends.
type serveRun struct {
	done chan struct{}
	err  error
}

// exited says whether the loop has returned, and with what.
func (r *serveRun) exited() (bool, error) {
	select {
	case <-r.done:
		return true, r.err
	default:
		return false, nil
	}
}

// serveUntilCleanup runs serve until the test ends; then it is cancelled and waited for.
func serveUntilCleanup(t *testing.T, what string, serve func(ctx context.Context) error) *serveRun {
	ctx, cancel := context.WithCancel(context.Background())
	r := &serveRun{done: make(chan struct{})}
	go func() { defer close(r.done); r.err = serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Errorf("%s did not stop", what)
		}
	})
	return r
}
