// Package blobevent reads and writes the Microsoft.Storage.BlobCreated event that an Event Grid
// subscription on a storage account delivers into a Service Bus queue, in either delivery schema:
// the Event Grid schema (eventType, subject, data, topic) or CloudEvents 1.0 (type, subject,
// data, source, specversion). The message body is one event; an array of events (what Event Grid
// posts to webhooks) is accepted too and must hold exactly one.
package blobevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// TypeBlobCreated is the event type of a new blob version (PutBlob, PutBlockList, CopyBlob;
// Event Grid raises nothing for a metadata or property change).
const TypeBlobCreated = "Microsoft.Storage.BlobCreated"

// Delivery schemas of an Event Grid subscription (its eventDeliverySchema).
const (
	SchemaEventGrid   = "EventGridSchema"
	SchemaCloudEvents = "CloudEventSchemaV1_0"
)

// Event is a storage event, decoded.
type Event struct {
	ID        string
	Type      string // e.g. Microsoft.Storage.BlobCreated
	Schema    string // SchemaEventGrid or SchemaCloudEvents
	Subject   string // /blobServices/default/containers/<c>/blobs/<name>
	Container string // from the subject
	Blob      string // from the subject (may contain '/')
	URL       string // data.url
	ETag      string // data.eTag
	Size      int64  // data.contentLength
	API       string // data.api: PutBlob, PutBlockList, CopyBlob, ...
	Time      time.Time
}

// data is the BlobCreated event's data object (the fields used here).
type data struct {
	API           string `json:"api"`
	ETag          string `json:"eTag"`
	ContentType   string `json:"contentType"`
	ContentLength int64  `json:"contentLength"`
	BlobType      string `json:"blobType"`
	URL           string `json:"url"`
	Sequencer     string `json:"sequencer"`
}

type wire struct {
	// Both schemas
	ID      string          `json:"id"`
	Subject string          `json:"subject"`
	Data    json.RawMessage `json:"data"`
	// Event Grid schema
	EventType       string `json:"eventType"`
	EventTime       string `json:"eventTime"`
	Topic           string `json:"topic"`
	DataVersion     string `json:"dataVersion"`
	MetadataVersion string `json:"metadataVersion"`
	// CloudEvents 1.0
	Type        string `json:"type"`
	Time        string `json:"time"`
	Source      string `json:"source"`
	SpecVersion string `json:"specversion"`
}

// Looks reports whether a message body has the shape of an event in either schema (so a
// caller can tell it from its own message kinds before parsing it).
func Looks(body []byte) bool {
	t := bytes.TrimSpace(body)
	if len(t) > 0 && t[0] == '[' {
		return true
	}
	var probe struct {
		EventType   *string `json:"eventType"`
		SpecVersion *string `json:"specversion"`
	}
	return json.Unmarshal(t, &probe) == nil && (probe.EventType != nil || probe.SpecVersion != nil)
}

// Parse decodes one storage event. A blob event's subject must name the container and blob.
func Parse(body []byte) (*Event, error) {
	t := bytes.TrimSpace(body)
	if len(t) > 0 && t[0] == '[' {
		var list []json.RawMessage
		if err := json.Unmarshal(t, &list); err != nil {
			return nil, fmt.Errorf("event: not a JSON array of events: %v", err)
		}
		if len(list) != 1 {
			return nil, fmt.Errorf("event: want one event per message, got %d", len(list))
		}
		t = bytes.TrimSpace(list[0])
	}
	var w wire
	if err := json.Unmarshal(t, &w); err != nil {
		return nil, fmt.Errorf("event: not a JSON object: %v", err)
	}
	e := &Event{ID: w.ID, Subject: w.Subject}
	switch {
	case w.SpecVersion != "":
		e.Schema, e.Type = SchemaCloudEvents, w.Type
		e.Time, _ = time.Parse(time.RFC3339Nano, w.Time)
	case w.EventType != "":
		e.Schema, e.Type = SchemaEventGrid, w.EventType
		e.Time, _ = time.Parse(time.RFC3339Nano, w.EventTime)
	default:
		return nil, errors.New("event: neither an Event Grid event (eventType) nor a CloudEvent (specversion)")
	}
	if e.Type == "" {
		return nil, errors.New("event: no event type")
	}
	if len(w.Data) > 0 && string(w.Data) != "null" {
		var d data
		if err := json.Unmarshal(w.Data, &d); err != nil {
			return nil, fmt.Errorf("event %s: data is not an object: %v", e.ID, err)
		}
		e.URL, e.ETag, e.Size, e.API = d.URL, d.ETag, d.ContentLength, d.API
	}
	if strings.HasPrefix(e.Subject, "/blobServices/") {
		c, b, err := SplitSubject(e.Subject)
		if err != nil {
			return nil, fmt.Errorf("event %s: %v", e.ID, err)
		}
		e.Container, e.Blob = c, b
	}
	return e, nil
}

