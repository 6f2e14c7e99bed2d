package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/redis-migrate/redis-migrate/shared/queue/amqptest"
)

// A key no real namespace has, easy to spot if it leaks into an error.
const testKey = "TESTKEY-d0-not-leak-Zq8vY3xK/w+9R2mN4pL6tQ1sA0b="

// fastRetries keeps failing sends from backing off for minutes.
var fastRetries = &ServiceBusOptions{Client: &azservicebus.ClientOptions{RetryOptions: azservicebus.RetryOptions{
	MaxRetries: 1, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond,
}}}

func startStandIn(t *testing.T, opts amqptest.Options) *amqptest.Server {
	t.Helper()
	if testing.Verbose() {
		opts.Logf = t.Logf
	}
	srv, err := amqptest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func newTestSender(t *testing.T, cs string, opts *ServiceBusOptions) *ServiceBus {
	t.Helper()
	sb, err := NewServiceBusFromConnectionString(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sb.Close(ctx)
	})
	return sb
}

func TestServiceBusSendsFullBatches(t *testing.T) {
	srv := startStandIn(t, amqptest.Options{MaxMessageSize: 256 << 10})
	sb := newTestSender(t, srv.ConnectionString("RootManageSharedAccessKey", testKey), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// 50 KB bodies: four fit in a 256 KiB batch, so 12 messages need at least three batches.
	var msgs []Message
	for i := 0; i < 12; i++ {
		body := fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 50_000))
		msgs = append(msgs, Message{
			ID:         fmt.Sprintf("mig1/shard0/c0/%d", i),
			Body:       body,
			Properties: map[string]any{"migration": "mig1", "kind": "copy", "index": int64(i)},
		})
	}
	if err := sb.Send(ctx, Copy, msgs); err != nil {
		t.Fatal(err)
	}
	got := srv.Messages(Copy)
	if len(got) != len(msgs) {
		t.Fatalf("stand-in received %d messages, want %d", len(got), len(msgs))
	}
	for i, m := range got {
		want := msgs[i]
		if m.ID != want.ID || !bytes.Equal(m.Body, want.Body) || m.ContentType != "application/json" {
			t.Errorf("message %d: id %q content-type %q body %d bytes; want id %q, %d bytes", i, m.ID, m.ContentType, len(m.Body), want.ID, len(want.Body))
		}
		if m.Properties["migration"] != "mig1" || m.Properties["kind"] != "copy" || m.Properties["index"] != int64(i) {
			t.Errorf("message %d properties = %v", i, m.Properties)
		}
	}
	if n := srv.Transfers(Copy); n < 3 || n >= len(msgs) {
		t.Errorf("%d messages went in %d transfers, want batches (3 or more, fewer than one per message)", len(msgs), n)
	}
	if tokens := srv.Tokens(); len(tokens) == 0 {
		t.Error("no $cbs put-token was negotiated")
	}

	// The sender for the queue is cached: a second send reuses it, and a second queue works too.
	if err := sb.Send(ctx, Copy, msgs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := sb.Send(ctx, Plan, []Message{{ID: "mig1/plan/0", Body: []byte(`{}`), Properties: map[string]any{"kind": "plan"}}}); err != nil {
		t.Fatal(err)
	}
	if len(srv.Messages(Copy)) != len(msgs)+1 || len(srv.Messages(Plan)) != 1 {
		t.Errorf("after more sends: copy %d, plan %d messages", len(srv.Messages(Copy)), len(srv.Messages(Plan)))
	}
	if len(sb.senders) != 2 {
		t.Errorf("%d cached senders, want 2", len(sb.senders))
	}
}

func TestServiceBusTooLargeMessage(t *testing.T) {
	srv := startStandIn(t, amqptest.Options{MaxMessageSize: 64 << 10})
	sb := newTestSender(t, srv.ConnectionString("RootManageSharedAccessKey", testKey), fastRetries)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	msgs := []Message{
		{ID: "small-1", Body: []byte(`{"ok":1}`)},
		{ID: "huge-batch-7", Body: bytes.Repeat([]byte("y"), 100<<10)},
	}
	err := sb.Send(ctx, Copy, msgs)
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("err = %v, want ErrMessageTooLarge", err)
	}
	if !strings.Contains(err.Error(), `"huge-batch-7"`) {
		t.Errorf("error does not name the message: %v", err)
	}
	if strings.Contains(err.Error(), testKey) {
		t.Errorf("error leaks the key: %v", err)
	}
	// The small message before it was already sent in its own batch.
	if got := srv.Messages(Copy); len(got) != 1 || got[0].ID != "small-1" {
		t.Errorf("stand-in received %v", got)
	}
}

