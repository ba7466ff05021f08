package dedupe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// testRedisReadTimeout keeps the failure tests quick.
const testRedisReadTimeout = 200 * time.Millisecond

// newTestRedis returns a store with the default timeouts for url, closed
// when the test ends.
func newTestRedis(t testing.TB, url string) *Redis {
	t.Helper()
	return newTestRedisWith(t, RedisConfig{URL: url})
}

// newQuickRedis returns a store with short timeouts, for the tests of a
// Redis that is down or slow.
func newQuickRedis(t testing.TB, url string) *Redis {
	t.Helper()
	return newTestRedisWith(t, RedisConfig{
		URL:          url,
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  testRedisReadTimeout,
		WriteTimeout: testRedisReadTimeout,
	})
}

func newTestRedisWith(t testing.TB, cfg RedisConfig) *Redis {
	t.Helper()
	s, err := NewRedis(cfg)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// startRedis starts a redis-server for t, or skips t under -short.
func startRedis(t testing.TB) *testkit.RedisServer {
	t.Helper()
	return startRedisWith(t, testkit.RedisOptions{})
}

// startRedisWith starts a redis-server with o for t, or skips t under
// -short.
func startRedisWith(t testing.TB, o testkit.RedisOptions) *testkit.RedisServer {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that starts redis-server")
	}
	return testkit.StartRedisWith(t, o)
}

func TestRedisClaimCommitRelease(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	s := newTestRedis(t, srv.URL())
	ctx := context.Background()

	key := Key("shop", "ivy", "evt_1")
	c := mustClaim(t, s, key, time.Minute, Fresh)
	mustClaim(t, s, key, time.Minute, InFlight)
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	mustClaim(t, s, key, time.Minute, Delivered)
	// A late release by the holder keeps the event delivered.
	if err := s.Release(ctx, c); err != nil {
		t.Fatalf("Release after Commit: %v", err)
	}
	mustClaim(t, s, key, time.Minute, Delivered)

	// A released claim frees the key for the provider's retry.
	key2 := Key("shop", "ivy", "evt_2")
	c2 := mustClaim(t, s, key2, time.Minute, Fresh)
	if err := s.Release(ctx, c2); err != nil {
		t.Fatalf("Release: %v", err)
	}
	c3 := mustClaim(t, s, key2, time.Minute, Fresh)
	if c3.Token == c2.Token {
		t.Fatalf("two claims share the token %q", c3.Token)
	}

	// Releasing a claim that is not fresh does nothing.
	other := mustClaim(t, s, key2, time.Minute, InFlight)
	if err := s.Release(ctx, other); err != nil {
		t.Fatalf("Release of an in-flight claim: %v", err)
	}
	mustClaim(t, s, key2, time.Minute, InFlight)
}

