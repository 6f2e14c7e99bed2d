package blobevent

import (
	"strings"
	"testing"
)

// The BlobCreated samples of the Azure Blob Storage event schema documentation, in both delivery
// schemas (ids and accounts as published there).
const eventGridSample = `{
  "topic": "/subscriptions/{subscription-id}/resourceGroups/Storage/providers/Microsoft.Storage/storageAccounts/my-storage-account",
  "subject": "/blobServices/default/containers/test-container/blobs/new-file.txt",
  "eventType": "Microsoft.Storage.BlobCreated",
  "eventTime": "2017-06-26T18:41:00.9584103Z",
  "id": "831e1650-001e-001b-66ab-eeb76e069631",
  "data": {
    "api": "PutBlockList",
    "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
    "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
    "eTag": "\"0x8D4BCC2E4835CD0\"",
    "contentType": "text/plain",
    "contentLength": 524288,
    "blobType": "BlockBlob",
    "url": "https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt",
    "sequencer": "00000000000004420000000000028963",
    "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"}
  },
  "dataVersion": "",
  "metadataVersion": "1"
}`

const cloudEventSample = `{
  "source": "/subscriptions/{subscription-id}/resourceGroups/Storage/providers/Microsoft.Storage/storageAccounts/my-storage-account",
  "subject": "/blobServices/default/containers/test-container/blobs/dir/new-file.txt",
  "type": "Microsoft.Storage.BlobCreated",
  "time": "2017-06-26T18:41:00.9584103Z",
  "id": "831e1650-001e-001b-66ab-eeb76e069631",
  "data": {
    "api": "PutBlockList",
    "eTag": "\"0x8D4BCC2E4835CD0\"",
    "contentType": "text/plain",
    "contentLength": 524288,
    "blobType": "BlockBlob",
    "url": "https://my-storage-account.blob.core.windows.net/testcontainer/dir/new-file.txt",
    "sequencer": "00000000000004420000000000028963"
  },
  "specversion": "1.0"
}`

func TestParseBothSchemas(t *testing.T) {
	for _, c := range []struct {
		name, body, schema, blob string
	}{
		{"event grid", eventGridSample, SchemaEventGrid, "new-file.txt"},
		{"event grid array", "[" + eventGridSample + "]", SchemaEventGrid, "new-file.txt"},
		{"cloudevents", cloudEventSample, SchemaCloudEvents, "dir/new-file.txt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !Looks([]byte(c.body)) {
				t.Fatal("not recognised as an event")
			}
			e, err := Parse([]byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if e.Schema != c.schema || e.Type != TypeBlobCreated || e.Container != "test-container" || e.Blob != c.blob ||
				e.Size != 524288 || e.API != "PutBlockList" || e.ID != "831e1650-001e-001b-66ab-eeb76e069631" ||
				!strings.HasPrefix(e.URL, "https://my-storage-account.blob.core.windows.net/") || e.ETag == "" || e.Time.IsZero() {
				t.Fatalf("%+v", e)
			}
		})
	}
}

func TestParseRefusals(t *testing.T) {
	for _, body := range []string{`{"kind":"import","migration":"x","seq":1}`, `[]`, `[` + eventGridSample + `,` + eventGridSample + `]`,
		`{"eventType":"Microsoft.Storage.BlobCreated","subject":"/blobServices/default/containers/c"}`, `not json`} {
		if _, err := Parse([]byte(body)); err == nil {
			t.Errorf("accepted %s", body)
		}
	}
	if Looks([]byte(`{"kind":"import","migration":"x","seq":1}`)) {
		t.Error("an import message looks like an event")
	}
}

func TestBuildRoundTrip(t *testing.T) {
	for _, schema := range []string{SchemaEventGrid, SchemaCloudEvents} {
		b := Build(Spec{Schema: schema, ID: "e1", Endpoint: "http://127.0.0.1:10000/devstoreaccount1", Container: "rdb-imports",
			Blob: "a b/dump.rdb", ETag: "0x1", Size: 42})
		e, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if e.Schema != schema || e.Blob != "a b/dump.rdb" || e.Container != "rdb-imports" || e.Size != 42 ||
			e.URL != "http://127.0.0.1:10000/devstoreaccount1/rdb-imports/a%20b/dump.rdb" {
			t.Fatalf("%s: %+v", b, e)
		}
	}
}

func TestSameAccount(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"https://acct.blob.core.windows.net/c/x", "https://acct.blob.core.windows.net/d/y", true},
		{"https://acct.blob.core.windows.net/c/x", "https://other.blob.core.windows.net/c/x", false},
		{"http://127.0.0.1:10000/devstoreaccount1/c/x", "http://127.0.0.1:10000/devstoreaccount1/c/y", true},
		{"http://127.0.0.1:10000/devstoreaccount1/c/x", "http://127.0.0.1:10000/devstoreaccount2/c/x", false},
		{"http://127.0.0.1:10000/devstoreaccount1/c/x", "http://127.0.0.1:10001/devstoreaccount1/c/x", false},
	} {
		if got := SameAccount(c.a, c.b); got != c.want {
			t.Errorf("SameAccount(%s, %s) = %v", c.a, c.b, got)
		}
	}
}
