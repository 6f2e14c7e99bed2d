package hostharness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/queue"
	"github.com/redis-migrate/redis-migrate/shared/queue/amqptest"
	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// ProcessOptions run the custom handler as a child process, as the host does: the executable
// (e.g. the built redis-migrate binary) started with Args (["serve"]), the app settings as its
// environment and FUNCTIONS_CUSTOMHANDLER_PORT set to a free port. The child reaches the
// harness's queues through an AMQP 1.0 stand-in for Service Bus (shared/queue/amqptest), whose
// connection string the harness puts in the ServiceBusConnection setting: every message the
// child sends lands in Harness.Queue before the child's Send returns.
type ProcessOptions struct {
	Path string
	Args []string
}

// worker is one running custom handler: in process (an http.Server the harness serves) or a
// child process.
type worker struct {
	url    string
	cmd    *exec.Cmd     // nil in process
	exited chan struct{} // closed when the child has exited
	killed atomic.Bool   // KillHandler killed it: its in-flight messages' locks lapse
}

// current returns the running worker, waiting while one is being restarted.
func (h *Harness) current(ctx context.Context) (*worker, error) {
	for {
		h.wmu.Lock()
		w, ready := h.cur, h.ready
		h.wmu.Unlock()
		select {
		case <-ready:
			if w == nil {
				return nil, errors.New("the custom handler is not running")
			}
			return w, nil
		default:
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// startProcess starts the handler executable and waits for its first answer to GET /.
func (h *Harness) startProcess(ctx context.Context) (*worker, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	env := []string{}
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GOCOVERDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	names := make([]string, 0, len(h.settings))
	for k := range h.settings {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if k != "FUNCTIONS_CUSTOMHANDLER_PORT" {
			env = append(env, k+"="+h.settings[k])
		}
	}
	env = append(env, "FUNCTIONS_CUSTOMHANDLER_PORT="+strconv.Itoa(port))
	cmd := exec.Command(h.opts.Process.Path, h.opts.Process.Args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = h.log, h.log
	// A harness that dies takes its handler with it, as a host's worker dies with the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the custom handler %s: %v", h.opts.Process.Path, err)
	}
	w := &worker{url: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(w.exited)
	}()
	if err := h.waitReady(ctx, w); err != nil {
		_ = cmd.Process.Kill()
		<-w.exited
		return nil, err
	}
	h.logf("custom handler started (pid %d, port %d)", cmd.Process.Pid, port)
	return w, nil
}

// startServiceBus starts the AMQP stand-in the child sends its messages to.
func (h *Harness) startServiceBus() error {
	srv, err := amqptest.Start(amqptest.Options{MaxMessageSize: 256 << 10, OnMessage: func(m amqptest.Message) error {
		return h.Queue.Send(context.Background(), m.Queue, []queue.Message{{ID: m.ID, Body: m.Body, Properties: m.Properties}})
	}})
	if err != nil {
		return err
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	cs := srv.ConnectionString("harness", hex.EncodeToString(key[:]))
	redact.RegisterConnectionString(cs)
	h.amqp = srv
	h.settings["ServiceBusConnection"] = cs
	return nil
}

// KillHandler kills the custom handler process with SIGKILL while it works, as a crash of the
// instance would: every invocation running in it dies at once, whatever it was doing, and
// nothing it had not written yet is written. The messages it was processing are not settled:
// their locks lapse and they are delivered again after LockDuration with DeliveryCount+1. The
// harness then starts the handler again, as the host restarts its worker, and waits for its
// readiness answer. It needs Options.Process.
func (h *Harness) KillHandler(ctx context.Context) error {
	if h.opts.Process == nil {
		return errors.New("hostharness: KillHandler needs Options.Process (an in-process handler cannot be killed)")
	}
	h.restartMu.Lock()
	defer h.restartMu.Unlock()
	h.wmu.Lock()
	old := h.cur
	h.ready = make(chan struct{}) // callers wait for the restarted worker
	h.wmu.Unlock()
	if old != nil {
		old.killed.Store(true)
		_ = old.cmd.Process.Kill()
		<-old.exited
		h.logf("custom handler killed (pid %d): the locks of its messages lapse in %s", old.cmd.Process.Pid, h.lockDuration())
	}
	w, err := h.startProcess(ctx)
	h.wmu.Lock()
	h.cur = w // nil on error: callers fail
	close(h.ready)
	h.wmu.Unlock()
	return err
}

// stopWorker ends the current worker at shutdown: SIGTERM (serve shuts down gracefully), then
// SIGKILL after 10 s.
func (h *Harness) stopWorker() {
	h.wmu.Lock()
	w := h.cur
	h.cur = nil
	h.wmu.Unlock()
	if w == nil || w.cmd == nil {
		return
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.exited:
	case <-time.After(10 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.exited
	}
}

func (h *Harness) lockDuration() time.Duration {
	if h.opts.LockDuration > 0 {
		return h.opts.LockDuration
	}
	return time.Minute // a queue's default lockDuration (infra/main.bicep: PT1M)
}

// waitReady polls GET / until the handler answers, as the host does after starting it.
func (h *Harness) waitReady(ctx context.Context, w *worker) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"/", nil)
		resp, err := h.client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the custom handler did not answer GET / within 30s: %v", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.exited:
			return fmt.Errorf("the custom handler exited before answering GET / (%v)", w.cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