func TestServiceBusRejectsMessagesWithoutID(t *testing.T) {
	sb := newTestSender(t, "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey="+testKey+";UseDevelopmentEmulator=true", nil)
	err := sb.Send(context.Background(), Copy, []Message{{Body: []byte(`{}`)}})
	if err == nil || !strings.Contains(err.Error(), "no ID") {
		t.Fatalf("err = %v, want a missing-ID error", err)
	}
}

// Errors from every failure path hold neither the key nor a SAS signature made from it.
func TestServiceBusErrorsHoldNoSecret(t *testing.T) {
	check := func(name string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", name)
			return
		}
		t.Logf("%s: %v", name, err)
		text := err.Error()
		if strings.Contains(text, testKey) || strings.Contains(text, "TESTKEY") {
			t.Errorf("%s: error holds the key: %v", name, err)
		}
		if i := strings.Index(text, "sig="); i >= 0 && !strings.HasPrefix(text[i:], "sig=***") {
			t.Errorf("%s: error holds a SAS signature: %v", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	msgs := []Message{{ID: "m1", Body: []byte(`{}`)}}

	// Malformed connection strings.
	_, err := NewServiceBusFromConnectionString("SharedAccessKeyName=k;SharedAccessKey="+testKey, nil)
	check("no endpoint", err)
	_, err = NewServiceBusFromConnectionString("Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey="+testKey+";UseDevelopmentEmulator=perhaps", nil)
	check("bad emulator flag", err)

	// Nothing listening.
	sb := newTestSender(t, "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey="+testKey+";UseDevelopmentEmulator=true", fastRetries)
	check("connection refused", sb.Send(ctx, Copy, msgs))

	// The service refuses the token and quotes it back: the SDK's own error then holds the
	// signature, so this case proves the redaction, not just a quiet SDK.
	srv := startStandIn(t, amqptest.Options{RejectTokens: true})
	sb = newTestSender(t, srv.ConnectionString("k", testKey), fastRetries)
	err = sb.Send(ctx, Copy, msgs)
	check("token rejected", err)
	var re *redactedError
	if !errors.As(err, &re) || !strings.Contains(re.err.Error(), "sig=") || strings.Contains(re.err.Error(), "sig=***") {
		t.Errorf("expected the unredacted SDK error to quote the signature; got %v", err)
	}

	// The queue does not exist.
	srv = startStandIn(t, amqptest.Options{Queues: []string{Plan}})
	sb = newTestSender(t, srv.ConnectionString("k", testKey), fastRetries)
	check("missing queue", sb.Send(ctx, Copy, msgs))
}

func TestServiceBusFromSettings(t *testing.T) {
	srv := startStandIn(t, amqptest.Options{})
	env := map[string]string{"SB": srv.ConnectionString("k", testKey)}
	getenv := func(k string) string { return env[k] }
	sb, err := NewServiceBusFromSettings(getenv, "SB", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sb.Send(ctx, Plan, []Message{{ID: "p1", Body: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := sb.Send(ctx, Plan, []Message{{ID: "p2"}}); err == nil {
		t.Error("Send after Close succeeded")
	}

	// Identity-based settings build a client without touching the network.
	env = map[string]string{
		"SB__fullyQualifiedNamespace": "myns.servicebus.windows.net",
		"SB__credential":              "managedidentity",
		"SB__clientId":                "00000000-0000-0000-0000-000000000001",
	}
	sb, err = NewServiceBusFromSettings(getenv, "SB", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = sb.Close(ctx)

	env = map[string]string{}
	if _, err := NewServiceBusFromSettings(getenv, "SB", nil); err == nil || !strings.Contains(err.Error(), "SB__fullyQualifiedNamespace") {
		t.Errorf("missing settings: err = %v", err)
	}
}

func TestNamespaceHost(t *testing.T) {
	for in, want := range map[string]string{
		"myns":                                 "myns.servicebus.windows.net",
		"sb://myns.servicebus.windows.net/":    "myns.servicebus.windows.net",
		"myns.servicebus.usgovcloudapi.net":    "myns.servicebus.usgovcloudapi.net",
		" https://myns.servicebus.windows.net": "myns.servicebus.windows.net",
	} {
		if got := NamespaceHost(in); got != want {
			t.Errorf("NamespaceHost(%q) = %q, want %q", in, got, want)
		}
	}
}
