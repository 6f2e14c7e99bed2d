package engine

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// MemoryShortfall warns, before anything is written, when the source's data cannot fit in the
// room the target has left: the source's used_memory_dataset (INFO memory, summed over its
// masters) against the target's maxmemory less its used_memory. A copy into a target too small
// either has keys refused (noeviction) or, with an eviction policy, loses keys it wrote without
// an error. It is an estimate (encodings and overheads differ between servers), so it warns and
// does not refuse; "" when the data fits, the target has no maxmemory, or either side does not
// say.
func MemoryShortfall(ctx context.Context, src, dst *redisconn.Conn) string {
	data, ok := src.InfoSum(ctx, "memory", "used_memory_dataset")
	if !ok {
		return ""
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
