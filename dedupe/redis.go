package dedupe

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of RedisConfig, sized for an edge proxy: a slow or unreachable
// Redis turns into a quick 503, not a stalled request.
const (
	// DefaultRedisPrefix is the prefix of every key the Redis store writes
	// (see RedisConfig.Prefix for the layout).
	DefaultRedisPrefix = "webhook_guard:"
	// DefaultRedisDialTimeout bounds establishing a connection.
	DefaultRedisDialTimeout = 2 * time.Second
	// DefaultRedisReadTimeout bounds waiting for a reply.
	DefaultRedisReadTimeout = time.Second
	// DefaultRedisWriteTimeout bounds sending a command.
	DefaultRedisWriteTimeout = time.Second
	// DefaultRedisWaitTimeout bounds how long a write waits for WAITAOF's
	// confirmation that it is on disk (and on the replicas asked for).
	DefaultRedisWaitTimeout = 2 * time.Second
)

// redisOpSlack is what an operation may take beyond the read timeout:
// writing the command, taking a connection from the pool, a retry on a fresh
// connection after a stale one.
const redisOpSlack = 250 * time.Millisecond

// The values of a replay key. Any other value is the token of an in-flight
// claim.
const (
	// redisDelivered: the event was delivered (committed) within its window.
	redisDelivered = "delivered"
	// redisAccepted: the spool holds the event (spooled, not yet delivered);
	// a copy of it is a duplicate.
	redisAccepted = "accepted"
)

// The replay scripts take the keys {key, index, legacy key}: the index is a
// sorted set of every key held (with the end of its lease or window as
// score), used when ARGV[3] (max_events) is positive; the legacy key is where
// releases before the hash tag kept the same id (prefix + key, without the
// braces), read when it differs from the key, so that the ids remembered
// before an upgrade are still duplicates. Every key of one prefix is in one
// cluster slot; the legacy key is not, so it is only given outside a
// cluster.

// redisClaimScript takes KEYS[1] for the token ARGV[1] with a lease of
// ARGV[2] ms if the key is free, and otherwise says what holds it, in one
// atomic step: {0} fresh, {1} in flight, {2, ms left of the window}
// delivered, {4, ms left} accepted by the spool, {3} refused: the index
// holds max_events keys. A key that expires between two commands cannot be
// misreported, as it could with SET NX then GET. A retried call that finds
// its own token is fresh again, so a retry after a lost reply does not lock
// the caller out of its own claim.
var redisClaimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
	return {0}
end
if v == '` + redisDelivered + `' then
	return {2, redis.call('PTTL', KEYS[1])}
end
if v == '` + redisAccepted + `' then
	return {4, redis.call('PTTL', KEYS[1])}
end
if v then
	return {1}
end
if KEYS[3] ~= KEYS[1] and redis.call('GET', KEYS[3]) == '` + redisDelivered + `' then
	return {2, redis.call('PTTL', KEYS[3])}
end
local max = tonumber(ARGV[3])
if max > 0 then
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
	if redis.call('ZCARD', KEYS[2]) >= max then
		return {3}
	end
	redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {0}
`)

// redisConfirmScript writes, so that the WAITAOF after it (durably) covers
// every write made before, such as a spooled event whose own WAITAOF did
// not confirm. KEYS: the spool's count of duplicates.
var redisConfirmScript = redis.NewScript(`
return redis.call('HINCRBY', KEYS[1], 'n', 1)
`)

// redisCommitScript sets KEYS[1] delivered for ARGV[1] ms and, with an
// index (ARGV[2] positive), records the end of its window there (and
// drops the keys whose end passed, as a claim does).
var redisCommitScript = redis.NewScript(`
redis.call('SET', KEYS[1], '` + redisDelivered + `', 'PX', ARGV[1])
if tonumber(ARGV[2]) > 0 then
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
	redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), KEYS[1])
end
return 1
`)

// redisRenewScript extends the lease of KEYS[1] to ARGV[2] ms if it still
// holds the token ARGV[1] (and its score in the index, if ARGV[3] is
// positive): 1 renewed, 0 not held.
var redisRenewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), KEYS[1])
end
return 1
`)