func TestRedisKeysAndTTLs(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	s := newTestRedis(t, srv.URL())
	ctx := context.Background()

	key := Key("shop", "stripe", "evt_ttl")
	stored := s.key(key)
	c := mustClaim(t, s, key, 30*time.Second, Fresh)
	if v, err := s.client.Get(ctx, stored).Result(); err != nil || v != c.Token {
		t.Fatalf("GET %s = %q, %v; want the token %q", stored, v, err, c.Token)
	}
	if ttl := s.client.PTTL(ctx, stored).Val(); ttl <= 29*time.Second || ttl > 30*time.Second {
		t.Fatalf("PTTL after Claim = %v, want the 30s lease", ttl)
	}

	if err := s.Commit(ctx, c, 2*time.Hour); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if v, err := s.client.Get(ctx, stored).Result(); err != nil || v != "delivered" {
		t.Fatalf("GET %s = %q, %v; want delivered", stored, v, err)
	}
	if ttl := s.client.PTTL(ctx, stored).Val(); ttl <= 2*time.Hour-time.Minute || ttl > 2*time.Hour {
		t.Fatalf("PTTL after Commit = %v, want the 2h window", ttl)
	}

	// A lease under a millisecond is rounded up, not turned into "no expiry".
	c = mustClaim(t, s, Key("shop", "stripe", "evt_us"), 300*time.Microsecond, Fresh)
	if ttl := s.client.PTTL(ctx, s.key(c.Key)).Val(); ttl > time.Millisecond {
		t.Fatalf("PTTL of a 300µs lease = %v", ttl)
	}

	// A custom prefix separates deployments sharing a Redis.
	other, err := NewRedis(RedisConfig{URL: srv.URL(), Prefix: "staging:"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	mustClaim(t, other, key, time.Minute, Fresh)
	if n := s.client.Exists(ctx, "{staging:}"+key).Val(); n != 1 {
		t.Fatalf("key not stored under the custom prefix")
	}
}

func TestRedisConcurrentClaims(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	s := newTestRedis(t, srv.URL())

	const claimers = 32
	for round := range 20 {
		key := Key("shop", "ivy", "evt_race_"+strconv.Itoa(round))
		var (
			wg     sync.WaitGroup
			start  = make(chan struct{})
			states = make([]State, claimers)
			errs   = make([]error, claimers)
		)
		for i := range claimers {
			wg.Go(func() {
				<-start
				c, err := s.Claim(context.Background(), key, time.Minute)
				states[i], errs[i] = c.State, err
			})
		}
		close(start)
		wg.Wait()
		fresh := 0
		for i := range claimers {
			if errs[i] != nil {
				t.Fatalf("round %d claimer %d: %v", round, i, errs[i])
			}
			switch states[i] {
			case Fresh:
				fresh++
			case InFlight:
			default:
				t.Fatalf("round %d claimer %d: %v", round, i, states[i])
			}
		}
		if fresh != 1 {
			t.Fatalf("round %d: %d of %d concurrent claims were fresh, want exactly 1", round, fresh, claimers)
		}
	}
}

func TestRedisLeaseExpiry(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	s := newTestRedis(t, srv.URL())
	ctx := context.Background()

	// The holder "dies": it never commits nor releases.
	key := Key("shop", "ivy", "evt_crash")
	const lease = 80 * time.Millisecond
	mustClaim(t, s, key, lease, Fresh)
	if ttl := s.client.PTTL(ctx, s.key(key)).Val(); ttl <= 0 || ttl > lease {
		t.Fatalf("PTTL after Claim = %v, want (0, %v]", ttl, lease)
	}
	mustClaim(t, s, key, lease, InFlight)
	var c Claim
	waitUntil(t, 5*time.Second, "lease expiry frees the key", func() bool {
		var err error
		c, err = s.Claim(ctx, key, time.Minute)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		return c.State == Fresh
	})
	mustClaim(t, s, key, time.Minute, InFlight)
}

func TestRedisReleaseIsCompareAndDelete(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	s := newTestRedis(t, srv.URL())
	ctx := context.Background()
	const lease = 50 * time.Millisecond

	// claimAfterExpiry waits for a's lease to end and claims the key again.
	claimAfterExpiry := func(key string) Claim {
		t.Helper()
		var b Claim
		waitUntil(t, 5*time.Second, "lease expiry", func() bool {
			var err error
			b, err = s.Claim(ctx, key, time.Minute)
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			return b.State == Fresh
		})
		return b
	}

	t.Run("another holder", func(t *testing.T) {
		key := Key("shop", "ivy", "evt_cad_1")
		a := mustClaim(t, s, key, lease, Fresh)
		b := claimAfterExpiry(key)
		if err := s.Release(ctx, a); err != nil {
			t.Fatalf("A's late Release: %v", err)
		}
		mustClaim(t, s, key, time.Minute, InFlight) // B still holds it
		if err := s.Release(ctx, b); err != nil {
			t.Fatalf("B's Release: %v", err)
		}
		mustClaim(t, s, key, time.Minute, Fresh)
	})

	t.Run("another holder committed", func(t *testing.T) {
		key := Key("shop", "ivy", "evt_cad_2")
		a := mustClaim(t, s, key, lease, Fresh)
		b := claimAfterExpiry(key)
		if err := s.Commit(ctx, b, time.Hour); err != nil {
			t.Fatalf("B's Commit: %v", err)
		}
		if err := s.Release(ctx, a); err != nil {
			t.Fatalf("A's late Release: %v", err)
		}
		mustClaim(t, s, key, time.Minute, Delivered)
	})

	t.Run("own commit", func(t *testing.T) {
		key := Key("shop", "ivy", "evt_cad_3")
		a := mustClaim(t, s, key, time.Minute, Fresh)
		if err := s.Commit(ctx, a, time.Hour); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		if err := s.Release(ctx, a); err != nil {
			t.Fatalf("Release after Commit: %v", err)
		}
		mustClaim(t, s, key, time.Minute, Delivered)
	})

	t.Run("commit after lease expired", func(t *testing.T) {
		// The upstream accepted the event although the lease ran out:
		// the commit still marks it delivered.
		key := Key("shop", "ivy", "evt_cad_4")
		a := mustClaim(t, s, key, lease, Fresh)
		waitUntil(t, 5*time.Second, "lease expiry", func() bool {
			return s.client.Exists(ctx, s.key(key)).Val() == 0
		})
		if err := s.Commit(ctx, a, time.Hour); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		mustClaim(t, s, key, time.Minute, Delivered)
	})
}

// A Claim retried by the client after a lost reply finds its own token and
// is fresh, not locked out until the lease ends.
func TestRedisClaimScriptRetryIsFresh(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	s := newTestRedis(t, srv.URL())
	ctx := context.Background()
	keys := s.keys(Key("shop", "ivy", "evt_retry"))
	for i := range 2 {
		n, err := redisClaimScript.Run(ctx, s.client, keys, "token-A", 60000, 0).Int64Slice()
		if err != nil || len(n) != 1 || n[0] != 0 {
			t.Fatalf("attempt %d with the same token = %v, %v; want {0} (fresh)", i, n, err)
		}
	}
	if n, err := redisClaimScript.Run(ctx, s.client, keys, "token-B", 60000, 0).Int64Slice(); err != nil || len(n) != 1 || n[0] != 1 {
		t.Fatalf("other token = %v, %v; want {1} (in flight)", n, err)
	}
	// After a restart the script cache is empty: Run falls back to EVAL.
	if err := s.client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, Key("shop", "ivy", "evt_noscript"), time.Minute, Fresh)
}

func TestRedisRejectsMisuse(t *testing.T) {
	t.Parallel()
	// No server needed: these fail before any round trip.
	s, err := NewRedis(RedisConfig{URL: "redis://127.0.0.1:1/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, lease := range []time.Duration{0, -time.Second} {
		c, err := s.Claim(ctx, "k", lease)
		if err == nil || errors.Is(err, ErrUnavailable) || c.State == Fresh {
			t.Errorf("Claim with lease %v = %v, %v; want a non-fresh claim and a usage error", lease, c.State, err)
		}
	}
	if err := s.Commit(ctx, Claim{Key: "k", State: Fresh, Token: "t"}, 0); err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("Commit with window 0: %v", err)
	}
	for _, st := range []State{InFlight, Delivered} {
		if err := s.Commit(ctx, Claim{Key: "k", State: st}, time.Hour); err == nil || errors.Is(err, ErrUnavailable) {
			t.Errorf("Commit of a %v claim: %v, want a usage error", st, err)
		}
	}
}

func TestRedisUnavailableThenBack(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	s := newQuickRedis(t, srv.URL())
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	held := mustClaim(t, s, Key("shop", "ivy", "evt_held"), time.Minute, Fresh)

	srv.Stop()
	bound := s.opTimeout + time.Second
	ops := map[string]func() error{
		"claim": func() error {
			c, err := s.Claim(ctx, Key("shop", "ivy", "evt_down"), time.Minute)
			if err != nil && c.State == Fresh {
				t.Errorf("failed Claim returned a fresh claim")
			}
			return err
		},
		"commit":  func() error { return s.Commit(ctx, held, time.Hour) },
		"release": func() error { return s.Release(ctx, held) },
		"renew":   func() error { return s.Renew(ctx, held, time.Minute) },
		"ping":    func() error { return s.Ping(ctx) },
	}
	for range 3 { // again and again, not just on the first broken connection
		for name, op := range ops {
			start := time.Now()
			err := op()
			took := time.Since(start)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%s with Redis down: %v, want ErrUnavailable", name, err)
			}
			if !strings.Contains(err.Error(), "redis "+name) || !strings.Contains(err.Error(), srv.Addr) {
				t.Errorf("%s error does not say what failed where: %v", name, err)
			}
			if took > bound {
				t.Errorf("%s with Redis down took %v, want under %v", name, took, bound)
			}
		}
	}

	srv.Start() // same port, empty: persistence is off
	waitUntil(t, 10*time.Second, "the same client reconnects", func() bool {
		return s.Ping(ctx) == nil
	})
	key := Key("shop", "ivy", "evt_back")
	c := mustClaim(t, s, key, time.Minute, Fresh)
	mustClaim(t, s, key, time.Minute, InFlight)
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatalf("Commit after restart: %v", err)
	}
	mustClaim(t, s, key, time.Minute, Delivered)
}

