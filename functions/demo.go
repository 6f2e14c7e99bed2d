package functions

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/hostharness"
	"github.com/redis-migrate/redis-migrate/shared/state"
)

// DemoOptions configure RunDemo.
type DemoOptions struct {
	SourceURL, TargetURL string // redis:// URLs of running servers
	Storage              string // storage connection string (Azurite's, from testenv.StartAzurite)
	HostJSON             []byte // optional host.json
	Log                  io.Writer
	Timeout              time.Duration // default 5 minutes
	Request              map[string]any
}

// RunDemo runs the function app the way a user would: it starts the local host harness, POSTs a
// migration of SOURCE_REDIS into TARGET_REDIS over HTTP with a function key, and polls the status
// URL until every batch is accounted for. It returns the final status; verifying the target is
// the caller's part (`make demo` compares both sides).
func RunDemo(ctx context.Context, o DemoOptions) (*state.Status, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := hex.EncodeToString(k[:])
	h, err := hostharness.Start(ctx, hostharness.Options{Functions: Definitions(), HostJSON: o.HostJSON, NewHandler: LocalHandler, Log: o.Log,
		Settings: map[string]string{SettingStorage: o.Storage, "SOURCE_REDIS": o.SourceURL, "TARGET_REDIS": o.TargetURL, SettingLocalFunctionKey: key}})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	req := o.Request
	if req == nil {
		req = map[string]any{"source": map[string]string{"setting": "SOURCE_REDIS"}, "target": map[string]string{"setting": "TARGET_REDIS"}}
	}
	body, _ := json.Marshal(req)
	call := func(method, url string, body []byte) (int, http.Header, []byte, error) {
		r, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return 0, nil, nil, err
		}
		r.Header.Set("x-functions-key", key)
		r.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			return 0, nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b, err
	}
	code, hdr, out, err := call(http.MethodPost, h.URL+"/api/migrations", body)
	if err != nil {
		return nil, err
	}
	if code != http.StatusAccepted {
		return nil, fmt.Errorf("POST /api/migrations: %d %s", code, out)
	}
	loc := hdr.Get("Location")
	fmt.Fprintf(o.Log, "function app: POST /api/migrations -> 202, status at %s\n", loc)
	deadline := time.Now().Add(o.Timeout)
	for {
		code, _, out, err := call(http.MethodGet, loc, nil)
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %d %s", loc, code, out)
		}
		var st state.Status
		if err := json.Unmarshal(out, &st); err != nil {
			return nil, err
		}
		if st.Final() && !st.Stale {
			fmt.Fprintf(o.Log, "function app: %s: %d copied, %d failed, %d batches in %.1fs\n", st.State, st.Keys.Copied, st.Keys.Failed, st.Batches.Done, st.ElapsedSeconds)
			return &st, nil
		}
		if time.Now().After(deadline) {
			return &st, fmt.Errorf("migration %s not finished after %v (state %s)", st.ID, o.Timeout, st.State)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