// redisReleaseScript deletes KEYS[1] only if it still holds the token
// ARGV[1]: a claim that expired and passed to another instance, or that was
// committed, is left alone.
var redisReleaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('ZREM', KEYS[2], KEYS[1])
	return redis.call('DEL', KEYS[1])
end
return 0
`)

// redisIndexKey is the name, after the hash tag, of the sorted set that
// counts the keys held when MaxEvents is set. No event key has it: they
// begin with a length and a colon.
const redisIndexKey = "index"

// RedisConfig configures the Redis store, which several Caddy instances
// share so that the replay guarantee, and the spool, hold across them.
//
// Redis is found in one of three ways: a URL naming one server
// (standalone); MasterName and SentinelAddrs (a primary managed by
// Sentinel, followed through failovers); or ClusterAddrs (a Redis Cluster).
// With Sentinel or Cluster, URL is optional and gives only the scheme (TLS
// with rediss://), the user name and password, the database (Sentinel) and
// go-redis's query options; it must name no host.
type RedisConfig struct {
	// URL locates the server: redis://[[user]:password@]host[:port][/db],
	// or rediss:// for TLS. Query options of go-redis's ParseURL (such as
	// pool_size or max_retries) are accepted; the fields below override
	// them when set. The password never appears in an error.
	URL string
	// MasterName is the name Sentinel knows the primary by; with
	// SentinelAddrs, the store asks those sentinels where the primary is,
	// and follows it when they fail over.
	MasterName string
	// SentinelAddrs are the sentinels' host:port.
	SentinelAddrs []string
	// SentinelPassword authenticates to the sentinels, when they require it
	// (requirepass in sentinel.conf); the URL's password is the primary's.
	SentinelPassword string
	// ClusterAddrs are host:port of some nodes of a Redis Cluster (seeds);
	// the store learns the others from them.
	ClusterAddrs []string
	// Prefix starts every key, so that several deployments can share one
	// Redis: the keys are "{" + Prefix + "}" followed by the key's name,
	// the prefix in braces being the Redis Cluster hash tag that puts
	// every key of one prefix in one slot (scripts touch several at once).
	// Default DefaultRedisPrefix. It may not contain braces.
	Prefix string
	// DialTimeout bounds establishing a connection. Zero or negative means
	// the URL's dial_timeout, else DefaultRedisDialTimeout.
	DialTimeout time.Duration
	// ReadTimeout bounds waiting for a reply. Every operation is also
	// bounded, whatever the caller's context, by about ReadTimeout plus a
	// quarter of a second (plus WaitTimeout for a write that waits for
	// WAITAOF), so a slow Redis cannot stall a request for longer. Zero or
	// negative means the URL's read_timeout, else DefaultRedisReadTimeout;
	// timeouts cannot be turned off.
	ReadTimeout time.Duration
	// WriteTimeout bounds sending a command. Zero or negative means the
	// URL's write_timeout, else DefaultRedisWriteTimeout.
	WriteTimeout time.Duration
	// PoolSize is the maximum number of connections to each Redis node.
	// Zero or negative means the URL's pool_size, else 10 per GOMAXPROCS.
	PoolSize int
	// MaxEvents, when positive, bounds the ids held (in flight, accepted or
	// delivered): an index of them (a sorted set, key "index") makes the
	// claim of a new id fail with ErrFull at capacity. Zero: no bound but
	// Redis' own memory (whose OOM answer is ErrFull too).
	MaxEvents int64
	// Replicas is how many replicas must have a write in their append-only
	// file before it counts as durable (WAITAOF 1 <Replicas>); 0 by
	// default: the primary's disk. It needs a server with WAITAOF (Redis
	// 7.2 or later, Valkey).
	Replicas int
	// WaitTimeout bounds the wait for WAITAOF; default
	// DefaultRedisWaitTimeout.
	WaitTimeout time.Duration
	// OnEvictingPolicy, when set, is called once, at the first connection,
	// if the server's maxmemory-policy evicts keys (anything but
	// noeviction): Redis could then forget a delivered id before its window
	// ends. A server that refuses CONFIG GET is not reported.
	OnEvictingPolicy func(policy string)
	// OnUnconfirmed, when set, is told when WAITAOF did not confirm a
	// committed replay id in time (the commit stands: the id is in Redis'
	// memory, not known to be on disk). A spooled event is refused instead.
	OnUnconfirmed func(err error)
	// Now is the spool's clock (the times of its records); time.Now when
	// nil. Key expiry is Redis' own clock.
	Now func() time.Time
}

// Redis is the replay store (and the spool, see redis_spool.go) shared by
// several Caddy instances through Redis. A claim is `SET key token NX PX
// lease` (in a script that also reports what holds a taken key), a commit
// `SET key delivered PX window` followed, where the server has it, by
// WAITAOF on the same connection, a release a compare-and-delete and a
// renewal a compare-and-PEXPIRE on the token. With MaxEvents, a sorted set
// indexes the keys held so that a claim at capacity fails with ErrFull.
// Redis out of memory (OOM, under the noeviction policy) is ErrFull too; any
// other Redis failure is returned as an error wrapping ErrUnavailable, so
// the guard fails closed.
type Redis struct {
	client      redis.UniversalClient
	cluster     *redis.ClusterClient // the same client, in cluster mode
	prefix      string
	tag         string        // "{" + prefix + "}": the start of every key
	legacy      bool          // read delivered ids under prefix + key too
	where       string        // the server(s), for error messages
	secrets     []string      // scrubbed from error messages
	opTimeout   time.Duration // bound of every operation
	pingLimit   time.Duration // bound of Ping, which may have to dial
	maxEvents   int64
	index       string // key of the index
	replicas    int
	waitTimeout time.Duration
	now         func() time.Time
	held        atomic.Int64 // last size of the index that Usage read
	counted     atomic.Int64 // when Usage last counted the index (unix ms)

	// persistence is what the last connection made learnt of the
	// server's persistence (see Persistence); nil before any.
	persistence   atomic.Pointer[Persistence]
	evictReported atomic.Bool
	onEvicting    func(string)
	onUnconfirmed func(error)

	spool redisSpool

	forgotten     *redis.PubSub // see WatchForgotten; nil before
	forgottenDone chan struct{} // closed when WatchForgotten's goroutine ends
}

