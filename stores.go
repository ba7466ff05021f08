package webhookguard

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/ledger"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

func init() {
	caddy.RegisterModule(FileStore{})
	caddy.RegisterModule(MemoryStore{})
	caddy.RegisterModule(RedisStore{})
}

// storeNamespace is the namespace of the replay store guest modules: a new
// store is one module, as reverse_proxy's transports are.
const storeNamespace = "http.handlers.webhook_guard.stores"

// ReplayStore is a replay store guest module, in the namespace
// http.handlers.webhook_guard.stores: once provisioned it hands the handler
// the store (shared by every handler of the instance that names the same
// file, map or Redis) and the lease of its claims.
type ReplayStore interface {
	// ReplayStore returns the provisioned store and the lease of an
	// in-flight claim.
	ReplayStore() (dedupe.Store, time.Duration)
}

// defaultLease is how long an in-flight claim holds an event when a store
// sets no lease.
const defaultLease = 30 * time.Second

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
	// spoolStore is the store's spool.Store (the file store's ledger), nil
	// for a store that cannot hold a spool.
	spoolStore spool.Store

	mu    sync.Mutex
	users []storeUser // oldest first
	// spool delivers the store's spool, started by the first handler with
	// a spool block (spool.go); unregisterSpool takes it off the admin API.
	spool           *spool.Spool
	unregisterSpool func()
	// apply, when set, applies the newest user's settings to the store
	// (the file store's max_events); p.mu is held.
	apply func()
	// validationOnly marks the store of a config being validated (caddy
	// validate): not in the pool, serving nothing.
	validationOnly bool
	// checkSpool, when set, checks that the store can hold a spool; every
	// handler with a spool block runs it (the newest store module's).
	checkSpool func() error
	// name says which store this is, for its spool's Options.Name: the
	// ledger's path, the Redis' address, database and prefix (no secret).
	name string
}

// storeUser is a module using a pooled store, with its logger and, for
// the file store, the settings it asks of the ledger and the configuration
// it belongs to (its metrics registry: a fresh one per load).
type storeUser struct {
	owner     any
	logger    *zap.Logger
	config    *prometheus.Registry
	maxEvents int64
}

// Destruct closes the store when its last user is cleaned up, after
// stopping the spool's worker.
func (p *pooledStore) Destruct() error {
	p.mu.Lock()
	sp, unregister := p.spool, p.unregisterSpool
	p.spool, p.unregisterSpool = nil, nil
	p.mu.Unlock()
	if unregister != nil {
		unregister()
	}
	if sp != nil {
		sp.Stop()
	}
	if p.close == nil {
		return nil
	}
	return p.close()
}

// attach records owner, provisioned with logger, as the newest user.
func (p *pooledStore) attach(owner any, logger *zap.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users = append(p.users, storeUser{owner: owner, logger: logger})
}

// detach forgets owner, cleaned up, and applies the settings of the newest
// user left: a reload that failed gives back the running configuration's.
func (p *pooledStore) detach(owner any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users = slices.DeleteFunc(p.users, func(u storeUser) bool { return u.owner == owner })
	if p.apply != nil && len(p.users) > 0 {
		p.apply()
	}
}

// logger is the newest user's logger.
func (p *pooledStore) logger() *zap.Logger {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.users) == 0 {
		return zap.NewNop()
	}
	return p.users[len(p.users)-1].logger
}

// storeHandle is what every store module embeds: its lease and its hold on a
// pooled store.
type storeHandle struct {
	// Lease is how long an in-flight claim holds an event before it expires
	// (a crashed instance must not block it forever); default 30s. The guard
	// renews it while the upstream call is in flight.
	Lease caddy.Duration `json:"lease,omitempty"`

	pooled *pooledStore
	key    string
	lease  time.Duration
}

// ReplayStore returns the pooled store and the lease.
func (s *storeHandle) ReplayStore() (dedupe.Store, time.Duration) { return s.pooled.Store, s.lease }

