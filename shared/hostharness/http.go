package hostharness

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/redis-migrate/redis-migrate/shared/hostproto"
)

// serveHTTP routes a caller's request to the HTTP-triggered function whose route matches.
func (h *Harness) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.Trim(r.URL.Path, "/")
	prefix := h.host.routePrefix
	if prefix != "" {
		if p != prefix && !strings.HasPrefix(p, prefix+"/") {
			h.hostError(w, http.StatusNotFound, "not found")
			return
		}
		p = strings.TrimPrefix(strings.TrimPrefix(p, prefix), "/")
	}
	segs := strings.Split(p, "/")
	var match *function
	var params map[string]string
	methodMismatch := false
	for _, f := range h.functions {
		if f.kind != "httpTrigger" {
			continue
		}
		ps, ok := matchRoute(f.route, segs)
		if !ok {
			continue
		}
		if len(f.methods) > 0 && !contains(f.methods, r.Method) {
			methodMismatch = true
			continue
		}
		match, params = f, ps
		break
	}
	if match == nil {
		if methodMismatch {
			h.hostError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		h.hostError(w, http.StatusNotFound, "not found")
		return
	}
	if match.authLevel == "function" || match.authLevel == "admin" {
		key := r.Header.Get("x-functions-key")
		if key == "" {
			key = r.URL.Query().Get("code")
		}
		if subtle.ConstantTimeCompare([]byte(key), []byte(h.FunctionKey)) != 1 {
			h.logf("%s %s: 401 (missing or wrong function key)", r.Method, r.URL.Path)
			h.hostError(w, http.StatusUnauthorized, "")
			return
		}
	}
	h.counted(match.name)
	// The host checks the key and leaves it where it was: a forwarded or proxied request still
	// carries code= and x-functions-key (WebJobs.Script.WebHost's function key authorization
	// handler only reads them), so the handler must never log a request's query or headers.

	// Forwarding and proxying apply only to a function with exactly one httpTrigger and one http
	// output binding (FunctionMetadata.IsHttpInAndOutFunction, used by DefaultHttpWorkerService.
	// InvokeAsync); proxying wins when both are on.
	httpInOut := match.bindings == 2 && match.bindingOut != ""
	switch {
	case httpInOut && h.host.proxying:
		h.proxy(w, r, match)
	case httpInOut && h.host.forwarding:
		h.forward(w, r, match)
	default:
		h.invokeHTTP(w, r, match, params)
	}
}

// hostVersion is what the harness puts in X-Azure-Functions-HostVersion.
const hostVersion = "4.1000.0.0"

func invocationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (h *Harness) hostError(w http.ResponseWriter, status int, msg string) {
	w.WriteHeader(status)
	if msg != "" {
		_, _ = io.WriteString(w, msg+"\n")
	}
}

// forward is the legacy enableForwardingHttpRequest: the host rebuilds the request
// (HttpRequestExtensions.ToHttpRequestMessage) at its original path and query with its headers,
// adds X-Azure-Functions-HostVersion, X-Azure-Functions-InvocationId and its User-Agent
// (DefaultHttpWorkerService.AddHeaders), and copies the body only when Content-Length is over 0,
// so a chunked body arrives empty. The handler's response goes back to the caller unchanged.
func (h *Harness) forward(w http.ResponseWriter, r *http.Request, f *function) {
	var body io.Reader = http.NoBody
	length := int64(0)
	if r.ContentLength > 0 {
		body, length = r.Body, r.ContentLength
	}
	// The rebuilt query has one value per name: repeated names joined with commas.
	u := *r.URL
	if q := r.URL.Query(); len(q) > 0 {
		parts := make([]string, 0, len(q))
		for k, vs := range q {
			parts = append(parts, url.QueryEscape(k)+"="+url.QueryEscape(strings.Join(vs, ",")))
		}
		sort.Strings(parts)
		u.RawQuery = strings.Join(parts, "&")
	}
	wk, err := h.current(r.Context())
	if err != nil {
		h.hostError(w, http.StatusInternalServerError, "")
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, wk.url+u.RequestURI(), body)
	if err != nil {
		h.hostError(w, http.StatusInternalServerError, "")
		return
	}
	out.Header = r.Header.Clone()
	out.Header.Del("Transfer-Encoding")
	out.Header.Set("X-Azure-Functions-HostVersion", hostVersion)
	out.Header.Set("X-Azure-Functions-InvocationId", invocationID())
	out.Header.Set("User-Agent", "Azure-Functions-Host/"+hostVersion)
	out.Host = r.Host
	out.ContentLength = length
	h.relay(w, r, f, out)
}

