package hostharness_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/queue"
)

// TestMain doubles as the custom handler of TestHarnessKillHandler: started by the harness as
// a child process (setting KILL_TEST_CHILD), it serves FUNCTIONS_CUSTOMHANDLER_PORT like
// `redis-migrate serve` and sends over Service Bus from the ServiceBusConnection setting.
func TestMain(m *testing.M) {
	if os.Getenv("KILL_TEST_CHILD") == "1" {
		childHandler()
		return
	}
	os.Exit(m.Run())
}

func childHandler() {
	sb, err := queue.NewServiceBusFromSettings(os.Getenv, "ServiceBusConnection", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	send := func(ctx context.Context, id string) error {
		return sb.Send(ctx, "done", []queue.Message{{ID: id, Body: []byte(`{}`), Properties: map[string]any{"pid": fmt.Sprint(os.Getpid())}}})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("POST /Work", func(w http.ResponseWriter, r *http.Request) {
		inv, err := hostproto.Decode(r.Body)
		if err != nil {
			hostproto.NewReply().Write(w, 500)
			return
		}
		msg, _ := inv.ServiceBus("msg")
		// Delivery 1 sends "early", works for 5 s (it is killed meanwhile), then would send
		// "late"; later deliveries send "redelivered".
		if msg.DeliveryCount == 1 {
			if send(r.Context(), "early") != nil {
				hostproto.NewReply().Write(w, 500)
				return
			}
			time.Sleep(5 * time.Second)
			_ = send(r.Context(), "late")
		} else if send(r.Context(), fmt.Sprintf("redelivered-%d", msg.DeliveryCount)) != nil {
			hostproto.NewReply().Write(w, 500)
			return
		}
		hostproto.NewReply().Write(w, 200)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("FUNCTIONS_CUSTOMHANDLER_PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	_ = http.Serve(ln, mux)
}

type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The handler as a child process, killed mid-call (KillDuringCall): what it had sent before the
// kill is in the queue, what it would have sent after never arrives, the harness starts it
// again (a new process), and the message comes back only once its lock lapsed, with
// DeliveryCount 2.
func TestHarnessKillHandler(t *testing.T) {
	fns := fstest.MapFS{"Work/function.json": {Data: []byte(`{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"msg","queueName":"work","connection":"ServiceBusConnection"}]}`)}}
	log := &lockedLog{}
	var killedAt time.Time
	var mu sync.Mutex
	h, err := hostharness.Start(context.Background(), hostharness.Options{
		Functions: fns, Settings: map[string]string{"KILL_TEST_CHILD": "1"}, Log: log,
		Process:      &hostharness.ProcessOptions{Path: os.Args[0], Args: []string{"serve"}},
		LockDuration: 2 * time.Second, KillAfter: time.Second,
		Fault: func(d hostharness.DeliveryInfo) hostharness.Fault {
			if d.DeliveryCount == 1 {
				mu.Lock()
				killedAt = time.Now().Add(time.Second)
				mu.Unlock()
				return hostharness.KillDuringCall
			}
			return hostharness.Deliver
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		h.Close()
		if t.Failed() {
			t.Log(log.String())
		}
	}()
	if !strings.Contains(h.Setting("ServiceBusConnection"), "UseDevelopmentEmulator=true") {
		t.Fatalf("the child's Service Bus connection is not the harness's stand-in")
	}
	if err := h.Queue.Send(context.Background(), "work", []queue.Message{{ID: "w1", Body: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	ids := func() (out []string, pids map[string]bool) {
		pids = map[string]bool{}
		for _, d := range h.Queue.Peek("done") {
			out = append(out, d.ID)
			pids[fmt.Sprint(d.Properties["pid"])] = true
		}
		return out, pids
	}
	waitFor(t, "the redelivery", func() bool { got, _ := ids(); return len(got) >= 2 })
	mu.Lock()
	lapsed := time.Since(killedAt)
	mu.Unlock()
	got, pids := ids()
	if strings.Join(got, ",") != "early,redelivered-2" || len(pids) != 2 {
		t.Fatalf("messages sent by the handler: %v from processes %v; want early (first process), redelivered-2 (the restarted one)", got, pids)
	}
	if lapsed < 1500*time.Millisecond {
		t.Fatalf("redelivered %v after the kill, before the 2s lock lapsed", lapsed)
	}
	time.Sleep(5 * time.Second) // the killed call would have sent "late" by now
	if got, _ := ids(); len(got) != 2 {
		t.Fatalf("the killed invocation wrote after the kill: %v", got)
	}
	if err := h.WaitIdle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := h.Invocations("Work"); n != 2 {
		t.Fatalf("%d invocations", n)
	}
}
