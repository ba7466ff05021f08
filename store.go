package webhookguard

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// StoreConfig selects and configures the replay store.
type StoreConfig struct {
	// Type is "memory" (default) or "redis".
	Type string `json:"type,omitempty"`
	// MaxEvents bounds the memory store; default 1,000,000 events.
	MaxEvents int64 `json:"max_events,omitempty"`
	// URL is the Redis URL, redis://[user:pass@]host:port/db or rediss://
	// for TLS; {env.NAME} is resolved at provisioning.
	URL string `json:"url,omitempty"`
	// Prefix is prepended to every Redis key; default "webhook_guard:".
	Prefix string `json:"prefix,omitempty"`
	// Lease is how long an in-flight claim holds an event before it expires
	// (a crashed instance must not block it forever); default 30s. It should
	// exceed the upstream's response time.
	Lease caddy.Duration `json:"lease,omitempty"`
}

// stores keeps replay stores across config reloads: a reload provisions the
// new handlers (which find the store by its key) before it cleans up the old
// ones, so the history of delivered events survives `caddy reload`.
var stores = caddy.NewUsagePool()

// pooledStore is a store kept in the usage pool, with the loggers of the
// handlers using it: the store's own warnings go to the newest handler's
// logger, so that after a reload they follow the running configuration's
// logging, not that of the configuration which first opened the store.
type pooledStore struct {
	dedupe.Store
	close func() error

	mu    sync.Mutex
	users []storeUser // oldest first
}

// storeUser is a handler using a pooled store, with its logger.
type storeUser struct {
	h      *Handler
	logger *zap.Logger
}

// Destruct closes the store when its last user is cleaned up.
func (p *pooledStore) Destruct() error { return p.close() }

// attach records h, provisioned with logger, as the newest user.
func (p *pooledStore) attach(h *Handler, logger *zap.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users = append(p.users, storeUser{h: h, logger: logger})
}

// detach forgets h, cleaned up.
func (p *pooledStore) detach(h *Handler) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users = slices.DeleteFunc(p.users, func(u storeUser) bool { return u.h == h })
}

// openStore finds or opens the configured store.
func (h *Handler) openStore(ctx caddy.Context) error {
	sc := StoreConfig{}
	if h.Store != nil {
		sc = *h.Store
	}
	h.lease = time.Duration(sc.Lease)
	if h.lease < 0 {
		return fmt.Errorf("store: lease must be positive")
	}
	if h.lease == 0 {
		h.lease = DefaultLease
	}
	var key string
	var open func() (caddy.Destructor, error)
	switch sc.Type {
	case "", "memory":
		if sc.URL != "" || sc.Prefix != "" {
			return fmt.Errorf("store: url and prefix are options of the redis store")
		}
		if sc.MaxEvents < 0 {
			return fmt.Errorf("store: max_events must be positive")
		}
		key = "memory/" + strconv.FormatInt(sc.MaxEvents, 10)
		open = func() (caddy.Destructor, error) { return openMemory(sc.MaxEvents) }
	case "redis":
		url, err := resolveSecrets(caddy.NewReplacer(), "store redis URL", []string{sc.URL})
		if err != nil {
			return err
		}
		// The pool key holds a digest of the URL, which may carry a password.
		digest := sha256.Sum256([]byte(url[0] + "\x00" + sc.Prefix))
		key = "redis/" + hex.EncodeToString(digest[:])
		open = func() (caddy.Destructor, error) {
			r, err := dedupe.NewRedis(dedupe.RedisConfig{URL: url[0], Prefix: sc.Prefix})
			if err != nil {
				return nil, fmt.Errorf("store redis: %v", err)
			}
			return &pooledStore{Store: r, close: r.Close}, nil
		}
	default:
		return fmt.Errorf("store: unknown type %q (want memory or redis)", sc.Type)
	}
	val, _, err := stores.LoadOrNew(key, open)
	if err != nil {
		return err
	}
	h.pooled = val.(*pooledStore)
	h.pooled.attach(h, h.logger)
	h.store = h.pooled.Store
	h.storeKey = key
	return nil
}

// openMemory opens a memory store. It is exact: at capacity a claim of a
// new event fails with dedupe.ErrFull; it forgets nothing early.
func openMemory(maxEvents int64) (caddy.Destructor, error) {
	m, err := dedupe.NewMemory(dedupe.MemoryConfig{MaxEvents: maxEvents})
	if err != nil {
		return nil, fmt.Errorf("store memory: %v", err)
	}
	return &pooledStore{Store: m, close: m.Close}, nil
}
