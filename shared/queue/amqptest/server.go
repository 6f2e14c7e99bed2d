// Package amqptest is a minimal AMQP 1.0 stand-in for Azure Service Bus, for tests of the
// azservicebus sender. It speaks plain AMQP on loopback (the SDK does so when the connection
// string says UseDevelopmentEmulator=true) and implements just what a sender needs: SASL
// ANONYMOUS/PLAIN, open/begin/attach, the $cbs put-token exchange, link credit, and transfers
// settled as Accepted. Every message that arrives on a queue is recorded for assertions and
// handed to Options.OnMessage. It is not a broker: nothing is ever delivered to receivers (the
// host harness forwards what arrives into its in-memory queue, which delivers).
package amqptest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"
)

// Message is one message as the stand-in received it.
type Message struct {
	Queue       string
	ID          string
	ContentType string
	Properties  map[string]any
	Body        []byte
}

// Options tune the stand-in.
type Options struct {
	// MaxMessageSize is the largest message (or batch) a queue link accepts, advertised on
	// attach; 0 means 256 KiB, the Standard tier's limit.
	MaxMessageSize uint64
	// Queues, when set, are the only queues that exist; attaching to another fails with
	// amqp:not-found. Empty means every name is a queue.
	Queues []string
	// RejectTokens answers every put-token with 401 and a description that quotes the token,
	// so tests can check that callers keep credentials out of their errors.
	RejectTokens bool
	// Logf, when set, receives one line per frame (debugging).
	Logf func(format string, args ...any)
	// OnMessage, when set, receives every queue message before its transfer is settled, so a
	// harness can hand it on (to an in-memory queue) before the sender's Send returns. An error
	// fails the connection, and the sender sees its Send fail.
	OnMessage func(Message) error
}