// SplitSubject splits /blobServices/default/containers/<container>/blobs/<name> (the name
// may contain '/').
func SplitSubject(s string) (container, blob string, err error) {
	rest, ok := strings.CutPrefix(s, "/blobServices/default/containers/")
	if !ok {
		return "", "", fmt.Errorf("subject %q is not /blobServices/default/containers/<container>/blobs/<name>", s)
	}
	container, blob, ok = strings.Cut(rest, "/blobs/")
	if !ok || container == "" || blob == "" {
		return "", "", fmt.Errorf("subject %q is not /blobServices/default/containers/<container>/blobs/<name>", s)
	}
	return container, blob, nil
}

// Subject is the subject of a blob's events.
func Subject(container, blob string) string {
	return "/blobServices/default/containers/" + container + "/blobs/" + blob
}

// BlobURL is a blob's URL under a blob service endpoint (https://acct.blob.core.windows.net or
// Azurite's http://127.0.0.1:port/devstoreaccount1), each path segment escaped.
func BlobURL(endpoint, container, blob string) string {
	segs := strings.Split(blob, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.TrimRight(endpoint, "/") + "/" + url.PathEscape(container) + "/" + strings.Join(segs, "/")
}

// SameAccount reports whether two blob URLs are in the same storage account: same scheme, host
// and, for path-style endpoints (Azurite: /devstoreaccount1/...), the same account segment.
func SameAccount(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return false
	}
	if !strings.EqualFold(ua.Scheme, ub.Scheme) || !strings.EqualFold(ua.Host, ub.Host) {
		return false
	}
	if pathStyle(ua.Host) {
		return firstSegment(ua.Path) == firstSegment(ub.Path)
	}
	return true
}

func pathStyle(host string) bool {
	h := host
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return h == "localhost" || h == "127.0.0.1" || h == "[::1]" || h == "::1" || strings.HasPrefix(h, "127.") || !strings.Contains(h, ".") || isIP(h)
}

func isIP(h string) bool {
	for _, r := range h {
		if (r < '0' || r > '9') && r != '.' {
			return false
		}
	}
	return h != ""
}

func firstSegment(p string) string {
	p = strings.TrimPrefix(p, "/")
	s, _, _ := strings.Cut(p, "/")
	return s
}

// Spec describes a BlobCreated event to build (the local host harness's Event Grid).
type Spec struct {
	Schema      string // SchemaEventGrid (default) or SchemaCloudEvents
	ID          string
	Topic       string // the storage account's resource id
	Endpoint    string // blob service endpoint, for data.url
	Container   string
	Blob        string
	ETag        string
	Size        int64
	ContentType string
	API         string // default PutBlob
	Time        time.Time
}

// Build encodes a BlobCreated event as Event Grid puts it into a Service Bus message body.
func Build(s Spec) []byte {
	if s.API == "" {
		s.API = "PutBlob"
	}
	if s.Time.IsZero() {
		s.Time = time.Now().UTC()
	}
	if s.ContentType == "" {
		s.ContentType = "application/octet-stream"
	}
	d := data{API: s.API, ETag: s.ETag, ContentType: s.ContentType, ContentLength: s.Size, BlobType: "BlockBlob",
		URL: BlobURL(s.Endpoint, s.Container, s.Blob), Sequencer: fmt.Sprintf("%032x", s.Time.UnixNano())}
	raw, _ := json.Marshal(d)
	w := map[string]any{"id": s.ID, "subject": Subject(s.Container, s.Blob), "data": json.RawMessage(raw)}
	if s.Schema == SchemaCloudEvents {
		w["type"], w["time"], w["source"], w["specversion"] = TypeBlobCreated, s.Time.Format(time.RFC3339Nano), s.Topic, "1.0"
	} else {
		w["eventType"], w["eventTime"], w["topic"], w["dataVersion"], w["metadataVersion"] = TypeBlobCreated,
			s.Time.Format(time.RFC3339Nano), s.Topic, "", "1"
	}
	out, _ := json.Marshal(w)
	return out
}