// forgottenChannel is the pub/sub channel, under the store's hash tag, on
// which Forget announces the keys it made every instance forget.
func (s *Redis) forgottenChannel() string { return s.tag + "forgotten" }

// WatchForgotten calls forget with each replay key that any instance
// sharing this Redis and prefix made the store forget (Forget announces
// it), until the store is closed, so that every instance drops it from its
// cache of delivered answers. It does not wait for Redis (which may be down
// or slow at start): the subscription is made in the background, and made
// again by the client when it drops. An announcement made while this
// instance was not subscribed is missed, so forgetAll is called each time
// the subscription is (re)made: the whole cache goes, and the next claims
// ask Redis. Close ends it and waits until neither is called any more.
func (s *Redis) WatchForgotten(forget func(key string), forgetAll func()) {
	ps := s.client.Subscribe(context.Background()) // no channel yet: no connection
	done := make(chan struct{})
	s.forgotten, s.forgottenDone = ps, done
	go func() {
		defer close(done)
		// Redis down or slow now: the channel is recorded all the same,
		// and the loop below subscribes as soon as it can connect.
		if err := ps.Subscribe(context.Background(), s.forgottenChannel()); errors.Is(err, redis.ErrClosed) {
			return // closed before it could subscribe
		}
		for m := range ps.ChannelWithSubscriptions() {
			switch m := m.(type) {
			case *redis.Message:
				forget(m.Payload)
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					forgetAll()
				}
			}
		}
	}()
}

