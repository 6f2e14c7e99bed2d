package redisconn

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/redact"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// fakeCredential stands in for Entra ID (not for Redis): it hands out the token the server's
// ACL user has as its password, and records the scope it was asked for.
type fakeCredential struct {
	token string
	scope atomic.Value
	calls atomic.Int32
}

func (f *fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	f.calls.Add(1)
	f.scope.Store(strings.Join(o.Scopes, " "))
	return azcore.AccessToken{Token: f.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// The token goes to go-redis as the password of the identity's object id, for the Redis scope,
// and never shows in output.
func TestEntraTokenAuthenticatesAsObjectID(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	const objectID, token = "9b1f2c3d-object-id", "eyJ0eXAiOiJKV1Qi.fake-entra-token.sig"
	srv.Client(t, 0).Do(ctx, "ACL", "SETUSER", objectID, "on", ">"+token, "~*", "+@all")
	srv.Client(t, 0).Do(ctx, "ACL", "SETUSER", "default", "off")
	cred := &fakeCredential{token: token}
	ep, err := config.ParseEndpoint("redis://" + objectID + "@" + srv.Addr + "?auth=entra")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, ep, Options{Role: "target", Credentials: TokenCredentials(cred, objectID)})
	if err != nil {
		t.Fatalf("open with token: %v", err)
	}
	defer c.Close()
	if who := c.Keys(0).Do(ctx, "ACL", "WHOAMI").Val(); who != objectID {
		t.Fatalf("authenticated as %v, want %s", who, objectID)
	}
	if got := cred.scope.Load(); got != EntraScope {
		t.Fatalf("token scope %v, want %s", got, EntraScope)
	}
	if s := redact.String("AUTH " + token); strings.Contains(s, "fake-entra-token") {
		t.Fatalf("token not masked: %s", s)
	}
	// A wrong token is refused with a clear message and not printed.
	bad := &fakeCredential{token: "wrong-token-value-123"}
	_, err = Open(ctx, ep, Options{Role: "target", Credentials: TokenCredentials(bad, objectID)})
	if err == nil || !strings.Contains(err.Error(), "authentication failed") || strings.Contains(err.Error(), "wrong-token-value") {
		t.Fatalf("wrong token: %v", err)
	}
}

func TestVersionProbe(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	ep, _ := config.ParseEndpoint(srv.URL())
	c, err := Open(ctx, ep, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Version.Product != "redis" || c.Version.Major != 7 || c.Version.RDB != 10 || c.Cluster {
		t.Fatalf("redis 7.0 probed as %+v cluster=%v", c.Version, c.Cluster)
	}
	v := testenv.StartValkey(t)
	ep, _ = config.ParseEndpoint(v.URL())
	vc, err := Open(ctx, ep, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	if vc.Version.Product != "valkey" || vc.Version.Major != 8 || vc.Version.RDB != 11 {
		t.Fatalf("valkey 8 probed as %+v", vc.Version)
	}
	cl := testenv.StartCluster(t)
	ep, _ = config.ParseEndpoint(cl.URL())
	cc, err := Open(ctx, ep, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if !cc.Cluster || len(cc.Masters()) != 3 {
		t.Fatalf("cluster probed as cluster=%v masters=%v", cc.Cluster, cc.Masters())
	}
}
