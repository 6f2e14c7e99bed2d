package cli

import (
	"github.com/redis-migrate/redis-migrate/shared/changefeed"
	"github.com/redis-migrate/redis-migrate/shared/changefeed/psyncfeed"
	"github.com/redis-migrate/redis-migrate/shared/redisconn"
)

// The psync feed: one replication link per source master (shared/changefeed/psyncfeed).
func init() {
	newPsyncFeed = func(src *redisconn.Conn, loader changefeed.Loader, dbs []int) (changefeed.Feed, error) {
		return psyncfeed.New(src, loader, psyncfeed.Options{DBs: dbs}), nil
	}
}
