package copier_test

import (
	"slices"
	"testing"
	"time"

	"github.com/redis-migrate/redis-migrate/shared/copier"
	"github.com/redis-migrate/redis-migrate/shared/testenv"
)

// Restore counts the keys whose expiry has passed by its clock as expired, not copied, writes the
// others with their TTLs, and leaves the caller's batch as it was. (The count would come out the
// same without the filter, through the near-expiry recount; the batch would not.)
func TestRestoreLeavesOutExpiredKeys(t *testing.T) {
	src, dst := testenv.StartRedis(t), testenv.StartRedis(t)
	dc := dst.Client(t, 0)
	now := time.Now()
	later, gone := now.Add(time.Hour).UnixMilli(), now.Add(-time.Second).UnixMilli()
	items := []copier.Payload{
		{Key: []byte("a"), Data: "1", Str: true},
		{Key: []byte("b"), Data: "2", Str: true, ExpireAt: gone},
		{Key: []byte("c"), Data: "3", Str: true, ExpireAt: later},
		{Key: []byte("d"), Data: "4", Str: true, ExpireAt: gone},
	}
	before := slices.Clone(items)
	cp := copier.New(open(t, src.URL(), "source"), open(t, dst.URL(), "target"), copier.Options{})
	cp.Now = func() time.Time { return now }
	var res copier.Result
	if err := cp.Restore(ctx, dc, "", items, &res); err != nil {
		t.Fatal(err)
	}
	if res.Copied != 2 || res.Expired != 2 || res.Failed != 0 {
		t.Fatalf("copied %d expired %d failed %d, want 2, 2, 0", res.Copied, res.Expired, res.Failed)
	}
	if !slices.EqualFunc(items, before, func(a, b copier.Payload) bool { return string(a.Key) == string(b.Key) && a.ExpireAt == b.ExpireAt }) {
		t.Fatalf("the caller's batch changed: %v", items)
	}
	if got := dc.Keys(ctx, "*").Val(); len(got) != 2 || dc.Get(ctx, "a").Val() != "1" || dc.Get(ctx, "c").Val() != "3" {
		t.Fatalf("target keys %v", got)
	}
	if at := dc.PExpireTime(ctx, "c").Val(); at.Milliseconds() != later {
		t.Fatalf("c expires at %v, want %d", at, later)
	}
}
