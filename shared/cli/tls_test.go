package cli

import (
	"net/url"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// TLS on both sides, as with Azure Managed Redis: the certificate names a host, the cluster's
// nodes announce IPs, so every node connection must keep the configured server name.
func TestCopyOverTLSWithFixedServerName(t *testing.T) {
	f := testenv.NewTLSFiles(t, "cache.redis.test")
	src := testenv.StartRedisTLS(t, f, "--requirepass", "Tls-Source-Pw-1")
	dst := testenv.StartClusterTLS(t, f)
	sc := redis.NewClient(&redis.Options{Addr: src.Addr, Password: "Tls-Source-Pw-1", TLSConfig: f.ClientConfig()})
	t.Cleanup(func() { sc.Close() })
	n, err := testenv.FillAllTypes(ctx, sc, "tls:")
	if err != nil {
		t.Fatal(err)
	}
	q := "?tls-ca-file=" + url.QueryEscape(f.CA) + "&tls-server-name=" + f.ServerName
	srcURL := "rediss://:Tls-Source-Pw-1@" + src.Addr + q
	dstURL := "rediss://" + dst.Masters[0].Addr + q
	code, sum, errs := runJSON(t, "copy", "--source", srcURL, "--target", dstURL, "--verify-full")
	if code != 0 || sum.KeysCopied != int64(n) {
		t.Fatalf("exit %d summary %+v", code, sum)
	}
	if strings.Contains(errs, "Tls-Source-Pw-1") {
		t.Fatal("password printed")
	}
	var masters []*redis.Client
	for _, m := range dst.Masters {
		masters = append(masters, m.TLSClient(t, f))
	}
	testenv.AssertSameData(ctx, t, []*redis.Client{sc}, masters, nil, 1)

	// Without the server name the certificate does not match 127.0.0.1: refused, clearly.
	code, _, errs = run(t, "copy", "--source", "rediss://:Tls-Source-Pw-1@"+src.Addr+"?tls-ca-file="+url.QueryEscape(f.CA), "--target", dstURL)
	if code != ExitUsage || !strings.Contains(errs, "certificate") {
		t.Fatalf("wrong server name: exit %d stderr %q", code, errs)
	}
	// An untrusted CA is refused unless the user asks to skip verification.
	code, _, _ = run(t, "copy", "--source", "rediss://:Tls-Source-Pw-1@"+src.Addr, "--target", dstURL, "--dry-run")
	if code != ExitUsage {
		t.Fatalf("untrusted CA accepted: exit %d", code)
	}
	code, _, _ = run(t, "copy", "--source", "rediss://:Tls-Source-Pw-1@"+src.Addr+"?tls-insecure-skip-verify=true", "--target", dstURL, "--dry-run")
	if code != 0 {
		t.Fatalf("insecure-skip-verify: exit %d", code)
	}
}
