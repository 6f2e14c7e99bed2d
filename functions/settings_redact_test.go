package functions

import (
	"testing"

	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// A Service Bus connection string's SharedAccessKeyName=root must not make "root" a secret
// (HOME=/root printed as /***); its SharedAccessKey is one.
func TestSettingSecretsAreValuesNotKeyNames(t *testing.T) {
	registerSettingSecrets(map[string]string{
		"ServiceBusConnection": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=c2VjcmV0LXNiLWtleQ==",
		"HOME":                 "/root",
	})
	got := redact.String("HOME=/root SharedAccessKeyName=root key c2VjcmV0LXNiLWtleQ==")
	if want := "HOME=/root SharedAccessKeyName=root key ***"; got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