// A Redis that accepts connections but does not answer stalls a request for
// no longer than the read timeout and a bit, or the caller's deadline.
func TestRedisSlowServerIsBounded(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	s := newQuickRedis(t, srv.URL())
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	const pause = 3 * time.Second
	if err := admin.Do(ctx, "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	paused := time.Now()

	start := time.Now()
	_, err := s.Claim(ctx, Key("shop", "ivy", "evt_slow"), time.Minute)
	took := time.Since(start)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Claim on a paused Redis: %v, want ErrUnavailable", err)
	}
	if took < testRedisReadTimeout || took > s.opTimeout+500*time.Millisecond {
		t.Errorf("Claim on a paused Redis took %v, want about %v", took, s.opTimeout)
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = s.Commit(short, Claim{Key: Key("shop", "ivy", "evt_slow"), State: Fresh, Token: "t"}, time.Hour)
	took = time.Since(start)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Commit on a paused Redis: %v, want ErrUnavailable", err)
	}
	if took > 50*time.Millisecond+400*time.Millisecond {
		t.Errorf("Commit with a 50ms context took %v", took)
	}
	if time.Since(paused) >= pause {
		t.Fatalf("the pause ended before the checks; the test is too slow to mean anything")
	}

	waitUntil(t, 10*time.Second, "Redis answers after the pause", func() bool {
		return s.Ping(ctx) == nil
	})
}

