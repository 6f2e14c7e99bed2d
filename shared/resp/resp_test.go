package resp_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/resp"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

func dial(t *testing.T, o resp.DialOptions) *resp.Conn {
	t.Helper()
	o.Timeout = 30 * time.Second
	c, err := resp.Dial(context.Background(), o)
	if err != nil {
		t.Fatalf("dial %s: %v", o.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A pipeline whose middle commands fail: every reply comes back in order, the errors as the
// server's own (go-redis's redis.Error), and the connection stays usable.
func TestPipelineWithErrorsMidway(t *testing.T) {
	s := testenv.StartRedis(t)
	ctx := context.Background()
	gc := s.Client(t, 0)
	gc.Set(ctx, "a", "1", 0)
	gc.RPush(ctx, "list", "x")
	c := dial(t, resp.DialOptions{Addr: s.Addr})

	c.Array(2)
	c.String("GET")
	c.Bulk([]byte("a"))
	c.Array(2)
	c.String("GET")
	c.String("list") // WRONGTYPE
	c.Array(1)
	c.String("NOSUCHCOMMAND")
	c.Array(2)
	c.String("GET")
	c.String("missing")
	c.Array(3)
	c.String("INCRBY")
	c.String("n")
	c.Int(-7)
	c.Array(4)
	c.String("RESTORE")
	c.String("fresh")
	c.Int(0)
	c.String("not a payload")
	c.Array(3)
	c.String("LRANGE")
	c.String("list")
	c.Int(0) // too few arguments: an error, nothing else
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	read := func() resp.Reply {
		t.Helper()
		r, b, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		buf = b
		return r
	}
	if r := read(); r.Type != '$' || string(r.Bytes) != "1" {
		t.Fatalf("GET a = %+v", r)
	}
	r := read()
	if r.Err == nil || !strings.HasPrefix(r.Err.Error(), "WRONGTYPE") {
		t.Fatalf("GET list = %+v, want WRONGTYPE", r)
	}
	var re redis.Error
	if !errors.As(error(r.Err), &re) {
		t.Fatalf("error reply is not a redis.Error")
	}
	if r := read(); r.Err == nil || !strings.Contains(r.Err.Error(), "unknown command") {
		t.Fatalf("NOSUCHCOMMAND = %+v", r)
	}
	if r := read(); !r.Nil {
		t.Fatalf("GET missing = %+v, want nil", r)
	}
	if r := read(); r.Type != ':' || r.Int != -7 {
		t.Fatalf("INCRBY = %+v", r)
	}
	if r := read(); r.Err == nil || !strings.Contains(r.Err.Error(), "payload version or checksum") {
		t.Fatalf("RESTORE = %+v", r)
	}
	if r := read(); r.Err == nil {
		t.Fatalf("LRANGE with two args = %+v, want an error", r)
	}
	if c.Pending() != 0 {
		t.Fatalf("pending = %d", c.Pending())
	}
	// Still usable, and arrays are read whole.
	if r, err := c.Do("LRANGE", "list", "0", "-1"); err != nil || r.Type != '*' || r.Int != 1 {
		t.Fatalf("LRANGE = %+v, %v", r, err)
	}
	if r, err := c.Do("PING"); err != nil || string(r.Bytes) != "PONG" {
		t.Fatalf("PING = %+v, %v", r, err)
	}
	// WRONGTYPE is read into one shared error (the copy meets it for every key that is not a
	// string).
	if again, err := c.Do("GET", "list"); err != nil || again.Err != r.Err {
		t.Fatalf("a second WRONGTYPE is %+v (%v), want the first's error %p", again, err, r.Err)
	}
}

// Payloads bigger than the read buffer and than the write-through threshold survive a DUMP and
// RESTORE round trip byte for byte, alongside small ones in the same pipeline.
func TestBigPayloads(t *testing.T) {
	s := testenv.StartRedis(t)
	ctx := context.Background()
	gc := s.Client(t, 0)
	sizes := []int{0, 1, 100, 64 << 10, 200 << 10, 3 << 20}
	for i, n := range sizes {
		v := bytes.Repeat([]byte{byte('a' + i)}, n)
		if n > 10 {
			v[n/2] = '\r'
			v[n/2+1] = '\n'
		}
		gc.Set(ctx, "k"+string(rune('0'+i)), v, 0)
	}
	c := dial(t, resp.DialOptions{Addr: s.Addr})
	for i := range sizes {
		c.Array(2)
		c.String("DUMP")
		c.String("k" + string(rune('0'+i)))
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	var arena []byte
	var payloads [][]byte
	for range sizes {
		r, b, err := c.Read(arena)
		if err != nil || r.Type != '$' {
			t.Fatalf("DUMP: %+v %v", r, err)
		}
		arena = b
		payloads = append(payloads, append([]byte(nil), r.Bytes...))
	}
	for i, p := range payloads {
		want, _ := gc.Dump(ctx, "k"+string(rune('0'+i))).Result()
		if string(p) != want {
			t.Fatalf("payload %d differs (%d vs %d bytes)", i, len(p), len(want))
		}
		c.Array(4)
		c.String("RESTORE")
		c.Concat("copy:", []byte{byte('0' + i)})
		c.Int(0)
		c.Bulk(p)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for range payloads {
		if r, _, err := c.Read(nil); err != nil || string(r.Bytes) != "OK" {
			t.Fatalf("RESTORE: %+v %v", r, err)
		}
	}
	for i := range sizes {
		a, _ := gc.Get(ctx, "k"+string(rune('0'+i))).Result()
		b, _ := gc.Get(ctx, "copy:"+string(rune('0'+i))).Result()
		if a != b || len(a) != sizes[i] {
			t.Fatalf("key %d: copy differs (%d vs %d bytes)", i, len(b), len(a))
		}
	}
}

// Connections authenticate as go-redis's do: ACL user and password, the default user with a
// password only, a wrong password refused with the server's error; SELECT picks the database.
func TestAuthAndSelect(t *testing.T) {
	s := testenv.StartRedis(t, "--requirepass", "topsecret")
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: s.Addr, Password: "topsecret"})
	defer admin.Close()
	if err := admin.Do(ctx, "ACL", "SETUSER", "mig", "on", ">migpass", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	admin.Do(ctx, "SELECT", "3")
	a3 := redis.NewClient(&redis.Options{Addr: s.Addr, Password: "topsecret", DB: 3})
	defer a3.Close()
	a3.Set(ctx, "in3", "yes", 0)

	creds := func(u, p string) func(context.Context) (string, string, error) {
		return func(context.Context) (string, string, error) { return u, p, nil }
	}
	for _, tc := range []struct{ user, pass string }{{"mig", "migpass"}, {"", "topsecret"}} {
		c := dial(t, resp.DialOptions{Addr: s.Addr, Credentials: creds(tc.user, tc.pass), DB: 3})
		r, err := c.Do("GET", "in3")
		if err != nil || string(r.Bytes) != "yes" {
			t.Fatalf("user %q: GET in3 = %+v, %v", tc.user, r, err)
		}
	}
	_, err := resp.Dial(ctx, resp.DialOptions{Addr: s.Addr, Credentials: creds("mig", "wrong"), Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("wrong password: %v, want WRONGPASS", err)
	}
	// Without a password the first command is refused (NOAUTH), as with go-redis.
	c := dial(t, resp.DialOptions{Addr: s.Addr})
	if r, err := c.Do("GET", "x"); err != nil || r.Err == nil || !strings.HasPrefix(r.Err.Error(), "NOAUTH") {
		t.Fatalf("no password: %+v %v, want NOAUTH", r, err)
	}
}

// TLS with the configuration go-redis gets: the server name checked against the certificate.
func TestTLS(t *testing.T) {
	f := testenv.NewTLSFiles(t, "redis.test")
	s := testenv.StartRedisTLS(t, f)
	c := dial(t, resp.DialOptions{Addr: s.Addr, TLS: f.ClientConfig()})
	if r, err := c.Do("SET", "t", "v"); err != nil || string(r.Bytes) != "OK" {
		t.Fatalf("SET over TLS = %+v, %v", r, err)
	}
	big := bytes.Repeat([]byte("x"), 300<<10)
	c.Array(3)
	c.String("SET")
	c.String("big")
	c.Bulk(big)
	c.Array(2)
	c.String("GET")
	c.String("big")
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if r, _, err := c.Read(nil); err != nil || r.Err != nil {
		t.Fatalf("SET big: %+v %v", r, err)
	}
	if r, _, err := c.Read(nil); err != nil || !bytes.Equal(r.Bytes, big) {
		t.Fatalf("GET big over TLS: %v, %d bytes", err, len(r.Bytes))
	}
	bad := f.ClientConfig()
	bad.ServerName = "other.test"
	if _, err := resp.Dial(context.Background(), resp.DialOptions{Addr: s.Addr, TLS: bad, Timeout: 5 * time.Second}); err == nil {
		t.Fatalf("TLS with the wrong server name connected")
	}
}

// The pool reuses a connection that is in order and closes one that is not: broken, or put
// back with replies unread, or authenticated with credentials that have changed since.
func TestPoolReuse(t *testing.T) {
	s := testenv.StartRedis(t, "--requirepass", "admin")
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: s.Addr, Password: "admin"})
	defer admin.Close()
	if err := admin.Do(ctx, "ACL", "SETUSER", "mig", "on", ">p1", ">p2", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	pass := "p1"
	p := resp.NewPool(resp.DialOptions{Addr: s.Addr, Timeout: 10 * time.Second, Recheck: true,
		Credentials: func(context.Context) (string, string, error) { return "mig", pass, nil }})
	defer p.Close()
	id := func(c *resp.Conn) int64 {
		t.Helper()
		r, err := c.Do("CLIENT", "ID")
		if err != nil || r.Type != ':' {
			t.Fatalf("CLIENT ID: %+v %v", r, err)
		}
		return r.Int
	}
	get := func() *resp.Conn {
		t.Helper()
		c, err := p.Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1 := get()
	first := id(c1)
	p.Put(c1)
	c2 := get()
	if id(c2) != first {
		t.Fatalf("an idle connection in order was not reused")
	}
	c2.Array(1)
	c2.String("PING") // never read
	_ = c2.Flush()
	p.Put(c2)
	c3 := get()
	second := id(c3)
	if second == first {
		t.Fatalf("a connection with an unread reply was reused")
	}
	p.Put(c3)
	// A new token: the connection that authenticated with the old one is not reused.
	time.Sleep(1100 * time.Millisecond)
	pass = "p2"
	c4 := get()
	if id(c4) == second {
		t.Fatalf("a connection authenticated with old credentials was reused")
	}
	p.Put(c4)
	// A dead server: the pooled connection fails, is marked broken, and is not reused.
	s.Stop()
	c5, err := p.Get(ctx)
	if err == nil {
		if _, err = c5.Do("PING"); err == nil {
			t.Fatalf("PING to a stopped server succeeded")
		}
		if c5.Broken() == nil {
			t.Fatalf("a failed connection is not marked broken")
		}
		p.Put(c5)
	}
	if _, err := p.Get(ctx); err == nil {
		t.Fatalf("Get from a stopped server succeeded")
	}
}

// Nested arrays read element by element (SCAN's [cursor, [keys...]]), binary keys intact.
func TestReadArrayElements(t *testing.T) {
	s := testenv.StartRedis(t)
	ctx := context.Background()
	gc := s.Client(t, 0)
	want := map[string]bool{"a": true, "b\r\nc": true, "\x00\xff": true}
	for k := range want {
		gc.Set(ctx, k, "v", 0)
	}
	c := dial(t, resp.DialOptions{Addr: s.Addr})
	c.Array(4)
	c.String("SCAN")
	c.Int(0)
	c.String("COUNT")
	c.Int(100)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	r, _, err := c.ReadArray(nil)
	if err != nil || r.Type != '*' || r.Int != 2 {
		t.Fatalf("SCAN header: %+v %v", r, err)
	}
	if r, _, err = c.Elem(nil); err != nil || string(r.Bytes) != "0" {
		t.Fatalf("cursor: %+v %v", r, err)
	}
	if r, _, err = c.ElemArray(nil); err != nil || r.Int != int64(len(want)) {
		t.Fatalf("keys header: %+v %v", r, err)
	}
	var arena []byte
	got := map[string]bool{}
	for i := int64(0); i < int64(len(want)); i++ {
		var e resp.Reply
		if e, arena, err = c.Elem(arena); err != nil || e.Type != '$' {
			t.Fatalf("key: %+v %v", e, err)
		}
		got[string(e.Bytes)] = true
	}
	if len(got) != len(want) || !got["b\r\nc"] || !got["\x00\xff"] {
		t.Fatalf("keys %v, want %v", got, want)
	}
	if c.Pending() != 0 {
		t.Fatalf("pending = %d", c.Pending())
	}
	if r, err := c.Do("PING"); err != nil || string(r.Bytes) != "PONG" {
		t.Fatalf("PING after SCAN = %+v, %v", r, err)
	}
}
