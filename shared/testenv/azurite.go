package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
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
	bin, err := AzuriteBinary()
	if err != nil {
		t.Fatalf("%v", err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		a, err := startAzurite(bin, t.TempDir())
		if err == nil {
			t.Cleanup(a.Stop)
			return a
		}
		lastErr = err
	}
	t.Fatalf("start azurite: %v", lastErr)
	return nil
}

func startAzurite(bin, dir string) (*Azurite, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "azurite.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		// --location conflicts with --inMemoryPersistence in Azurite 3.35; the working directory
		// (a temporary dir) catches anything it writes anyway.
		"--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry")
	cmd.Dir = dir
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
