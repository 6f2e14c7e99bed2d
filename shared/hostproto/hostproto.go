// Package hostproto is the Azure Functions custom-handler wire format: the invocation the host
// POSTs to /<FunctionName> ({"Data":{...},"Metadata":{...}}) and the reply it expects
// ({"Outputs":{...},"Logs":[...],"ReturnValue":...}).
//
// The host serializes strings, numbers and arrays a second time (the string abc arrives as
// "\"abc\"", the number 4 as "4"), byte[] as base64 and objects as nested JSON; the public docs
// show the same values encoded once. Every accessor here accepts both shapes.
package hostproto

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Invocation is one request from the host.
type Invocation struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// MaxInvocationBytes bounds an invocation body (a Service Bus message is at most 256 KB on the
// standard tier, 100 MB on premium; blob triggers send a reference, not the content).
const MaxInvocationBytes = 128 << 20

// Decode reads an invocation.
func Decode(r io.Reader) (*Invocation, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxInvocationBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading invocation: %v", err)
	}
	if len(body) > MaxInvocationBytes {
		return nil, fmt.Errorf("invocation larger than %d bytes", MaxInvocationBytes)
	}
	var inv Invocation
	if err := json.Unmarshal(body, &inv); err != nil {
		return nil, fmt.Errorf("invocation is not {\"Data\":{...},\"Metadata\":{...}}: %v", err)
	}
	if inv.Data == nil {
		inv.Data = map[string]json.RawMessage{}
	}
	if inv.Metadata == nil {
		inv.Metadata = map[string]json.RawMessage{}
	}
	return &inv, nil
}

// Unwrap peels the host's extra layers of JSON string encoding off a value: "\"abc\"" and
// "abc" both give abc; "4", 4 and "\"4\"" all give 4; an object or array is returned as its
// JSON text. ok is false for a missing or null value.
func Unwrap(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	if raw[0] != '"' {
		return string(raw), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return string(raw), true
	}
	// At most one more layer: a string whose whole text is itself a JSON string literal.
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		var inner string
		if err := json.Unmarshal([]byte(s), &inner); err == nil {
			return inner, true
		}
	}
	return s, true
}

// String returns a Data or Metadata string value ("" if absent).
func String(m map[string]json.RawMessage, name string) string {
	s, _ := Unwrap(lookup(m, name))
	return s
}

// Int returns a numeric value sent as 4, "4" or "\"4\"".
func Int(m map[string]json.RawMessage, name string) (int64, bool) {
	s, ok := Unwrap(lookup(m, name))
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return n, err == nil
}

// Object returns a nested object value, which may itself arrive as a JSON string.
func Object(m map[string]json.RawMessage, name string) map[string]json.RawMessage {
	s, ok := Unwrap(lookup(m, name))
	if !ok {
		return nil
	}
	var out map[string]json.RawMessage
	if json.Unmarshal([]byte(s), &out) != nil {
		return nil
	}
	return out
}

