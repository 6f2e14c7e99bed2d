package hostproto

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecode feeds arbitrary bodies to the invocation decoder and every accessor the handlers
// use (Service Bus, blob and HTTP bindings, values, replies): errors are fine, panics are not.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"Data":{"msg":"\"{\\\"migration\\\":\\\"m-1\\\"}\""},"Metadata":{"MessageId":"\"a.b\"","DeliveryCount":"3","SequenceNumber":"12","UserProperties":{"kind":"\"plan\""}}}`,
		`{"Data":{"msg":"eyJhIjoxfQ=="},"Metadata":{"DeliveryCount":2,"DeadLetterReason":"\"MaxDeliveryCountExceeded\""}}`,
		`{"Data":{"blob":"\"\""},"Metadata":{"Uri":"\"https://a.blob.core.windows.net/rdb-imports/x.rdb\"","BlobTrigger":"\"rdb-imports/x.rdb\"","Properties":{"Length":"10","ETag":"\"e\""}}}`,
		`{"Data":{"event":{"subject":"/blobServices/default/containers/rdb-imports/blobs/d.rdb","data":{"url":"http://127.0.0.1/devstoreaccount1/rdb-imports/d.rdb","contentLength":5}}},"Metadata":{}}`,
		`{"Data":{"req":{"Url":"http://localhost/api/migrations?x=1","Method":"post","Headers":{"x-functions-key":["k"]},"Params":{"id":"m-1"},"Body":"{\"source\":{}}"}},"Metadata":{}}`,
		`{"Data":{"req":{"Headers":{"a":"b"},"Body":{"x":1}}}}`,
		`{"Data":null,"Metadata":null}`, `{}`, `[]`, `"x"`, ``, `{"Data":{"a":"\"\\\"\\\\\\\"\""}}`,
		`{"Outputs":{"res":{"statusCode":200}},"Logs":["x"],"ReturnValue":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = DecodeReply(data)
		if small, err := DecodeLimit(bytes.NewReader(data), 16); err == nil {
			_ = small.OversizeError()
		}
		inv, err := Decode(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, m := range []map[string]json.RawMessage{inv.Data, inv.Metadata} {
			for name, v := range m {
				if !json.Valid(v) {
					t.Fatalf("value %q kept as invalid JSON: %q", name, v)
				}
			}
		}
		for name, v := range inv.Data {
			_, _ = Unwrap(v)
			_, _ = Body(v)
			_, _ = inv.ServiceBus(name)
			if h, err := inv.HTTP(name); err == nil {
				_, _ = h.Request()
			}
		}
		for name := range inv.Metadata {
			_ = String(inv.Metadata, name)
			_, _ = Int(inv.Metadata, name)
			_ = Object(inv.Metadata, name)
		}
		_, _ = inv.ServiceBus("msg")
		_, _ = inv.HTTP("req")
	})
}