// open finds the store under key in the pool or opens it.
// open is given the pool entry being built, so that the store's callbacks
// can log through its newest user.
func (s *storeHandle) open(ctx caddy.Context, key string, open func(p *pooledStore) (dedupe.Store, func() error, error)) error {
	lease := time.Duration(s.Lease)
	if lease == 0 {
		lease = defaultLease
	}
	if lease < minDuration {
		return fmt.Errorf("lease: must be at least %v", minDuration)
	}
	val, _, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		p := &pooledStore{}
		st, closeFn, err := open(p)
		if err != nil {
			return nil, err
		}
		p.Store, p.close = st, closeFn
		return p, nil
	})
	if err != nil {
		return err
	}
	p := val.(*pooledStore)
	p.attach(s, ctx.Logger())
	s.pooled, s.key, s.lease = p, key, lease
	return nil
}

// Cleanup releases this module's hold on the pooled store; the store itself
// lives on while a newer config (after a reload) uses it.
func (s *storeHandle) Cleanup() error {
	if s.pooled == nil {
		return nil
	}
	if s.pooled.validationOnly {
		s.pooled = nil
		return nil
	}
	s.pooled.detach(s)
	s.pooled = nil
	_, err := stores.Delete(s.key)
	return err
}

// unmarshalBlock parses a store's block: `lease` and `max_events`, which
// every store has, and the store's own one-argument options in more.
func (s *storeHandle) unmarshalBlock(d *caddyfile.Dispenser, kind string, maxEvents *int64, more map[string]*string) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); {
		case opt == "lease":
			if err := durationArg(d, "lease", &s.Lease); err != nil {
				return err
			}
		case opt == "max_events":
			if err := maxEventsArg(d, maxEvents); err != nil {
				return err
			}
		case more[opt] != nil:
			if err := oneArgInto1(d, more[opt]); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized store %s subdirective '%s'", kind, opt)
		}
	}
	return nil
}

// cacheItems bounds the cache of delivered answers in front of the file and
// redis stores.
const cacheItems = 1 << 16

// cached puts the cache of delivered answers in front of s; closing it
// frees the cache and closes s.
func cached(s dedupe.Store) (dedupe.Store, func() error, error) {
	c := dedupe.NewCached(s, cacheItems, nil)
	return c, c.(interface{ Close() error }).Close, nil
}

// FileStore is the default replay store: a bbolt ledger on disk, one file
// per Caddy instance, that survives restarts and crashes. A delivered event
// is on disk (fsynced) before the provider gets its answer.
//
//	store file [<path>] [{
//	    max_events <n>
//	    lease      <duration>
//	}]
type FileStore struct {
	// Path of the ledger file; default webhook_guard/ledger.db in Caddy's
	// data directory.
	Path string `json:"path,omitempty"`
	// MaxEvents is how many event ids the ledger remembers at most; at
	// that count new events are refused with 503 until ids expire. Default
	// 10,000,000. The newest configuration's applies, at once on a reload;
	// two handlers of one configuration may not differ on it.
	MaxEvents int64 `json:"max_events,omitempty"`
	// MaxSize bounds the ledger file in bytes (JSON only; 0: no bound), a
	// disk budget: at that size writes fail as on a full disk, and new
	// events are answered 503 with Retry-After until ids expire or spooled
	// events are delivered. It applies when the file is opened (a reload
	// that changes it takes effect at the next restart, and says so).
	MaxSize int `json:"max_size,omitempty"`
	storeHandle
}

// CaddyModule returns the Caddy module information.
func (FileStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: storeNamespace + ".file", New: func() caddy.Module { return new(FileStore) }}
}

