// Package replica speaks the Redis replication protocol as a replica of one master (Redis 4+,
// Valkey): it authenticates, announces itself with REPLCONF, asks for PSYNC (a new full
// synchronisation or the continuation of a saved position), hands the master's RDB snapshot to
// the caller as a stream (never held whole in memory), then reads the command stream, counting
// its bytes exactly so that every command comes with the replication offset just after it.
// It answers REPLCONF GETACK and sends REPLCONF ACK every second.
//
// The package knows nothing of keys or targets: the caller's Handler decides what a snapshot
// and a command mean. Sync returns when the link breaks; the caller resumes from the last
// Position it handled (PSYNC <replid> <offset+1>), which the master continues when its backlog
// still holds what follows.
package replica

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Position is a point in a master's replication stream: its replication id, the offset of the
// last byte handled (as in INFO replication's master_repl_offset: caught up when equal), and
// the database selected at that point (needed to resume: a continued stream does not repeat
// the SELECT that was in force).
type Position struct {
	ReplID string `json:"replid"`
	Offset int64  `json:"offset"`
	DB     int    `json:"db"`
}

func (p Position) String() string { return fmt.Sprintf("%s:%d (db %d)", p.ReplID, p.Offset, p.DB) }

// Handler receives what the master sends. Its methods are called from Sync's goroutine, one
// at a time, in stream order. A Handler that blocks holds the link back (the master buffers,
// up to its client-output-buffer-limit for replicas).
type Handler interface {
	// FullSync: the master starts a new synchronisation at pos; rdb is its snapshot (an RDB
	// file) as of pos. rdb must be read by FullSync itself (it is the socket); what FullSync
	// leaves unread is skipped. An error ends Sync with that error.
	FullSync(ctx context.Context, pos Position, rdb io.Reader) error
	// Continued: the master continues the stream from pos (pos.ReplID may be new: the master
	// changed its replication id after a failover, and the offsets continue).
	Continued(pos Position)
	// Command is every command of the stream in order, including PING, SELECT, MULTI/EXEC and
	// REPLCONF GETACK (already answered). db is the database the command runs in (for SELECT,
	// the database it selects); end is the position just after the command. argv is the
	// handler's to keep. An error ends Sync with that error.
	Command(db int, argv [][]byte, end Position) error
}

// Config says how to reach the master.
type Config struct {
	Addr     string // host:port
	Username string // ACL user; empty for the default user
	Password string
	// Credentials, when set, gives the user name and password of each new link (Entra ID
	// tokens); it overrides Username/Password.
	Credentials func(ctx context.Context) (username, password string, err error)
	TLS         *tls.Config // nil: plain TCP
	// DialTimeout bounds connecting, TLS and each reply of the handshake (default 10s).
	DialTimeout time.Duration
	// ReadTimeout: the link is declared dead when the master sends nothing for this long
	// (default 60s, like repl-timeout; the master pings every repl-ping-replica-period, 10s).
	ReadTimeout time.Duration
	// AckInterval between REPLCONF ACKs (default 1s).
	AckInterval time.Duration
	// ListeningPort is what REPLCONF listening-port announces (INFO replication shows it).
	// There is no server behind it; 0 by default.
	ListeningPort int
	// Dial, when set, opens the TCP connection (tests, proxies).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// EmptySnapshot asks the master for a snapshot without data (REPLCONF rdb-filter-only "",
	// Redis 7.0+ and Valkey), for a caller that copies the data another way and only wants the
	// command stream: the master forks but writes no key. A master that does not know the
	// option sends its whole snapshot, which FullSync receives as usual.
	EmptySnapshot bool
}

// ErrRefused is matched (errors.Is) by the error Sync returns when the server does not let a
// client replicate: the command is unknown (renamed or blocked, as on Azure Cache for Redis,
// ElastiCache and Azure Managed Redis) or the ACL user lacks the permission.
var ErrRefused = errors.New("replication refused by the server")