func TestRedisPassword(t *testing.T) {
	t.Parallel()
	const password = "s3cr3t-Pa55w0rd"
	srv := startRedisWith(t, testkit.RedisOptions{Password: password})
	ctx := context.Background()

	if !strings.Contains(srv.URL(), ":"+password+"@") {
		t.Fatalf("URL %q lacks the password", srv.URL())
	}
	s := newTestRedis(t, srv.URL()) // redis://:pass@host:port/0
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping with the password: %v", err)
	}
	mustClaim(t, s, Key("shop", "ivy", "evt_auth"), time.Minute, Fresh)

	named := newTestRedis(t, "redis://default:"+password+"@"+srv.Addr+"/0")
	if err := named.Ping(ctx); err != nil {
		t.Fatalf("Ping as user default: %v", err)
	}

	const wrong = "wr0ng-s3cr3t"
	for name, url := range map[string]string{
		"wrong password": "redis://:" + wrong + "@" + srv.Addr + "/0",
		"wrong user":     "redis://nobody:" + wrong + "@" + srv.Addr + "/0",
		"no password":    "redis://" + srv.Addr + "/0",
	} {
		bad := newTestRedis(t, url)
		errs := []error{bad.Ping(ctx)}
		_, err := bad.Claim(ctx, Key("shop", "ivy", "evt_auth"), time.Minute)
		errs = append(errs, err)
		for _, err := range errs {
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: %v, want ErrUnavailable", name, err)
				continue
			}
			if msg := err.Error(); strings.Contains(msg, wrong) || strings.Contains(msg, password) {
				t.Errorf("%s: the error shows the password: %s", name, msg)
			}
		}
	}
}

