package hostharness_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"testing/fstest"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/queue"
)

// A timer function is invoked on its NCRONTAB schedule (seconds included, resolved from an app
// setting) as the host invokes it: POST /<Function> with the TimerInfo object nested in Data,
// ScheduleStatus null for a sub-minute schedule, only sys in Metadata; runs never overlap. A
// timer whose %SETTING% has no value is not scheduled (the host does not index it).
func TestHarnessTimerAsTheHost(t *testing.T) {
	rec := &recorder{calls: map[string][][]byte{}}
	fns := fstest.MapFS{
		"Tick/function.json":  {Data: []byte(`{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"%TICK_SCHEDULE%"}]}`)},
		"Never/function.json": {Data: []byte(`{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"%UNSET_SCHEDULE%"}]}`)},
	}
	h, err := hostharness.Start(context.Background(), hostharness.Options{
		Functions: fns, Settings: map[string]string{"TICK_SCHEDULE": "* * * * * *"}, Log: io.Discard,
		NewHandler: func(_ func(string) string, s queue.Sender, _ io.Writer) (http.Handler, func(), error) {
			return rec.handler(s), func() {}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	start := time.Now()
	waitFor(t, "three timer runs", func() bool { return len(rec.get("Tick")) >= 3 })
	if time.Since(start) < 1500*time.Millisecond {
		t.Fatalf("three runs of a once-a-second schedule within %v", time.Since(start))
	}
	var prev time.Time
	for _, body := range rec.get("Tick") {
		var raw struct {
			Data     map[string]map[string]json.RawMessage
			Metadata map[string]json.RawMessage
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatal(err)
		}
		tm := raw.Data["timer"]
		if string(tm["ScheduleStatus"]) != "null" || string(tm["IsPastDue"]) != "false" || string(tm["Schedule"]) != `{"AdjustForDST":true}` {
			t.Fatalf("timer payload: %s", body)
		}
		if len(raw.Metadata) != 1 || raw.Metadata["sys"] == nil {
			t.Fatalf("timer metadata: %s", body)
		}
		inv, _ := hostproto.Decode(bytes.NewReader(body))
		if ti, err := inv.Timer("timer"); err != nil || ti.IsPastDue {
			t.Fatalf("decoded: %+v %v", ti, err)
		}
		sys := hostproto.Object(raw.Metadata, "sys")
		at, err := time.Parse(time.RFC3339Nano, hostproto.String(sys, "UtcNow"))
		if err != nil || hostproto.String(sys, "MethodName") != "Tick" {
			t.Fatalf("sys: %s", raw.Metadata["sys"])
		}
		if !prev.IsZero() && at.Sub(prev) < 500*time.Millisecond {
			t.Fatalf("runs %v apart on a once-a-second schedule", at.Sub(prev))
		}
		prev = at
	}
	if n := h.Invocations("Tick"); n < 3 {
		t.Fatalf("Invocations(Tick) = %d", n)
	}
	if status, err := h.RunTimer(context.Background(), "Tick"); err != nil || status != 200 {
		t.Fatalf("RunTimer: %d %v", status, err)
	}
	if _, err := h.RunTimer(context.Background(), "Never"); err == nil {
		t.Fatal("a timer whose schedule setting is unset runs")
	}
	if len(rec.get("Never")) != 0 {
		t.Fatal("a timer whose schedule setting is unset was invoked")
	}
}