// RefusedError carries the command that was refused and the server's message.
type RefusedError struct {
	Command string // e.g. "PSYNC", "REPLCONF"
	Msg     string // the server's error reply, e.g. "ERR unknown command 'PSYNC'..."
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the server refused %s (%s): replication is not allowed for this user or on this service", e.Command, e.Msg)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// ServerError is any other error reply during the handshake (e.g. LOADING, NOMASTERLINK on a
// replica that lost its own master, a failed AUTH); the caller may retry later.
type ServerError struct {
	Command string
	Msg     string
}

func (e *ServerError) Error() string { return fmt.Sprintf("%s: %s", e.Command, e.Msg) }

// ErrProtocol is matched by errors about bytes that are not the replication protocol.
var ErrProtocol = errors.New("replication protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

func (c *Config) defaults() Config {
	o := *c
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 60 * time.Second
	}
	if o.AckInterval <= 0 {
		o.AckInterval = time.Second
	}
	return o
}

// link is one replication connection.
type link struct {
	cfg  Config
	conn net.Conn
	br   *bufio.Reader

	wmu sync.Mutex // writes: acks from the ticker and GETACK answers
	// acked is the offset handled so far (what REPLCONF ACK reports); -1 until the stream runs.
	acked atomic.Int64
}

// Sync runs one replication link: it connects, asks to continue from (nil: a new full
// synchronisation), passes the snapshot and the commands to h, and returns when the link
// breaks, when h fails, or when ctx ends (then with ctx.Err()). The connection is closed on
// return, so the master forgets this replica at once.
func Sync(ctx context.Context, cfg Config, from *Position, h Handler) error {
	c := cfg.defaults()
	conn, err := dial(ctx, c)
	if err != nil {
		return err
	}
	l := &link{cfg: c, conn: conn, br: bufio.NewReaderSize(conn, 256<<10)}
	l.acked.Store(-1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		_ = conn.Close()
		wg.Wait()
	}()
	// Closing the socket is what unblocks a read when ctx ends.
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			_ = conn.Close()
		case <-stop:
		}
	}()
	err = l.run(ctx, from, h, stop, &wg)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func dial(ctx context.Context, c Config) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	var conn net.Conn
	var err error
	if c.Dial != nil {
		conn, err = c.Dial(dctx, "tcp", c.Addr)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(dctx, "tcp", c.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", c.Addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(15 * time.Second)
	}
	if c.TLS != nil {
		tconn := tls.Client(conn, c.TLS)
		if err := tconn.HandshakeContext(dctx); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("TLS with %s: %w", c.Addr, err)
		}
		conn = tconn
	}
	return conn, nil
}

func (l *link) run(ctx context.Context, from *Position, h Handler, stop chan struct{}, wg *sync.WaitGroup) error {
	if err := l.handshake(ctx); err != nil {
		return err
	}
	args := []string{"PSYNC", "?", "-1"}
	if from != nil && from.ReplID != "" {
		args = []string{"PSYNC", from.ReplID, strconv.FormatInt(from.Offset+1, 10)}
	}
	if err := l.send(args...); err != nil {
		return err
	}
	line, err := l.readLine(l.cfg.DialTimeout+l.cfg.ReadTimeout, true)
	if err != nil {
		return fmt.Errorf("reading the reply to PSYNC: %w", err)
	}
	var pos Position
	switch {
	case strings.HasPrefix(line, "+FULLRESYNC"):
		f := strings.Fields(line)
		if len(f) != 3 {
			return protoErr("unexpected reply to PSYNC: %.80q", line)
		}
		off, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return protoErr("unexpected reply to PSYNC: %.80q", line)
		}
		pos = Position{ReplID: f[1], Offset: off}
		if err := l.fullSync(ctx, pos, h); err != nil {
			return err
		}
	case strings.HasPrefix(line, "+CONTINUE"):
		pos = *from
		if f := strings.Fields(line); len(f) >= 2 {
			pos.ReplID = f[1]
		}
		h.Continued(pos)
	case strings.HasPrefix(line, "-"):
		return replyError("PSYNC", line[1:])
	default:
		return protoErr("unexpected reply to PSYNC: %.80q", line)
	}
	l.acked.Store(pos.Offset)
	// The master starts streaming after a diskless transfer only once it has our first ACK.
	if err := l.ack(); err != nil {
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(l.cfg.AckInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if l.ack() != nil {
					_ = l.conn.Close()
					return
				}
			}
		}
	}()
	return l.stream(pos, h)
}

