package copier

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/plan"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/resp"
)

// The hand-written RESP path (shared/resp) of the copy's stages: go-redis spends about 1 us of
// CPU per command (a command object, boxed arguments, reply parsing, hooks) and the copy sends
// four per key; see README "How it is built".

// rawSide is one endpoint's raw connections: every key goes to one node (a standalone server,
// or the replica a cluster shard is read from), or, in a cluster, to the master of its slot as
// go-redis's cluster client sees it.
type rawSide struct {
	conn  *redisconn.Conn
	db    int
	fixed string // the node of every key; "" routes by slot
	read  bool   // routed keys are read where the endpoint reads its masters' keys (ReadAddr)
}

// readerFor is the source reader of batch b: the raw path, or go-redis (src) when the copier
// has no source connection of its own (tests) or the raw path is turned off.
func (c *Copier) readerFor(b plan.Batch, src redis.UniversalClient) reader {
	if c.Src == nil || c.Opts.GoRedisOnly {
		return goReader{src}
	}
	s := &rawSide{conn: c.Src, db: b.DB}
	if !c.Src.Cluster {
		s.fixed = c.Src.Endpoint.Addr()
	} else if ms := c.Src.Masters(); b.Shard >= 0 && b.Shard < len(ms) {
		if r := c.Src.ReadAddr(ms[b.Shard]); r != ms[b.Shard] {
			s.fixed = r // --read-from-replica: the shard's chosen replica, as ReadKeys
		}
	}
	return rawReader{s}
}

// writerFor is the target writer for dst: the raw path when dst is the target's own client for
// a database (what Keys returns), go-redis otherwise.
func (c *Copier) writerFor(dst redis.UniversalClient) writer {
	if c.Dst == nil || c.Opts.GoRedisOnly {
		return goWriter{dst}
	}
	switch d := dst.(type) {
	case *redis.Client:
		if db := d.Options().DB; !c.Dst.Cluster && c.Dst.Keys(db) == dst {
			return rawWriter{&rawSide{conn: c.Dst, db: db, fixed: c.Dst.Endpoint.Addr()}}
		}
	case *redis.ClusterClient:
		if c.Dst.Cluster && c.Dst.Keys(0) == dst {
			return rawWriter{&rawSide{conn: c.Dst}}
		}
	}
	return goWriter{dst}
}

// leg is the part of a stage sent to one node.
type leg struct {
	pool *resp.Pool
	cn   *resp.Conn
	idx  []int
}

// legs groups keys 0..n-1 (key(i), with prefix) by node. Keys whose node is unknown go to redo.
func (s *rawSide) legs(ctx context.Context, n int, prefix string, key func(i int) []byte) ([]*leg, []int) {
	if s.fixed != "" {
		l := &leg{pool: s.conn.RawPool(s.fixed, s.db), idx: make([]int, n)}
		for i := range l.idx {
			l.idx[i] = i
		}
		return []*leg{l}, nil
	}
	var out []*leg
	var redo []int
	var buf []byte
	for i := 0; i < n; i++ {
		k := key(i)
		if prefix != "" {
			buf = append(append(buf[:0], prefix...), k...)
			k = buf
		}
		addr, err := s.conn.MasterOf(ctx, k)
		if err != nil {
			redo = append(redo, i)
			continue
		}
		if s.read {
			addr = s.conn.ReadAddr(addr)
		}
		var l *leg
		for _, o := range out {
			if o.pool.Addr() == addr {
				l = o
				break
			}
		}
		if l == nil {
			l = &leg{pool: s.conn.RawPool(addr, s.db)}
			out = append(out, l)
		}
		l.idx = append(l.idx, i)
	}
	return out, redo
}

// run sends every leg's commands (write(cn, i) for each of its keys), then reads their replies
// in order (read(cn, i)). A read error leaves the connection broken; it is closed, not reused.
func runLegs(ctx context.Context, legs []*leg, write func(cn *resp.Conn, i int), read func(cn *resp.Conn, i int) error) error {
	defer func() {
		for _, l := range legs {
			if l.cn != nil {
				l.pool.Put(l.cn)
				l.cn = nil
			}
		}
	}()
	for _, l := range legs {
		cn, err := l.pool.Get(ctx)
		if err != nil {
			return err
		}
		l.cn = cn
		for _, i := range l.idx {
			write(cn, i)
		}
		if err := cn.Flush(); err != nil {
			return err
		}
	}
	for _, l := range legs {
		for _, i := range l.idx {
			if err := read(l.cn, i); err != nil {
				return err
			}
		}
	}
	return nil
}

