package hostharness

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
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
	// The key is the host's business, not the function's.
	q := r.URL.Query()
	q.Del("code")
	r.URL.RawQuery = q.Encode()
	r.Header.Del("x-functions-key")

	if h.host.forwarding && match.bindingOut != "" {
		h.forward(w, r, match)
		return
	}
	h.invokeHTTP(w, r, match, params)
}

func (h *Harness) hostError(w http.ResponseWriter, status int, msg string) {
	w.WriteHeader(status)
	if msg != "" {
		_, _ = io.WriteString(w, msg+"\n")
	}
}

// forward sends the caller's request as it came to the handler, at its original path, and
// copies the handler's response back unchanged (enableForwardingHttpRequest).
func (h *Harness) forward(w http.ResponseWriter, r *http.Request, f *function) {
	out, err := http.NewRequestWithContext(r.Context(), r.Method, h.handlerURL+r.URL.RequestURI(), r.Body)
	if err != nil {
		h.hostError(w, http.StatusInternalServerError, "")
		return
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host
	out.ContentLength = r.ContentLength
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
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, h.handlerURL+"/"+name, bytes.NewReader(payload))
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
