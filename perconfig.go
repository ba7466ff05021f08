package webhookguard

import (
	"context"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

// perConfig remembers a value per key for each configuration being loaded,
// so that two handlers of one configuration that must agree on something
// (one ledger's max_events, one spool target's options) can be compared at
// provision. A configuration is told apart by its metrics registry (one
// per caddy.Context tree); its values are dropped when it is unloaded.
type perConfig[V comparable] struct {
	mu   sync.Mutex
	seen map[any]map[string]V
}

func newPerConfig[V comparable]() *perConfig[V] {
	return &perConfig[V]{seen: map[any]map[string]V{}}
}

// claim records v for key in ctx's configuration, unless another handler of
// it recorded a different value: then it returns that value and true.
func (p *perConfig[V]) claim(ctx caddy.Context, key string, v V) (had V, clash bool) {
	config := any(ctx.GetMetricsRegistry())
	p.mu.Lock()
	defer p.mu.Unlock()
	values := p.seen[config]
	if values == nil {
		values = map[string]V{}
		p.seen[config] = values
		context.AfterFunc(ctx, func() { // the configuration was unloaded
			p.mu.Lock()
			delete(p.seen, config)
			p.mu.Unlock()
		})
	}
	if had, ok := values[key]; ok && had != v {
		return had, true
	}
	values[key] = v
	return v, false
}