// DefaultLedgerPath is the ledger's path in Caddy's data directory.
func DefaultLedgerPath() string {
	path := filepath.Join(caddy.AppDataDir(), "webhook_guard", "ledger.db")
	// Caddy's data directory is relative when XDG_DATA_HOME is: the ledger
	// is resolved against the directory Caddy starts in, once, so that it
	// does not move if the working directory changes.
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// Provision opens the ledger, or reuses the one already open.
func (s *FileStore) Provision(ctx caddy.Context) error {
	if s.MaxEvents < 0 {
		return errors.New("store file: max_events must be positive")
	}
	if s.MaxSize < 0 {
		return errors.New("store file: max_size must be positive")
	}
	path := s.Path
	if path == "" {
		path = DefaultLedgerPath()
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("store file: path %q is relative: give an absolute path (a relative one would land in the directory Caddy happens to run in)", path)
	}
	path = filepath.Clean(path)
	if validating() {
		return s.provisionForValidation(ctx, path)
	}
	_, statErr := os.Lstat(path)
	existed := statErr == nil
	err := s.open(ctx, "file:"+path, func(p *pooledStore) (dedupe.Store, func() error, error) {
		l, err := ledger.Open(ledger.Config{Path: path, MaxEvents: s.MaxEvents, MaxSize: s.MaxSize, HoldLeases: true,
			OnWritable: func(err error) {
				if err != nil {
					p.logger().Error("ledger not writable: new events are refused 503 until a write succeeds", zap.String("ledger", path), zap.Error(err))
					return
				}
				p.logger().Info("ledger writable again", zap.String("ledger", path))
			},
			OnSync: observeJournalSync,
			OnJournalError: func(kind string, err error) {
				if kind == ledger.FailSync {
					journalFsyncErrors.Inc()
				}
				p.logger().Error("ledger journal: "+journalFailures[kind], zap.String("ledger", path), zap.String("failure", kind), zap.Error(err))
			},
			OnBackgroundError: func(err error) {
				p.logger().Error("ledger background task failed: retried at its next turn", zap.String("ledger", path), zap.Error(err))
			}})
		if err != nil {
			return nil, nil, fmt.Errorf("store file: %w", err)
		}
		unreport := journalLag.add(l)
		p.spoolStore, p.name = l, "ledger "+path
		p.apply = func() {
			for i := len(p.users) - 1; i >= 0; i-- {
				if n := p.users[i].maxEvents; n > 0 {
					l.SetCapacity(n)
					return
				}
			}
		}
		logLedgerOpened(ctx.Logger(), l, s.Path != "" && !existed)
		c, closeFn, err := cached(l)
		return c, func() error { unreport(); return closeFn() }, err
	})
	if err != nil {
		return err
	}
	return s.applySettings(ctx, path)
}

// journalFailures says what each kind of journal failure means, in its
// ERROR log line.
var journalFailures = map[string]string{
	ledger.FailSync:       "a write or fdatasync failed; the writes of its group failed (503), the journal is reopened from what the disk holds before it takes writes again",
	ledger.FailReopen:     "reopening the journal after a failed sync failed; new events are refused 503, tried again every second",
	ledger.FailCheckpoint: "applying the journal to the ledger file failed; new events are refused 503 while the file is full, tried again every second",
	ledger.FailSegment:    "making the next journal segment failed (disk full?); new events are refused 503 until one is made, tried again every second",
}

// applySettings makes this handler's max_events the ledger's limit: the
// newest configuration's applies, so a reload that changes it applies it at
// once (and a reload that fails gives the running one's back, see detach).
// Two handlers of one configuration that give one ledger different limits
// fail the load. max_size bounds the file from its opening: a change is
// warned about and applies at the next start.
func (s *FileStore) applySettings(ctx caddy.Context, path string) error {
	p := s.pooled
	l, ok := p.spoolStore.(*ledger.Ledger)
	if !ok {
		return nil
	}
	want := s.MaxEvents
	if want == 0 {
		want = ledger.DefaultMaxEvents
	}
	reg := ctx.GetMetricsRegistry()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.users {
		u := &p.users[i]
		switch {
		case u.owner == &s.storeHandle:
			u.config, u.maxEvents = reg, want
		case u.config == reg && u.maxEvents != 0 && u.maxEvents != want:
			return limitConflict(path, want, u.maxEvents)
		}
	}
	p.apply()
	if s.MaxSize != l.MaxSize() {
		ctx.Logger().Warn("store file: max_size differs from the one the open ledger was opened with; it applies when the file is opened, at the next start",
			zap.String("ledger", path), zap.Int("max_size", s.MaxSize), zap.Int("open_with", l.MaxSize()))
	}
	return nil
}

// logLedgerOpened says, once per ledger opened, what it holds: one INFO
// line, a WARN when it was just created at a path the config gives (a typo
// in the path starts an empty replay memory), and a WARN per paused scope
// (a pause survives restarts).
func logLedgerOpened(logger *zap.Logger, l *ledger.Ledger, createdAtConfiguredPath bool) {
	ctx := context.Background()
	remembered, _ := l.Usage()
	counts, err := l.Counts(ctx)
	if err != nil {
		logger.Error("ledger opened, but its spool could not be counted", zap.String("path", l.Path()), zap.Error(err))
		return
	}
	paused, _ := l.Paused(ctx)
	var pending, dead, discarded int
	for _, c := range counts {
		pending, dead, discarded = pending+c.Pending, dead+c.Dead, discarded+c.Discarded
	}
	logger.Info("ledger opened",
		zap.String("path", l.Path()),
		zap.Int64("ids_remembered", remembered),
		zap.Int("events_pending", pending),
		zap.Int("events_dead", dead),
		zap.Int("events_discarded", discarded),
		zap.Strings("paused_scopes", slices.Sorted(maps.Keys(paused))))
	// A ledger or folder others may read or write is kept as it is (an
	// operator may share it on purpose), but said once.
	for path, private := range map[string]fs.FileMode{l.Path(): 0o600, filepath.Dir(l.Path()): 0o700} {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&^private != 0 {
			logger.Warn("ledger file or folder readable or writable by others: it holds event ids and spooled payment events; chmod it",
				zap.String("path", path), zap.String("mode", fi.Mode().Perm().String()), zap.String("want", private.String()))
		}
	}
	if createdAtConfiguredPath {
		logger.Warn("ledger created: no ledger was at the path the config gives, so the replay memory starts empty; if the path has a typo, fix it and reload",
			zap.String("path", l.Path()))
	}
	for _, scope := range slices.Sorted(maps.Keys(paused)) {
		logger.Warn("spool deliveries of a scope are paused (a pause survives restarts): its events are accepted and kept, none is delivered until it is resumed",
			zap.String("scope", scope), zap.Int("events_pending", counts[scope].Pending), zap.String("path", l.Path()),
			zap.String("resume", "caddy webhook-guard spool resume --scope "+scope))
	}
}

// validating says whether this process is `caddy validate`, which
// provisions the config and cleans it up without running it: the ledger is
// then checked, read only, without its lock, and nothing is written (a
// running Caddy may hold it; deploy pipelines validate before a reload).
func validating() bool {
	return len(os.Args) > 1 && os.Args[1] == "validate"
}

// provisionForValidation checks the ledger at path without opening it for
// writing or taking its lock, and gives the handlers a store that serves
// nothing: the config is cleaned up right after validation.
func (s *FileStore) provisionForValidation(ctx caddy.Context, path string) error {
	if err := ledger.Check(path); err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	lease := time.Duration(cmpPositive(s.Lease, caddy.Duration(defaultLease)))
	if lease < minDuration {
		return fmt.Errorf("lease: must be at least %v", minDuration)
	}
	want := s.MaxEvents
	if want == 0 {
		want = ledger.DefaultMaxEvents
	}
	if had, clash := validationLimits.claim(ctx, path, want); clash {
		return limitConflict(path, want, had)
	}
	p := &pooledStore{Store: validationStore{}, validationOnly: true}
	p.attach(s, ctx.Logger())
	s.pooled, s.lease = p, lease
	return nil
}

// validationLimits is what the running pool's applySettings checks, for a
// config being validated (no ledger is opened then): one ledger, one
// max_events per configuration.
var validationLimits = newPerConfig[int64]()

// limitConflict is the load error of two handlers giving one ledger two
// limits.
func limitConflict(path string, want, had int64) error {
	return fmt.Errorf("store file %s: max_events %d, but another handler of this configuration uses the same ledger with max_events %d: one ledger has one limit; give both the same max_events (or leave it out)", path, want, had)
}

// validationStore is the store of a config being validated: it never
// serves a request.
type validationStore struct{}

var errValidationOnly = fmt.Errorf("%w: the config is being validated, not run", dedupe.ErrUnavailable)

func (validationStore) Claim(_ context.Context, key string, _ time.Duration) (dedupe.Claim, error) {
	return dedupe.Claim{Key: key, State: dedupe.InFlight}, errValidationOnly
}
func (validationStore) Commit(context.Context, dedupe.Claim, time.Duration) error {
	return errValidationOnly
}
func (validationStore) Release(context.Context, dedupe.Claim) error { return nil }
func (validationStore) Renew(context.Context, dedupe.Claim, time.Duration) error {
	return errValidationOnly
}

// UnmarshalCaddyfile parses `store file [<path>] [{ max_events <n>; lease <d> }]`.
func (s *FileStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "file"
	if d.NextArg() {
		s.Path = d.Val()
		if !filepath.IsAbs(s.Path) && !strings.HasPrefix(s.Path, "{") {
			return d.Errf("store file: path '%s' is relative: give an absolute path (a relative one would land in the directory Caddy happens to run in)", s.Path)
		}
		if d.NextArg() {
			return d.Errf("store file: one path at most, got '%s' too", d.Val())
		}
	}
	return s.unmarshalBlock(d, "file", &s.MaxEvents, nil)
}

// MemoryStore keeps the replay memory in this process only: it is lost at
// restart. For tests and throwaway setups.
//
//	store memory [{
//	    max_events <n>
//	    lease      <duration>
//	}]
type MemoryStore struct {
	// MaxEvents bounds the number of remembered events; at that count new
	// events are refused with 503 until ids expire. Default 1,000,000.
	MaxEvents int64 `json:"max_events,omitempty"`
	storeHandle
}

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: storeNamespace + ".memory", New: func() caddy.Module { return new(MemoryStore) }}
}