// Server is a running stand-in.
type Server struct {
	opts Options
	ln   net.Listener

	mu        sync.Mutex
	messages  map[string][]Message
	transfers map[string]int
	tokens    []string // audiences of accepted put-token requests
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// Start listens on a free loopback port and serves until Close.
func Start(opts Options) (*Server, error) {
	if opts.MaxMessageSize == 0 {
		opts.MaxMessageSize = 256 << 10
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, ln: ln, messages: map[string][]Message{}, transfers: map[string]int{}, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the host:port the stand-in listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// ConnectionString is a Service Bus connection string for this stand-in with the given key
// name and key (the stand-in accepts any key).
func (s *Server) ConnectionString(keyName, key string) string {
	return fmt.Sprintf("Endpoint=sb://%s;SharedAccessKeyName=%s;SharedAccessKey=%s;UseDevelopmentEmulator=true", s.Addr(), keyName, key)
}

// Messages returns a copy of the messages received on queue, in arrival order.
func (s *Server) Messages(queue string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages[queue]...)
}

// Transfers is how many AMQP deliveries (a whole batch counts once) arrived on queue.
func (s *Server) Transfers(queue string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transfers[queue]
}

// Tokens returns the audiences of the put-token requests the stand-in accepted.
func (s *Server) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// Close stops listening, drops every connection and waits for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = nc.Close()
			return
		}
		s.conns[nc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			c := &conn{s: s, nc: nc, sessions: map[uint16]*session{}, done: make(chan struct{})}
			err := c.serve()
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.logf("conn %s: %v", nc.RemoteAddr(), err)
			}
			close(c.done)
			_ = nc.Close()
			s.mu.Lock()
			delete(s.conns, nc)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

func (s *Server) queueExists(name string) bool {
	if len(s.opts.Queues) == 0 {
		return true
	}
	for _, q := range s.opts.Queues {
		if q == name {
			return true
		}
	}
	return false
}

// Performative and other descriptor codes (AMQP 1.0 part 2 and 3, SASL part 5).
const (
	codeOpen        = 0x10
	codeBegin       = 0x11
	codeAttach      = 0x12
	codeFlow        = 0x13
	codeTransfer    = 0x14
	codeDisposition = 0x15
	codeDetach      = 0x16
	codeEnd         = 0x17
	codeClose       = 0x18
	codeError       = 0x1d
	codeAccepted    = 0x24
	codeSource      = 0x28
	codeTarget      = 0x29

	codeSASLMechanisms = 0x40
	codeSASLInit       = 0x41
	codeSASLOutcome    = 0x44

	// batchFormat is the message-format Service Bus uses for a batch: one envelope whose data
	// sections are whole encoded messages.
	batchFormat = 0x80013700

	maxFrameSize = 65536
	window       = 5000 // session window and link credit granted to the client
)

type conn struct {
	s        *Server
	nc       net.Conn
	wmu      sync.Mutex
	sessions map[uint16]*session
	done     chan struct{}
}

type session struct {
	channel        uint16
	nextIncomingID uint32
	nextOutgoingID uint32
	nextDelivery   uint32
	links          map[uint32]*link // by the client's handle; we answer with the same number
}

type link struct {
	name       string
	handle     uint32
	clientSend bool   // the client sends on it (we receive)
	address    string // the node: target address of a client sender, source of a client receiver
	replyTo    string // a client receiver's own target address, where replies go

	// receiving side
	deliveries uint32
	payload    []byte
	deliveryID uint32
	settled    bool
	format     uint32
	inProgress bool

	// sending side: credit the client granted, and replies waiting for it
	credit  uint32
	sent    uint32
	pending [][]byte
}

func (c *conn) serve() error {
	if err := c.sasl(); err != nil {
		return fmt.Errorf("sasl: %w", err)
	}
	if err := c.header(0); err != nil {
		return err
	}
	for {
		typ, ch, body, err := c.readFrame()
		if err != nil {
			return err
		}
		if len(body) == 0 || typ != 0 {
			continue // heartbeat
		}
		d := &decoder{b: body}
		v, err := d.value()
		if err != nil {
			return err
		}
		perf, ok := v.(described)
		if !ok {
			return fmt.Errorf("frame body is not a performative")
		}
		f, _ := perf.value.(list)
		c.s.logf("recv ch=%d %#x %v", ch, perf.code, f.items)
		if err := c.handle(ch, perf.code, fields(f), body[d.off:]); err != nil {
			return err
		}
		if perf.code == codeClose {
			return nil
		}
	}
}

// header reads the client's protocol header and answers with the same one (id 3 = SASL, 0 = AMQP).
func (c *conn) header(id byte) error {
	var h [8]byte
	if _, err := io.ReadFull(c.nc, h[:]); err != nil {
		return err
	}
	want := [8]byte{'A', 'M', 'Q', 'P', id, 1, 0, 0}
	if h != want {
		return fmt.Errorf("protocol header %q, want %q", h[:], want[:])
	}
	return c.write(h[:])
}

func (c *conn) sasl() error {
	if err := c.header(3); err != nil {
		return err
	}
	if err := c.send(1, 0, codeSASLMechanisms, []any{symbols{"ANONYMOUS", "PLAIN"}}, nil); err != nil {
		return err
	}
	typ, _, body, err := c.readFrame()
	if err != nil {
		return err
	}
	d := &decoder{b: body}
	v, err := d.value()
	if err != nil {
		return err
	}
	if p, ok := v.(described); typ != 1 || !ok || p.code != codeSASLInit {
		return fmt.Errorf("expected sasl-init")
	}
	return c.send(1, 0, codeSASLOutcome, []any{uint8(0)}, nil) // 0 = ok
}

func (c *conn) handle(ch uint16, code uint64, f fields, payload []byte) error {
	switch code {
	case codeOpen:
		if idle, ok := f.uint(4); ok && idle > 0 {
			go c.heartbeat(time.Duration(idle) * time.Millisecond / 2)
		}
		return c.send(0, 0, codeOpen, []any{"amqptest", nil, uint32(maxFrameSize), uint16(65535)}, nil)
	case codeBegin:
		ss := &session{channel: ch, links: map[uint32]*link{}}
		if id, ok := f.uint(1); ok {
			ss.nextIncomingID = uint32(id)
		}
		c.sessions[ch] = ss
		return c.send(0, ch, codeBegin, []any{ch, uint32(0), uint32(window), uint32(window), uint32(1023)}, nil)
	case codeEnd:
		delete(c.sessions, ch)
		return c.send(0, ch, codeEnd, nil, nil)
	case codeClose:
		return c.send(0, 0, codeClose, nil, nil)
	}
	ss := c.sessions[ch]
	if ss == nil {
		return fmt.Errorf("performative %#x on channel %d without a session", code, ch)
	}
	switch code {
	case codeAttach:
		return c.attach(ss, f)
	case codeFlow:
		return c.flow(ss, f)
	case codeTransfer:
		return c.transfer(ss, f, payload)
	case codeDetach:
		h, _ := f.uint(0)
		delete(ss.links, uint32(h))
		return c.send(0, ch, codeDetach, []any{uint32(h), f.bool(1)}, nil)
	case codeDisposition:
		return nil // replies are sent settled; nothing to track
	}
	return fmt.Errorf("unexpected performative %#x", code)
}

func terminusAddress(v any) string {
	if d, ok := v.(described); ok {
		if l, ok := d.value.(list); ok {
			return fields(l).string(0)
		}
	}
	return ""
}

func (c *conn) attach(ss *session, f fields) error {
	h, _ := f.uint(1)
	l := &link{name: f.string(0), handle: uint32(h), clientSend: !f.bool(2)}
	if l.clientSend {
		l.address = terminusAddress(f.get(6))
	} else {
		l.address = terminusAddress(f.get(5))
		l.replyTo = terminusAddress(f.get(6))
	}
	ourRole := l.clientSend // true = receiver
	resp := []any{l.name, l.handle, ourRole, f.encoded(3), f.encoded(4), f.encoded(5), f.encoded(6), nil, nil}
	if ourRole {
		resp = append(resp, nil) // initial-delivery-count is for senders only
	} else {
		resp = append(resp, uint32(0))
	}
	resp = append(resp, c.s.opts.MaxMessageSize)

	node := strings.TrimSuffix(l.address, "/$management")
	if !strings.HasPrefix(node, "$") && !c.s.queueExists(node) {
		// A missing node: attach without the terminus, then detach with the error.
		if ourRole {
			resp[6] = nil
		} else {
			resp[5] = nil
		}
		if err := c.send(0, ss.channel, codeAttach, resp, nil); err != nil {
			return err
		}
		e := described{code: codeError, value: []any{symbol("amqp:not-found"), fmt.Sprintf("The messaging entity '%s' could not be found.", node)}}
		return c.send(0, ss.channel, codeDetach, []any{l.handle, true, e}, nil)
	}
	ss.links[l.handle] = l
	if err := c.send(0, ss.channel, codeAttach, resp, nil); err != nil {
		return err
	}
	if l.clientSend {
		return c.grant(ss, l)
	}
	return nil
}

// grant tops the client's link credit (and the session window) back up.
func (c *conn) grant(ss *session, l *link) error {
	return c.send(0, ss.channel, codeFlow, []any{
		ss.nextIncomingID, uint32(window), ss.nextOutgoingID, uint32(window),
		l.handle, l.deliveries, uint32(window),
	}, nil)
}

func (c *conn) flow(ss *session, f fields) error {
	h, ok := f.uint(4)
	if !ok {
		return nil // session-level only
	}
	l := ss.links[uint32(h)]
	if l == nil || l.clientSend {
		return nil
	}
	count, _ := f.uint(5)
	credit, _ := f.uint(6)
	l.credit = uint32(count) + uint32(credit) - l.sent
	return c.drain(ss, l)
}

func (c *conn) transfer(ss *session, f fields, payload []byte) error {
	ss.nextIncomingID++
	h, _ := f.uint(0)
	l := ss.links[uint32(h)]
	if l == nil || !l.clientSend {
		return fmt.Errorf("transfer on unknown handle %d", h)
	}
	if !l.inProgress {
		id, _ := f.uint(1)
		format, _ := f.uint(3)
		l.deliveryID, l.format, l.settled, l.inProgress = uint32(id), uint32(format), f.bool(4), true
		l.payload = l.payload[:0]
	}
	l.payload = append(l.payload, payload...)
	if f.bool(5) { // more frames follow
		return nil
	}
	l.inProgress = false
	l.deliveries++
	if err := c.deliver(ss, l, l.payload); err != nil {
		return err
	}
	if !l.settled {
		accepted := described{code: codeAccepted, value: list{}}
		if err := c.send(0, ss.channel, codeDisposition, []any{true, l.deliveryID, l.deliveryID, true, accepted}, nil); err != nil {
			return err
		}
	}
	return c.grant(ss, l)
}

// deliver handles one complete message: a $cbs request is answered, a queue message recorded.
func (c *conn) deliver(ss *session, l *link, payload []byte) error {
	var m amqp.Message
	if err := m.UnmarshalBinary(payload); err != nil {
		return fmt.Errorf("decode message on %s: %w", l.address, err)
	}
	switch {
	case l.address == "$cbs":
		return c.putToken(ss, &m)
	case strings.HasSuffix(l.address, "/$management"):
		return c.reply(ss, &m, 501, "not implemented by amqptest")
	}
	msgs := []*amqp.Message{&m}
	if l.format == batchFormat {
		msgs = msgs[:0]
		for _, data := range m.Data {
			inner := new(amqp.Message)
			if err := inner.UnmarshalBinary(data); err != nil {
				return fmt.Errorf("decode batched message: %w", err)
			}
			msgs = append(msgs, inner)
		}
	}
	var recs []Message
	c.s.mu.Lock()
	c.s.transfers[l.address]++
	for _, m := range msgs {
		rec := Message{Queue: l.address, Properties: m.ApplicationProperties}
		if m.Properties != nil {
			if m.Properties.MessageID != nil {
				rec.ID = fmt.Sprint(m.Properties.MessageID)
			}
			if m.Properties.ContentType != nil {
				rec.ContentType = *m.Properties.ContentType
			}
		}
		for _, d := range m.Data {
			rec.Body = append(rec.Body, d...)
		}
		c.s.messages[l.address] = append(c.s.messages[l.address], rec)
		recs = append(recs, rec)
	}
	c.s.mu.Unlock()
	if c.s.opts.OnMessage != nil {
		for _, rec := range recs {
			if err := c.s.opts.OnMessage(rec); err != nil {
				return fmt.Errorf("message %s on %s: %w", rec.ID, rec.Queue, err)
			}
		}
	}
	return nil
}

func (c *conn) putToken(ss *session, m *amqp.Message) error {
	if m.ApplicationProperties["operation"] != "put-token" {
		return c.reply(ss, m, 400, "unsupported $cbs operation")
	}
	if c.s.opts.RejectTokens {
		return c.reply(ss, m, 401, fmt.Sprintf("InvalidSignature: the token %v is not valid", m.Value))
	}
	audience, _ := m.ApplicationProperties["name"].(string)
	c.s.mu.Lock()
	c.s.tokens = append(c.s.tokens, audience)
	c.s.mu.Unlock()
	return c.reply(ss, m, 200, "OK")
}

// reply sends a management response to the request's reply-to address, correlated by its
// message id, on the link the client attached to receive it.
func (c *conn) reply(ss *session, req *amqp.Message, status int32, description string) error {
	if req.Properties == nil || req.Properties.ReplyTo == nil {
		return nil // nobody to answer
	}
	var to *link
	for _, l := range ss.links {
		if !l.clientSend && l.replyTo == *req.Properties.ReplyTo {
			to = l
		}
	}
	if to == nil {
		return nil
	}
	resp := &amqp.Message{
		Properties:            &amqp.MessageProperties{CorrelationID: req.Properties.MessageID},
		ApplicationProperties: map[string]any{"status-code": status, "status-description": description},
	}
	bin, err := resp.MarshalBinary()
	if err != nil {
		return err
	}
	to.pending = append(to.pending, bin)
	return c.drain(ss, to)
}

// drain sends queued replies while the client grants credit.
func (c *conn) drain(ss *session, l *link) error {
	for len(l.pending) > 0 && l.credit > 0 {
		msg := l.pending[0]
		l.pending = l.pending[1:]
		id := ss.nextDelivery
		ss.nextDelivery++
		tag := binary.BigEndian.AppendUint32(nil, id)
		if err := c.send(0, ss.channel, codeTransfer, []any{l.handle, id, tag, uint32(0), true}, msg); err != nil {
			return err
		}
		ss.nextOutgoingID++
		l.credit--
		l.sent++
	}
	return nil
}

// heartbeat keeps the client's idle timeout from firing while a test is quiet.
func (c *conn) heartbeat(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			if c.write([]byte{0, 0, 0, 8, 2, 0, 0, 0}) != nil {
				return
			}
		}
	}
}

