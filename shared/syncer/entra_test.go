package syncer

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/changefeed/notifyfeed"
	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// shortTokens stands in for Entra ID (not for Redis): every token it hands out is valid for
// `life`, and it makes the server's ACL user accept the new token and forget the one before the
// previous, so a connection could only keep working by re-authenticating.
type shortTokens struct {
	admin *redis.Client
	user  string
	life  time.Duration
	n     atomic.Int64
	mu    sync.Mutex
}

func (s *shortTokens) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.n.Add(1)
	tok := "entra-tok-" + strconv.FormatInt(n, 10)
	args := []any{"ACL", "SETUSER", s.user, "on", ">" + tok, "~*", "&*", "+@all"}
	if n > 2 {
		args = append(args, "<entra-tok-"+strconv.FormatInt(n-2, 10))
	}
	if err := s.admin.Do(ctx, args...).Err(); err != nil {
		return azcore.AccessToken{}, err
	}
	return azcore.AccessToken{Token: tok, ExpiresOn: time.Now().Add(s.life)}, nil
}

func authCalls(t *testing.T, c *redis.Client) int64 {
	info := c.Info(context.Background(), "commandstats").Val()
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_auth:calls="); ok {
			n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
			return n
		}
	}
	return 0
}

// A sync whose source tokens expire every two seconds keeps running across several lifetimes
// without a gap: open connections re-authenticate in place (go-redis streaming credentials) and
// the subscription moves to a fresh connection before its token expires, without losing a change.
func TestSyncEntraTokensRefreshedOnOpenConnections(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t, "--notify-keyspace-events", "KA")
	admin := srv.Client(t, 0)
	const objectID = "7c1e-object-id"
	cred := &shortTokens{admin: admin, user: objectID, life: 2 * time.Second}
	ep, err := config.ParseEndpoint("redis://" + objectID + "@" + srv.Addr + "?auth=entra")
	if err != nil {
		t.Fatal(err)
	}
	tokens := redisconn.NewStreamingTokens(cred, objectID)
	defer tokens.Close()
	src, err := redisconn.Open(ctx, ep, redisconn.Options{Role: "source", LongLived: true, Streaming: tokens})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dsrv := testenv.StartRedis(t)
	dep, _ := config.ParseEndpoint(dsrv.URL())
	dst, err := redisconn.Open(ctx, dep, redisconn.Options{Role: "target"})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := testenv.FillBulk(ctx, admin, "b:", 5000, 3); err != nil {
		t.Fatal(err)
	}
	w := testenv.StartWriter(admin, testenv.WriterOptions{Rate: 2000, Seed: 17})
	var logs []string
	var lmu sync.Mutex
	sy := New(Config{Source: src, Target: dst, Feed: notifyfeed.New(src, nil, notifyfeed.Options{}),
		Copy: copier.Options{DBMap: config.DefaultDBMap()},
		Log:  func(s string) { lmu.Lock(); logs = append(logs, s); lmu.Unlock() }})
	if err := sy.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sy.Close()
	before := authCalls(t, admin)
	pubsubID := func() string {
		f := strings.Fields(admin.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").String())
		for _, x := range f {
			if strings.HasPrefix(x, "id=") {
				return x
			}
		}
		return ""
	}
	firstSub := pubsubID()
	time.Sleep(7 * time.Second) // three token lifetimes and more
	w.Stop()
	T, err := sy.WaitCaughtUp(ctx, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	st := sy.Status()
	lmu.Lock()
	t.Logf("caught up as of %s; %d tokens issued; auth calls %d -> %d; status %+v\n%s", T, cred.n.Load(), before, authCalls(t, admin), st, strings.Join(logs, "\n"))
	lmu.Unlock()
	if st.Gaps != 0 {
		t.Fatalf("token refresh opened a gap: %+v", st)
	}
	if cred.n.Load() < 4 {
		t.Fatalf("only %d tokens issued in 7s of 2s tokens", cred.n.Load())
	}
	if after := authCalls(t, admin); after-before < cred.n.Load()-1 {
		t.Fatalf("open connections were not re-authenticated: %d AUTH calls for %d tokens", after-before, cred.n.Load())
	}
	if now := pubsubID(); now == firstSub || now == "" {
		t.Fatalf("the subscription was not moved to a fresh connection: %s then %s", firstSub, now)
	}
	time.Sleep(1200 * time.Millisecond)
	testenv.AssertSameData(ctx, t, []*redis.Client{admin}, []*redis.Client{dsrv.Client(t, 0)}, nil, 5)
}
