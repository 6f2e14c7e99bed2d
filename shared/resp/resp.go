// Package resp is a minimal pipelined RESP2 client for the copy's hot commands (MEMORY USAGE,
// DUMP, PEXPIRETIME/PTTL, RESTORE): commands are written as bulk strings straight into one
// buffer, without boxing arguments or building a command object per call, and bulk replies are
// read into a buffer the caller owns and reuses. Everything else stays on go-redis; the copier
// sends a key through go-redis again whenever this path cannot answer for it (a cluster
// redirect). See README "How it is built" for the measurements behind it.
package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Error is a server's error reply. It has go-redis's RedisError method, so code that tells
// server replies from network failures (errors.As with redis.Error) sees it as go-redis's own.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

// RedisError marks a server reply (go-redis's redis.Error interface).
func (*Error) RedisError() {}

// errWrongType is the reply the copy's string-first GETRANGE gets for every key of another
// type, kept as one value rather than allocated for each.
var errWrongType = &Error{msg: "WRONGTYPE Operation against a key holding the wrong kind of value"}

// NewError is an error reply with message msg (tests).
func NewError(msg string) *Error { return &Error{msg: msg} }

// Reply is one reply. Bulk contents are in the buffer passed to Conn.Read; a simple string's
// bytes are valid only until the next read.
type Reply struct {
	Type  byte   // '+' simple string, '-' error, ':' integer, '$' bulk string, '*' array
	Int   int64  // the integer, or an array's length
	Bytes []byte // simple or bulk string contents
	Err   *Error // the error reply
	Nil   bool   // $-1 or *-1
}

// ErrProtocol is a reply this client cannot parse: the connection is unusable.
var ErrProtocol = errors.New("resp: protocol error")

// maxBulk bounds a bulk reply (Redis's proto-max-bulk-len is at most 512 MB by default).
const maxBulk = 1 << 31

// Conn is one connection: a pipeline is written with Array/Bulk... and Flush, then its replies
// are read with Read, in order. A Conn is used by one goroutine at a time (see Pool).
type Conn struct {
	nc      net.Conn
	br      *bufio.Reader
	out     []byte
	bufs    net.Buffers
	timeout time.Duration
	broken  error
	pending int // commands written whose replies are not read yet

	created, used time.Time
	user, pass    string // what the connection authenticated with
	checked       time.Time
}

// bigArg: an argument at least this long is sent from its own buffer (writev), not copied.
const bigArg = 64 << 10

func newConn(nc net.Conn, timeout time.Duration) *Conn {
	now := time.Now()
	return &Conn{nc: nc, br: bufio.NewReaderSize(nc, 128<<10), out: make([]byte, 0, 64<<10), timeout: timeout, created: now, used: now, checked: now}
}

// Head is the framing of a command's first words, built once (NewHead) for a command sent for
// every key: one append instead of a length and a word each.
type Head []byte

// NewHead frames a command of n arguments that starts with words, as Array and String do.
func NewHead(n int, words ...string) Head {
	var c Conn
	c.Array(n)
	c.Args(NewArgs(words...))
	return c.out
}

// NewArgs frames arguments sent as they are after a head, as String writes each.
func NewArgs(words ...string) Head {
	var c Conn
	for _, w := range words {
		c.String(w)
	}
	return c.out
}

// Start starts a command with its head; its other arguments follow with Bulk, Int, Args...
func (c *Conn) Start(h Head) {
	c.pending++
	c.out = append(c.out, h...)
}

// Args writes arguments framed by NewArgs.
func (c *Conn) Args(a Head) { c.out = append(c.out, a...) }

// Array starts a command of n arguments.
func (c *Conn) Array(n int) {
	c.pending++
	c.out = append(c.out, '*')
	c.out = appendInt(c.out, int64(n))
	c.out = append(c.out, '\r', '\n')
}

func (c *Conn) bulkHeader(n int) {
	c.out = append(c.out, '$')
	c.out = appendInt(c.out, int64(n))
	c.out = append(c.out, '\r', '\n')
}