func TestRedisURLErrorsHidePassword(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t"
	for _, url := range []string{
		"redis://user:" + secret + "@127.0.0.1:notaport/0",
		"redis://:" + secret + "#x@127.0.0.1:6379/0",
		"redis://:" + secret + "?x@127.0.0.1:6379/0",
		"redis://:" + secret + "/x@127.0.0.1:6379/0",
		"redis://:123/" + secret + "@127.0.0.1/0",
		"redis://user:123/" + secret + "@127.0.0.1/0",
		"redis://:" + secret + "%zz@127.0.0.1/0",
		"redis://:" + secret + "@127.0.0.1/notadb",
		"redis://:" + secret + "@127.0.0.1/0/1",
		"redis://:" + secret + "@127.0.0.1/0?bogus=1",
		"redis://:" + secret + "@127.0.0.1/0?pool_size=many",
		"redis://:" + secret + " x@127.0.0.1/0",
		"http://:" + secret + "@127.0.0.1/0",
		"unix://:" + secret + "@/tmp/redis.sock",
		":" + secret + "@127.0.0.1:6379",
		"127.0.0.1:6379",
		"",
	} {
		s, err := NewRedis(RedisConfig{URL: url})
		if err == nil {
			_ = s.Close()
			t.Errorf("NewRedis(%q): no error", url)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "invalid redis URL") {
			t.Errorf("NewRedis(%q) = %q, want it to say invalid redis URL", url, msg)
		}
		if strings.Contains(msg, secret) {
			t.Errorf("NewRedis(%q) error shows the password: %s", url, msg)
		}
	}
}

func TestRedisConfig(t *testing.T) {
	t.Parallel()
	options := func(s *Redis) *redis.Options {
		t.Helper()
		c, ok := s.client.(*redis.Client)
		if !ok {
			t.Fatalf("client is %T, want a standalone *redis.Client", s.client)
		}
		return c.Options()
	}

	s, err := NewRedis(RedisConfig{URL: "redis://127.0.0.1:6380/3"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o := options(s)
	if s.prefix != DefaultRedisPrefix || o.Addr != "127.0.0.1:6380" || o.DB != 3 || o.TLSConfig != nil {
		t.Errorf("prefix %q addr %q db %d tls %v", s.prefix, o.Addr, o.DB, o.TLSConfig != nil)
	}
	if o.DialTimeout != DefaultRedisDialTimeout || o.ReadTimeout != DefaultRedisReadTimeout+DefaultRedisWaitTimeout ||
		o.WriteTimeout != DefaultRedisWriteTimeout || !o.ContextTimeoutEnabled {
		t.Errorf("timeouts: dial %v read %v write %v context %v", o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.ContextTimeoutEnabled)
	}
	if want := 10 * runtime.GOMAXPROCS(0); o.PoolSize != want {
		t.Errorf("pool size %d, want %d", o.PoolSize, want)
	}
	if s.opTimeout != DefaultRedisReadTimeout+redisOpSlack {
		t.Errorf("operation bound %v", s.opTimeout)
	}

	// The URL's options apply; the config's fields win over them.
	s, err = NewRedis(RedisConfig{
		URL:         "rediss://alice:pw@cache.example:6390/1?read_timeout=3s&dial_timeout=4s&pool_size=7&max_retries=-1",
		Prefix:      "p:",
		ReadTimeout: 500 * time.Millisecond,
		PoolSize:    9,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o = options(s)
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "cache.example" {
		t.Errorf("rediss:// without TLS for cache.example: %+v", o.TLSConfig)
	}
	if o.Username != "alice" || o.Password != "pw" || o.DB != 1 || s.prefix != "p:" {
		t.Errorf("user %q db %d prefix %q", o.Username, o.DB, s.prefix)
	}
	if o.ReadTimeout != 500*time.Millisecond+DefaultRedisWaitTimeout || o.DialTimeout != 4*time.Second || o.PoolSize != 9 || o.MaxRetries != 0 {
		t.Errorf("read %v dial %v pool %d retries %d", o.ReadTimeout, o.DialTimeout, o.PoolSize, o.MaxRetries)
	}
	if s.opTimeout != 500*time.Millisecond+redisOpSlack {
		t.Errorf("operation bound %v", s.opTimeout)
	}
}

// rediss:// against a real TLS listener (self-signed, so skip_verify).
func TestRedisTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsPort := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
	startRedisWith(t, testkit.RedisOptions{Args: []string{
		"--tls-port", tlsPort,
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
		"--tls-auth-clients", "no",
	}})
	ctx := context.Background()

	s := newTestRedis(t, "rediss://127.0.0.1:"+tlsPort+"/0?skip_verify=true")
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping over TLS: %v", err)
	}
	mustClaim(t, s, Key("shop", "ivy", "evt_tls"), time.Minute, Fresh)

	// Without skip_verify the self-signed certificate is refused.
	strict := newTestRedis(t, "rediss://127.0.0.1:"+tlsPort+"/0")
	if err := strict.Ping(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping with an untrusted certificate: %v, want ErrUnavailable", err)
	}
}

// writeSelfSigned writes a certificate for 127.0.0.1 and its key as PEM.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func BenchmarkRedisClaimCommit(b *testing.B) {
	srv := startRedis(b)
	s := newTestRedis(b, srv.URL())
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c, err := s.Claim(ctx, Key("bench", "ivy", strconv.Itoa(i)), time.Minute)
		if err != nil || c.State != Fresh {
			b.Fatalf("Claim: %v %v", c.State, err)
		}
		if err := s.Commit(ctx, c, time.Hour); err != nil {
			b.Fatalf("Commit: %v", err)
		}
	}
}

