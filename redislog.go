package webhookguard

import (
	"context"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
)

func init() {
	// go-redis logs connection trouble with the standard library's logger,
	// as plain text on stderr; route it into Caddy's structured logs. The
	// handler logs every failed operation itself, so these are DEBUG.
	redis.SetLogger(redisLog{})
}

// redisLog writes go-redis's own messages to Caddy's log.
type redisLog struct{}

// Printf implements go-redis's logging interface.
func (redisLog) Printf(_ context.Context, format string, v ...any) {
	caddy.Log().Named("webhook_guard.redis").Debug(fmt.Sprintf(format, v...))
}
