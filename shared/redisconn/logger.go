package redisconn

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/redis-migrate/redis-migrate/shared/redact"
)

// go-redis logs pool events (e.g. "redis: ... pool.go: failed to dial after 5 attempts") to
// stderr on its own. Every such failure also comes back to us as an error, which the commands
// report in one line with its context, so the library's lines are dropped process-wide here.
// REDIS_MIGRATE_DEBUG=1 prints them (redacted) for diagnosis.
func init() {
	redis.SetLogger(libLogger{debug: os.Getenv("REDIS_MIGRATE_DEBUG") == "1"})
}

type libLogger struct{ debug bool }

func (l libLogger) Printf(_ context.Context, format string, v ...any) {
	if !l.debug {
		return
	}
	msg := strings.TrimRight(fmt.Sprintf(format, v...), "\n")
	fmt.Fprintln(os.Stderr, "go-redis: "+redact.String(msg))
}