// proxy is enableProxyingHttpRequest (the current setting): the host hands the request to YARP
// (DefaultHttpProxyService.StartForwarding): method, path, query, headers and the body streamed
// as they came, chunked or not, with X-Azure-Functions-HostVersion and
// X-Azure-Functions-InvocationId set (DefaultHttpWorkerService.AddProxyingHeaders) and the
// invocation id as a correlation header; the response streams back.
func (h *Harness) proxy(w http.ResponseWriter, r *http.Request, f *function) {
	wk, err := h.current(r.Context())
	if err != nil {
		h.hostError(w, http.StatusInternalServerError, "")
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, wk.url+r.URL.RequestURI(), r.Body)
	if err != nil {
		h.hostError(w, http.StatusInternalServerError, "")
		return
	}
	id := invocationID()
	out.Header = r.Header.Clone()
	out.Header.Set("X-Azure-Functions-HostVersion", hostVersion)
	out.Header.Set("X-Azure-Functions-InvocationId", id)
	out.Header.Set("x-ms-invocation-id", id)
	out.Host = r.Host
	out.ContentLength = r.ContentLength
	h.relay(w, r, f, out)
}

func (h *Harness) relay(w http.ResponseWriter, r *http.Request, f *function, out *http.Request) {
	resp, err := h.client.Do(out)
	if err != nil {
		h.logf("%s: handler unreachable: %v", f.name, err)
		h.hostError(w, http.StatusInternalServerError, "")
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	h.logf("%s: %s %s -> %d", f.name, r.Method, r.URL.Path, resp.StatusCode)
}

// invokeHTTP sends the request as a Data.<binding> invocation and turns Outputs.<res> into the
// caller's response; a non-2xx reply from the handler becomes a 500, as with the host.
func (h *Harness) invokeHTTP(w http.ResponseWriter, r *http.Request, f *function, params map[string]string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 100<<20))
	if err != nil {
		h.hostError(w, http.StatusBadRequest, "")
		return
	}
	query := map[string]string{}
	for k, v := range r.URL.Query() {
		query[k] = v[len(v)-1]
	}
	scheme := "http"
	reqObj := map[string]any{
		"Url": scheme + "://" + r.Host + r.URL.RequestURI(), "Method": r.Method, "Query": query,
		"Headers": map[string][]string(r.Header), "Params": params, "Identities": []any{}, "Body": string(body),
	}
	inv := map[string]any{
		"Data":     map[string]any{f.bindingIn: reqObj},
		"Metadata": map[string]any{"Query": query, "Headers": map[string][]string(r.Header), "sys": sysMetadata(f.name)},
	}
	payload, _ := json.Marshal(inv)
	status, reply, err := h.call(r, f.name, payload)
	if err != nil || status < 200 || status > 299 || reply == nil {
		h.logf("%s: invocation failed (status %d): %v", f.name, status, err)
		h.hostError(w, http.StatusInternalServerError, "")
		return
	}
	raw, _ := json.Marshal(reply.Outputs[f.bindingOut])
	var res hostproto.HTTPResponse
	_ = json.Unmarshal(raw, &res)
	if res.StatusCode == 0 {
		res.StatusCode = http.StatusOK
	}
	for k, v := range res.Headers {
		w.Header().Set(k, v)
	}
	w.WriteHeader(res.StatusCode)
	_, _ = io.WriteString(w, res.Body)
	h.logf("%s: %s %s -> %d", f.name, r.Method, r.URL.Path, res.StatusCode)
}

// call POSTs an invocation to /<function> and decodes the reply.
func (h *Harness) call(r *http.Request, name string, payload []byte) (int, *hostproto.Reply, error) {
	wk, err := h.current(r.Context())
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, wk.url+"/"+name, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	reply, err := hostproto.DecodeReply(b)
	return resp.StatusCode, reply, err
}

// matchRoute matches a route template ({id}, {id?}, {id:guid}, {*rest}) against path segments.
func matchRoute(tmpl, segs []string) (map[string]string, bool) {
	params := map[string]string{}
	if len(segs) == 1 && segs[0] == "" {
		segs = nil
	}
	i := 0
	for _, t := range tmpl {
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
			name := t[1 : len(t)-1]
			optional := strings.HasSuffix(name, "?")
			name = strings.TrimSuffix(name, "?")
			if c := strings.Index(name, ":"); c >= 0 {
				name = name[:c]
			}
			if strings.HasPrefix(name, "*") {
				params[name[1:]] = strings.Join(segs[min(i, len(segs)):], "/")
				return params, true
			}
			if i >= len(segs) {
				if optional {
					continue
				}
				return nil, false
			}
			if segs[i] == "" {
				return nil, false
			}
			params[name] = segs[i]
			i++
			continue
		}
		if i >= len(segs) || !strings.EqualFold(segs[i], t) {
			return nil, false
		}
		i++
	}
	return params, i == len(segs)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