// redirected: the reply is about the cluster, not the key; go-redis is asked again.
func redirected(side *rawSide, e *resp.Error) bool {
	m := e.Error()
	switch {
	case strings.HasPrefix(m, "MOVED ") || strings.HasPrefix(m, "ASK "):
		side.conn.ForgetSlots()
		return true
	case strings.HasPrefix(m, "TRYAGAIN") || strings.HasPrefix(m, "CLUSTERDOWN"):
		return true
	}
	return false
}

// errUnexpected: a reply of a type the command never answers with (go-redis reports such
// replies as its own errors, not the server's).
var errUnexpected = errors.New("redis: unexpected reply type")

// rawReader reads with the raw path.
type rawReader struct{ s *rawSide }

func (r rawReader) sizes(ctx context.Context, keys [][]byte, n []int64, errs []error) ([]int, error) {
	legs, redo := r.s.legs(ctx, len(keys), "", func(i int) []byte { return keys[i] })
	var scratch []byte
	err := runLegs(ctx, legs, func(cn *resp.Conn, i int) {
		cn.Start(headMemoryUsage)
		cn.Bulk(keys[i])
	}, func(cn *resp.Conn, i int) error {
		rep, b, err := cn.Read(scratch[:0])
		scratch = b
		switch {
		case err != nil:
			return err
		case rep.Err != nil && redirected(r.s, rep.Err):
			redo = append(redo, i)
		case rep.Err != nil:
			errs[i] = rep.Err
		case rep.Nil:
			errs[i] = redis.Nil
		case rep.Type == ':':
			n[i] = rep.Int
		default:
			errs[i] = errUnexpected
		}
		return nil
	})
	return redo, err
}

func (r rawReader) dumps(ctx context.Context, st *dumpStage) ([]int, error) {
	keys := st.keys
	legs, redo := r.s.legs(ctx, len(keys), "", func(i int) []byte { return keys[i] })
	// Every payload of the run is read into one buffer, which is not written again once a
	// payload is in it: the payloads are strings over it, without a copy each. The buffer is
	// reused (releaseArena) only after the run's RESTOREs are done.
	arena := getArena(int(min(max(st.held+st.held/4, 4<<10), 64<<20)))
	defer func() { st.arena = arena }()
	var rangeArgs resp.Head
	if st.strLen > 0 {
		rangeArgs = resp.NewArgs("0", strconv.FormatInt(st.strLen-1, 10))
	}
	ttlHead := headPTTL
	if st.pexpiretime {
		ttlHead = headPExpireTime
	}
	err := runLegs(ctx, legs, func(cn *resp.Conn, i int) {
		if st.strLen > 0 {
			cn.Start(headGetRange)
			cn.Bulk(keys[i])
			cn.Args(rangeArgs)
		} else {
			cn.Start(headDump)
			cn.Bulk(keys[i])
		}
		cn.Start(ttlHead)
		cn.Bulk(keys[i])
	}, func(cn *resp.Conn, i int) error {
		rep, b, err := cn.Read(arena)
		if err != nil {
			return err
		}
		again := false
		switch {
		case rep.Err != nil && redirected(r.s, rep.Err):
			again = true
		case rep.Err != nil:
			st.dumpErr[i] = rep.Err
		case rep.Nil:
			st.dumpErr[i] = redis.Nil
		case rep.Type == '$':
			arena = b
			if len(rep.Bytes) > 0 {
				st.data[i] = unsafe.String(&rep.Bytes[0], len(rep.Bytes))
			}
		case rep.Type == '+':
			st.data[i] = string(rep.Bytes)
		default:
			st.dumpErr[i] = errUnexpected
		}
		rep, _, err = cn.Read(nil)
		if err != nil {
			return err
		}
		switch {
		case rep.Err != nil && redirected(r.s, rep.Err):
			again = true
		case rep.Err != nil:
			st.ttlErr[i] = rep.Err
		case rep.Type == ':':
			st.ttl[i] = rep.Int
		default:
			st.ttlErr[i] = errUnexpected
		}
		if again {
			redo = append(redo, i)
		}
		return nil
	})
	return redo, err
}

var arenas sync.Pool // *[]byte

func getArena(n int) []byte {
	if p, ok := arenas.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:0]
	}
	return make([]byte, 0, n)
}

// putArena gives a payload buffer back for reuse once nothing reads the payloads in it.
func putArena(a []byte) {
	if a != nil && cap(a) <= 8<<20 {
		b := a[:0]
		arenas.Put(&b)
	}
}

var stages sync.Pool // *dumpStage