// handshake: AUTH, PING, REPLCONF listening-port, REPLCONF capa.
func (l *link) handshake(ctx context.Context) error {
	user, pass := l.cfg.Username, l.cfg.Password
	if l.cfg.Credentials != nil {
		var err error
		if user, pass, err = l.cfg.Credentials(ctx); err != nil {
			return fmt.Errorf("getting credentials: %w", err)
		}
	}
	if pass != "" {
		args := []string{"AUTH", pass}
		if user != "" {
			args = []string{"AUTH", user, pass}
		}
		if err := l.call(args...); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"PING"},
		{"REPLCONF", "listening-port", strconv.Itoa(l.cfg.ListeningPort)},
		{"REPLCONF", "capa", "eof", "capa", "psync2"},
	}
	for _, s := range steps {
		if err := l.call(s...); err != nil {
			return err
		}
	}
	if l.cfg.EmptySnapshot {
		// Older servers answer "Unrecognized REPLCONF option": they send the whole snapshot.
		var se *ServerError
		var re *RefusedError
		if err := l.call("REPLCONF", "rdb-filter-only", ""); err != nil && !errors.As(err, &se) && !errors.As(err, &re) {
			return err
		}
	}
	return nil
}

// Probe checks that the master lets this user replicate, as Sync would begin: the handshake
// (AUTH, REPLCONF) and PSYNC accepted. It closes the link at the master's first answer to
// PSYNC (a keepalive newline while it prepares the snapshot, or +FULLRESYNC), before any
// snapshot is sent; with EmptySnapshot the master's fork, if it started, writes no key.
func Probe(ctx context.Context, cfg Config) error {
	c := cfg.defaults()
	conn, err := dial(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	l := &link{cfg: c, conn: conn, br: bufio.NewReaderSize(conn, 4<<10)}
	if err := l.handshake(ctx); err != nil {
		return err
	}
	if err := l.send("PSYNC", "?", "-1"); err != nil {
		return err
	}
	line, err := l.readLine(c.DialTimeout, false)
	if err != nil {
		return fmt.Errorf("reading the reply to PSYNC: %w", err)
	}
	if strings.HasPrefix(line, "-") {
		return replyError("PSYNC", line[1:])
	}
	return nil
}

// call sends one handshake command and reads its one-line reply.
func (l *link) call(args ...string) error {
	if err := l.send(args...); err != nil {
		return err
	}
	line, err := l.readLine(l.cfg.DialTimeout, true)
	if err != nil {
		return fmt.Errorf("reading the reply to %s: %w", args[0], err)
	}
	if strings.HasPrefix(line, "-") {
		return replyError(args[0], line[1:])
	}
	return nil
}

// replyError classifies an error reply of the handshake. A refusal (unknown or renamed
// command, ACL denial) is permanent; the rest may pass.
func replyError(cmd, msg string) error {
	cmd = strings.ToUpper(cmd)
	low := strings.ToLower(msg)
	switch {
	case cmd == "AUTH":
		// Never echo anything from AUTH's arguments; the server's reply holds none.
		return &ServerError{Command: "AUTH", Msg: msg}
	case strings.HasPrefix(msg, "NOPERM"), strings.Contains(low, "unknown command"),
		strings.Contains(low, "unknown subcommand"), strings.Contains(low, "not allowed"),
		strings.Contains(low, "no permission"), strings.Contains(low, "is disabled"):
		return &RefusedError{Command: cmd, Msg: msg}
	}
	return &ServerError{Command: cmd, Msg: msg}
}

func (l *link) send(args ...string) error {
	var b bytes.Buffer
	b.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	if err := l.sendRaw(b.Bytes()); err != nil {
		return fmt.Errorf("writing %s: %w", args[0], err)
	}
	return nil
}

func (l *link) sendRaw(b []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_ = l.conn.SetWriteDeadline(time.Now().Add(l.cfg.ReadTimeout))
	_, err := l.conn.Write(b)
	return err
}

func (l *link) ack() error {
	off := l.acked.Load()
	if off < 0 {
		return nil
	}
	return l.send("REPLCONF", "ACK", strconv.FormatInt(off, 10))
}

// readLine reads one CRLF-terminated line; with skipEmpty, the bare newlines a master sends to
// keep the link alive (before answering PSYNC, while it prepares the snapshot) are skipped.
func (l *link) readLine(timeout time.Duration, skipEmpty bool) (string, error) {
	for {
		_ = l.conn.SetReadDeadline(time.Now().Add(timeout))
		line, err := l.br.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				return "", protoErr("line longer than %d bytes", l.br.Size())
			}
			return "", err
		}
		s := strings.TrimRight(string(line), "\r\n")
		if s == "" && skipEmpty {
			continue
		}
		return s, nil
	}
}

