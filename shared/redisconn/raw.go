package redisconn

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/resp"
)

// RawPool is the pool of hand-written RESP connections (shared/resp, the copy's hot path) to
// node addr and database db. They are set up from the same configuration as Node's go-redis
// clients: the same TLS config, the same credentials (a fresh Entra ID token for each
// connection, connections recycled like go-redis's when tokens rotate), SELECT db, READONLY on a
// replica chosen by UseReplicas, the same timeouts.
func (c *Conn) RawPool(addr string, db int) *resp.Pool {
	key := rawKey{addr, db}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.raw[key]; ok {
		return p
	}
	o := resp.DialOptions{
		Addr: addr, TLS: c.tlsConf, DialTimeout: c.opts.DialTimeout, Timeout: c.opts.ReadTimeout,
		Credentials: c.Credentials, DB: db, ReadOnly: c.replicaAddr[addr], MaxIdle: c.opts.PoolSize,
	}
	if c.opts.Streaming != nil || c.opts.Credentials != nil {
		o.Recheck = true
		o.MaxAge = 30 * time.Minute
	}
	if c.raw == nil {
		c.raw = map[rawKey]*resp.Pool{}
	}
	p := resp.NewPool(o)
	c.raw[key] = p
	return p
}

// rawKey names a raw pool: a node and a database (a struct, not a joined string: looked up for
// every pipeline).
type rawKey struct {
	addr string
	db   int
}

// slotTable caches, per cluster hash slot, the master go-redis's cluster client routes it to.
type slotTable [16384]atomic.Pointer[string]

// MasterOf is the address of the master that serves key in a cluster, from go-redis's view of
// the cluster (cached per hash slot until ForgetSlots).
func (c *Conn) MasterOf(ctx context.Context, key []byte) (string, error) {
	s := Slot(key)
	if a := c.slots[s].Load(); a != nil {
		return *a, nil
	}
	cc, ok := c.Keys(0).(*redis.ClusterClient)
	if !ok {
		return c.Endpoint.Addr(), nil
	}
	cl, err := cc.MasterForKey(ctx, string(key))
	if err != nil {
		return "", err
	}
	addr := cl.Options().Addr
	c.slots[s].Store(&addr)
	return addr, nil
}

// ForgetSlots drops the cached slot owners (after a MOVED or ASK reply): the next lookups ask
// go-redis again, which reloads the topology when it follows the redirect.
func (c *Conn) ForgetSlots() {
	for i := range c.slots {
		c.slots[i].Store(nil)
	}
}

// Slot is the cluster hash slot of key (CRC16 of the key, or of its {hash tag}, mod 16384).
func Slot(key []byte) uint16 {
	for i, ch := range key {
		if ch != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j > i+1 {
					key = key[i+1 : j]
				}
				return crc16(key) & 16383
			}
		}
		break
	}
	return crc16(key) & 16383
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021), the cluster's key hash.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, v := range b {
		crc = crc<<8 ^ crc16tab[byte(crc>>8)^v]
	}
	return crc
}

var crc16tab = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()
