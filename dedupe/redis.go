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
	// DefaultRedisPrefix is prepended to every key the Redis store writes.
	DefaultRedisPrefix = "webhook_guard:"
	// DefaultRedisDialTimeout bounds establishing a connection.
	DefaultRedisDialTimeout = 2 * time.Second
	// DefaultRedisReadTimeout bounds waiting for a reply.
	DefaultRedisReadTimeout = time.Second
	// DefaultRedisWriteTimeout bounds sending a command.
	DefaultRedisWriteTimeout = time.Second
)

// redisOpSlack is what an operation may take beyond the read timeout:
// writing the command, taking a connection from the pool, a retry on a fresh
// connection after a stale one.
const redisOpSlack = 250 * time.Millisecond

// redisDelivered is the value of a committed key. Any other value is the
// token of an in-flight claim.
const redisDelivered = "delivered"

// redisClaimScript takes KEYS[1] for the token ARGV[1] with a lease of
// ARGV[2] ms if the key is free, and otherwise says what holds it, in one
// atomic step: {0} fresh, {1} in flight, {2, ms left of the window}
// delivered. A key that expires between two commands cannot be misreported,
// as it could with SET NX then GET. A retried call that finds its own token
// is fresh again, so a retry after a lost reply does not lock the caller out
// of its own claim.
var redisClaimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
	redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
	return {0}
end
if v == ARGV[1] then
	return {0}
end
if v == '` + redisDelivered + `' then
	return {2, redis.call('PTTL', KEYS[1])}
end
return {1}
`)

// redisIndexedClaimScript is redisClaimScript for a store with MaxEvents:
// KEYS[2] is the index, a sorted set of every key held with the end of its
// lease or window as score. Members whose score passed are trimmed first;
// a new key is refused ({3}) when ARGV[3] members remain.
var redisIndexedClaimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
	return {0}
end
if v == '` + redisDelivered + `' then
	return {2, redis.call('PTTL', KEYS[1])}
end
if v then
	return {1}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
	return {3}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
return {0}
`)

// redisIndexedCommitScript sets KEYS[1] delivered for ARGV[1] ms and
// records the end of its window in the index KEYS[2].
var redisIndexedCommitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], '` + redisDelivered + `', 'PX', ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), KEYS[1])
return 1
`)

// redisRenewScript extends the lease of KEYS[1] to ARGV[2] ms if it still
// holds the token ARGV[1] (and its score in the index KEYS[2], if given):
// 1 renewed, 0 not held.
var redisRenewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if KEYS[2] then
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
	if KEYS[2] then
		redis.call('ZREM', KEYS[2], KEYS[1])
	end
	return redis.call('DEL', KEYS[1])
end
return 0
`)

// redisIndexKey is the name, after the prefix, of the sorted set that
// counts the keys held when MaxEvents is set. No event key has it: they
// begin with a length and a colon.
const redisIndexKey = "index"

// RedisConfig configures the Redis replay store, which several Caddy
// instances share so that the replay guarantee holds across them.
type RedisConfig struct {
	// URL locates the server: redis://[[user]:password@]host[:port][/db],
	// or rediss:// for TLS. Query options of go-redis's ParseURL (such as
	// pool_size or max_retries) are accepted; the fields below override
	// them when set. The password never appears in an error.
	URL string
	// Prefix is prepended to every key, so that several deployments can
	// share one Redis. Default DefaultRedisPrefix.
	Prefix string
	// DialTimeout bounds establishing a connection. Zero or negative means
	// the URL's dial_timeout, else DefaultRedisDialTimeout.
	DialTimeout time.Duration
	// ReadTimeout bounds waiting for a reply. Every operation is also
	// bounded, whatever the caller's context, by about ReadTimeout plus a
	// quarter of a second, so a slow Redis cannot stall a request for
	// longer. Zero or negative means the URL's read_timeout, else
	// DefaultRedisReadTimeout; timeouts cannot be turned off.
	ReadTimeout time.Duration
	// WriteTimeout bounds sending a command. Zero or negative means the
	// URL's write_timeout, else DefaultRedisWriteTimeout.
	WriteTimeout time.Duration
	// PoolSize is the maximum number of connections to each Redis node.
	// Zero or negative means the URL's pool_size, else 10 per GOMAXPROCS.
	PoolSize int
	// MaxEvents, when positive, bounds the ids held (in flight or
	// delivered): an index of them (a sorted set under Prefix+"index")
	// makes the claim of a new id fail with ErrFull at capacity. Zero: no
	// bound but Redis' own memory (whose OOM answer is ErrFull too).
	MaxEvents int64
	// OnEvictingPolicy, when set, is called once, at the first connection,
	// if the server's maxmemory-policy evicts keys (anything but
	// noeviction): Redis could then forget a delivered id before its window
	// ends. A server that refuses CONFIG GET is not reported.
	OnEvictingPolicy func(policy string)
}

