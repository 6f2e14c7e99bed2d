package config

import (
	"strings"
	"testing"

	"github.com/redis-migrate/redis-migrate/shared/redact"
)

func TestParseEndpoint(t *testing.T) {
	e, err := ParseEndpoint("rediss://user:p%40ss@cache.redis.azure.net:10000/0?tls-server-name=x.example&topology=cluster")
	if err != nil {
		t.Fatal(err)
	}
	if e.Host != "cache.redis.azure.net" || e.Port != 10000 || e.Username != "user" || e.Password != "p@ss" ||
		!e.TLS || e.ServerName != "x.example" || e.Topology != TopologyCluster || !e.DBSet || e.DB != 0 {
		t.Fatalf("parsed %+v", e)
	}
	if s := e.String(); strings.Contains(s, "p@ss") || strings.Contains(s, "p%40ss") || !strings.Contains(s, "***") {
		t.Fatalf("String() = %q", s)
	}
	if e, _ := ParseEndpoint("redis://onlypassword@h"); e.Password != "onlypassword" || e.Username != "" || e.Port != 6379 {
		t.Fatalf("old-style password: %+v", e)
	}
	bad := map[string]string{
		"":                                   "empty",
		"http://h:1":                         "scheme",
		"redis://:pw@":                       "no host",
		"redis://h:0":                        "bad port",
		"redis://h/abc":                      "database",
		"redis://h?tls-ca-file=/x":           "rediss://",
		"redis://h?nope=1":                   "unknown option",
		"redis://h?topology=ring":            "topology",
		"rediss://u:secretpw@h?auth=entra":   "takes no password",
		"redis://u:secretpw@h:99999999/3?x=": "bad port",
	}
	for in, want := range bad {
		_, err := ParseEndpoint(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEndpoint(%q) = %v, want error with %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("error repeats the password: %v", err)
		}
	}
}

func TestDBMap(t *testing.T) {
	m, err := ParseDBMap("0:0,3:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(false); err == nil || !strings.Contains(err.Error(), "collide") {
		t.Fatalf("merge without prefixes allowed: %v", err)
	}
	if err := m.ParseDBPrefixes("3:legacy:"); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(false); err != nil || m.Prefix[3] != "legacy:" {
		t.Fatalf("with prefix: %v %v", err, m.Prefix)
	}
	if err := m.ParseDBPrefixes("5:x:"); err == nil {
		t.Fatal("prefix for an unmapped db accepted")
	}
	for _, bad := range []string{"x", "1", "0:0,0:1", "-1:0"} {
		if _, err := ParseDBMap(bad); err == nil {
			t.Errorf("ParseDBMap(%q) accepted", bad)
		}
	}
}

// A password with characters that break a URL is never printed and the error says how to
// encode it; the value-free shape (for app settings) holds no part of the input.
func TestParseEndpointNeverEchoesMalformedSecrets(t *testing.T) {
	cases := map[string]string{
		"redis://:pa ss word@host:6379":          "percent-encode",
		"rediss://:abc/def+ghi=@cache.net:10000": "percent-encode",
		"rediss://user:a?b#c@cache.net:10000":    "percent-encode",
		"redis://:secretvalue@host:notaport":     "bad port",
		"eyJhbGciOiJIUzI1NiJ9.payload-token":     "scheme",
		"sk-live-abcdefghijklmnop":               "scheme",
	}
	for in, want := range cases {
		_, err := ParseEndpoint(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEndpoint(%q) = %v, want error with %q", in, err, want)
			continue
		}
		shape := URLShape(err)
		if shape == "" {
			t.Errorf("ParseEndpoint(%q): no shape", in)
		}
		for _, part := range []string{"pa ss", "def+ghi", "a?b#c", "secretvalue", "eyJhbGci", "payload-token", "sk-live", "notaport", "cache.net"} {
			if strings.Contains(shape, part) {
				t.Errorf("shape of %q repeats %q: %s", in, part, shape)
			}
			if strings.Contains(in, part) && part != "cache.net" && part != "notaport" && strings.Contains(redact.Error(err), part) {
				t.Errorf("error of %q repeats %q: %s", in, part, redact.Error(err))
			}
		}
	}
	// The password of a URL that does not parse is registered: other messages mask it too.
	if got := redact.String("dial: pa ss word"); strings.Contains(got, "pa ss word") {
		t.Errorf("unparsed password not registered: %q", got)
	}
}
