// Package redisconn opens the clients an endpoint needs (standalone, cluster, TLS, ACL user,
// Entra ID token) and probes what the server is: its topology, its masters and its version.
package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/resp"
)

// Options tune the clients.
type Options struct {
	PoolSize    int           // connections per node; default 16
	DialTimeout time.Duration // default 5s
	ReadTimeout time.Duration // default 60s: big DUMP/RESTOREs take a while
	// Role is "source" or "target", for messages. A target's clients never re-send a failed
	// pipeline by themselves: RESTOREs that did land would come back as BUSYKEY and be reported
	// as clashes. The caller retries the whole batch instead, knowing which keys are its own.
	Role        string
	Credentials CredentialsFunc
	// LongLived: connections stay open for hours (sync). Entra ID tokens are then refreshed on
	// open connections (re-AUTH before expiry) instead of recycling connections.
	LongLived bool
	// Streaming, when set, authenticates every connection and re-authenticates open ones with
	// each new token (tests set it; LongLived builds it for auth=entra).
	Streaming    *StreamingTokens
	ReadOnlyHint bool
}

// CredentialsFunc returns the username and password for a new connection (Entra ID tokens).
type CredentialsFunc func(ctx context.Context) (string, string, error)

// Conn is an opened endpoint.
type Conn struct {
	Endpoint *config.Endpoint
	Cluster  bool
	Version  Version
	masters  []string
	opts     Options
	tlsConf  *tls.Config

	mu      sync.Mutex
	nodes   map[string]*redis.Client
	cluster *redis.ClusterClient
	// readFrom maps a master to the replica its keys are read from (UseReplicas).
	readFrom    map[string]string
	replicaAddr map[string]bool
	// byDB caches Keys' standalone clients: Keys is called per key on hot paths.
	byDB [16]atomic.Pointer[redis.Client]
	// raw: RawPool's pools by node/db; slots: MasterOf's cache.
	raw   map[rawKey]*resp.Pool
	slots slotTable
}

// Version is the server's product and version, and the RDB version it writes (and the newest
// DUMP payload version it accepts).
type Version struct {
	Product string // "redis" or "valkey"
	Major   int
	Minor   int
	Patch   int
	RDB     int
}

func (v Version) String() string {
	return fmt.Sprintf("%s %d.%d.%d (RDB %d)", v.Product, v.Major, v.Minor, v.Patch, v.RDB)
}

// Open connects to the endpoint, checks it answers, and probes topology and version. The error
// is one line naming the role and the redacted endpoint.
func Open(ctx context.Context, ep *config.Endpoint, o Options) (*Conn, error) {
	if o.PoolSize <= 0 {
		o.PoolSize = 16
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 60 * time.Second
	}
	if o.Role == "" {
		o.Role = "server"
	}
	c := &Conn{Endpoint: ep, opts: o, nodes: map[string]*redis.Client{}}
	if ep.TLS {
		tc, err := tlsConfig(ep)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %v", o.Role, ep, err)
		}
		c.tlsConf = tc
	}
	if ep.Entra && c.opts.LongLived && c.opts.Streaming == nil && c.opts.Credentials == nil {
		cred, err := entraTokenCredential(ep)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %v", o.Role, ep, err)
		}
		c.opts.Streaming = NewStreamingTokens(cred, ep.Username)
	}
	if ep.Entra && c.opts.Credentials == nil && c.opts.Streaming == nil {
		cred, err := EntraCredentials(ep)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %v", o.Role, ep, err)
		}
		c.opts.Credentials = cred
	}
	first := c.Node(ep.Addr(), 0)
	info, err := first.Info(ctx, "server", "cluster").Result()
	if err != nil {
		c.Close()
		return nil, c.describe(err)
	}
	fields := parseInfo(info)
	c.Version = parseVersion(fields)
	switch ep.Topology {
	case config.TopologyCluster:
		c.Cluster = true
	case config.TopologyStandalone:
		c.Cluster = false
	default:
		c.Cluster = fields["cluster_enabled"] == "1"
	}
	if c.Cluster {
		if c.masters, err = discoverMasters(ctx, first, ep); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s %s: reading the cluster's masters: %s", o.Role, ep, redact.Error(err))
		}
	} else {
		c.masters = []string{ep.Addr()}
	}
	return c, nil
}

