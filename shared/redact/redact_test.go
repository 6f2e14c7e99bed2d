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
