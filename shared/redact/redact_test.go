package redact

import (
	"bytes"
	"strings"
	"testing"
)

func TestStringMasksRegisteredSecretsAndPatterns(t *testing.T) {
	Register("s3cr3t-P@ss/word")
	cases := []string{
		"dial redis://user:s3cr3t-P@ss/word@host:6379 failed",
		"password s3cr3t-P%40ss%2Fword leaked in escaped form",
		"Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=abcDEF123=",
		"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqF==;",
		"https://acct.blob.core.windows.net/c/b?sv=2021&sig=AbCdEf%2B123&se=2030",
		"redis://default:anotherpass@10.0.0.1:10000",
		"Authorization: Bearer eyJhbGciOi.JIUzI1NiJ9.abc-def",
	}
	for _, c := range cases {
		got := String(c)
		for _, secret := range []string{"s3cr3t", "abcDEF123", "Eby8vdM02xNOcqF", "AbCdEf", "anotherpass", "eyJhbGciOi"} {
			if strings.Contains(got, secret) {
				t.Errorf("String(%q) = %q still holds %q", c, got, secret)
			}
		}
	}
	if got := String("redis://default:anotherpass@10.0.0.1:10000"); got != "redis://default:***@10.0.0.1:10000" {
		t.Errorf("url redaction = %q", got)
	}
}

func TestWriterRedacts(t *testing.T) {
	Register("writer-secret-123")
	var buf bytes.Buffer
	w := Writer(&buf)
	if _, err := w.Write([]byte("token writer-secret-123 here\n")); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "writer-secret-123") {
		t.Fatalf("writer leaked: %q", buf.String())
	}
}

// Help text's own examples stay readable; real secrets in the same shapes are masked.
func TestPlaceholdersStayAsWritten(t *testing.T) {
	for _, s := range []string{
		"source URL: redis://[user:password@]host:port[/db] or rediss://...",
		"redis://[user[:password]@]host[:port][/db][?options]",
		"target URL (Azure Managed Redis: rediss://:<key>@<name>.<region>.redis.azure.net:10000)",
		"rediss://:<access-key>@mycache.westeurope.redis.azure.net:10000",
		"put it in the URL: redis://user:password@host:port",
		"Endpoint=sb://<ns>.servicebus.windows.net/;SharedAccessKeyName=<name>;SharedAccessKey=<key>",
		"https://<account>.blob.core.windows.net/rdb-imports/dump.rdb?sv=...&sig=<signature>",
	} {
		if got := String(s); got != s {
			t.Errorf("placeholder masked:\n got %q\nwant %q", got, s)
		}
	}
	for in, want := range map[string]string{
		"redis://u:hunter2xyz@h:6379":             "redis://u:***@h:6379",
		"rediss://:<key>@a and rediss://:k3y@b":   "rediss://:<key>@a and rediss://:***@b",
		"SharedAccessKey=<key>;SharedAccessKey=z": "SharedAccessKey=<key>;SharedAccessKey=***",
		"x?sig=<signature> y?sig=abc%2Bdef":       "x?sig=<signature> y?sig=***",
		"redis://u:<a><b>@h":                      "redis://u:***@h",
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

// Only the secret values of a connection string are registered, never the names around them.
func TestRegisterConnectionStringRegistersSecretsNotNames(t *testing.T) {
	RegisterConnectionString("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=Zm9vYmFyYmF6cXV4=")
	RegisterConnectionString("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=YWNjb3VudGtleQ==;EndpointSuffix=core.windows.net")
	got := String("HOME=/root user root; key Zm9vYmFyYmF6cXV4= and YWNjb3VudGtleQ== on acct via https")
	if want := "HOME=/root user root; key *** and *** on acct via https"; got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