// appendInt appends i in decimal. Most numbers a command's framing carries are lengths under
// 1000, for which strconv's general path (with its copy from a table) costs more than the
// digits: about 17 numbers frame each key a copy reads and writes.
func appendInt(b []byte, i int64) []byte {
	switch {
	case i < 0:
		return strconv.AppendInt(b, i, 10)
	case i < 10:
		return append(b, byte('0'+i))
	case i < 100:
		return append(b, byte('0'+i/10), byte('0'+i%10))
	case i < 1000:
		return append(b, byte('0'+i/100), byte('0'+i/10%10), byte('0'+i%10))
	}
	return strconv.AppendInt(b, i, 10)
}

// Bulk writes one argument. A big one is sent from b itself, which must then stay unchanged
// until Flush.
func (c *Conn) Bulk(b []byte) {
	c.bulkHeader(len(b))
	if len(b) >= bigArg {
		c.bufs = append(c.bufs, c.out)
		c.bufs = append(c.bufs, b)
		c.out = c.out[len(c.out):]
		c.out = append(c.out, '\r', '\n')
		return
	}
	c.out = append(c.out, b...)
	c.out = append(c.out, '\r', '\n')
}

// String writes one argument.
func (c *Conn) String(s string) {
	c.bulkHeader(len(s))
	c.out = append(c.out, s...)
	c.out = append(c.out, '\r', '\n')
}

// Concat writes one argument made of a and b (a key and its prefix) without joining them first.
func (c *Conn) Concat(a string, b []byte) {
	c.bulkHeader(len(a) + len(b))
	c.out = append(c.out, a...)
	c.out = append(c.out, b...)
	c.out = append(c.out, '\r', '\n')
}

// Int writes an integer argument.
func (c *Conn) Int(i int64) {
	var tmp [20]byte
	d := appendInt(tmp[:0], i)
	c.bulkHeader(len(d))
	c.out = append(c.out, d...)
	c.out = append(c.out, '\r', '\n')
}

// Flush sends what was written, and starts the round trip's deadline.
func (c *Conn) Flush() error {
	if c.broken != nil {
		return c.broken
	}
	c.used = time.Now()
	if c.timeout > 0 {
		if err := c.nc.SetDeadline(c.used.Add(c.timeout)); err != nil {
			return c.fail(err)
		}
	}
	var err error
	if len(c.bufs) == 0 {
		_, err = c.nc.Write(c.out)
	} else {
		bufs := append(c.bufs, c.out)
		_, err = bufs.WriteTo(c.nc)
		clear(c.bufs[:cap(c.bufs)])
		c.bufs = c.bufs[:0]
	}
	c.out = c.out[:0]
	if err != nil {
		return c.fail(err)
	}
	return nil
}

func (c *Conn) fail(err error) error {
	if c.broken == nil {
		c.broken = err
	}
	return err
}

// Pending is the number of replies still to be read.
func (c *Conn) Pending() int { return c.pending }

// Broken is the I/O or protocol error that made the connection unusable (nil while usable).
func (c *Conn) Broken() error { return c.broken }

// ReadArray reads the header of the next reply; for an array (Type '*', length Int) its
// elements are then read with Elem. Other replies are read whole, as by Read.
func (c *Conn) ReadArray(buf []byte) (Reply, []byte, error) {
	if c.broken != nil {
		return Reply{}, buf, c.broken
	}
	c.pending--
	r, buf, err := c.read(buf, false)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Reply{}, buf, c.fail(err)
	}
	return r, buf, nil
}

// Elem reads one element of an array whose header ReadArray returned.
func (c *Conn) Elem(buf []byte) (Reply, []byte, error) {
	c.pending++
	return c.Read(buf)
}

// ElemArray reads the header of an element that is itself an array (see ReadArray).
func (c *Conn) ElemArray(buf []byte) (Reply, []byte, error) {
	c.pending++
	return c.ReadArray(buf)
}