// NewRedis returns a Redis store for cfg. It does not connect: the first
// operation does, and Ping checks the server is reachable. The returned
// errors never contain a password that cfg may hold.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	mode := 0 // standalone
	switch {
	case cfg.MasterName != "" || len(cfg.SentinelAddrs) > 0:
		if len(cfg.ClusterAddrs) > 0 {
			return nil, errors.New("dedupe: redis: sentinel and cluster are exclusive: a Redis is one or the other")
		}
		if cfg.MasterName == "" || len(cfg.SentinelAddrs) == 0 {
			return nil, errors.New("dedupe: redis sentinel: want the master name and at least one sentinel address")
		}
		mode = 1
	case len(cfg.ClusterAddrs) > 0:
		mode = 2
	}
	opt := &redis.Options{}
	if cfg.URL != "" || mode == 0 {
		var err error
		if opt, err = parseRedisURL(cfg.URL); err != nil {
			return nil, err
		}
	}
	if mode != 0 && cfg.URL != "" && urlHost(cfg.URL) != "" {
		return nil, fmt.Errorf("dedupe: invalid redis URL %q: with %s the URL names no host, only the scheme, credentials and options (redis://:password@/0)",
			redactRedisURL(cfg.URL), map[int]string{1: "sentinel", 2: "cluster"}[mode])
	}
	for _, a := range append(append([]string(nil), cfg.SentinelAddrs...), cfg.ClusterAddrs...) {
		if err := checkRedisAddr(a); err != nil {
			return nil, err
		}
	}
	if mode == 2 && opt.DB != 0 {
		return nil, fmt.Errorf("dedupe: redis cluster: database %d: a cluster has database 0 only", opt.DB)
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("dedupe: redis prefix %q: braces are not allowed (the prefix is put in braces as the keys' cluster hash tag)", prefix)
	}
	if cfg.MaxEvents < 0 {
		return nil, fmt.Errorf("dedupe: redis max_events must be positive, got %d", cfg.MaxEvents)
	}
	if cfg.Replicas < 0 {
		return nil, fmt.Errorf("dedupe: redis replicas must be 0 or more, got %d", cfg.Replicas)
	}
	dial := firstPositive(cfg.DialTimeout, opt.DialTimeout, DefaultRedisDialTimeout)
	read := firstPositive(cfg.ReadTimeout, opt.ReadTimeout, DefaultRedisReadTimeout)
	waitTimeout := firstPositive(cfg.WaitTimeout, DefaultRedisWaitTimeout)
	// The sockets' read deadline leaves room for WAITAOF's wait, which a
	// pipeline reads with the client's read timeout; every operation is
	// bounded by its context (opTimeout, or opTimeout + waitTimeout for a
	// write that waits), which go-redis applies when it is sooner.
	socketRead := read + waitTimeout
	write := firstPositive(cfg.WriteTimeout, opt.WriteTimeout, DefaultRedisWriteTimeout)
	pool := firstPositive(cfg.PoolSize, opt.PoolSize, 10*runtime.GOMAXPROCS(0))
	tag := "{" + prefix + "}"
	s := &Redis{
		prefix:        prefix,
		tag:           tag,
		legacy:        mode != 2,
		opTimeout:     read + redisOpSlack,
		pingLimit:     dial + read + redisOpSlack,
		maxEvents:     cfg.MaxEvents,
		index:         tag + redisIndexKey,
		replicas:      cfg.Replicas,
		waitTimeout:   waitTimeout,
		now:           cfg.Now,
		onEvicting:    cfg.OnEvictingPolicy,
		onUnconfirmed: cfg.OnUnconfirmed,
	}
	if s.now == nil {
		s.now = time.Now
	}
	for _, p := range []string{opt.Password, cfg.SentinelPassword} {
		if p != "" {
			s.secrets = append(s.secrets, p)
		}
	}
	onConnect := func(ctx context.Context, cn *redis.Conn) error {
		s.learn(ctx, cn)
		return nil
	}
	switch mode {
	case 0:
		s.where = opt.Addr
		o := *opt
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolSize = dial, socketRead, write, pool
		// Socket deadlines follow the operation's context, which is
		// bounded by opTimeout below.
		o.ContextTimeoutEnabled = true
		// One dial attempt per connection: a refused connection is a
		// quick 503, and the command retries try again.
		o.DialerRetries = 1
		o.OnConnect = onConnect
		s.client = redis.NewClient(&o)
	case 1, 2:
		// The URL's settings and this store's timeouts, for either form.
		u := &redis.UniversalOptions{
			Username:   opt.Username,
			Password:   opt.Password,
			DB:         opt.DB,
			TLSConfig:  opt.TLSConfig,
			Protocol:   opt.Protocol,
			ClientName: opt.ClientName,

			DialTimeout:           dial,
			ReadTimeout:           socketRead,
			WriteTimeout:          write,
			ContextTimeoutEnabled: true,
			DialerRetries:         1,
			MaxRetries:            opt.MaxRetries,
			MinRetryBackoff:       opt.MinRetryBackoff,
			MaxRetryBackoff:       opt.MaxRetryBackoff,

			PoolSize:        pool,
			PoolFIFO:        opt.PoolFIFO,
			PoolTimeout:     opt.PoolTimeout,
			MinIdleConns:    opt.MinIdleConns,
			MaxIdleConns:    opt.MaxIdleConns,
			MaxActiveConns:  opt.MaxActiveConns,
			ConnMaxIdleTime: opt.ConnMaxIdleTime,
			ConnMaxLifetime: opt.ConnMaxLifetime,

			OnConnect: onConnect,
		}
		if mode == 1 {
			s.where = "sentinel master " + cfg.MasterName + " (" + strings.Join(cfg.SentinelAddrs, ", ") + ")"
			u.MasterName, u.Addrs, u.SentinelPassword = cfg.MasterName, cfg.SentinelAddrs, cfg.SentinelPassword
			s.client = redis.NewFailoverClient(u.Failover())
			break
		}
		s.where = "cluster (" + strings.Join(cfg.ClusterAddrs, ", ") + ")"
		u.Addrs = cfg.ClusterAddrs
		s.cluster = redis.NewClusterClient(u.Cluster())
		s.client = s.cluster
	}
	s.spool.init(s)
	return s, nil
}

