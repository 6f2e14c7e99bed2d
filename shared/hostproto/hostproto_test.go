package hostproto

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
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

func TestServiceBusDeadLetterMetadata(t *testing.T) {
	inv := decode(t, `{"Data":{"msg":"\"{}\""},"Metadata":{"DeliveryCount":"10","MessageId":"\"b1\"",
	 "DeadLetterReason":"\"MaxDeliveryCountExceeded\"","DeadLetterErrorDescription":"\"Message could not be consumed after 10 delivery attempts.\""}}`)
	m, err := inv.ServiceBus("msg")
	if err != nil {
		t.Fatal(err)
	}
	if m.DeadLetterReason != "MaxDeliveryCountExceeded" || !strings.Contains(m.DeadLetterErrorDescription, "10 delivery") {
		t.Fatalf("%+v", m)
	}
}

var blobFixtures = map[string]struct {
	fx       string
	deferred bool
	content  bool
}{
	// Without deferred binding the host read the blob and sends it base64.
	"content-host": {`{"Data":{"rdb":"UkVESVMwMDEx"},
	 "Metadata":{"name":"\"dump.rdb\"","Uri":"\"https://acct.blob.core.windows.net/rdb-imports/dump.rdb\"",
	  "Properties":{"ContentLength":123456,"ContentType":"application/octet-stream","ETag":"\"0x8D\""},
	  "Metadata":{"migration":"\"m1\""},"sys":{}}}`, false, true},
	"content-plain": {`{"Data":{"rdb":"UkVESVMwMDEx"},
	 "Metadata":{"name":"dump.rdb","Uri":"https://acct.blob.core.windows.net/rdb-imports/dump.rdb",
	  "Properties":{"ContentLength":"123456"},"Metadata":{"migration":"m1"}}}`, false, true},
	// With supportsDeferredBinding the host sends a reference instead of the content.
	"deferred-object": {`{"Data":{"rdb":{"Source":"AzureStorageBlobs","Version":"1.0","ContentType":"application/json",
	  "Content":{"Connection":"AzureWebJobsStorage","ContainerName":"rdb-imports","BlobName":"dump.rdb"}}},
	 "Metadata":{"name":"\"dump.rdb\"","Uri":"\"https://acct.blob.core.windows.net/rdb-imports/dump.rdb\"",
	  "Properties":{"ContentLength":123456},"Metadata":{"migration":"\"m1\""}}}`, true, false},
	"deferred-string": {`{"Data":{"rdb":"{\"Source\":\"AzureStorageBlobs\",\"Version\":\"1.0\",\"ContentType\":\"application/json\",\"Content\":\"eyJDb25uZWN0aW9uIjoiQXp1cmVXZWJKb2JzU3RvcmFnZSIsIkNvbnRhaW5lck5hbWUiOiJyZGItaW1wb3J0cyIsIkJsb2JOYW1lIjoiZHVtcC5yZGIifQ==\"}"},
	 "Metadata":{"name":"dump.rdb","Properties":{"ContentLength":"123456"},"Metadata":{"migration":"m1"}}}`, true, false},
}

func TestBlobFixtures(t *testing.T) {
	for name, c := range blobFixtures {
		t.Run(name, func(t *testing.T) {
			b, err := decode(t, c.fx).Blob("rdb")
			if err != nil {
				t.Fatal(err)
			}
			if b.Container != "rdb-imports" || b.BlobName != "dump.rdb" || b.Name != "dump.rdb" {
				t.Fatalf("names: %+v", b)
			}
			if b.ContentLength != 123456 || b.Metadata["migration"] != "m1" {
				t.Fatalf("properties: %+v", b)
			}
			if (b.Descriptor != nil) != c.deferred || b.HadContent != c.content {
				t.Fatalf("descriptor %+v hadContent %v", b.Descriptor, b.HadContent)
			}
			if c.deferred && (b.Descriptor.Source != "AzureStorageBlobs" || b.Descriptor.Connection != "AzureWebJobsStorage") {
				t.Fatalf("descriptor %+v", b.Descriptor)
			}
		})
	}
}

func TestBlobURIAzurite(t *testing.T) {
	c, n, ok := splitBlobURI("http://127.0.0.1:10000/devstoreaccount1/rdb-imports/dir/dump.rdb")
	if !ok || c != "rdb-imports" || n != "dir/dump.rdb" {
		t.Fatalf("%v %q %q", ok, c, n)
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