// Redis is the replay store shared by several Caddy instances through
// Redis. A claim is `SET key token NX PX lease` (in a script that also
// reports what holds a taken key), a commit `SET key delivered PX window`, a
// release a compare-and-delete and a renewal a compare-and-PEXPIRE on the
// token. With MaxEvents, a sorted set indexes the keys held so that a claim
// at capacity fails with ErrFull. Redis out of memory (OOM, under the
// noeviction policy) is ErrFull too; any other Redis failure is returned as
// an error wrapping ErrUnavailable, so the guard fails closed.
type Redis struct {
	client    redis.UniversalClient
	prefix    string
	addr      string        // for error messages
	password  string        // scrubbed from error messages
	opTimeout time.Duration // bound of every operation
	pingLimit time.Duration // bound of Ping, which may have to dial
	maxEvents int64
	index     string       // key of the index, when maxEvents > 0
	held      atomic.Int64 // last size of the index that Usage read
	counted   atomic.Int64 // when Usage last counted the index (unix ms)
	checked   atomic.Bool  // the eviction policy was looked at
}

// NewRedis returns a Redis store for cfg. It does not connect: the first
// operation does, and Ping checks the server is reachable. The returned
// errors never contain the password that cfg.URL may hold.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	opt, err := parseRedisURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	dial := firstPositive(cfg.DialTimeout, opt.DialTimeout, DefaultRedisDialTimeout)
	read := firstPositive(cfg.ReadTimeout, opt.ReadTimeout, DefaultRedisReadTimeout)
	write := firstPositive(cfg.WriteTimeout, opt.WriteTimeout, DefaultRedisWriteTimeout)
	pool := firstPositive(cfg.PoolSize, opt.PoolSize, 10*runtime.GOMAXPROCS(0))
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	if cfg.MaxEvents < 0 {
		return nil, fmt.Errorf("dedupe: redis max_events must be positive, got %d", cfg.MaxEvents)
	}
	s := &Redis{
		prefix:    prefix,
		addr:      opt.Addr,
		password:  opt.Password,
		opTimeout: read + redisOpSlack,
		pingLimit: dial + read + redisOpSlack,
		maxEvents: cfg.MaxEvents,
	}
	if cfg.MaxEvents > 0 {
		s.index = prefix + redisIndexKey
	}
	var onConnect func(context.Context, *redis.Conn) error
	if cfg.OnEvictingPolicy != nil {
		report := cfg.OnEvictingPolicy
		onConnect = func(ctx context.Context, cn *redis.Conn) error {
			if s.checked.Swap(true) {
				return nil
			}
			// Managed Redis may forbid CONFIG: then nothing is known.
			if m, err := cn.ConfigGet(ctx, "maxmemory-policy").Result(); err == nil {
				if p, ok := m["maxmemory-policy"]; ok && p != "noeviction" {
					report(p)
				}
			}
			return nil
		}
	}

	// A UniversalClient, standalone for a single address, so that sentinel
	// and cluster configurations can be added without touching the store.
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:      []string{opt.Addr},
		DB:         opt.DB,
		Username:   opt.Username,
		Password:   opt.Password,
		TLSConfig:  opt.TLSConfig,
		Protocol:   opt.Protocol,
		ClientName: opt.ClientName,

		DialTimeout:  dial,
		ReadTimeout:  read,
		WriteTimeout: write,
		// Socket deadlines follow the operation's context, which is
		// bounded by opTimeout below.
		ContextTimeoutEnabled: true,
		// One dial attempt per connection: a refused connection is a
		// quick 503, and the command retries below try again.
		DialerRetries:   1,
		MaxRetries:      opt.MaxRetries,
		MinRetryBackoff: opt.MinRetryBackoff,
		MaxRetryBackoff: opt.MaxRetryBackoff,

		PoolSize:                pool,
		PoolFIFO:                opt.PoolFIFO,
		PoolTimeout:             opt.PoolTimeout,
		MinIdleConns:            opt.MinIdleConns,
		MaxIdleConns:            opt.MaxIdleConns,
		MaxActiveConns:          opt.MaxActiveConns,
		MaxConcurrentDials:      opt.MaxConcurrentDials,
		ConnMaxIdleTime:         opt.ConnMaxIdleTime,
		ConnMaxLifetime:         opt.ConnMaxLifetime,
		ConnMaxLifetimeJitter:   opt.ConnMaxLifetimeJitter,
		PipelinePoolSize:        opt.PipelinePoolSize,
		PipelineReadBufferSize:  opt.PipelineReadBufferSize,
		PipelineWriteBufferSize: opt.PipelineWriteBufferSize,

		OnConnect: onConnect,
	})
	s.client = client
	return s, nil
}

