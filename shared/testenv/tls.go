package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// TLSFiles is a throwaway CA and a server certificate valid only for ServerName (not for any
// IP), as a managed cache's certificate names its host while cluster nodes announce IPs.
type TLSFiles struct {
	Dir, CA, Cert, Key string
	ServerName         string
	pool               *x509.CertPool
}

// ClientConfig trusts the CA and checks the server name.
func (f *TLSFiles) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: f.pool, ServerName: f.ServerName, MinVersion: tls.VersionTLS12}
}

// NewTLSFiles writes the CA and the server certificate into a temporary directory.
func NewTLSFiles(t TB, serverName string) *TLSFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redis-migrate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("CA: %v", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: serverName}, DNSNames: []string{serverName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatalf("cert: %v", err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	f := &TLSFiles{Dir: dir, CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server.key"), ServerName: serverName}
	write := func(path, typ string, b []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
	}
	write(f.CA, "CERTIFICATE", caDER)
	write(f.Cert, "CERTIFICATE", der)
	write(f.Key, "EC PRIVATE KEY", keyDER)
	f.pool = x509.NewCertPool()
	f.pool.AddCert(caCert)
	return f
}

func (f *TLSFiles) serverArgs() []string {
	return []string{"--tls-cert-file", f.Cert, "--tls-key-file", f.Key, "--tls-ca-cert-file", f.CA, "--tls-auth-clients", "no"}
}

// StartRedisTLS starts a redis-server that only speaks TLS; its Port is the TLS port.
func StartRedisTLS(t TB, f *TLSFiles, extra ...string) *Server {
	t.Helper()
	bin, err := RedisServerBinary()
	if err != nil {
		t.Fatalf("%v", err)
	}
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatalf("%v", err)
		}
		dir := t.TempDir()
		args := append([]string{"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "no", "--enable-debug-command", "yes", "--logfile", filepath.Join(dir, "server.log")}, f.serverArgs()...)
		args = append(args, extra...)
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("%v", err)
		}
		s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: dir, cmd: cmd}
		c := redis.NewClient(&redis.Options{Addr: s.Addr, TLSConfig: f.ClientConfig(), MaxRetries: -1})
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if last = c.Ping(context.Background()).Err(); last == nil || strings.Contains(last.Error(), "NOAUTH") {
				last = nil
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
		if last == nil {
			t.Cleanup(s.Stop)
			return s
		}
		s.Stop()
	}
	t.Fatalf("TLS redis-server did not start: %v", last)
	return nil
}

// TLSClient is a client of a TLS server (db 0), closed at cleanup.
func (s *Server) TLSClient(t TB, f *TLSFiles) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, TLSConfig: f.ClientConfig(), ReadTimeout: 2 * time.Minute})
	t.Cleanup(func() { c.Close() })
	return c
}

// StartClusterTLS starts a 3-master cluster that speaks TLS between clients and nodes and
// between nodes. Nodes announce 127.0.0.1, which the certificate does not name.
func StartClusterTLS(t TB, f *TLSFiles) *Cluster {
	t.Helper()
	cl := &Cluster{}
	for i := 0; i < 3; i++ {
		cl.Masters = append(cl.Masters, StartRedisTLS(t, f, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000", "--tls-cluster", "yes", "--tls-replication", "yes"))
	}
	args := []string{"--tls", "--cacert", f.CA, "--sni", f.ServerName, "--cluster", "create"}
	args = append(args, cl.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create (TLS): %v: %s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, m := range cl.Masters {
		c := m.TLSClient(t, f)
		for {
			info, err := c.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("TLS cluster not ok: %v %s", err, info)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return cl
}