func (c *conn) readFrame() (typ byte, ch uint16, body []byte, err error) {
	var h [8]byte
	if _, err = io.ReadFull(c.nc, h[:]); err != nil {
		return
	}
	size := binary.BigEndian.Uint32(h[:4])
	doff := int(h[4]) * 4
	if size < 8 || size > 64<<20 || doff < 8 || uint32(doff) > size {
		return 0, 0, nil, fmt.Errorf("bad frame header %x", h)
	}
	buf := make([]byte, size-8)
	if _, err = io.ReadFull(c.nc, buf); err != nil {
		return
	}
	return h[5], binary.BigEndian.Uint16(h[6:]), buf[doff-8:], nil
}

// send writes one frame: a performative (code + fields) and an optional message payload.
func (c *conn) send(typ byte, ch uint16, code uint64, f []any, payload []byte) error {
	c.s.logf("send ch=%d %#x %v", ch, code, f)
	body := encode(nil, described{code: code, value: f})
	frame := make([]byte, 8, 8+len(body)+len(payload))
	binary.BigEndian.PutUint32(frame, uint32(8+len(body)+len(payload)))
	frame[4], frame[5] = 2, typ
	binary.BigEndian.PutUint16(frame[6:], ch)
	frame = append(append(frame, body...), payload...)
	return c.write(frame)
}

func (c *conn) write(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(p)
	return err
}
