package engine

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis-migrate/redis-migrate/shared/config"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// MemoryShortfall warns, before anything is written, when the source's data cannot fit in the
// room the target has left: the source's used_memory_dataset (INFO memory, summed over its
// masters) against the target's maxmemory less its used_memory. A copy into a target too small
// either has keys refused (noeviction) or, with an eviction policy, loses keys it wrote without
// an error. It is an estimate (encodings and overheads differ between servers), so it warns and
// does not refuse; "" when the data fits, the target has no maxmemory, either side does not
// say, or a match or type filter leaves the share copied unknown. Databases the map leaves out
// are taken off in proportion to their keys.
func MemoryShortfall(ctx context.Context, cfg Config) string {
	src, dst := cfg.Source, cfg.Target
	if cfg.Plan.Match != "" || cfg.Plan.Type != "" {
		return ""
	}
	data, ok := src.InfoSum(ctx, "memory", "used_memory_dataset")
	if !ok {
		return ""
	}
	m := cfg.Copy.DBMap
	if m.Target == nil {
		m = config.DefaultDBMap()
	}
	dbs, err := src.KeyspaceDBs(ctx)
	if err != nil {
		return ""
	}
	var all, mapped int64
	for db, n := range dbs {
		all += n
		if _, ok := m.Target[db]; ok {
			mapped += n
		}
	}
	if all > 0 {
		data = int64(float64(data) * float64(mapped) / float64(all))
	}
	room, ok := targetRoom(ctx, dst)
	if !ok || data <= room {
		return ""
	}
	return fmt.Sprintf("the source's data takes about %s and the target has about %s left under its maxmemory: %s",
		HumanBytes(data), HumanBytes(room), shortfallAdvice)
}

// shortfallAdvice is what a data set too big for the target's room means, and the remedy.
const shortfallAdvice = "keys may be refused (noeviction) or evicted after they were written (an eviction policy); give the target more memory first"

// FileShortfall is MemoryShortfall for an RDB file of fileBytes imported whole (match "").
// A loaded dataset takes at least about the file's size (the file stores values compressed
// and without the server's per-key overhead), so a file bigger than the target's room will
// not fit; one smaller may still not, and is not warned about. Keys of the file that have
// expired make it an overestimate, hence a warning, not a refusal.
func FileShortfall(ctx context.Context, dst *redisconn.Conn, fileBytes int64, match string) string {
	if match != "" || fileBytes <= 0 {
		return ""
	}
	room, ok := targetRoom(ctx, dst)
	if !ok || fileBytes <= room {
		return ""
	}
	return fmt.Sprintf("the file is %s, a server takes at least about that much to hold it, and the target has about %s left under its maxmemory: %s",
		HumanBytes(fileBytes), HumanBytes(room), shortfallAdvice)
}

// targetRoom is the memory left under the maxmemory of dst's masters (summed); false when a
// master has no maxmemory (the host's memory is the bound) or does not say.
func targetRoom(ctx context.Context, dst *redisconn.Conn) (int64, bool) {
	var room int64
	for _, addr := range dst.Masters() {
		f, err := dst.InfoFields(ctx, addr, "memory")
		if err != nil {
			return 0, false
		}
		limit, err1 := strconv.ParseInt(f["maxmemory"], 10, 64)
		used, err2 := strconv.ParseInt(f["used_memory"], 10, 64)
		if err1 != nil || err2 != nil || limit == 0 {
			return 0, false
		}
		room += max(0, limit-used)
	}
	return room, true
}