// fullSync reads the snapshot's header ($<len> or $EOF:<mark>) and hands the payload to h.
func (l *link) fullSync(ctx context.Context, pos Position, h Handler) error {
	// The master may take a while (BGSAVE, repl-diskless-sync-delay) and sends newlines
	// meanwhile, so the usual read timeout applies between them.
	line, err := l.readLine(l.cfg.ReadTimeout, true)
	if err != nil {
		return fmt.Errorf("waiting for the master's snapshot: %w", err)
	}
	if strings.HasPrefix(line, "-") {
		return &ServerError{Command: "SYNC", Msg: line[1:]}
	}
	if !strings.HasPrefix(line, "$") {
		return protoErr("expected the snapshot's length, got %.80q", line)
	}
	var body io.Reader
	var er *eofReader
	var lr *io.LimitedReader
	dr := &deadlineReader{l: l}
	if mark, ok := strings.CutPrefix(line, "$EOF:"); ok {
		if len(mark) != eofMarkLen {
			return protoErr("EOF mark of %d bytes", len(mark))
		}
		er = &eofReader{br: l.br, l: l, mark: []byte(mark)}
		body = er
	} else {
		n, err := strconv.ParseInt(line[1:], 10, 64)
		if err != nil || n < 0 {
			return protoErr("bad snapshot length %.80q", line)
		}
		lr = &io.LimitedReader{R: dr, N: n}
		body = lr
	}
	hr := &handOff{r: body}
	// While the handler loads the snapshot, a newline every second tells the master the replica
	// is alive, as a loading Redis replica does: masters that put a replica online once the file
	// is sent drop it after repl-timeout without an ACK or a newline.
	loaded := make(chan struct{})
	var kwg sync.WaitGroup
	kwg.Add(1)
	go func() {
		defer kwg.Done()
		t := time.NewTicker(l.cfg.AckInterval)
		defer t.Stop()
		for {
			select {
			case <-loaded:
				return
			case <-t.C:
				if l.sendRaw([]byte("\n")) != nil {
					return
				}
			}
		}
	}()
	err = h.FullSync(ctx, pos, hr)
	close(loaded)
	kwg.Wait()
	hr.closed.Store(true)
	if err != nil {
		return err
	}
	if hr.err != nil && hr.err != io.EOF {
		return fmt.Errorf("reading the master's snapshot: %w", hr.err)
	}
	// Skip what the handler left unread: the stream starts after the payload.
	if _, err := io.Copy(io.Discard, body); err != nil {
		return fmt.Errorf("reading the master's snapshot: %w", err)
	}
	if lr != nil && lr.N > 0 {
		return fmt.Errorf("reading the master's snapshot: %w", io.ErrUnexpectedEOF)
	}
	return nil
}

// handOff is the snapshot reader given to the handler; it remembers a read error (the link's,
// not the handler's) and stops working once FullSync has returned.
type handOff struct {
	r      io.Reader
	err    error
	closed atomic.Bool
}

func (h *handOff) Read(p []byte) (int, error) {
	if h.closed.Load() {
		return 0, errors.New("replica: the snapshot reader was used after FullSync returned")
	}
	n, err := h.r.Read(p)
	if err != nil && h.err == nil {
		h.err = err
	}
	return n, err
}

// deadlineReader reads the link's buffered reader, pushing the read deadline forward.
type deadlineReader struct{ l *link }

