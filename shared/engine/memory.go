package engine

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis-migrate/redis-migrate/shared/config"
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
	var room int64
	for _, addr := range dst.Masters() {
		f, err := dst.InfoFields(ctx, addr, "memory")
		if err != nil {
			return ""
		}
		limit, err1 := strconv.ParseInt(f["maxmemory"], 10, 64)
		used, err2 := strconv.ParseInt(f["used_memory"], 10, 64)
		if err1 != nil || err2 != nil || limit == 0 {
			return "" // unlimited (or not said): the host's memory is the bound
		}
		room += max(0, limit-used)
	}
	if data <= room {
		return ""
	}
	return fmt.Sprintf("the source's data takes about %s and the target has about %s left under its maxmemory: keys may be refused "+
		"(noeviction) or evicted after they were written (an eviction policy); give the target more memory first", HumanBytes(data), HumanBytes(room))
}
