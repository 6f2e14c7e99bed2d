// Package testenv starts the real servers that integration tests and the demo need: redis-server
// (standalone and a 3-master cluster), Valkey 8 and Azurite, each on free loopback ports, and stops
// them when the test ends. Nothing here fakes a server.
package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TB is the part of testing.TB the helpers use, so the demo command can use them too.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Logf(format string, args ...any)
}

var _ TB = (testing.TB)(nil)

// Server is one running redis-server (or valkey-server) process.
type Server struct {
	Addr string
	Port int
	Dir  string
	bin  string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	dead chan struct{} // closed when cmd has exited
	once sync.Once
}

// URL returns the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr }

// Pid is the server's process id (the benchmarks read its CPU time from /proc).
func (s *Server) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Client returns a client for database db; it is closed when the test ends.
func (s *Server) Client(t TB, db int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DB: db, MaxRetries: 2, ReadTimeout: 2 * time.Minute})
	t.Cleanup(func() { c.Close() })
	return c
}

// Stop kills the server and waits for it.
func (s *Server) Stop() {
	s.once.Do(s.Kill)
}

// Kill ends the server process abruptly (SIGKILL, as a crash would) and waits for it; its
// directory, with any AOF or RDB file, stays for Restart.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, dead := s.cmd, s.dead
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
		if dead != nil {
			<-dead
		}
	}
}

// Restart kills the server and starts it again on the same port, in the same directory, with the
// same options (so a server with --appendonly yes comes back with its data, under a new
// run_id). With wait it returns once the server answers PING; without, as soon as the process
// runs (it may still answer LOADING).
func (s *Server) Restart(t TB, wait bool) {
	t.Helper()
	s.Kill()
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		cmd := exec.Command(s.bin, s.args...)
		cmd.Dir = s.Dir
		if err := cmd.Start(); err != nil {
			t.Fatalf("restart %s: %v", s.Addr, err)
		}
		dead := make(chan struct{})
		go func() { _ = cmd.Wait(); close(dead) }()
		s.mu.Lock()
		s.cmd, s.dead = cmd, dead
		s.mu.Unlock()
		lastErr = waitUp(s, dead, wait)
		if lastErr == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may not be free yet
	}
	t.Fatalf("restart %s: %v", s.Addr, lastErr)
}

// waitUp waits until the server answers (PING, or any reply at all when !full).
func waitUp(s *Server, exited chan struct{}, full bool) error {
	deadline := time.Now().Add(30 * time.Second)
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
			return fmt.Errorf("server exited: %s", lastLines(string(log), 5))
		default:
		}
		err := c.Ping(context.Background()).Err()
		if err == nil || strings.Contains(err.Error(), "NOAUTH") {
			return nil
		}
		if !full && strings.Contains(err.Error(), "LOADING") {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("server on port %d did not answer PING in time", s.Port)
}

// RepoRoot finds the repository root (the folder holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for i := 0; i < 6; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		dir = filepath.Dir(dir)
	}
	wd, _ := os.Getwd()
	return wd
}

// RedisServerBinary is the redis-server on PATH.
func RedisServerBinary() (string, error) { return exec.LookPath("redis-server") }

// ValkeyServerBinary is the Valkey 8 server unpacked by .ci/install-deps.sh, if any.
func ValkeyServerBinary() (string, error) {
	if p := os.Getenv("VALKEY_SERVER"); p != "" {
		return p, nil
	}
	p := filepath.Join(RepoRoot(), ".tools", "valkey", "usr", "bin", "valkey-server")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("valkey-server not found at %s (run .ci/install-deps.sh)", p)
	}
	return p, nil
}

// FreePort asks the kernel for a free loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartRedis starts a standalone redis-server with DEBUG enabled and no persistence.
func StartRedis(t TB, extra ...string) *Server {
	t.Helper()
	bin, err := RedisServerBinary()
	if err != nil {
		t.Fatalf("redis-server not installed (run .ci/install-deps.sh): %v", err)
	}
	return StartServer(t, bin, extra...)
}

// StartValkey starts a Valkey 8 server; it skips the test when Valkey is not installed and
// REQUIRE_VALKEY is not set.
func StartValkey(t TB, extra ...string) *Server {
	t.Helper()
	bin, err := ValkeyServerBinary()
	if err != nil {
		if os.Getenv("REQUIRE_VALKEY") == "" {
			if st, ok := t.(interface{ Skipf(string, ...any) }); ok {
				st.Skipf("%v", err)
			}
		}
		t.Fatalf("%v", err)
	}
	return StartServer(t, bin, extra...)
}

// StartServer starts bin (redis-server or valkey-server) on a free port in a temporary dir.
func StartServer(t TB, bin string, extra ...string) *Server {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s, err := startServer(t.TempDir(), bin, extra...)
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		lastErr = err
	}
	t.Fatalf("start %s: %v", filepath.Base(bin), lastErr)
	return nil
}

func startServer(dir, bin string, extra ...string) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--enable-debug-command", "yes",
		"--daemonize", "no", "--logfile", filepath.Join(dir, "server.log"),
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, Dir: dir, bin: bin, args: args, cmd: cmd, dead: exited}
	if err := waitUp(s, exited, true); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	return s, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Cluster is a running 3-master redis cluster.
type Cluster struct {
	Masters []*Server
}

// Addrs lists the masters' addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		out[i] = m.Addr
	}
	return out
}

// URL is a redis:// URL pointing at the first master; the tool discovers the rest.
func (c *Cluster) URL() string { return "redis://" + c.Masters[0].Addr }

// Client returns a cluster client; it is closed when the test ends.
func (c *Cluster) Client(t TB) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ReadTimeout: 2 * time.Minute})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// StartCluster starts three redis-servers in cluster mode and joins them with
// `redis-cli --cluster create`, waiting until every node reports cluster_state:ok.
// Extra arguments go to every node.
func StartCluster(t TB, extra ...string) *Cluster {
	t.Helper()
	cl := &Cluster{}
	for i := 0; i < 3; i++ {
		args := append([]string{"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"}, extra...)
		cl.Masters = append(cl.Masters, StartRedis(t, args...))
	}
	args := append([]string{"--cluster", "create"}, cl.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v: %s", err, out)
	}
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for _, m := range cl.Masters {
		c := redis.NewClient(&redis.Options{Addr: m.Addr})
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("cluster did not reach state ok: %v %s", err, info)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
	}
	// Every node must also agree on the slot map before clients rely on it.
	for _, m := range cl.Masters {
		c := redis.NewClient(&redis.Options{Addr: m.Addr})
		for {
			slots, err := c.ClusterSlots(ctx).Result()
			if err == nil && len(slots) == 3 {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("cluster slot map incomplete: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
	}
	return cl
}

// ServerLog returns the server's log file content (for diagnostics).
func (s *Server) ServerLog() string {
	f, err := os.Open(filepath.Join(s.Dir, "server.log"))
	if err != nil {
		return ""
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

// CommandCalls is how many times c's server ran each command since its stats were last reset,
// from INFO commandstats, keyed by name as the server writes it ("dump", "memory|usage").
func CommandCalls(ctx context.Context, c *redis.Client) map[string]int64 {
	calls := map[string]int64{}
	for _, line := range strings.Split(c.Info(ctx, "commandstats").Val(), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if name, found := strings.CutPrefix(name, "cmdstat_"); ok && found {
			calls[name], _ = strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		}
	}
	return calls
}
