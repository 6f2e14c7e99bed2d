package redisconn

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// MaxReplicaLagBytes is how far behind its master (replication offset) a replica may be to be
// read from.
const MaxReplicaLagBytes = 1 << 20

// ReadAddr is the node a master's keys are read from: the master, or its chosen replica after
// UseReplicas.
func (c *Conn) ReadAddr(master string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.readFrom[master]; ok {
		return r
	}
	return master
}

// UseReplicas makes a cluster endpoint read every master's keys from one of its replicas that is
// in sync (master_link_status up as seen by the master: state=online, offset within
// MaxReplicaLagBytes). A master without such a replica is an error naming it.
func (c *Conn) UseReplicas(ctx context.Context) error {
	if !c.Cluster {
		return fmt.Errorf("%s %s: --read-from-replica is for a cluster; for a standalone server give the replica's URL as the source", c.opts.Role, c.Endpoint)
	}
	text, err := c.Node(c.masters[0], 0).ClusterNodes(ctx).Result()
	if err != nil {
		return c.describe(err)
	}
	idOf := map[string]string{}         // addr -> node id
	replicasOf := map[string][]string{} // master id -> replica addrs
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr := strings.SplitN(strings.SplitN(f[1], "@", 2)[0], ",", 2)[0]
		if h, p, err := net.SplitHostPort(addr); err == nil && h == "" {
			addr = net.JoinHostPort(c.Endpoint.Host, p)
		}
		idOf[addr] = f[0]
		if strings.Contains(f[2], "slave") && !strings.Contains(f[2], "fail") {
			replicasOf[f[3]] = append(replicasOf[f[3]], addr)
		}
	}
	chosen := map[string]string{}
	for _, m := range c.masters {
		var why []string
		for _, r := range replicasOf[idOf[m]] {
			if err := c.replicaInSync(ctx, m, r); err != nil {
				why = append(why, err.Error())
				continue
			}
			chosen[m] = r
			break
		}
		if _, ok := chosen[m]; !ok {
			if len(why) == 0 {
				why = append(why, "it has no replica")
			}
			return fmt.Errorf("%s master %s: no replica to read from: %s", c.opts.Role, m, strings.Join(why, "; "))
		}
	}
	c.mu.Lock()
	c.readFrom = chosen
	c.replicaAddr = map[string]bool{}
	for _, r := range chosen {
		c.replicaAddr[r] = true
	}
	c.mu.Unlock()
	return nil
}

// replicaInSync checks replica r of master m from the master's side (INFO replication).
func (c *Conn) replicaInSync(ctx context.Context, m, r string) error {
	info, err := c.Node(m, 0).Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	f := parseInfo(info)
	moff, _ := strconv.ParseInt(f["master_repl_offset"], 10, 64)
	host, port, _ := net.SplitHostPort(r)
	for k, v := range f {
		if !strings.HasPrefix(k, "slave") || !strings.Contains(v, "port=") {
			continue
		}
		kv := map[string]string{}
		for _, p := range strings.Split(v, ",") {
			if a, b, ok := strings.Cut(p, "="); ok {
				kv[a] = b
			}
		}
		if kv["port"] != port || (kv["ip"] != host && host != "") {
			continue
		}
		off, _ := strconv.ParseInt(kv["offset"], 10, 64)
		switch {
		case kv["state"] != "online":
			return fmt.Errorf("replica %s is %s, not online", r, kv["state"])
		case moff-off > MaxReplicaLagBytes:
			return fmt.Errorf("replica %s is %d bytes behind its master", r, moff-off)
		}
		return nil
	}
	return fmt.Errorf("replica %s is not connected to its master", r)
}

// CheckReplicaInSync checks, when a standalone endpoint is a replica, that it is in sync with
// its master: the link is up, no full sync is running, and (when the master answers with the
// same credentials) its offset is within MaxReplicaLagBytes, else the master was heard from in
// the last 10 seconds. It returns a description of the replica, or "" for a master.
func (c *Conn) CheckReplicaInSync(ctx context.Context) (string, error) {
	if c.Cluster {
		return "", nil
	}
	info, err := c.Node(c.masters[0], 0).Info(ctx, "replication").Result()
	if err != nil {
		return "", c.describe(err)
	}
	f := parseInfo(info)
	if f["role"] != "slave" {
		return "", nil
	}
	master := net.JoinHostPort(f["master_host"], f["master_port"])
	bad := func(why string) error {
		return fmt.Errorf("%s %s is a replica of %s that is not in sync (%s): read from its master, or wait until the replica has caught up",
			c.opts.Role, c.Endpoint, master, why)
	}
	if f["master_link_status"] != "up" {
		return "", bad("master_link_status:" + f["master_link_status"])
	}
	if f["master_sync_in_progress"] == "1" {
		return "", bad("a full sync is in progress")
	}
	roff, _ := strconv.ParseInt(f["slave_repl_offset"], 10, 64)
	mc := redis.NewClient(&redis.Options{Addr: master, Username: c.Endpoint.Username, Password: c.Endpoint.Password,
		TLSConfig: c.tlsConf, MaxRetries: -1, DialTimeout: c.opts.DialTimeout, DisableIdentity: true, Protocol: 2})
	defer mc.Close()
	if minfo, err := mc.Info(ctx, "replication").Result(); err == nil {
		moff, _ := strconv.ParseInt(parseInfo(minfo)["master_repl_offset"], 10, 64)
		if moff-roff > MaxReplicaLagBytes {
			return "", bad(fmt.Sprintf("%d bytes behind", moff-roff))
		}
		return fmt.Sprintf("replica of %s, %d bytes behind", master, max(moff-roff, 0)), nil
	}
	if io, _ := strconv.Atoi(f["master_last_io_seconds_ago"]); io > 10 {
		return "", bad(fmt.Sprintf("nothing from the master for %d seconds", io))
	}
	return fmt.Sprintf("replica of %s (link up)", master), nil
}

// ReadKeys is the client a batch of shard's keys (shard: index in Masters) is read with: the
// cluster client, or after UseReplicas the chosen replica itself. go-redis's ReadOnly routing
// would keep a pipeline on the master as soon as one command in it (MEMORY USAGE, a container
// command) is not flagged read-only, and would pick any replica, not the one checked in sync.
func (c *Conn) ReadKeys(shard, db int) redis.UniversalClient {
	c.mu.Lock()
	var replica string
	if shard >= 0 && shard < len(c.masters) {
		replica = c.readFrom[c.masters[shard]]
	}
	c.mu.Unlock()
	if replica == "" {
		return c.Keys(db)
	}
	return c.Node(replica, db)
}
