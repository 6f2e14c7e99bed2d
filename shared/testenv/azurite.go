package testenv

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// DevStoreAccount and DevStoreKey are Azurite's well-known development account: public values
// published in Microsoft's documentation, not secrets.
const (
	DevStoreAccount = "devstoreaccount1"
	DevStoreKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is one running azurite-blob process.
type Azurite struct {
	Port int
	// ConnectionString is the full devstoreaccount1 connection string for this instance (azblob
	// does not accept UseDevelopmentStorage=true).
	ConnectionString string
	cmd              *exec.Cmd
	once             sync.Once
	exited           chan struct{}
}

// BlobEndpoint is the account's blob service URL.
func (a *Azurite) BlobEndpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", a.Port, DevStoreAccount)
}

// Stop kills Azurite and waits for it.
func (a *Azurite) Stop() {
	a.once.Do(func() {
		if a.cmd != nil && a.cmd.Process != nil {
			_ = a.cmd.Process.Kill()
			<-a.exited
		}
	})
}

// AzuriteBinary finds azurite-blob: AZURITE_BLOB, then .tools/azurite (installed by
// .ci/install-deps.sh), then PATH.
func AzuriteBinary() (string, error) {
	if p := os.Getenv("AZURITE_BLOB"); p != "" {
		return p, nil
	}
	p := filepath.Join(RepoRoot(), ".tools", "azurite", "node_modules", ".bin", "azurite-blob")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath("azurite-blob"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("azurite-blob not found at %s or on PATH (run .ci/install-deps.sh)", p)
}

// StartAzurite starts an in-memory Azurite blob service on a free loopback port, waits until it
// accepts connections and stops it when the test ends.
func StartAzurite(t TB) *Azurite {
	t.Helper()
	return startAzuriteWith(t, "")
}

// StartAzuriteSQL starts Azurite with its blob metadata in a MySQL/MariaDB database (Azurite's
// AZURITE_DB): the in-memory store walks every blob of the account on each request, so it slows
// with the number of blobs, while the SQL store looks blobs up by index. dsn is
// mysql://user[:password]@host:port/database; the database is created empty through the mariadb (or
// mysql) client and dropped when the test ends.
func StartAzuriteSQL(t TB, dsn string) *Azurite {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme != "mysql" || u.Host == "" || len(u.Path) < 2 {
		t.Fatalf("azurite SQL store: want mysql://user@host:port/database, got %q", redact.String(dsn))
	}
	db := strings.TrimPrefix(u.Path, "/")
	if strings.ContainsAny(db, "`;' ") {
		t.Fatalf("azurite SQL store: bad database name %q", db)
	}
	drop := "DROP DATABASE IF EXISTS `" + db + "`"
	if err := mysqlExec(u, drop+"; CREATE DATABASE `"+db+"`"); err != nil {
		t.Fatalf("azurite SQL store: %v", err)
	}
	a := startAzuriteWith(t, dsn)
	// Cleanups run last-added first: Azurite stops before its database goes.
	t.Cleanup(func() { _ = mysqlExec(u, drop) })
	return a
}

// SQLReachable reports whether something accepts TCP connections at dsn's host.
func SQLReachable(dsn string) bool {
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		return false
	}
	c, err := net.DialTimeout("tcp", u.Host, 300*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func mysqlExec(u *url.URL, sql string) error {
	client, err := exec.LookPath("mariadb")
	if err != nil {
		if client, err = exec.LookPath("mysql"); err != nil {
			return fmt.Errorf("neither mariadb nor mysql client on PATH")
		}
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return err
	}
	args := []string{"-h", host, "-P", port, "-u", u.User.Username(), "-e", sql}
	cmd := exec.Command(client, args...)
	if pw, ok := u.User.Password(); ok {
		cmd.Env = append(os.Environ(), "MYSQL_PWD="+pw) // not on the command line
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", filepath.Base(client), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func startAzuriteWith(t TB, dsn string) *Azurite {
	t.Helper()
	bin, err := AzuriteBinary()
	if err != nil {
		t.Fatalf("%v", err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		a, err := startAzurite(bin, t.TempDir(), dsn)
		if err == nil {
			t.Cleanup(a.Stop)
			return a
		}
		lastErr = err
	}
	t.Fatalf("start azurite: %v", lastErr)
	return nil
}

func startAzurite(bin, dir, dsn string) (*Azurite, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "azurite.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := []string{"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port), "--skipApiVersionCheck", "--loose", "--disableTelemetry"}
	if dsn == "" {
		// --location conflicts with --inMemoryPersistence in Azurite 3.35; the working directory
		// (a temporary dir) catches anything it writes anyway.
		args = append(args, "--inMemoryPersistence")
	} else {
		// The SQL store refuses --inMemoryPersistence; blob contents go to files under dir.
		args = append(args, "--location", dir)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if dsn != "" {
		cmd.Env = append(os.Environ(), "AZURITE_DB="+dsn)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	a := &Azurite{Port: port, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(a.exited) }()
	a.ConnectionString = fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;",
		DevStoreAccount, DevStoreKey, a.BlobEndpoint())
	// Node takes a moment to start; the port answering is Azurite's own readiness signal.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-a.exited:
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("azurite exited: %s", lastLines(string(out), 5))
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return a, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.Stop()
	return nil, fmt.Errorf("azurite on port %d did not start in time", port)
}