// urlHost is the host part of a redis URL ("" when it has none), read
// without parsing the user information, which may be malformed.
func urlHost(raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		rest = raw
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	return rest
}

// checkRedisAddr checks a sentinel or cluster address: host:port.
func checkRedisAddr(a string) error {
	host, port, ok := strings.Cut(a, ":")
	if i := strings.LastIndexByte(a, ':'); i >= 0 {
		host, port, ok = a[:i], a[i+1:], true
	}
	if n, err := strconv.Atoi(port); !ok || host == "" || err != nil || n <= 0 || n > 65535 || strings.ContainsAny(a, "/@ ") {
		return fmt.Errorf("dedupe: redis address %q: want host:port", a)
	}
	return nil
}

// key is the Redis key of a replay key.
func (s *Redis) key(key string) string { return s.tag + key }

// keys returns the keys of a replay script about key: the key, the index,
// and the legacy key (the key itself when there is none).
func (s *Redis) keys(key string) []string {
	k := s.tag + key
	legacy := k
	if s.legacy {
		legacy = s.prefix + key
	}
	return []string{k, s.index, legacy}
}

// Claim implements Store. With an error, the returned claim is InFlight,
// never Fresh (the zero State), so that a caller who overlooks the error
// still does not forward the event.
func (s *Redis) Claim(ctx context.Context, key string, lease time.Duration) (Claim, error) {
	c, _, err := s.ClaimWindow(ctx, key, lease)
	return c, err
}

// ClaimWindow implements WindowClaimer.
func (s *Redis) ClaimWindow(ctx context.Context, key string, lease time.Duration) (Claim, time.Time, error) {
	failed := Claim{Key: key, State: InFlight}
	ms, err := redisMillis("lease", lease)
	if err != nil {
		return failed, time.Time{}, err
	}
	token := rand.Text()
	opCtx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	reply, err := redisClaimScript.Run(opCtx, s.client, s.keys(key), token, ms, s.maxEvents).Int64Slice()
	if err != nil {
		return failed, time.Time{}, s.unavailable("claim", err)
	}
	switch {
	case len(reply) == 1 && reply[0] == 0:
		return Claim{Key: key, State: Fresh, Token: token}, time.Time{}, nil
	case len(reply) == 1 && reply[0] == 1:
		return Claim{Key: key, State: InFlight}, time.Time{}, nil
	case len(reply) == 2 && (reply[0] == 2 || reply[0] == 4):
		if reply[0] == 4 {
			// Accepted by the spool: a duplicate is acknowledged only
			// once the spooled event is on disk (and replicas), as the
			// spool's own ingest of a duplicate does; its WAITAOF may
			// not have confirmed it.
			if err := s.confirm(ctx); err != nil {
				return failed, time.Time{}, s.unavailable("claim", fmt.Errorf("the event is spooled but not confirmed on disk: %w", err))
			}
		}
		var until time.Time
		if reply[1] > 0 {
			until = time.Now().Add(time.Duration(reply[1]) * time.Millisecond)
		}
		return Claim{Key: key, State: Delivered}, until, nil
	case len(reply) == 1 && reply[0] == 3:
		return failed, time.Time{}, fmt.Errorf("%w: redis on %s holds max_events %d ids", ErrFull, s.where, s.maxEvents)
	}
	return failed, time.Time{}, s.unavailable("claim", fmt.Errorf("unexpected script reply %v", reply))
}

