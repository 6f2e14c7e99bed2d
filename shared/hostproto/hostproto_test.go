package hostproto

import (
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Fixtures in the shapes of ../../../shared/functions-host-payloads.md: "host" is what the
// Functions host sends (values serialized a second time), "plain" what the public docs show.
var sbFixtures = map[string]string{
	"host": `{"Data":{"msg":"\"{\\\"migration\\\":\\\"m1\\\",\\\"batch\\\":\\\"s0-c0-1\\\"}\""},
 "Metadata":{"DeliveryCount":"3","SequenceNumber":"42","MessageId":"\"s0-c0-1\"","LockToken":"\"6c3c\"",
  "ContentType":"\"application/json\"","EnqueuedTimeUtc":"2025-01-01T00:00:00",
  "ApplicationProperties":{"migration":"\"m1\""},"UserProperties":{"migration":"\"m1\""},
  "MessageActions":{},"Client":{"FullyQualifiedNamespace":"ns.servicebus.windows.net","IsClosed":false},
  "sys":{"MethodName":"CopyBatch","UtcNow":"2025-01-01T00:00:01.1234567Z","RandGuid":"x"}}}`,
	"plain": `{"Data":{"msg":"{\"migration\":\"m1\",\"batch\":\"s0-c0-1\"}"},
 "Metadata":{"DeliveryCount":3,"SequenceNumber":42,"MessageId":"s0-c0-1","ContentType":"application/json",
  "ApplicationProperties":{"migration":"m1"}}}`,
	"object": `{"Data":{"msg":{"migration":"m1","batch":"s0-c0-1"}},
 "Metadata":{"DeliveryCount":"3","SequenceNumber":"42","MessageId":"s0-c0-1","UserProperties":{"migration":"m1"}}}`,
	"binary": `{"Data":{"msg":"eyJtaWdyYXRpb24iOiJtMSIsImJhdGNoIjoiczAtYzAtMSJ9"},
 "Metadata":{"DeliveryCount":"3","SequenceNumber":"42","MessageId":"\"s0-c0-1\"","ApplicationProperties":{"migration":"m1"}}}`,
}

func decode(t *testing.T, s string) *Invocation {
	t.Helper()
	inv, err := Decode(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestServiceBusFixtures(t *testing.T) {
	for name, fx := range sbFixtures {
		t.Run(name, func(t *testing.T) {
			m, err := decode(t, fx).ServiceBus("msg")
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ Migration, Batch string }
			if err := json.Unmarshal(m.Body, &body); err != nil {
				t.Fatalf("body %q: %v", m.Body, err)
			}
			if body.Migration != "m1" || body.Batch != "s0-c0-1" {
				t.Fatalf("body %+v", body)
			}
			if m.MessageID != "s0-c0-1" || m.DeliveryCount != 3 || m.SequenceNumber != 42 {
				t.Fatalf("metadata %+v", m)
			}
			if m.Properties["migration"] != "m1" {
				t.Fatalf("properties %+v", m.Properties)
			}
		})
	}
}

// A message read from a dead-letter queue: the host's binding data has no DeadLetterReason of its
// own; the reason and description are application properties of the message.
func TestServiceBusDeadLetterMetadata(t *testing.T) {
	inv := decode(t, `{"Data":{"msg":"\"{}\""},"Metadata":{"DeliveryCount":"1","MessageId":"\"b1\"",
	 "ApplicationProperties":{"migration":"m1","DeadLetterReason":"MaxDeliveryCountExceeded","DeadLetterErrorDescription":"Message could not be consumed after 10 delivery attempts."}}}`)
	m, err := inv.ServiceBus("msg")
	if err != nil {
		t.Fatal(err)
	}
	if m.DeadLetterReason != "MaxDeliveryCountExceeded" || !strings.Contains(m.DeadLetterErrorDescription, "10 delivery") || m.Properties["migration"] != "m1" {
		t.Fatalf("%+v", m)
	}
}

// Decode streams: every fixture decodes to what encoding/json makes of it, and a value over the
// limit is read past (named, never kept) while the rest of the invocation is still read.
func TestDecodeStreamsAndBoundsValues(t *testing.T) {
	all := map[string]string{}
	for k, v := range sbFixtures {
		all["sb-"+k] = v
	}
	for k, v := range httpFixtures {
		all["http-"+k] = v
	}
	for name, fx := range all {
		var want Invocation
		if err := json.Unmarshal([]byte(fx), &want); err != nil {
			t.Fatal(err)
		}
		got := decode(t, fx)
		for k, v := range want.Data {
			if string(got.Data[k]) != string(v) {
				t.Fatalf("%s: Data.%s = %s, want %s", name, k, got.Data[k], v)
			}
		}
		for k, v := range want.Metadata {
			if string(got.Metadata[k]) != string(v) {
				t.Fatalf("%s: Metadata.%s = %s, want %s", name, k, got.Metadata[k], v)
			}
		}
		if len(got.Data) != len(want.Data) || len(got.Metadata) != len(want.Metadata) || got.Oversize != nil {
			t.Fatalf("%s: %+v", name, got)
		}
	}
	big := strings.Repeat(`ab\"c`, 40000) // escaped quotes inside a 200 KB string
	fx := `{"Data":{"msg":"` + big + `","small":[1,{"a":"}"}]},"Metadata":{"MessageId":"\"m1\"","Deep":{"x":["` + big + `"]},"DeliveryCount":2}, "Extra": null}`
	inv, err := DecodeLimit(strings.NewReader(fx), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Oversize["Data.msg"] != int64(len(big)+2) || inv.Oversize["Metadata.Deep"] == 0 || len(inv.Oversize) != 2 {
		t.Fatalf("oversize %v", inv.Oversize)
	}
	if string(inv.Data["small"]) != `[1,{"a":"}"}]` || String(inv.Metadata, "MessageId") != "m1" {
		t.Fatalf("the rest: %+v", inv)
	}
	if n, ok := Int(inv.Metadata, "DeliveryCount"); !ok || n != 2 {
		t.Fatalf("DeliveryCount %d %v", n, ok)
	}
	if _, err := inv.ServiceBus("msg"); !errors.Is(err, ErrOversize) || !strings.Contains(err.Error(), "Data.msg is 200002 bytes") {
		t.Fatalf("accessor: %v", err)
	}
	for _, bad := range []string{``, `{`, `{"Data":{"msg":"x}}`, `{"Data":{"msg":tru}}`, `[1]`, `{"Data":{"msg":@}}`, `{"Data" "x"}`,
		`{"Data":{"msg":"x",}}`} {
		if _, err := Decode(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

var httpFixtures = map[string]string{
	"host": `{"Data":{"req":{"Url":"http://localhost:7071/api/migrations?x=1","Method":"POST","Query":{"x":"1"},
	 "Headers":{"Content-Type":["application/json"]},"Params":{},"Identities":[],"Body":"{\"source\":{\"setting\":\"S\"}}"}},
	 "Metadata":{}}`,
	"double": `{"Data":{"req":{"Url":"\"http://localhost:7071/api/migrations?x=1\"","Method":"\"POST\"","Query":{"x":"\"1\""},
	 "Headers":{"Content-Type":"application/json"},"Params":{},"Body":"\"{\\\"source\\\":{\\\"setting\\\":\\\"S\\\"}}\""}},
	 "Metadata":{"sys":{}}}`,
	"object-body": `{"Data":{"req":{"Url":"http://localhost:7071/api/migrations?x=1","Method":"post",
	 "Headers":{"content-type":["application/json"]},"Body":{"source":{"setting":"S"}}}},"Metadata":{}}`,
}

func TestHTTPFixtures(t *testing.T) {
	for name, fx := range httpFixtures {
		t.Run(name, func(t *testing.T) {
			h, err := decode(t, fx).HTTP("req")
			if err != nil {
				t.Fatal(err)
			}
			req, err := h.Request()
			if err != nil {
				t.Fatal(err)
			}
			if req.Method != "POST" || req.URL.Path != "/api/migrations" || req.URL.Query().Get("x") != "1" {
				t.Fatalf("request %s %s", req.Method, req.URL)
			}
			if req.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("headers %v", req.Header)
			}
			body, _ := io.ReadAll(req.Body)
			var v struct{ Source struct{ Setting string } }
			if err := json.Unmarshal(body, &v); err != nil || v.Source.Setting != "S" {
				t.Fatalf("body %q: %v", body, err)
			}
		})
	}
}

func TestReplyShape(t *testing.T) {
	rec := httptest.NewRecorder()
	NewReply().Write(rec, 200)
	if got := strings.TrimSpace(rec.Body.String()); got != `{"Outputs":{},"Logs":[],"ReturnValue":null}` {
		t.Fatalf("reply %s", got)
	}
	r := NewReply()
	r.Outputs["res"] = HTTPResponse{StatusCode: 202, Body: "{}", Headers: map[string]string{"Location": "/x"}}
	r.Log("hello %d", 1)
	rec = httptest.NewRecorder()
	r.Write(rec, 200)
	back, err := DecodeReply(rec.Body.Bytes())
	if err != nil || len(back.Logs) != 1 || back.Outputs["res"] == nil {
		t.Fatalf("%+v %v", back, err)
	}
}

func TestHostEncodingRoundTrip(t *testing.T) {
	m := map[string]json.RawMessage{"s": HostString("abc"), "n": HostNumber(4), "q": HostString(`"x"`)}
	if String(m, "s") != "abc" {
		t.Fatalf("%s -> %q", m["s"], String(m, "s"))
	}
	if n, ok := Int(m, "n"); !ok || n != 4 {
		t.Fatalf("%s -> %d", m["n"], n)
	}
	if string(m["s"]) != `"\"abc\""` || string(m["n"]) != `"4"` {
		t.Fatalf("encoding %s %s", m["s"], m["n"])
	}
}

func TestTimerShapes(t *testing.T) {
	for _, body := range []string{
		// The host: TimerInfo nested as an object.
		`{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2025-01-01T00:00:00+00:00","Next":"2025-01-01T00:05:00+00:00","LastUpdated":"2025-01-01T00:00:00+00:00"},"IsPastDue":true}},"Metadata":{"sys":{"MethodName":"SyncWatchdog"}}}`,
		// The same object as a JSON string.
		`{"Data":{"timer":"{\"Schedule\":{\"AdjustForDST\":true},\"ScheduleStatus\":{\"Last\":\"2025-01-01T00:00:00+00:00\",\"Next\":\"2025-01-01T00:05:00+00:00\",\"LastUpdated\":\"2025-01-01T00:00:00+00:00\"},\"IsPastDue\":true}"},"Metadata":{}}`,
	} {
		inv, err := Decode(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		ti, err := inv.Timer("timer")
		if err != nil {
			t.Fatal(err)
		}
		if !ti.IsPastDue || ti.ScheduleStatus == nil || ti.ScheduleStatus.Next.Sub(ti.ScheduleStatus.Last) != 5*time.Minute {
			t.Fatalf("%s: %+v %+v", body, ti, ti.ScheduleStatus)
		}
	}
	inv, _ := Decode(strings.NewReader(`{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{}}`))
	if ti, err := inv.Timer("timer"); err != nil || ti.IsPastDue || ti.ScheduleStatus != nil {
		t.Fatalf("unmonitored: %+v %v", ti, err)
	}
	if _, err := inv.Timer("other"); err == nil {
		t.Fatal("a missing binding decoded")
	}
}
