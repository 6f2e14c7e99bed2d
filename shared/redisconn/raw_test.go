package redisconn

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// Slot agrees with the server's CLUSTER KEYSLOT (hash tags included), and MasterOf names the
// node that accepts the key.
func TestSlotAndMasterOf(t *testing.T) {
	cl := testenv.StartCluster(t)
	ctx := context.Background()
	ep, err := config.ParseEndpoint(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, ep, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	node := c.Node(c.Masters()[0], 0)
	keys := []string{"", "a", "k:1", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "{bar", "x}y{z}", "\xff\x00binary"}
	for i := 0; i < 200; i++ {
		keys = append(keys, "k:"+string(rune('a'+i%26))+string(rune('0'+i%10))+"-"+string(rune(i)))
	}
	for _, k := range keys {
		want, err := node.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := Slot([]byte(k)); int64(got) != want {
			t.Fatalf("Slot(%q) = %d, server says %d", k, got, want)
		}
		// A cluster just formed may still be agreeing on its slots, and go-redis's first view
		// with it: a MOVED means that view is stale (the copier then asks through go-redis), so
		// reload it and ask again; a stale answer that lasts is the failure.
		for attempt := 0; ; attempt++ {
			addr, err := c.MasterOf(ctx, []byte(k))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Node(addr, 0).Set(ctx, k, "v", 0).Err()
			if err == nil {
				break
			}
			if !strings.HasPrefix(err.Error(), "MOVED ") || attempt == 50 {
				t.Fatalf("SET %q on %s (MasterOf): %v", k, addr, err)
			}
			time.Sleep(100 * time.Millisecond)
			if cc, ok := c.Keys(0).(*redis.ClusterClient); ok {
				cc.ReloadState(ctx)
			}
			c.ForgetSlots()
		}
	}
}