// describe turns a connection error into one clear line without secrets.
func (c *Conn) describe(err error) error {
	msg := redact.Error(err)
	var netErr net.Error
	var opErr *net.OpError
	switch {
	case strings.Contains(msg, "WRONGPASS") || strings.Contains(msg, "invalid password") || strings.Contains(msg, "invalid username-password"):
		return fmt.Errorf("%s %s: authentication failed (wrong user name or password)", c.opts.Role, c.Endpoint)
	case strings.Contains(msg, "NOAUTH"):
		return fmt.Errorf("%s %s: the server needs a password (put it in the URL: redis://user:password@host:port)", c.opts.Role, c.Endpoint)
	case errors.As(err, &opErr) || errors.As(err, &netErr):
		return fmt.Errorf("%s %s: cannot connect: %s", c.opts.Role, c.Endpoint, msg)
	default:
		return fmt.Errorf("%s %s: %s", c.opts.Role, c.Endpoint, msg)
	}
}

// maxRetries: -1 (none) for a target, see Options.Role.
func (c *Conn) maxRetries() int {
	if c.opts.Role == "target" {
		return -1
	}
	return 3
}

// Masters lists the addresses of the nodes that own keys (one for a standalone server).
func (c *Conn) Masters() []string { return append([]string(nil), c.masters...) }

// Node returns the (cached) client of one node and database; used to SCAN a shard.
func (c *Conn) Node(addr string, db int) *redis.Client {
	key := addr + "/" + strconv.Itoa(db)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.nodes[key]; ok {
		return cl
	}
	opt := &redis.Options{
		Addr: addr, DB: db, Username: c.Endpoint.Username, Password: c.Endpoint.Password,
		PoolSize: c.opts.PoolSize, DialTimeout: c.opts.DialTimeout, ReadTimeout: c.opts.ReadTimeout,
		WriteTimeout: c.opts.ReadTimeout, TLSConfig: c.tlsConf, MaxRetries: c.maxRetries(),
		DisableIdentity: true, Protocol: 2,
	}
	if c.replicaAddr[addr] {
		// A cluster replica serves reads only on connections that said READONLY.
		opt.OnConnect = func(ctx context.Context, cn *redis.Conn) error { return cn.ReadOnly(ctx).Err() }
	}
	if c.opts.Streaming != nil {
		opt.StreamingCredentialsProvider = c.opts.Streaming
	} else if c.opts.Credentials != nil {
		opt.CredentialsProviderContext = c.opts.Credentials
		// Tokens expire: recycle connections well before, so every connection re-authenticates
		// with a fresh token (azidentity refreshes it ahead of expiry).
		opt.ConnMaxLifetime = 30 * time.Minute
	}
	cl := redis.NewClient(opt)
	c.nodes[key] = cl
	return cl
}

// Keys returns the client that reads or writes keys of database db: the cluster client for a
// cluster (db must be 0), the node client otherwise.
func (c *Conn) Keys(db int) redis.UniversalClient {
	if !c.Cluster {
		if db >= 0 && db < len(c.byDB) {
			if cl := c.byDB[db].Load(); cl != nil {
				return cl
			}
			cl := c.Node(c.Endpoint.Addr(), db)
			c.byDB[db].Store(cl)
			return cl
		}
		return c.Node(c.Endpoint.Addr(), db)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cluster == nil {
		opt := &redis.ClusterOptions{
			Addrs: c.masters, Username: c.Endpoint.Username, Password: c.Endpoint.Password,
			PoolSize: c.opts.PoolSize, DialTimeout: c.opts.DialTimeout, ReadTimeout: c.opts.ReadTimeout,
			WriteTimeout: c.opts.ReadTimeout, TLSConfig: c.tlsConf, MaxRedirects: 16, MaxRetries: c.maxRetries(),
			DisableIdentity: true, Protocol: 2,
			// After UseReplicas, read-only commands (SCAN, DUMP, PEXPIRETIME) go to replicas.
			ReadOnly: len(c.readFrom) > 0,
		}
		if c.opts.Streaming != nil {
			opt.StreamingCredentialsProvider = c.opts.Streaming
		} else if c.opts.Credentials != nil {
			opt.CredentialsProviderContext = c.opts.Credentials
			opt.ConnMaxLifetime = 30 * time.Minute
		}
		c.cluster = redis.NewClusterClient(opt)
	}
	return c.cluster
}

// Streaming is the token provider that re-authenticates open connections (nil unless Entra ID
// with LongLived, or set by the caller).
func (c *Conn) Streaming() *StreamingTokens { return c.opts.Streaming }

// Close closes every client.
func (c *Conn) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		_ = n.Close()
	}
	if c.cluster != nil {
		_ = c.cluster.Close()
	}
	for _, p := range c.raw {
		p.Close()
	}
}

