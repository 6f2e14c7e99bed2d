package resp

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// DialOptions say how a connection is opened and set up. shared/redisconn fills them from the
// same configuration its go-redis clients use, and the setup is go-redis's: HELLO 2 with AUTH,
// falling back to AUTH for servers without HELLO, then SELECT and READONLY.
type DialOptions struct {
	Addr        string
	TLS         *tls.Config // nil: plain TCP
	DialTimeout time.Duration
	// Timeout bounds one round trip (writing a pipeline and reading its replies).
	Timeout time.Duration
	// Credentials returns the user name and password to authenticate with ("" password: no
	// AUTH). Called for every new connection.
	Credentials func(ctx context.Context) (user, pass string, err error)
	// Recheck: the credentials change over time (Entra ID tokens). A pooled connection whose
	// password is no longer the current one is closed instead of reused.
	Recheck  bool
	DB       int
	ReadOnly bool // send READONLY (a cluster replica read from)
	// MaxAge closes connections older than this (0: no limit), as go-redis's ConnMaxLifetime.
	MaxAge time.Duration
	// MaxIdle is the most idle connections kept (default 16); idle ones are closed after IdleTimeout
	// (default 30s).
	MaxIdle     int
	IdleTimeout time.Duration
}

// Dial opens and sets up one connection.
func Dial(ctx context.Context, o DialOptions) (*Conn, error) {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 5 * time.Minute}
	var nc net.Conn
	var err error
	if o.TLS != nil {
		td := &tls.Dialer{NetDialer: d, Config: o.TLS}
		nc, err = td.DialContext(ctx, "tcp", o.Addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", o.Addr)
	}
	if err != nil {
		return nil, err
	}
	c := newConn(nc, o.Timeout)
	if err := c.setup(ctx, o); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// setup authenticates and selects, as go-redis's connection init does with Protocol 2 and no
// client name.
func (c *Conn) setup(ctx context.Context, o DialOptions) error {
	if o.Timeout <= 0 {
		// Setup is bounded even when round trips are not.
		c.timeout = o.DialTimeout
		defer func() { c.timeout = 0; _ = c.nc.SetDeadline(time.Time{}) }()
	}
	user, pass := "", ""
	if o.Credentials != nil {
		var err error
		if user, pass, err = o.Credentials(ctx); err != nil {
			return fmt.Errorf("failed to resolve credentials: %w", err)
		}
	}
	c.user, c.pass = user, pass
	hello := []string{"HELLO", "2"}
	if pass != "" {
		u := user
		if u == "" {
			u = "default"
		}
		hello = append(hello, "AUTH", u, pass)
	}
	r, err := c.Do(hello...)
	if err != nil {
		return err
	}
	if r.Err != nil && pass != "" {
		// A server without HELLO (Redis < 6, some proxies): plain AUTH.
		if user != "" {
			r, err = c.Do("AUTH", user, pass)
		} else {
			r, err = c.Do("AUTH", pass)
		}
		if err != nil {
			return err
		}
		if r.Err != nil {
			return fmt.Errorf("failed to authenticate: %w", r.Err)
		}
	}
	var init [][]string
	if o.DB > 0 {
		init = append(init, []string{"SELECT", strconv.Itoa(o.DB)})
	}
	if o.ReadOnly {
		init = append(init, []string{"READONLY"})
	}
	for _, cmd := range init {
		r, err := c.Do(cmd...)
		if err != nil {
			return err
		}
		if r.Err != nil {
			return fmt.Errorf("failed to initialize connection options: %w", r.Err)
		}
	}
	return nil
}

// Pool keeps set-up connections to one node and database for reuse.
type Pool struct {
	o      DialOptions
	mu     sync.Mutex
	idle   []*Conn
	closed bool
}

// NewPool returns an empty pool; connections are opened on demand.
func NewPool(o DialOptions) *Pool {
	if o.MaxIdle <= 0 {
		o.MaxIdle = 16
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	return &Pool{o: o}
}

// Addr is the node the pool connects to.
func (p *Pool) Addr() string { return p.o.Addr }

// Get returns an idle connection that is still fit for use, or opens one.
func (p *Pool) Get(ctx context.Context) (*Conn, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, net.ErrClosed
		}
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if p.fit(ctx, c, now) {
			return c, nil
		}
		c.Close()
	}
	return Dial(ctx, p.o)
}

func (p *Pool) fit(ctx context.Context, c *Conn, now time.Time) bool {
	if c.broken != nil || now.Sub(c.used) > p.o.IdleTimeout || (p.o.MaxAge > 0 && now.Sub(c.created) > p.o.MaxAge) {
		return false
	}
	if p.o.Recheck && p.o.Credentials != nil && now.Sub(c.checked) > time.Second {
		u, pw, err := p.o.Credentials(ctx)
		if err != nil || u != c.user || pw != c.pass {
			return false
		}
		c.checked = now
	}
	return true
}

// Put gives a connection back; a broken one is closed.
func (p *Pool) Put(c *Conn) {
	if c == nil {
		return
	}
	if c.broken != nil || len(c.out) > 0 || c.pending != 0 {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.o.MaxIdle {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// Close closes the idle connections; connections in use are closed when put back.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}
