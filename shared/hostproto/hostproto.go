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
	"net/http"
	"strconv"
	"strings"
)

// Invocation is one request from the host.
type Invocation struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
	// Oversize names the values over MaxValueBytes that were read past, not kept
	// ("Data.msg" -> bytes); see OversizeError.
	Oversize map[string]int64 `json:"-"`
	limit    int
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
	if err := inv.OversizeError(); err != nil {
		return nil, err
	}
	body, ok := Body(lookup(inv.Data, binding))
	if !ok {
		return nil, fmt.Errorf("invocation has no Data.%s", binding)
	}
	md := inv.Metadata
	m := &ServiceBusMessage{Body: body, MessageID: String(md, "MessageId"), ContentType: String(md, "ContentType")}
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
	// The host's binding data has no DeadLetterReason: for a message read from a dead-letter
	// queue, Service Bus keeps the reason and description among its application properties
	// (ServiceBusTriggerBindingStrategy.GetBindingData in the Service Bus extension).
	m.DeadLetterReason = m.Properties["DeadLetterReason"]
	m.DeadLetterErrorDescription = m.Properties["DeadLetterErrorDescription"]
	if m.DeadLetterReason == "" {
		m.DeadLetterReason = String(md, "DeadLetterReason") // other hosts' shapes
		m.DeadLetterErrorDescription = String(md, "DeadLetterErrorDescription")
	}
	return m, nil
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
	if err := inv.OversizeError(); err != nil {
		return nil, err
	}
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