// KeyspaceDBs returns, for every master, the key count of each database (INFO keyspace).
func (c *Conn) KeyspaceDBs(ctx context.Context) (map[int]int64, error) {
	total := map[int]int64{}
	for _, m := range c.masters {
		info, err := c.Node(m, 0).Info(ctx, "keyspace").Result()
		if err != nil {
			return nil, c.describe(err)
		}
		for k, v := range parseInfo(info) {
			if !strings.HasPrefix(k, "db") {
				continue
			}
			db, err := strconv.Atoi(k[2:])
			if err != nil {
				continue
			}
			for _, kv := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(kv, "keys="); ok {
					cnt, _ := strconv.ParseInt(n, 10, 64)
					total[db] += cnt
				}
			}
		}
	}
	return total, nil
}

// DBSize sums DBSIZE of database db over every master.
func (c *Conn) DBSize(ctx context.Context, db int) (int64, error) {
	var sum int64
	for _, m := range c.masters {
		n, err := c.Node(m, db).DBSize(ctx).Result()
		if err != nil {
			return 0, c.describe(err)
		}
		sum += n
	}
	return sum, nil
}

func tlsConfig(ep *config.Endpoint) (*tls.Config, error) {
	// The server name stays the configured host for every node: clusters behind TLS announce
	// their nodes by IP, and the certificate names the host.
	tc := &tls.Config{ServerName: ep.Host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: ep.InsecureSkipVerify}
	if ep.ServerName != "" {
		tc.ServerName = ep.ServerName
	}
	if ep.CAFile != "" {
		pem, err := os.ReadFile(ep.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading TLS CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", ep.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func parseInfo(s string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	return out
}

func parseVersion(f map[string]string) Version {
	v := Version{Product: "redis"}
	ver := f["redis_version"]
	if f["server_name"] == "valkey" || f["valkey_version"] != "" {
		v.Product = "valkey"
		if f["valkey_version"] != "" {
			ver = f["valkey_version"]
		}
	}
	parts := strings.SplitN(ver, ".", 3)
	nums := make([]int, 3)
	for i := range parts {
		nums[i], _ = strconv.Atoi(parts[i])
	}
	v.Major, v.Minor, v.Patch = nums[0], nums[1], nums[2]
	v.RDB = rdbVersionOf(v)
	return v
}

// rdbVersionOf maps a server release to the RDB (and DUMP payload) version it writes.
func rdbVersionOf(v Version) int {
	m := v.Major*100 + v.Minor
	if v.Product == "valkey" {
		if v.Major >= 9 {
			return 80
		}
		return 11 // Valkey 7.2 and 8.x
	}
	switch {
	case m >= 800:
		return 12
	case m >= 704:
		return 12
	case m >= 702:
		return 11
	case m >= 700:
		return 10
	case m >= 500:
		return 9
	case m >= 400:
		return 8
	case m >= 302:
		return 7
	case m >= 206:
		return 6
	default:
		return 6
	}
}

func discoverMasters(ctx context.Context, c *redis.Client, ep *config.Endpoint) ([]string, error) {
	text, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
			continue
		}
		if len(f) < 9 {
			continue // a master without slots owns no keys
		}
		addr := strings.SplitN(f[1], "@", 2)[0]
		addr = strings.SplitN(addr, ",", 2)[0]
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		if host == "" { // a node that does not know its own address announces ":port"
			host = ep.Host
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("CLUSTER NODES lists no master with slots")
	}
	sort.Strings(out)
	return out, nil
}

// ProtoMaxBulkLen is the largest argument the server accepts (CONFIG GET proto-max-bulk-len);
// Redis's default of 512 MB when CONFIG is not allowed (Azure Managed Redis).
func (c *Conn) ProtoMaxBulkLen(ctx context.Context) int64 {
	const def = 512 << 20
	v, err := c.Node(c.masters[0], 0).ConfigGet(ctx, "proto-max-bulk-len").Result()
	if err != nil {
		return def
	}
	n, err := strconv.ParseInt(v["proto-max-bulk-len"], 10, 64)
	if err != nil || n <= 0 {
		return def
	}
	return n
}

// HasFieldTTL reports whether the server keeps hash field TTLs (HPEXPIREAT): Redis 7.4+,
// Valkey 9+.
func (v Version) HasFieldTTL() bool {
	if v.Product == "valkey" {
		return v.Major >= 9
	}
	return v.Major > 7 || v.Major == 7 && v.Minor >= 4
}

// Once is a command the client library must not re-send by itself after a broken connection:
// go-redis's cluster client retries regardless of MaxRetries, and a write that did land would run
// twice (a RESTORE comes back as BUSYKEY, an RPUSH into a scratch key doubles its items). The
// caller retries the whole unit of work instead.
type Once struct{ *redis.Cmd }

// NoRetry tells go-redis not to retry (a pipeline holding one is not replayed either).
func (Once) NoRetry() bool { return true }

// NewOnce builds a Once command.
func NewOnce(ctx context.Context, args ...any) Once { return Once{redis.NewCmd(ctx, args...)} }

// TLSConfig is the TLS configuration the endpoint's connections use (nil without TLS), for a
// connection opened outside go-redis (the replication link of shared/replica).
func (c *Conn) TLSConfig() *tls.Config {
	if c.tlsConf == nil {
		return nil
	}
	return c.tlsConf.Clone()
}

// Credentials returns the user name and password a new connection authenticates with (a fresh
// Entra ID token when the endpoint uses one).
func (c *Conn) Credentials(ctx context.Context) (string, string, error) {
	if c.opts.Streaming != nil {
		return c.opts.Streaming.Current()
	}
	if c.opts.Credentials != nil {
		return c.opts.Credentials(ctx)
	}
	return c.Endpoint.Username, c.Endpoint.Password, nil
}

// InfoFields is one INFO section of the server at addr, as fields.
func (c *Conn) InfoFields(ctx context.Context, addr, section string) (map[string]string, error) {
	info, err := c.Node(addr, 0).Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	return parseInfo(info), nil
}

// InfoSum sums a numeric INFO field of section over the masters. ok is false when a master does
// not report it (or INFO is refused).
func (c *Conn) InfoSum(ctx context.Context, section, field string) (n int64, ok bool) {
	for _, addr := range c.masters {
		f, err := c.InfoFields(ctx, addr, section)
		if err != nil {
			return 0, false
		}
		v, err := strconv.ParseInt(f[field], 10, 64)
		if err != nil {
			return 0, false
		}
		n += v
	}
	return n, true
}

// Evictions is the sum over the masters of INFO's evicted_keys: keys a server at its maxmemory
// dropped to make room. A run that sees it grow may have lost keys it wrote, with no error to
// tell which. ok is false when a master does not report it.
func (c *Conn) Evictions(ctx context.Context) (n int64, ok bool) {
	return c.InfoSum(ctx, "stats", "evicted_keys")
}

// RunID is the run_id of the server process at addr (INFO server): it changes whenever the
// server restarts, which is how a run notices a restart it did not otherwise see.
func (c *Conn) RunID(ctx context.Context, addr string) (string, error) {
	info, err := c.Node(addr, 0).Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	id := parseInfo(info)["run_id"]
	if id == "" {
		return "", fmt.Errorf("%s %s: INFO server has no run_id", c.opts.Role, addr)
	}
	return id, nil
}
