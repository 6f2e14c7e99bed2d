package hostharness

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

	"github.com/redis-migrate/redis-migrate/shared/hostproto"
	"github.com/redis-migrate/redis-migrate/shared/queue"
)

// pump is one of maxConcurrentCalls delivery loops for a Service Bus triggered function.
func (h *Harness) pump(ctx context.Context, f *function) {
	defer h.wg.Done()
	for {
		d, err := h.Queue.Receive(ctx, f.queue)
		if err != nil {
			return
		}
		if ctx.Err() != nil { // shutting down: leave the message, as a stopping host does
			h.Queue.Abandon(d, "the host is shutting down")
			return
		}
		h.deliver(ctx, f, d)
	}
}

func (h *Harness) deliver(ctx context.Context, f *function, d *queue.Delivery) {
	fault := Deliver
	if h.opts.Fault != nil {
		fault = h.opts.Fault(DeliveryInfo{Function: f.name, Queue: f.queue, MessageID: d.ID, DeliveryCount: d.DeliveryCount, Body: d.Body})
	}
	if fault == FailBeforeCall {
		h.logf("%s: message %s delivery %d: injected failure", f.name, d.ID, d.DeliveryCount)
		h.Queue.Abandon(d, "injected failure")
		return
	}
	if fault == Lose {
		h.logf("%s: message %s delivery %d: lost (injected)", f.name, d.ID, d.DeliveryCount)
		h.Queue.Complete(d)
		return
	}
	if fault == DuplicateNow {
		h.logf("%s: message %s delivery %d: a second copy is delivered concurrently (injected)", f.name, d.ID, d.DeliveryCount)
		h.Queue.Duplicate(d)
	}
	w, err := h.current(ctx)
	if err != nil {
		h.Queue.Abandon(d, "the custom handler is not running")
		return
	}
	h.counted(f.name)
	var callDone chan struct{}
	if fault == KillDuringCall {
		callDone = make(chan struct{})
		go h.killDuring(ctx, f, d, callDone)
	}
	status, logs, err := h.invokeMessage(ctx, f, d, w)
	if callDone != nil {
		close(callDone)
	}
	if err != nil && w.killed.Load() {
		h.lapse(f, d)
		return
	}
	ok := err == nil && status >= 200 && status <= 299
	for _, l := range logs {
		h.logf("%s: %s", f.name, l)
	}
	switch {
	case !ok:
		desc := fmt.Sprintf("function %s answered %d", f.name, status)
		if err != nil {
			desc = fmt.Sprintf("function %s: %v", f.name, err)
		}
		h.logf("%s: message %s delivery %d failed: %s", f.name, d.ID, d.DeliveryCount, desc)
		h.Queue.Abandon(d, desc)
	case fault == DropReply:
		h.logf("%s: message %s delivery %d: reply dropped (injected)", f.name, d.ID, d.DeliveryCount)
		h.Queue.Abandon(d, "injected: reply lost")
	case fault == DeliverTwice:
		h.logf("%s: message %s delivery %d: delivering it again (injected)", f.name, d.ID, d.DeliveryCount)
		h.Queue.Duplicate(d)
		h.Queue.Complete(d)
	default:
		h.Queue.Complete(d)
	}
}

// invokeMessage POSTs the message to /<function> in the host's encoding: the body and every
// string or number in Metadata serialized a second time, objects nested.
func (h *Harness) invokeMessage(ctx context.Context, f *function, d *queue.Delivery, w *worker) (int, []string, error) {
	props := map[string]any{}
	for k, v := range d.Properties {
		props[k] = v
	}
	// A dead-lettered message carries its reason and description as application properties;
	// the binding data has no DeadLetterReason of its own (ServiceBusTriggerBindingStrategy).
	if d.DeadLetterReason != "" {
		props["DeadLetterReason"] = d.DeadLetterReason
		props["DeadLetterErrorDescription"] = d.DeadLetterErrorDescription
	}
	var lock [16]byte
	_, _ = rand.Read(lock[:])
	md := map[string]json.RawMessage{
		"DeliveryCount":         hostproto.HostNumber(int64(d.DeliveryCount)),
		"SequenceNumber":        hostproto.HostNumber(d.SequenceNumber),
		"MessageId":             hostproto.HostString(d.ID),
		"LockToken":             hostproto.HostString(hex.EncodeToString(lock[:])),
		"ContentType":           hostproto.HostString("application/json"),
		"EnqueuedTimeUtc":       hostproto.HostObject(d.EnqueuedTime.Format("2006-01-02T15:04:05")),
		"ExpiresAtUtc":          hostproto.HostObject(d.EnqueuedTime.Add(14 * 24 * time.Hour).Format("2006-01-02T15:04:05")),
		"ApplicationProperties": hostproto.HostObject(props),
		"UserProperties":        hostproto.HostObject(props),
		"MessageActions":        hostproto.HostObject(map[string]any{}),
		"Client":                hostproto.HostObject(map[string]any{"FullyQualifiedNamespace": "local.harness", "IsClosed": false}),
		"sys":                   hostproto.HostObject(sysMetadata(f.name)),
	}
	inv := map[string]any{
		"Data":     map[string]json.RawMessage{f.bindingIn: hostproto.HostString(string(d.Body))},
		"Metadata": md,
	}
	payload, _ := json.Marshal(inv)
	return h.postInvocation(ctx, w, f, payload)
}

// postInvocation sends an invocation payload to POST /<Function> as the host does and returns
// the handler's status and, like the host, the reply's logs only when the invocation succeeded.
func (h *Harness) postInvocation(ctx context.Context, w *worker, f *function, payload []byte) (int, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url+"/"+f.name, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var logs []string
	if reply, err := hostproto.DecodeReply(b); err == nil && resp.StatusCode/100 == 2 {
		logs = reply.Logs
	}
	return resp.StatusCode, logs, nil
}

func sysMetadata(name string) map[string]any {
	var g [16]byte
	_, _ = rand.Read(g[:])
	return map[string]any{"MethodName": name, "UtcNow": time.Now().UTC().Format(time.RFC3339Nano), "RandGuid": hex.EncodeToString(g[:])}
}

// killDuring kills the handler KillAfter into a KillDuringCall invocation, unless it ended first.
func (h *Harness) killDuring(ctx context.Context, f *function, d *queue.Delivery, callDone <-chan struct{}) {
	after := h.opts.KillAfter
	if after <= 0 {
		after = time.Second
	}
	select {
	case <-callDone:
		h.logf("%s: message %s delivery %d: the call ended within %s, before the injected kill", f.name, d.ID, d.DeliveryCount, after)
	case <-time.After(after):
		h.logf("%s: message %s delivery %d: killing the handler %s into the call (injected)", f.name, d.ID, d.DeliveryCount, after)
		if err := h.KillHandler(ctx); err != nil {
			h.logf("restarting the custom handler: %v", err)
		}
	}
}

// lapse is what happens to a message whose invocation died with its process: nobody settles
// it, so Service Bus delivers it again once its lock expires (DeliveryCount+1).
func (h *Harness) lapse(f *function, d *queue.Delivery) {
	h.logf("%s: message %s delivery %d: the handler died during the call; its lock lapses in %s", f.name, d.ID, d.DeliveryCount, h.lockDuration())
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		select {
		case <-h.runCtx.Done():
		case <-time.After(h.lockDuration()):
		}
		h.Queue.Abandon(d, "the message's lock expired")
	}()
}