// BenchmarkRedisClaimCommitParallel is BenchmarkRedisClaimCommit under
// parallel load, as several requests of one instance share the client's
// connection pool (compare BenchmarkMemoryClaimCommit).
func BenchmarkRedisClaimCommitParallel(b *testing.B) {
	srv := startRedis(b)
	s := newTestRedis(b, srv.URL())
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		b.Fatalf("Ping: %v", err)
	}
	var seq atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := Key("bench", "ivy", strconv.FormatUint(seq.Add(1), 10))
			c, err := s.Claim(ctx, key, time.Minute)
			if err != nil || c.State != Fresh {
				b.Errorf("Claim: %v %v", c.State, err)
				return
			}
			if err := s.Commit(ctx, c, time.Hour); err != nil {
				b.Errorf("Commit: %v", err)
				return
			}
		}
	})
}

// Renew moves the key's expiry (and its score in the index) to the new
// lease; a claim whose key holds another value is not renewed.
func TestRedisRenewTTL(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	ctx := context.Background()
	for _, maxEvents := range []int64{0, 100} {
		s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: "renew" + strconv.FormatInt(maxEvents, 10) + ":", MaxEvents: maxEvents})
		key := Key("shop", "ivy", "evt_renew")
		stored := s.key(key)
		c := mustClaim(t, s, key, time.Second, Fresh)
		if err := s.Renew(ctx, c, time.Minute); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		if ttl := s.client.PTTL(ctx, stored).Val(); ttl <= 59*time.Second || ttl > time.Minute {
			t.Fatalf("PTTL after Renew = %v, want the 1m lease", ttl)
		}
		if maxEvents > 0 {
			score := s.client.ZScore(ctx, s.index, stored).Val()
			if until := time.Until(time.UnixMilli(int64(score))); until <= 58*time.Second || until > time.Minute {
				t.Fatalf("index score after Renew ends in %v, want about 1m", until)
			}
		}
		if err := s.Renew(ctx, Claim{Key: key, State: Fresh, Token: "someone_else"}, time.Minute); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Renew with another token = %v, want ErrNotHeld", err)
		}
		if err := s.Renew(ctx, Claim{Key: key, State: InFlight}, time.Minute); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Renew of an in-flight claim = %v, want ErrNotHeld", err)
		}
		if err := s.Renew(ctx, c, 0); err == nil || errors.Is(err, ErrNotHeld) {
			t.Fatalf("Renew with lease 0 = %v, want a usage error", err)
		}
	}
}