// confirm waits until every write Redis made so far is durable (WAITAOF
// after a write of its own, where the server has it; with appendfsync
// always, the reply of that write).
func (s *Redis) confirm(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout+s.waitFor())
	defer cancel()
	_, err := s.durably(ctx, redisConfirmScript, []string{s.tag + "spool:duplicates"})
	return err
}

// Commit implements Store. The key is set to delivered for window whether or
// not the lease of c has expired meanwhile: the upstream accepted the event.
// Only a Fresh claim can be committed; committing another would mark
// delivered an event that someone else is delivering. Where the server has
// WAITAOF, the commit waits for it on the same connection; if it does not
// confirm in time the commit stands (the id is in Redis) and OnUnconfirmed
// is told.
func (s *Redis) Commit(ctx context.Context, c Claim, window time.Duration) error {
	if c.State != Fresh {
		return fmt.Errorf("dedupe: commit of a %s claim; only a fresh claim can be committed", c.State)
	}
	ms, err := redisMillis("window", window)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout+s.waitFor())
	defer cancel()
	_, err = s.durably(ctx, redisCommitScript, s.keys(c.Key)[:2], ms, s.maxEvents)
	var nc *notConfirmedError
	switch {
	case errors.As(err, &nc):
		if s.onUnconfirmed != nil {
			s.onUnconfirmed(s.unavailable("commit", err))
		}
	case err != nil:
		return s.unavailable("commit", err)
	}
	return nil
}

// Release implements Store: the key is deleted only if it still holds the
// token of c, so a claim that expired and was taken by someone else, or
// that was committed, stays. Releasing a claim that is not Fresh does
// nothing.
func (s *Redis) Release(ctx context.Context, c Claim) error {
	if c.State != Fresh || c.Token == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := redisReleaseScript.Run(ctx, s.client, s.keys(c.Key)[:2], c.Token).Err(); err != nil {
		return s.unavailable("release", err)
	}
	return nil
}

// Renew implements Store: the lease is extended only if the key still
// holds the token of c (a compare-and-PEXPIRE).
func (s *Redis) Renew(ctx context.Context, c Claim, lease time.Duration) error {
	ms, err := redisMillis("lease", lease)
	if err != nil {
		return err
	}
	if c.State != Fresh || c.Token == "" {
		return fmt.Errorf("dedupe: renew %q: %w", c.Key, ErrNotHeld)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	n, err := redisRenewScript.Run(ctx, s.client, s.keys(c.Key)[:2], c.Token, ms, s.maxEvents).Int64()
	if err != nil {
		return s.unavailable("renew", err)
	}
	if n != 1 {
		return fmt.Errorf("dedupe: renew %q: %w", c.Key, ErrNotHeld)
	}
	return nil
}

// Usage implements Usage when MaxEvents is set: the ids the index holds
// within their lease or window, and MaxEvents. It asks Redis (bounded like
// any operation); if Redis does not answer it returns the last figure
// read. Without MaxEvents it returns 0, 0.
func (s *Redis) Usage() (remembered, capacity int64) {
	if s.maxEvents <= 0 {
		return 0, 0
	}
	// Counting is a round trip: at most once a second; in between the last
	// count is answered.
	t := time.Now().UnixMilli()
	last := s.counted.Load()
	if t-last < 1000 || !s.counted.CompareAndSwap(last, t) {
		return s.held.Load(), s.maxEvents
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opTimeout)
	defer cancel()
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	if n, err := s.client.ZCount(ctx, s.index, "("+now, "+inf").Result(); err == nil {
		s.held.Store(n)
	}
	return s.held.Load(), s.maxEvents
}

// Ping checks that the server answers; an error wraps ErrUnavailable.
func (s *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.pingLimit)
	defer cancel()
	if err := s.client.Ping(ctx).Err(); err != nil {
		return s.unavailable("ping", err)
	}
	return nil
}