// newDumpStage is a stage for keys, with its per-key slices reused from an earlier run.
func newDumpStage(keys [][]byte, pexpiretime bool, held int64) *dumpStage {
	st, _ := stages.Get().(*dumpStage)
	if st == nil || cap(st.data) < len(keys) {
		n := max(len(keys), 256)
		st = &dumpStage{data: make([]string, n), dumpErr: make([]error, n), ttl: make([]int64, n), ttlErr: make([]error, n), out: make([]Payload, 0, n)}
	}
	n := len(keys)
	st.keys, st.pexpiretime, st.held, st.strLen = keys, pexpiretime, held, 0
	st.data, st.dumpErr, st.ttl, st.ttlErr = st.data[:n], st.dumpErr[:n], st.ttl[:n], st.ttlErr[:n]
	return st
}

// release gives the stage and its payload buffer back once nothing holds the run's payloads
// (they are written); the next run reuses both.
func (st *dumpStage) release() {
	putArena(st.arena)
	clear(st.data)
	clear(st.dumpErr)
	clear(st.ttl)
	clear(st.ttlErr)
	clear(st.out[:cap(st.out)])
	*st = dumpStage{data: st.data[:0], dumpErr: st.dumpErr[:0], ttl: st.ttl[:0], ttlErr: st.ttlErr[:0], out: st.out[:0]}
	stages.Put(st)
}

// The heads of the commands sent for every key, framed once. SET takes 3 to 6 arguments
// (PXAT t, NX), RESTORE 4 to 8 (ABSTTL, REPLACE, IDLETIME or FREQ n).
var (
	headMemoryUsage = resp.NewHead(3, "MEMORY", "USAGE")
	headGetRange    = resp.NewHead(4, "GETRANGE")
	headDump        = resp.NewHead(2, "DUMP")
	headPExpireTime = resp.NewHead(2, "PEXPIRETIME")
	headPTTL        = resp.NewHead(2, "PTTL")
	headSet         = heads("SET", 6)
	headRestore     = heads("RESTORE", 8)
)

// heads are the heads of cmd with 1..most arguments, by count.
func heads(cmd string, most int) []resp.Head {
	out := make([]resp.Head, most+1)
	for n := 1; n <= most; n++ {
		out[n] = resp.NewHead(n, cmd)
	}
	return out
}

// rawWriter writes with the raw path.
type rawWriter struct{ s *rawSide }

func (w rawWriter) restores(ctx context.Context, prefix string, replace bool, items []Payload, errs []error) ([]int, error) {
	legs, redo := w.s.legs(ctx, len(items), prefix, func(i int) []byte { return items[i].Key })
	err := runLegs(ctx, legs, func(cn *resp.Conn, i int) {
		d := &items[i]
		if d.Str {
			n := 3
			if d.ExpireAt > 0 {
				n += 2
			}
			if !replace {
				n++
			}
			cn.Start(headSet[n])
			cn.Concat(prefix, d.Key)
			cn.Bulk(unsafe.Slice(unsafe.StringData(d.Data), len(d.Data)))
			if d.ExpireAt > 0 {
				cn.String("PXAT")
				cn.Int(d.ExpireAt)
			}
			if !replace {
				cn.String("NX")
			}
			return
		}
		n := 4
		if d.ExpireAt > 0 {
			n++
		}
		if replace {
			n++
		}
		if d.Idle >= 0 || d.Freq >= 0 {
			n += 2
		}
		cn.Start(headRestore[n])
		cn.Concat(prefix, d.Key)
		cn.Int(d.ExpireAt)
		cn.Bulk(unsafe.Slice(unsafe.StringData(d.Data), len(d.Data)))
		if d.ExpireAt > 0 {
			cn.String("ABSTTL")
		}
		if replace {
			cn.String("REPLACE")
		}
		if d.Idle >= 0 {
			cn.String("IDLETIME")
			cn.Int(d.Idle)
		} else if d.Freq >= 0 {
			cn.String("FREQ")
			cn.Int(int64(d.Freq))
		}
	}, func(cn *resp.Conn, i int) error {
		rep, _, err := cn.Read(nil)
		switch {
		case err != nil:
			return err
		case rep.Err != nil && redirected(w.s, rep.Err):
			redo = append(redo, i)
		case rep.Err != nil:
			errs[i] = rep.Err
		case rep.Type == '+':
		case rep.Nil && items[i].Str:
			errs[i] = errBusyKey // SET ... NX: the key exists
		default:
			errs[i] = errUnexpected
		}
		return nil
	})
	return redo, err
}