func (d *deadlineReader) Read(p []byte) (int, error) {
	_ = d.l.conn.SetReadDeadline(time.Now().Add(d.l.cfg.ReadTimeout))
	n, err := d.l.br.Read(p)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

const eofMarkLen = 40

// eofReader reads a diskless snapshot: the payload ends with the 40-byte mark announced in
// `$EOF:<mark>`. It never consumes a byte past the mark (the command stream follows).
type eofReader struct {
	br   *bufio.Reader
	l    *link
	mark []byte
	done bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	if e.done {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	_ = e.l.conn.SetReadDeadline(time.Now().Add(e.l.cfg.ReadTimeout))
	n := e.br.Buffered()
	if n < eofMarkLen {
		n = eofMarkLen
	}
	win, err := e.br.Peek(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	i := bytes.Index(win, e.mark)
	if i == 0 {
		_, _ = e.br.Discard(eofMarkLen)
		e.done = true
		return 0, io.EOF
	}
	safe := len(win) - (eofMarkLen - 1) // the mark may start in the last 39 bytes
	if i > 0 {
		safe = i
	}
	if safe > len(p) {
		safe = len(p)
	}
	copy(p, win[:safe])
	_, _ = e.br.Discard(safe)
	return safe, nil
}

// stream reads commands until the link ends.
func (l *link) stream(pos Position, h Handler) error {
	cr := &cmdReader{l: l}
	for {
		argv, n, err := cr.next()
		if err != nil {
			return fmt.Errorf("replication stream from %s at offset %d: %w", l.cfg.Addr, pos.Offset, err)
		}
		pos.Offset += n
		if len(argv) == 0 {
			continue
		}
		name := argv[0]
		switch {
		case len(name) == 6 && strings.EqualFold(string(name), "SELECT") && len(argv) == 2:
			db, err := strconv.Atoi(string(argv[1]))
			if err != nil || db < 0 {
				return protoErr("SELECT %.20q in the stream", argv[1])
			}
			pos.DB = db
		case len(name) == 8 && strings.EqualFold(string(name), "REPLCONF") && len(argv) >= 2 &&
			strings.EqualFold(string(argv[1]), "GETACK"):
			// Answer with what was handled before this request, as a Redis replica does.
			if err := l.ack(); err != nil {
				return err
			}
		}
		if err := h.Command(pos.DB, argv, pos); err != nil {
			return err
		}
		l.acked.Store(pos.Offset)
	}
}

// cmdReader parses the command stream (RESP arrays of bulk strings), counting bytes.
type cmdReader struct{ l *link }

// next returns one command and the number of stream bytes it took.
func (c *cmdReader) next() ([][]byte, int64, error) {
	line, err := c.line()
	if err != nil {
		return nil, 0, err
	}
	n := int64(len(line))
	if len(line) < 3 || line[0] != '*' {
		// Redis masters only write arrays; a bare newline is a keepalive that is not part of
		// the offset, anything else is not the protocol we speak.
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil, 0, nil
		}
		return nil, 0, protoErr("expected a command array, got %.40q", line)
	}
	count, err := parseLen(line[1:])
	if err != nil || count > 1<<20 {
		return nil, 0, protoErr("bad array header %.40q", line)
	}
	if count <= 0 {
		return nil, n, nil
	}
	argv := make([][]byte, count)
	for i := range argv {
		hdr, err := c.line()
		if err != nil {
			return nil, 0, err
		}
		n += int64(len(hdr))
		if len(hdr) < 3 || hdr[0] != '$' {
			return nil, 0, protoErr("expected a bulk string, got %.40q", hdr)
		}
		sz, err := parseLen(hdr[1:])
		if err != nil || sz < 0 {
			return nil, 0, protoErr("bad bulk header %.40q", hdr)
		}
		buf := make([]byte, sz+2)
		if err := c.full(buf); err != nil {
			return nil, 0, err
		}
		if buf[sz] != '\r' || buf[sz+1] != '\n' {
			return nil, 0, protoErr("bulk string not terminated by CRLF")
		}
		argv[i] = buf[:sz:sz]
		n += int64(sz + 2)
	}
	return argv, n, nil
}

// line reads one line including its CRLF; the slice is valid until the next read.
func (c *cmdReader) line() ([]byte, error) {
	_ = c.l.conn.SetReadDeadline(time.Now().Add(c.l.cfg.ReadTimeout))
	b, err := c.l.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, protoErr("header line longer than %d bytes", c.l.br.Size())
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (c *cmdReader) full(p []byte) error {
	for len(p) > 0 {
		_ = c.l.conn.SetReadDeadline(time.Now().Add(c.l.cfg.ReadTimeout))
		n, err := c.l.br.Read(p)
		p = p[n:]
		if err != nil {
			if err == io.EOF && len(p) > 0 {
				return io.ErrUnexpectedEOF
			}
			if len(p) > 0 {
				return err
			}
		}
	}
	return nil
}

// parseLen parses the number in "<n>\r\n".
func parseLen(b []byte) (int, error) {
	s := strings.TrimRight(string(b), "\r\n")
	return strconv.Atoi(s)
}