// Close closes the connections to Redis. The store is unusable afterwards.
func (s *Redis) Close() error {
	s.spool.close()
	if s.forgotten != nil {
		_ = s.forgotten.Close()
		<-s.forgottenDone
	}
	return s.client.Close()
}

// Where says which Redis the store uses (its address, or the sentinel
// master or cluster and their addresses), for log lines; never a password.
func (s *Redis) Where() string { return s.where }

// unavailable wraps a Redis failure so that errors.Is(err, ErrUnavailable)
// holds, with a message that says which operation failed where. Redis out
// of memory (maxmemory reached under noeviction) wraps ErrFull instead.
func (s *Redis) unavailable(op string, err error) error {
	var re *redisError
	if errors.As(err, &re) {
		return err
	}
	e := &redisError{op: op, where: s.where, secrets: s.secrets, err: err, kind: ErrUnavailable}
	if strings.Contains(err.Error(), "OOM command not allowed") {
		e.kind = ErrFull
	}
	return e
}

// redisError is a failed Redis operation. It unwraps to ErrUnavailable and to
// the client's error.
type redisError struct {
	op, where string
	secrets   []string
	err       error
	kind      error // ErrUnavailable or ErrFull
}

func (e *redisError) Error() string {
	msg := e.kind.Error() + ": redis " + e.op + " on " + e.where + ": " + e.err.Error()
	for _, p := range e.secrets {
		// go-redis does not put a password in its errors; this makes sure.
		msg = strings.ReplaceAll(msg, p, "xxxxx")
	}
	return msg
}

func (e *redisError) Unwrap() []error { return []error{e.kind, e.err} }

// parseRedisURL parses a redis:// or rediss:// URL. Its errors say "invalid
// redis URL" and show the URL and the parse error with the user information
// redacted.
func parseRedisURL(raw string) (*redis.Options, error) {
	if raw == "" {
		return nil, errors.New("dedupe: invalid redis URL: empty")
	}
	redacted := redactRedisURL(raw)
	scheme, _, _ := strings.Cut(raw, "://")
	if scheme = strings.ToLower(scheme); scheme != "redis" && scheme != "rediss" {
		return nil, fmt.Errorf("dedupe: invalid redis URL %q: the scheme must be redis:// or rediss://", redacted)
	}
	opt, err := redis.ParseURL(raw)
	if err == nil {
		return opt, nil
	}
	// The parse error may quote any part of the URL, the password
	// included (a '#' or '/' in it moves the host boundary), so the message
	// comes from parsing the redacted URL instead.
	if _, rerr := redis.ParseURL(redacted); rerr != nil {
		return nil, fmt.Errorf("dedupe: invalid redis URL %q: %v", redacted, rerr)
	}
	return nil, fmt.Errorf("dedupe: invalid redis URL %q: malformed user name or password "+
		"(percent-encode the characters @ : / ? # %% in them)", redacted)
}

// redactRedisURL replaces everything between the scheme and the last '@'
// (the user information, however malformed) with "xxxxx".
func redactRedisURL(raw string) string {
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + len("://")
	}
	at := strings.LastIndexByte(raw[start:], '@')
	if at < 0 {
		return raw
	}
	return raw[:start] + "xxxxx" + raw[start+at:]
}

// redisMillis converts a lease or window to whole milliseconds, rounding up.
func redisMillis(what string, d time.Duration) (int64, error) {
	if d <= 0 {
		return 0, fmt.Errorf("dedupe: redis %s must be positive, got %v", what, d)
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond), nil
}

// firstPositive returns the first of vs that is positive, else the last.
func firstPositive[T int | time.Duration](vs ...T) T {
	for _, v := range vs {
		if v > 0 {
			return v
		}
	}
	return vs[len(vs)-1]
}

var (
	_ Store = (*Redis)(nil)
	_ Usage = (*Redis)(nil)
)