// keys returns the Redis keys of a script about key: the key, and the
// index when there is one.
func (s *Redis) keys(key string) []string {
	if s.index == "" {
		return []string{s.prefix + key}
	}
	return []string{s.prefix + key, s.index}
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
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	var reply []int64
	if s.index == "" {
		reply, err = redisClaimScript.Run(ctx, s.client, s.keys(key), token, ms).Int64Slice()
	} else {
		reply, err = redisIndexedClaimScript.Run(ctx, s.client, s.keys(key), token, ms, s.maxEvents).Int64Slice()
	}
	if err != nil {
		return failed, time.Time{}, s.unavailable("claim", err)
	}
	switch {
	case len(reply) == 1 && reply[0] == 0:
		return Claim{Key: key, State: Fresh, Token: token}, time.Time{}, nil
	case len(reply) == 1 && reply[0] == 1:
		return Claim{Key: key, State: InFlight}, time.Time{}, nil
	case len(reply) == 2 && reply[0] == 2:
		var until time.Time
		if reply[1] > 0 {
			until = time.Now().Add(time.Duration(reply[1]) * time.Millisecond)
		}
		return Claim{Key: key, State: Delivered}, until, nil
	case len(reply) == 1 && reply[0] == 3:
		return failed, time.Time{}, fmt.Errorf("%w: redis on %s holds max_events %d ids", ErrFull, s.addr, s.maxEvents)
	}
	return failed, time.Time{}, s.unavailable("claim", fmt.Errorf("unexpected script reply %v", reply))
}

// Commit implements Store. The key is set to delivered for window whether or
// not the lease of c has expired meanwhile: the upstream accepted the event.
// Only a Fresh claim can be committed; committing another would mark
// delivered an event that someone else is delivering.
func (s *Redis) Commit(ctx context.Context, c Claim, window time.Duration) error {
	if c.State != Fresh {
		return fmt.Errorf("dedupe: commit of a %s claim; only a fresh claim can be committed", c.State)
	}
	ms, err := redisMillis("window", window)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if s.index == "" {
		err = s.client.Set(ctx, s.prefix+c.Key, redisDelivered, time.Duration(ms)*time.Millisecond).Err()
	} else {
		err = redisIndexedCommitScript.Run(ctx, s.client, s.keys(c.Key), ms).Err()
	}
	if err != nil {
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
	if err := redisReleaseScript.Run(ctx, s.client, s.keys(c.Key), c.Token).Err(); err != nil {
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
	n, err := redisRenewScript.Run(ctx, s.client, s.keys(c.Key), c.Token, ms).Int64()
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
	if s.index == "" {
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
	return s.client.Close()
}

// unavailable wraps a Redis failure so that errors.Is(err, ErrUnavailable)
// holds, with a message that says which operation failed where. Redis out
// of memory (maxmemory reached under noeviction) wraps ErrFull instead.
func (s *Redis) unavailable(op string, err error) error {
	e := &redisError{op: op, addr: s.addr, password: s.password, err: err, kind: ErrUnavailable}
	if strings.Contains(err.Error(), "OOM command not allowed") {
		e.kind = ErrFull
	}
	return e
}

// redisError is a failed Redis operation. It unwraps to ErrUnavailable and to
// the client's error.
type redisError struct {
	op, addr, password string
	err                error
	kind               error // ErrUnavailable or ErrFull
}

func (e *redisError) Error() string {
	msg := e.kind.Error() + ": redis " + e.op + " on " + e.addr + ": " + e.err.Error()
	if e.password != "" {
		// go-redis does not put the password in its errors; this makes sure.
		msg = strings.ReplaceAll(msg, e.password, "xxxxx")
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