// Provision opens the memory store, or reuses the one of the same size
// already open.
func (s *MemoryStore) Provision(ctx caddy.Context) error {
	if s.MaxEvents < 0 {
		return errors.New("store memory: max_events must be positive")
	}
	return s.open(ctx, "memory/"+strconv.FormatInt(s.MaxEvents, 10), func(*pooledStore) (dedupe.Store, func() error, error) {
		m, err := dedupe.NewMemory(dedupe.MemoryConfig{MaxEvents: s.MaxEvents})
		if err != nil {
			return nil, nil, fmt.Errorf("store memory: %v", err)
		}
		return m, m.Close, nil
	})
}

// UnmarshalCaddyfile parses `store memory [{ max_events <n>; lease <d> }]`.
func (s *MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "memory"
	if d.NextArg() {
		return d.Errf("store memory: takes no argument, got '%s'", d.Val())
	}
	return s.unmarshalBlock(d, "memory", &s.MaxEvents, nil)
}

// RedisStore shares the replay memory, and with a spool block the spool,
// between several Caddy instances through Redis. Redis unreachable → 503,
// never a pass-through.
//
//	store redis [<url>] [{
//	    sentinel          <master_name> <host:port>...
//	    sentinel_password <password>
//	    cluster           <host:port>...
//	    prefix            <text>
//	    max_events        <n>
//	    lease             <duration>
//	    replicas          <n>
//	    wait_timeout      <duration>
//	    assume_persistent
//	}]
type RedisStore struct {
	// URL is the Redis URL, redis://[user:pass@]host:port/db or rediss://
	// for TLS; {env.NAME} is resolved at provisioning. With Sentinel or
	// Cluster it is optional and names no host: it gives the scheme, the
	// credentials, the database and go-redis' query options
	// (rediss://:{env.REDIS_PASSWORD}@/0).
	URL string `json:"url,omitempty"`
	// MasterName is the name Sentinel knows the primary by; with
	// Sentinels, the store asks them where the primary is and follows its
	// failovers.
	MasterName string `json:"master_name,omitempty"`
	// Sentinels are the sentinels' host:port.
	Sentinels []string `json:"sentinels,omitempty"`
	// SentinelPassword authenticates to the sentinels when they require
	// it (the URL's password is the primary's); {env.NAME} is resolved at
	// provisioning.
	SentinelPassword string `json:"sentinel_password,omitempty"`
	// Cluster are host:port of some nodes of a Redis Cluster, from which
	// the store learns the others.
	Cluster []string `json:"cluster,omitempty"`
	// Prefix starts every Redis key, in braces (the keys' cluster hash
	// tag: "{webhook_guard:}..."); default "webhook_guard:".
	Prefix string `json:"prefix,omitempty"`
	// MaxEvents, when set, bounds the number of remembered events: at that
	// count new events are refused with 503. Without it Redis' own memory
	// limit applies (maxmemory with maxmemory-policy noeviction).
	MaxEvents int64 `json:"max_events,omitempty"`
	// Replicas is how many replicas must also have a write in their
	// append-only file before it counts (WAITAOF 1 <replicas>: Redis 7.2
	// or later, Valkey); default 0, the primary's disk.
	Replicas int `json:"replicas,omitempty"`
	// WaitTimeout bounds the wait for WAITAOF's confirmation; default 2s.
	// A spooled event not confirmed in time is answered 503 (it stays
	// stored: the provider's retry is a duplicate).
	WaitTimeout caddy.Duration `json:"wait_timeout,omitempty"`
	// AssumePersistent is for a managed Redis that refuses CONFIG GET: the
	// spool then trusts it to persist every write (appendonly yes, with
	// appendfsync always or WAITAOF) and to evict nothing, unchecked; a
	// warning says so at every start. Without it such a Redis cannot hold
	// a spool.
	AssumePersistent bool `json:"assume_persistent,omitempty"`
	storeHandle
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: storeNamespace + ".redis", New: func() caddy.Module { return new(RedisStore) }}
}