// Read reads the next reply. A bulk string is appended to buf, which is returned (grown when
// needed); Reply.Bytes is that part of it. Nested arrays are read and dropped (the hot
// commands do not answer with arrays). The error is for I/O or protocol failures only; the
// connection is then unusable.
func (c *Conn) Read(buf []byte) (Reply, []byte, error) {
	if c.broken != nil {
		return Reply{}, buf, c.broken
	}
	c.pending--
	r, buf, err := c.read(buf, true)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Reply{}, buf, c.fail(err)
	}
	return r, buf, nil
}

func (c *Conn) line() ([]byte, error) {
	l, err := c.br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return nil, fmt.Errorf("%w: reply line longer than %d bytes", ErrProtocol, c.br.Size())
		}
		return nil, err
	}
	if len(l) < 3 || l[len(l)-2] != '\r' {
		return nil, fmt.Errorf("%w: malformed reply line %q", ErrProtocol, l)
	}
	return l[:len(l)-2], nil
}

func parseInt(b []byte) (int64, error) {
	if len(b) == 0 || len(b) > 20 {
		return 0, fmt.Errorf("%w: bad integer %q", ErrProtocol, b)
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, fmt.Errorf("%w: bad integer %q", ErrProtocol, b)
		}
	}
	var n int64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, fmt.Errorf("%w: bad integer %q", ErrProtocol, b)
		}
		n = n*10 + int64(ch-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

func (c *Conn) read(buf []byte, deep bool) (Reply, []byte, error) {
	l, err := c.line()
	if err != nil {
		return Reply{}, buf, err
	}
	r := Reply{Type: l[0]}
	switch l[0] {
	case '+':
		r.Bytes = l[1:]
	case '-':
		if string(l[1:]) == errWrongType.msg {
			r.Err = errWrongType // no allocation
		} else {
			r.Err = &Error{msg: string(l[1:])}
		}
	case ':':
		r.Int, err = parseInt(l[1:])
	case '$':
		var n int64
		if n, err = parseInt(l[1:]); err != nil {
			break
		}
		if n < 0 {
			r.Nil = true
			break
		}
		if n > maxBulk {
			return r, buf, fmt.Errorf("%w: bulk of %d bytes", ErrProtocol, n)
		}
		start := len(buf)
		buf = grow(buf, int(n)+2)
		if dst := buf[start : start+int(n)+2]; c.br.Buffered() >= len(dst) {
			// Most payloads are already in the read buffer: copied out without io.ReadFull's
			// calls through the io.Reader interface.
			b, _ := c.br.Peek(len(dst))
			copy(dst, b)
			_, _ = c.br.Discard(len(dst))
		} else if _, err = io.ReadFull(c.br, dst); err != nil {
			return r, buf[:start], err
		}
		if buf[start+int(n)] != '\r' || buf[start+int(n)+1] != '\n' {
			return r, buf[:start], fmt.Errorf("%w: bulk not ended by CRLF", ErrProtocol)
		}
		buf = buf[:start+int(n)]
		r.Bytes = buf[start:]
	case '*':
		if r.Int, err = parseInt(l[1:]); err != nil {
			break
		}
		if r.Int < 0 {
			r.Nil = true
			break
		}
		if !deep {
			break
		}
		for i := int64(0); i < r.Int; i++ {
			var sub Reply
			mark := len(buf)
			if sub, buf, err = c.read(buf, true); err != nil {
				return r, buf, err
			}
			_ = sub
			buf = buf[:mark]
		}
	default:
		return r, buf, fmt.Errorf("%w: unexpected reply type %q", ErrProtocol, l[0])
	}
	return r, buf, err
}

// grow makes room for n more bytes after len(b).
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, max(2*cap(b), len(b)+n))
	copy(nb, b)
	return nb
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.fail(net.ErrClosed)
	return c.nc.Close()
}

// Do sends one command and reads its reply (connection setup; not for the hot path).
func (c *Conn) Do(args ...string) (Reply, error) {
	c.Array(len(args))
	for _, a := range args {
		c.String(a)
	}
	if err := c.Flush(); err != nil {
		return Reply{}, err
	}
	r, _, err := c.Read(nil)
	return r, err
}