// lookup finds name exactly, then case-insensitively (hosts and docs disagree on casing).
func lookup(m map[string]json.RawMessage, name string) json.RawMessage {
	if v, ok := m[name]; ok {
		return v
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// Body returns a message body: JSON text sent as a (possibly doubly encoded) string or as a
// nested object, or bytes sent as base64 (dataType binary).
func Body(raw json.RawMessage) ([]byte, bool) {
	s, ok := Unwrap(raw)
	if !ok {
		return nil, false
	}
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		return []byte(t), true
	}
	if b, err := base64.StdEncoding.DecodeString(t); err == nil {
		return b, true
	}
	return []byte(s), true
}

// ServiceBusMessage is a Service Bus trigger invocation, decoded.
type ServiceBusMessage struct {
	Body           []byte
	MessageID      string
	DeliveryCount  int
	SequenceNumber int64
	ContentType    string
	Properties     map[string]string // application (user) properties
	// DeadLetterReason and DeadLetterErrorDescription are set for messages read from a
	// dead-letter queue.
	DeadLetterReason           string
	DeadLetterErrorDescription string
}

// ServiceBus decodes a Service Bus trigger invocation whose message binding is named binding.
func (inv *Invocation) ServiceBus(binding string) (*ServiceBusMessage, error) {
	body, ok := Body(lookup(inv.Data, binding))
	if !ok {
		return nil, fmt.Errorf("invocation has no Data.%s", binding)
	}
	md := inv.Metadata
	m := &ServiceBusMessage{Body: body, MessageID: String(md, "MessageId"), ContentType: String(md, "ContentType"),
		DeadLetterReason: String(md, "DeadLetterReason"), DeadLetterErrorDescription: String(md, "DeadLetterErrorDescription")}
	if n, ok := Int(md, "DeliveryCount"); ok {
		m.DeliveryCount = int(n)
	} else {
		m.DeliveryCount = 1
	}
	m.SequenceNumber, _ = Int(md, "SequenceNumber")
	props := Object(md, "ApplicationProperties")
	if props == nil {
		props = Object(md, "UserProperties")
	}
	if len(props) > 0 {
		m.Properties = map[string]string{}
		for k := range props {
			m.Properties[k] = String(props, k)
		}
	}
	if m.DeadLetterReason == "" && len(props) > 0 {
		m.DeadLetterReason = m.Properties["DeadLetterReason"]
		m.DeadLetterErrorDescription = m.Properties["DeadLetterErrorDescription"]
	}
	return m, nil
}

// BlobDescriptor is the reference a host sends for a blob trigger with deferred binding
// (supportsDeferredBinding) instead of the blob's content.
type BlobDescriptor struct {
	Source      string          `json:"Source"`
	Version     string          `json:"Version"`
	ContentType string          `json:"ContentType"`
	Content     json.RawMessage `json:"Content"`
	Connection  string          `json:"-"`
	Container   string          `json:"-"`
	BlobName    string          `json:"-"`
}

// BlobTrigger is a blob trigger invocation, decoded. Content is never kept: RDB files are large
// and are streamed from storage by name.
type BlobTrigger struct {
	Name          string // the {name} binding expression value (blob path inside the container)
	URI           string
	Container     string // from the URI or the descriptor
	BlobName      string // blob path inside the container
	ContentLength int64
	ETag          string
	Metadata      map[string]string // the blob's user metadata
	// Descriptor is set when the host sent a deferred-binding reference.
	Descriptor *BlobDescriptor
	// HadContent is true when the host sent the content anyway (a binding without deferred
	// binding); it has been dropped.
	HadContent bool
}

// Blob decodes a blob trigger invocation whose blob binding is named binding.
func (inv *Invocation) Blob(binding string) (*BlobTrigger, error) {
	md := inv.Metadata
	b := &BlobTrigger{Name: String(md, "name"), URI: String(md, "Uri"), Metadata: map[string]string{}}
	if p := Object(md, "Properties"); p != nil {
		b.ContentLength, _ = Int(p, "ContentLength")
		if b.ContentLength == 0 {
			b.ContentLength, _ = Int(p, "Length")
		}
		b.ETag = strings.Trim(String(p, "ETag"), `"`)
	}
	if um := Object(md, "Metadata"); um != nil {
		for k := range um {
			b.Metadata[k] = String(um, k)
		}
	}
	if raw := lookup(inv.Data, binding); raw != nil {
		if d := parseDescriptor(raw); d != nil {
			b.Descriptor = d
		} else if s, ok := Unwrap(raw); ok && s != "" {
			b.HadContent = true
		}
	}
	if b.URI != "" {
		if c, name, ok := splitBlobURI(b.URI); ok {
			b.Container, b.BlobName = c, name
		}
	}
	if b.Descriptor != nil {
		if b.Container == "" {
			b.Container = b.Descriptor.Container
		}
		if b.BlobName == "" {
			b.BlobName = b.Descriptor.BlobName
		}
	}
	if b.BlobName == "" {
		b.BlobName = b.Name
	}
	if b.BlobName == "" {
		return nil, fmt.Errorf("blob trigger invocation names no blob (no Metadata.Uri, Metadata.name or descriptor)")
	}
	return b, nil
}

// parseDescriptor recognises a deferred-binding reference: an object (possibly sent as a JSON
// string) with Source and Content; Content may be an object, a JSON string or base64 JSON.
func parseDescriptor(raw json.RawMessage) *BlobDescriptor {
	s, ok := Unwrap(raw)
	if !ok || !strings.HasPrefix(strings.TrimSpace(s), "{") {
		return nil
	}
	var d BlobDescriptor
	if json.Unmarshal([]byte(s), &d) != nil || d.Source == "" {
		return nil
	}
	content, _ := Body(d.Content)
	var c struct {
		Connection    string `json:"Connection"`
		ContainerName string `json:"ContainerName"`
		BlobName      string `json:"BlobName"`
	}
	if json.Unmarshal(content, &c) == nil {
		d.Connection, d.Container, d.BlobName = c.Connection, c.ContainerName, c.BlobName
	}
	return &d
}

// splitBlobURI splits https://acct.blob.core.windows.net/container/path/to/blob (or Azurite's
// http://127.0.0.1:port/devstoreaccount1/container/blob) into container and blob path.
func splitBlobURI(uri string) (string, string, bool) {
	rest := uri
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 3 {
		return "", "", false
	}
	parts = parts[1:] // host
	// Azurite and emulators put the account name in the path.
	if len(parts) >= 3 && strings.HasPrefix(parts[0], "devstoreaccount") {
		parts = parts[1:]
	}
	name := strings.Join(parts[1:], "/")
	if u, err := url.PathUnescape(name); err == nil {
		name = u
	}
	return parts[0], name, true
}

// HTTPRequest is an HTTP trigger invocation that was not forwarded (Data.<binding>).
type HTTPRequest struct {
	URL        string              `json:"Url"`
	Method     string              `json:"Method"`
	Query      map[string]any      `json:"Query"`
	Headers    map[string][]string `json:"-"`
	Params     map[string]string   `json:"-"`
	Body       []byte              `json:"-"`
	Identities json.RawMessage     `json:"Identities"`
}

// HTTP decodes the request of a non-forwarded HTTP trigger invocation.
func (inv *Invocation) HTTP(binding string) (*HTTPRequest, error) {
	obj := Object(inv.Data, binding)
	if obj == nil {
		return nil, fmt.Errorf("invocation has no Data.%s request object", binding)
	}
	r := &HTTPRequest{URL: String(obj, "Url"), Method: strings.ToUpper(String(obj, "Method")),
		Headers: map[string][]string{}, Params: map[string]string{}}
	if hs := Object(obj, "Headers"); hs != nil {
		for k, v := range hs {
			var list []string
			if json.Unmarshal(v, &list) != nil {
				s, _ := Unwrap(v)
				list = []string{s}
			}
			r.Headers[http.CanonicalHeaderKey(k)] = list
		}
	}
	if ps := Object(obj, "Params"); ps != nil {
		for k := range ps {
			r.Params[k] = String(ps, k)
		}
	}
	if body := lookup(obj, "Body"); body != nil {
		if s, ok := Unwrap(body); ok {
			r.Body = []byte(s)
		}
	}
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	return r, nil
}

// Request turns a non-forwarded HTTP invocation back into an http.Request, so one handler
// serves both the forwarded and the invocation form.
func (h *HTTPRequest) Request() (*http.Request, error) {
	u := h.URL
	if u == "" {
		u = "http://localhost/"
	}
	req, err := http.NewRequest(h.Method, u, bytes.NewReader(h.Body))
	if err != nil {
		return nil, fmt.Errorf("HTTP trigger request: %v", err)
	}
	for k, vs := range h.Headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return req, nil
}

// Reply is the handler's answer to an invocation.
type Reply struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

// NewReply is an empty successful reply: {"Outputs":{},"Logs":[],"ReturnValue":null}.
func NewReply() *Reply { return &Reply{Outputs: map[string]any{}, Logs: []string{}} }

// Log adds a log line (kept by the host only when the invocation succeeds).
func (r *Reply) Log(format string, args ...any) {
	r.Logs = append(r.Logs, fmt.Sprintf(format, args...))
}

// HTTPResponse is the value of an http output binding.
type HTTPResponse struct {
	StatusCode int               `json:"statusCode"`
	Body       string            `json:"body"`
	Headers    map[string]string `json:"headers,omitempty"`
}

// Write sends the reply with the given status: 200 when the invocation succeeded; any non-2xx
// fails it (a queue message is abandoned and redelivered).
func (r *Reply) Write(w http.ResponseWriter, status int) {
	if r.Outputs == nil {
		r.Outputs = map[string]any{}
	}
	if r.Logs == nil {
		r.Logs = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(r)
}

// DecodeReply reads a handler's reply (the harness's side).
func DecodeReply(body []byte) (*Reply, error) {
	var r Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("reply is not {\"Outputs\":...,\"Logs\":...,\"ReturnValue\":...}: %v", err)
	}
	return &r, nil
}

// HostString encodes a string the way the host does: JSON-serialized, then sent as a JSON
// string (abc -> "\"abc\"").
func HostString(s string) json.RawMessage {
	inner, _ := json.Marshal(s)
	outer, _ := json.Marshal(string(inner))
	return outer
}

// HostNumber encodes a number the way the host does (4 -> "4").
func HostNumber(n int64) json.RawMessage {
	b, _ := json.Marshal(strconv.FormatInt(n, 10))
	return b
}

// HostObject encodes an object the way the host does: nested JSON, not encoded again.
func HostObject(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