// redisCheckTimeout bounds the check of Redis' persistence at provisioning.
const redisCheckTimeout = 5 * time.Second

// Provision connects to Redis, or reuses the client already open for the
// same Redis and options.
func (s *RedisStore) Provision(ctx caddy.Context) error {
	if s.MaxEvents < 0 {
		return errors.New("store redis: max_events must be positive")
	}
	if s.Replicas < 0 {
		return errors.New("store redis: replicas must be 0 or more")
	}
	if s.WaitTimeout < 0 {
		return errors.New("store redis: wait_timeout must be positive")
	}
	repl := caddy.NewReplacer()
	u := s.URL
	if u != "" {
		urls, err := resolveSecrets(repl, "store redis URL", []string{s.URL})
		if err != nil {
			return err
		}
		u = urls[0]
		if err := checkRedisURL(u, s.MasterName != "" || len(s.Cluster) > 0); err != nil {
			return fmt.Errorf("store redis: %v", err)
		}
	}
	sentinelPassword := s.SentinelPassword
	if sentinelPassword != "" {
		pw, err := resolveSecrets(repl, "store redis sentinel_password", []string{sentinelPassword})
		if err != nil {
			return err
		}
		sentinelPassword = pw[0]
	}
	switch {
	case (s.MasterName != "") != (len(s.Sentinels) > 0):
		return errors.New("store redis: sentinel needs the master name and at least one sentinel address")
	case s.MasterName != "" && len(s.Cluster) > 0:
		return errors.New("store redis: sentinel and cluster are exclusive: a Redis is one or the other")
	case u == "" && s.MasterName == "" && len(s.Cluster) == 0:
		return errors.New("store redis: a URL is required (redis://host:port/db), or sentinel or cluster in the block")
	}
	// The pool key holds a digest of the settings, which may carry a
	// password.
	var id strings.Builder
	for _, part := range []string{u, s.MasterName, strings.Join(s.Sentinels, ","), sentinelPassword, strings.Join(s.Cluster, ","),
		s.Prefix, strconv.FormatInt(s.MaxEvents, 10), strconv.Itoa(s.Replicas), time.Duration(s.WaitTimeout).String()} {
		id.WriteString(part)
		id.WriteByte(0)
	}
	digest := sha256.Sum256([]byte(id.String()))
	key := "redis/" + hex.EncodeToString(digest[:])
	var store *dedupe.Redis
	err := s.open(ctx, key, func(p *pooledStore) (dedupe.Store, func() error, error) {
		var lastUnconfirmed atomic.Int64
		r, err := dedupe.NewRedis(dedupe.RedisConfig{
			URL: u, MasterName: s.MasterName, SentinelAddrs: s.Sentinels, SentinelPassword: sentinelPassword,
			ClusterAddrs: s.Cluster, Prefix: s.Prefix, MaxEvents: s.MaxEvents,
			Replicas: s.Replicas, WaitTimeout: time.Duration(s.WaitTimeout),
			OnEvictingPolicy: func(policy string) {
				p.logger().Error("redis evicts keys under memory pressure: a remembered event may be forgotten and replayed; set maxmemory-policy noeviction",
					zap.String("maxmemory_policy", policy))
			},
			OnUnconfirmed: func(err error) {
				// At most once a minute: a Redis that cannot confirm
				// cannot confirm any commit.
				t := time.Now().Unix()
				if last := lastUnconfirmed.Load(); t-last >= 60 && lastUnconfirmed.CompareAndSwap(last, t) {
					p.logger().Warn("redis did not confirm a remembered id on disk in time (WAITAOF): it is remembered, but a Redis crash now could forget it; check the replicas and wait_timeout",
						zap.Error(err))
				}
			},
			Now: now,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("store redis: %v", err)
		}
		p.spoolStore, p.name = r, redisStoreName(r, u, s.Prefix)
		c, closeFn, err := cached(r)
		if err == nil {
			f := c.(cacheForgetter)
			r.WatchForgotten(f.Forget, f.ForgetAll)
		}
		return c, closeFn, err
	})
	if err != nil {
		return err
	}
	store = s.pooled.spoolStore.(*dedupe.Redis)
	s.pooled.mu.Lock()
	s.pooled.checkSpool = func() error { return s.checkSpool(store) }
	s.pooled.mu.Unlock()
	// The replay memory alone keeps working on any Redis: what its
	// settings would lose is a warning, logged once the check is done
	// (without delaying the load when Redis is slow to answer).
	logger := ctx.Logger()
	go func() {
		cctx, cancel := context.WithTimeout(context.Background(), redisCheckTimeout)
		defer cancel()
		pers, err := store.Persistence(cctx)
		switch {
		case err != nil:
			logger.Warn("store redis: could not read Redis' persistence settings now; events are refused with 503 while Redis cannot be reached",
				zap.String("redis", store.Where()), zap.Error(err))
		case pers.ReplayWarning() != "":
			logger.Warn("store redis: "+pers.ReplayWarning(), zap.String("redis", store.Where()))
		}
	}()
	return nil
}

// checkSpool is run when a handler puts its spool in this store: Redis must
// keep every acknowledged event (see dedupe.Persistence.SpoolProblem). A
// Redis that cannot be reached now is checked at its first connection
// (events are refused until then); settings that would lose events fail
// the load.
func (s *RedisStore) checkSpool(r *dedupe.Redis) error {
	logger := s.pooled.logger()
	ctx, cancel := context.WithTimeout(context.Background(), redisCheckTimeout)
	defer cancel()
	lease := s.lease
	if lease == 0 {
		lease = defaultLease
	}
	pers, err := r.CheckSpool(ctx, dedupe.SpoolOptions{Lease: lease, AssumePersistent: s.AssumePersistent})
	switch {
	case errors.Is(err, dedupe.ErrUnavailable):
		logger.Error("store redis: the spool could not check Redis' persistence now; events are refused with 503 until Redis answers and its settings keep them",
			zap.String("redis", r.Where()), zap.Error(err))
	case err != nil:
		return fmt.Errorf("store redis (%s) cannot hold a spool: %v", r.Where(), err)
	}
	if s.AssumePersistent {
		logger.Warn("store redis: assume_persistent: the spool trusts Redis to persist every write and to evict nothing, without checking; an acknowledged event is lost if it does not",
			zap.String("redis", r.Where()), zap.Bool("config_readable", !pers.ConfigRefused), zap.Bool("waitaof", pers.WaitAOF))
	}
	return nil
}

// redisStoreName says which Redis data a store reads: its server(s), the
// database of the URL u (the URL's credentials left out) and the prefix.
func redisStoreName(r *dedupe.Redis, u, prefix string) string {
	db := 0
	if u != "" {
		if opt, err := redis.ParseURL(u); err == nil {
			db = opt.DB
		}
	}
	return fmt.Sprintf("redis %s db %d prefix %s", r.Where(), db, cmp.Or(prefix, dedupe.DefaultRedisPrefix))
}

// checkRedisURL refuses what go-redis cannot parse, without echoing the URL
// (it may carry a password). With Sentinel or Cluster (hostless) the URL
// names no host.
func checkRedisURL(u string, hostless bool) error {
	if _, err := redis.ParseURL(u); err != nil {
		scheme := "none"
		if p, perr := url.Parse(u); perr == nil && p.Scheme != "" {
			scheme = p.Scheme
		}
		return fmt.Errorf("want redis://[user:pass@]host:port/db or rediss://... (scheme %q)", scheme)
	}
	if p, err := url.Parse(u); hostless && err == nil && p.Host != "" {
		return errors.New("with sentinel or cluster, the URL names no host (the addresses are in the block), only the scheme, credentials and options: redis://:password@/0")
	}
	return nil
}

// UnmarshalCaddyfile parses `store redis [<url>] [{ ... }]` (see
// RedisStore). A literal URL is checked here, with its line; one from a
// placeholder at provisioning.
func (s *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "redis"
	if d.NextArg() {
		s.URL = d.Val()
		if d.NextArg() {
			return d.Errf("store redis: one URL only, got '%s' too", d.Val())
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "lease":
			if err := durationArg(d, "lease", &s.Lease); err != nil {
				return err
			}
		case "max_events":
			if err := maxEventsArg(d, &s.MaxEvents); err != nil {
				return err
			}
		case "prefix":
			if err := oneArgInto1(d, &s.Prefix); err != nil {
				return err
			}
			if strings.ContainsAny(s.Prefix, "{}") {
				return d.Errf("store redis: prefix %q: braces are not allowed (the prefix is put in braces as the keys' cluster hash tag)", s.Prefix)
			}
		case "sentinel":
			if s.MasterName != "" {
				return d.Err("store redis: sentinel given twice")
			}
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Err("store redis: sentinel <master_name> <host:port>... (the name the sentinels know the primary by, then at least one sentinel)")
			}
			s.MasterName, s.Sentinels = args[0], args[1:]
			if err := checkRedisAddrs(args[1:]); err != nil {
				return d.Errf("store redis: sentinel: %v", err)
			}
		case "sentinel_password":
			if err := oneArgInto1(d, &s.SentinelPassword); err != nil {
				return err
			}
		case "cluster":
			if s.Cluster != nil {
				return d.Err("store redis: cluster given twice")
			}
			s.Cluster = d.RemainingArgs()
			if len(s.Cluster) == 0 {
				return d.Err("store redis: cluster <host:port>... (at least one node of the cluster)")
			}
			if err := checkRedisAddrs(s.Cluster); err != nil {
				return d.Errf("store redis: cluster: %v", err)
			}
		case "replicas":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("replicas: want 0 or more, got '%s'", v)
			}
			s.Replicas = n
		case "wait_timeout":
			if err := durationArg(d, "wait_timeout", &s.WaitTimeout); err != nil {
				return err
			}
		case "assume_persistent":
			if d.NextArg() {
				return d.Errf("assume_persistent: takes no argument, got '%s'", d.Val())
			}
			s.AssumePersistent = true
		default:
			return d.Errf("unrecognized store redis subdirective '%s'", opt)
		}
	}
	if s.MasterName != "" && s.Cluster != nil {
		return d.Err("store redis: sentinel and cluster are exclusive: a Redis is one or the other")
	}
	hostless := s.MasterName != "" || s.Cluster != nil
	if s.URL == "" && !hostless {
		return d.Err("store redis: a URL is required (redis://host:port/db), or sentinel or cluster in the block")
	}
	if s.URL != "" && !strings.Contains(s.URL, "{") {
		if err := checkRedisURL(s.URL, hostless); err != nil {
			return d.Errf("store redis: %v", err)
		}
	}
	if s.SentinelPassword != "" && s.MasterName == "" {
		return d.Err("store redis: sentinel_password without sentinel")
	}
	return nil
}

// checkRedisAddrs checks host:port addresses.
func checkRedisAddrs(addrs []string) error {
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n <= 0 || n > 65535 {
			return fmt.Errorf("address '%s': want host:port", a)
		}
	}
	return nil
}

// maxEventsArg parses a positive max_events.
func maxEventsArg(d *caddyfile.Dispenser, field *int64) error {
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return d.Errf("max_events: want a positive number, got '%s'", v)
	}
	*field = n
	return nil
}

// Interface guards
var (
	_ ReplayStore           = (*FileStore)(nil)
	_ ReplayStore           = (*MemoryStore)(nil)
	_ ReplayStore           = (*RedisStore)(nil)
	_ caddy.Provisioner     = (*FileStore)(nil)
	_ caddy.Provisioner     = (*MemoryStore)(nil)
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddy.CleanerUpper    = (*FileStore)(nil)
	_ caddyfile.Unmarshaler = (*FileStore)(nil)
	_ caddyfile.Unmarshaler = (*MemoryStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
)
