package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// FuzzParseEndpoint: any string either parses or gives a URLError; neither panics, and the
// password (as typed, when it has one of 4+ characters) is masked in everything printable: the
// error, its value-free Shape, and the parsed endpoint's String.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{
		"redis://127.0.0.1:6379", "rediss://:p4ssw0rd@cache.redis.azure.net:10000",
		"redis://user:secret@host:1/3?topology=cluster", "rediss://u:p@h?tls-server-name=x&tls-insecure-skip-verify=true",
		"redis://h:99999", "redis://:pa ss@h", "redis://:a/b@h", "redis://:p%2Fq@h", "rediss://oid@h:10000?auth=entra&client-id=c",
		"http://x", "redis://[::1]:6379", "redis://:@h", "redis://u:p@", "://", "redis:///0", "redis://h/99999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		ep, err := ParseEndpoint(raw)
		pw := typedPassword(raw)
		check := func(what, s string) {
			if len(pw) >= 4 && strings.Contains(redact.String(s), pw) {
				t.Fatalf("%s shows the password %q: %q", what, pw, redact.String(s))
			}
		}
		if err != nil {
			var ue *URLError
			if !errors.As(err, &ue) {
				t.Fatalf("not a URLError: %T %v", err, err)
			}
			check("error", err.Error())
			check("shape", ue.Shape)
			return
		}
		check("endpoint", ep.String())
		if len(ep.Password) >= 4 && strings.Contains(redact.String(ep.String()+" "+ep.Password), ep.Password) {
			t.Fatalf("parsed password %q not registered", ep.Password)
		}
	})
}

// typedPassword is what the user typed as a password: after "://", before the last '@', after
// the first ':' (or the whole user part).
func typedPassword(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return ""
	}
	rest := raw[i+3:]
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	ui := rest[:at]
	if _, pw, ok := strings.Cut(ui, ":"); ok {
		return strings.TrimSpace(pw)
	}
	return ""
}