// With MaxEvents, the index holds every key in flight or delivered, and
// forgets those whose lease or window ended; Usage reads it.
func TestRedisIndex(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	ctx := context.Background()
	s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), MaxEvents: 3})
	if s.index != "{"+DefaultRedisPrefix+"}index" {
		t.Fatalf("index key %q", s.index)
	}
	c := mustClaim(t, s, "a", 50*time.Millisecond, Fresh) // will expire
	c2 := mustClaim(t, s, "b", time.Minute, Fresh)
	if err := s.Commit(ctx, c2, time.Hour); err != nil {
		t.Fatal(err)
	}
	c3 := mustClaim(t, s, "c", time.Minute, Fresh)
	if n, capacity := s.Usage(); n != 3 || capacity != 3 {
		t.Fatalf("Usage() = %d, %d; want 3, 3", n, capacity)
	}
	if _, err := s.Claim(ctx, "d", time.Minute); !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "max_events 3") {
		t.Fatalf("Claim at capacity = %v, want ErrFull saying max_events", err)
	}
	if err := s.Release(ctx, c3); err != nil {
		t.Fatal(err)
	}
	if n := s.client.ZCard(ctx, s.index).Val(); n != 2 {
		t.Fatalf("index holds %d keys after a release, want 2", n)
	}
	mustClaim(t, s, "d", time.Minute, Fresh)
	waitUntil(t, 5*time.Second, "lease of a expires", func() bool {
		return s.client.Exists(ctx, s.key("a")).Val() == 0
	})
	mustClaim(t, s, "e", time.Minute, Fresh) // a's place, trimmed from the index
	if s.client.ZScore(ctx, s.index, s.key("a")).Err() != redis.Nil {
		t.Fatal("expired key a still in the index")
	}
	_ = c
	// Without MaxEvents there is no index.
	plain := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: "plain:"})
	mustClaim(t, plain, "x", time.Minute, Fresh)
	if n := s.client.Exists(ctx, "{plain:}index").Val(); n != 0 {
		t.Fatal("an index without MaxEvents")
	}
	if n, capacity := plain.Usage(); n != 0 || capacity != 0 {
		t.Fatalf("Usage() without MaxEvents = %d, %d; want 0, 0", n, capacity)
	}
}

// Redis out of memory (maxmemory under noeviction) refuses a claim with
// ErrFull, not ErrUnavailable, and keeps every key it has.
func TestRedisOutOfMemoryIsFull(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{Args: []string{"--maxmemory", "3mb", "--maxmemory-policy", "noeviction"}})
	s := newTestRedis(t, srv.URL())
	ctx := context.Background()
	long := strings.Repeat("x", 2000)
	var held []string
	for i := 0; ; i++ {
		if i == 100_000 {
			t.Fatal("100,000 claims did not fill 3 MB")
		}
		key := Key("oom", "ivy", long+strconv.Itoa(i))
		c, err := s.Claim(ctx, key, time.Hour)
		if err == nil {
			held = append(held, key)
			continue
		}
		if !errors.Is(err, ErrFull) || errors.Is(err, ErrUnavailable) || c.State == Fresh {
			t.Fatalf("Claim with Redis out of memory = %v, %v; want ErrFull", c.State, err)
		}
		if !strings.HasPrefix(err.Error(), "replay store full: redis claim on "+srv.Addr) {
			t.Fatalf("error %q does not say the store is full", err)
		}
		break
	}
	for _, key := range held {
		mustClaim(t, s, key, time.Minute, InFlight)
	}
}

// An evicting maxmemory-policy is reported once, at the first connection;
// noeviction is not reported.
func TestRedisEvictingPolicy(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"allkeys-lru", "volatile-ttl", "noeviction"} {
		srv := startRedisWith(t, testkit.RedisOptions{Args: []string{"--maxmemory-policy", policy}})
		var mu sync.Mutex
		var reported []string
		s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), OnEvictingPolicy: func(p string) {
			mu.Lock()
			defer mu.Unlock()
			reported = append(reported, p)
		}})
		var wg sync.WaitGroup
		for i := range 20 { // several connections
			wg.Go(func() {
				if _, err := s.Claim(context.Background(), "k"+strconv.Itoa(i), time.Minute); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		mu.Lock()
		got := reported
		mu.Unlock()
		want := []string{policy}
		if policy == "noeviction" {
			want = nil
		}
		if len(got) != len(want) || (len(want) == 1 && got[0] != want[0]) {
			t.Fatalf("policy %s: reported %q, want %q", policy, got, want)
		}
	}
}

// A server that refuses CONFIG (as managed Redis may) is not reported and
// works as usual.
func TestRedisEvictingPolicyConfigRefused(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{Args: []string{"--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", ""}})
	var called atomic.Bool
	s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), OnEvictingPolicy: func(string) { called.Store(true) }})
	mustClaim(t, s, "k", time.Minute, Fresh)
	if called.Load() {
		t.Fatal("reported a policy it could not read")
	}
}
