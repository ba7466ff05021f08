package dedupe

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// idleEntry makes the stream entry of event id, leased by s, look idle for
// an hour, as when its holder's renewals failed for longer than the lease
// (Redis unreachable for a while): the next Lease takes it over.
func idleEntry(t testing.TB, s *Redis, id uint64) {
	t.Helper()
	l, ok := s.spool.lease(id, false)
	if !ok {
		t.Fatalf("event %d is not leased", id)
	}
	q := s.tag + "spool:q:" + l.target
	if err := s.client.Do(context.Background(), "XCLAIM", q, redisGroup, s.spool.consumer, 0, l.sid,
		"IDLE", time.Hour.Milliseconds(), "JUSTID").Err(); err != nil {
		t.Fatal(err)
	}
}

// An attempt on instance A outlives its lease (its renewals failed: Redis
// was unreachable longer than the lease) and A's next Lease takes the
// entry back; the worker skips it (the event is in flight here). Before,
// that Skip put the event back in its retry set and forgot A's lease, so
// the attempt's 2xx was dropped (Delivered: not found) and the event was
// delivered a second time a second later.
func TestRedisSpoolOwnLeaseTakenBackKeepsAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, rec := ownLeaseTakenBack(t, "retake:")
	// The attempt's renewals work again, then it ends with a 2xx.
	if err := a.Extend(ctx, rec.ID); err != nil {
		t.Fatalf("Extend of the attempt running here: %v", err)
	}
	if err := a.Delivered(ctx, rec.ID, time.Hour); err != nil {
		t.Fatalf("Delivered of the attempt running here: %v", err)
	}
	if _, ok, err := a.Get(ctx, rec.ID); err != nil || ok {
		t.Fatalf("the delivered event is still spooled (it would be delivered again): ok=%v err=%v", ok, err)
	}
	mustClaim(t, a, Key("shop", "ivy", "evt_slow"), time.Minute, Delivered)
}

// Same, and the attempt fails: its result is recorded (not dropped as
// another instance's), and the event waits for its next attempt.
func TestRedisSpoolOwnLeaseTakenBackRecordsFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, rec := ownLeaseTakenBack(t, "retake2:")
	next := time.Now().Add(time.Hour)
	if err := a.Failed(ctx, &spool.Record{ID: rec.ID, Attempts: 1, LastError: "502", NextAt: next}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := a.Get(ctx, rec.ID)
	if err != nil || !ok || got.Attempts != 1 || got.LastError != "502" || !got.NextAt.Equal(time.Unix(0, next.UnixNano())) {
		t.Fatalf("after the failed attempt: %+v ok=%v err=%v; want attempts 1, error 502, next in an hour", got, ok, err)
	}
}

// ownLeaseTakenBack spools an event on a store of its own (keys under
// prefix), leases it, lets its stream entry idle past the lease, and has
// the same instance's next Lease take the entry back while the attempt
// runs: the worker skips it (in flight here).
func ownLeaseTakenBack(t *testing.T, prefix string) (*Redis, *spool.Record) {
	t.Helper()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	a := newSpoolRedis(t, srv, prefix, time.Minute)
	rec := mustSpool(t, a, "shop", "evt_slow")
	if got := leaseAll(t, a, "shop", 1); len(got) != 1 || got[0].ID != rec.ID {
		t.Fatalf("leased %+v", got)
	}
	idleEntry(t, a, rec.ID)
	_, err := a.Lease(context.Background(), time.Now(), []spool.Opening{{Target: "shop/t", Scope: "shop", Free: 1}},
		func(d spool.Due) spool.Verdict {
			if d.ID != rec.ID {
				t.Errorf("offered %+v", d)
			}
			return spool.Skip
		})
	if err != nil {
		t.Fatal(err)
	}
	return a, rec
}

// forgetDuring is a Redis store whose next claim or commit runs during
// right after Redis answered, before the cache in front sees the answer:
// an admin's forget (on any instance) announced in between.
type forgetDuring struct {
	*Redis
	during func()
}

func (f *forgetDuring) ClaimWindow(ctx context.Context, key string, lease time.Duration) (Claim, time.Time, error) {
	c, until, err := f.Redis.ClaimWindow(ctx, key, lease)
	f.run()
	return c, until, err
}

func (f *forgetDuring) Commit(ctx context.Context, c Claim, window time.Duration) error {
	err := f.Redis.Commit(ctx, c, window)
	f.run()
	return err
}

func (f *forgetDuring) run() {
	if d := f.during; d != nil {
		f.during = nil
		d()
	}
}

// cachedOf is the *Cached NewCached returned.
func cachedOf(s Store) *Cached {
	if u, ok := s.(cachedUsage); ok {
		return u.Cached
	}
	return s.(*Cached)
}

// A claim or commit that read "delivered" from Redis just before an id was
// forgotten (the forget's announcement dropped it from the cache in
// between) must not put the stale answer in the cache afterwards: before,
// it did, and this instance answered the provider's resend "duplicate"
// (200, dropped) until the window ended, although Redis had forgotten the
// id, the very resend the operator forgot it for.
func TestCachedRedisForgetDuringClaimOrCommit(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	r := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: "cacheforget:"})
	inner := &forgetDuring{Redis: r}
	s := NewCached(inner, 0, nil)
	c := cachedOf(s)
	t.Cleanup(func() { _ = c.Close() })
	forget := func(key string, all bool) func() {
		return func() {
			if _, err := r.Forget(ctx, key); err != nil {
				t.Error(err)
			}
			if all { // a subscription made again after a cut
				c.ForgetAll()
			} else { // the announcement
				c.Forget(key)
			}
		}
	}
	for _, all := range []bool{false, true} {
		// A claim answered "delivered", the forget comes before the cache
		// keeps the answer.
		key := Key("shop", "ivy", "evt_claimed_"+map[bool]string{false: "one", true: "all"}[all])
		cl := mustClaim(t, r, key, time.Minute, Fresh)
		if err := r.Commit(ctx, cl, time.Hour); err != nil {
			t.Fatal(err)
		}
		inner.during = forget(key, all)
		mustClaim(t, s, key, time.Minute, Delivered)
		c.cache.Wait() // ristretto applies sets asynchronously
		wantFresh(t, s, key, "a claim answered before the forget")

		// A commit, the forget comes before the cache keeps it.
		key = Key("shop", "ivy", "evt_committed_"+map[bool]string{false: "one", true: "all"}[all])
		cl = mustClaim(t, s, key, time.Minute, Fresh)
		inner.during = forget(key, all)
		if err := s.Commit(ctx, cl, time.Hour); err != nil {
			t.Fatal(err)
		}
		c.cache.Wait()
		wantFresh(t, s, key, "a commit made before the forget")
	}
}

// wantFresh checks that a claim of key is fresh (after a forget).
func wantFresh(t *testing.T, s Store, key, after string) {
	t.Helper()
	if c, err := s.Claim(context.Background(), key, time.Minute); err != nil || c.State != Fresh {
		t.Errorf("claim of %s, forgotten after %s: %v, %v; want fresh", key, after, c.State, err)
	}
}

// beforeCommand runs do once, before the first command match selects, on
// the client it is added to (a go-redis hook): an interleaving of another
// instance's commands made deterministic.
type beforeCommand struct {
	match func(redis.Cmder) bool
	do    func()
	once  sync.Once
}

func (h *beforeCommand) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *beforeCommand) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.match(cmd) {
			h.once.Do(h.do)
		}
		return next(ctx, cmd)
	}
}

func (h *beforeCommand) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Instance B's upkeep removes the consumers of stopped instances: nothing
// pending, idle for long (a scope paused for hours leaves every consumer
// of its targets so). Instance A leases an event (its consumer reads the
// entry) between B's look at the consumers and its removal of A's: before,
// the removal took A's pending entry with it, so A lost its lease (renewals
// failed, its failure was dropped as another instance's) and no instance
// could ever take the event over: acknowledged, never delivered.
func TestRedisSpoolStaleConsumerRemovalKeepsNewLease(t *testing.T) {
	t.Parallel()
	for _, valkey := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "valkey"}[valkey], func(t *testing.T) {
			t.Parallel()
			staleConsumerRemoval(t, testkit.RedisOptions{AppendFsync: "always", Valkey: valkey})
		})
	}
}

func staleConsumerRemoval(t *testing.T, o testkit.RedisOptions) {
	srv := startRedisWith(t, o)
	ctx := context.Background()
	a := newSpoolRedis(t, srv, "stale:", time.Minute)
	b := newSpoolRedis(t, srv, "stale:", time.Minute)
	b.spool.staleConsumer = -time.Millisecond // every consumer idle long enough
	open := []spool.Opening{{Target: "shop/t", Scope: "shop", Free: 1}}
	// A's consumer exists, with nothing pending: it delivered an event.
	first := mustSpool(t, a, "shop", "evt_0")
	if got := leaseAll(t, a, "shop", 1); len(got) != 1 {
		t.Fatalf("leased %+v", got)
	}
	if err := a.Delivered(ctx, first.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	// C's too: an instance that stopped, to be removed.
	c := newSpoolRedis(t, srv, "stale:", time.Minute)
	gone := mustSpool(t, c, "shop", "evt_c")
	if got := leaseAll(t, c, "shop", 1); len(got) != 1 {
		t.Fatalf("leased %+v", got)
	}
	if err := c.Delivered(ctx, gone.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	rec := mustSpool(t, b, "shop", "evt_1")
	q := b.tag + "spool:q:shop/t"
	var leased []spool.Due
	b.client.AddHook(&beforeCommand{
		// B's removal of consumers: the command, or a script on the stream.
		match: func(cmd redis.Cmder) bool {
			args := cmd.Args()
			switch cmd.Name() {
			case "xgroup":
				return true
			case "evalsha", "eval":
				return len(args) > 3 && args[3] == q
			}
			return false
		},
		do: func() { leased = leaseAll(t, a, "shop", 1) },
	})
	b.spool.mu.Lock()
	b.spool.purgedAt = time.Time{}
	b.spool.mu.Unlock()
	if _, err := b.Lease(ctx, time.Now(), nil, nil); err != nil { // its upkeep runs first
		t.Fatal(err)
	}
	if len(leased) != 1 || leased[0].ID != rec.ID {
		t.Fatalf("A leased %+v during B's upkeep, want event %d", leased, rec.ID)
	}
	consumers, err := b.client.XInfoConsumers(ctx, q, redisGroup).Result()
	if err != nil || len(consumers) != 1 || consumers[0].Name != a.spool.consumer {
		t.Errorf("consumers after B's upkeep: %+v, %v; want A's alone (C's removed)", consumers, err)
	}
	if err := a.Extend(ctx, rec.ID); err != nil {
		t.Errorf("A's renewal of the lease it took during B's upkeep: %v", err)
	}
	next := time.Now().Add(-time.Second) // due again at once
	if err := a.Failed(ctx, &spool.Record{ID: rec.ID, Attempts: 1, LastError: "502", NextAt: next}); err != nil {
		t.Fatal(err)
	}
	// The failed attempt is recorded, and the event is due for any instance.
	if got, _, err := a.Get(ctx, rec.ID); err != nil || got.Attempts != 1 {
		t.Errorf("A's failed attempt was not recorded: %+v, %v", got, err)
	}
	_, err = b.Lease(ctx, time.Now(), open, func(d spool.Due) spool.Verdict {
		leased = append(leased, d)
		return spool.Take
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(leased) != 2 || leased[1].ID != rec.ID {
		t.Fatalf("after A's failed attempt, B leased %+v; want event %d again", leased[1:], rec.ID)
	}
}

// An instance that starts while Redis is down (or whose first subscription
// fails) subscribes to the forgotten ids once Redis answers: before, the
// failed first subscription ended the watcher for good, so that this
// instance's cache answered "duplicate" to the resend of every id forgotten
// through another instance, until its window ended.
func TestRedisWatchForgottenStartsWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	srv.Stop()
	a := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: "down:"})
	ca := NewCached(a, 0, nil)
	t.Cleanup(func() { _ = cachedOf(ca).Close() })
	subscribed := make(chan struct{}, 8)
	f := cachedOf(ca)
	a.WatchForgotten(f.Forget, func() { f.ForgetAll(); subscribed <- struct{}{} })
	srv.Start()
	select {
	case <-subscribed:
	case <-a.forgottenDone:
		t.Fatal("the watcher of forgotten ids ended: its first subscription failed (Redis down)")
	case <-time.After(20 * time.Second):
		t.Fatal("the watcher of forgotten ids never subscribed once Redis was up")
	}
	// The watcher works: a forget through another instance reaches a's cache.
	b := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: "down:"})
	key := Key("shop", "ivy", "evt_forgotten")
	c := mustClaim(t, ca, key, time.Minute, Fresh)
	if err := ca.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	f.cache.Wait()
	if n, _ := f.cache.Get(key); n == 0 {
		t.Fatal("the commit is not in the cache")
	}
	if _, err := b.Forget(ctx, key); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the forget reaches a's cache", func() bool {
		_, ok := f.cache.Get(key)
		return !ok
	})
	mustClaim(t, ca, key, time.Minute, Fresh)
}

// The provider's retry of a spooled event whose write WAITAOF did not
// confirm (replicas 1, no replica answering) reaches the guard's claim
// first, which finds the key accepted: before, the claim answered
// Delivered and the guard acknowledged the retry (200 duplicate) while the
// event was on no replica, so a failover then lost an acknowledged event
// (the docs promise 503 until the stored copy is confirmed). A claim of an
// accepted key now confirms the spooled write first, or fails 503.
func TestRedisClaimOfUnconfirmedSpooledEventRefused(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"})
	ctx := context.Background()
	s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: "unconfirmed:", Replicas: 1, WaitTimeout: 100 * time.Millisecond})
	if _, err := s.CheckSpool(ctx, SpoolOptions{}); err != nil {
		t.Fatal(err)
	}
	key := Key("shop", "ivy", "evt_1")
	if _, err := s.Ingest(ctx, key, spoolRec("shop", "evt_1"), time.Hour); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first Ingest = %v, want ErrUnavailable (not confirmed on a replica)", err)
	}
	cached := NewCached(s, 0, nil)
	t.Cleanup(func() { _ = cachedOf(cached).Close() })
	for name, st := range map[string]Store{"redis": s, "cached": cached} {
		c, err := st.Claim(ctx, key, time.Minute)
		if err == nil || !errors.Is(err, ErrUnavailable) || c.State == Fresh {
			t.Errorf("%s: claim of the retry = %v, %v; want ErrUnavailable (the event is on no replica)", name, c.State, err)
		}
	}
	cachedOf(cached).cache.Wait()
	if _, ok := cachedOf(cached).cache.Get(key); ok {
		t.Error("the cache keeps the unconfirmed event as delivered")
	}
}

// Where the spooled write is confirmed, a claim of its key is a duplicate
// (Delivered) at once, and the cache keeps the answer.
func TestRedisClaimOfConfirmedSpooledEventIsDuplicate(t *testing.T) {
	t.Parallel()
	for _, o := range []testkit.RedisOptions{{Valkey: true, AppendFsync: "everysec"}, {AppendFsync: "always"}} {
		srv := startRedisWith(t, o)
		s := newSpoolRedis(t, srv, "confirmed:", time.Minute)
		key := Key("shop", "ivy", "evt_1")
		mustSpool(t, s, "shop", "evt_1")
		cached := NewCached(s, 0, nil)
		t.Cleanup(func() { _ = cachedOf(cached).Close() })
		mustClaim(t, cached, key, time.Minute, Delivered)
		cachedOf(cached).cache.Wait()
		if _, ok := cachedOf(cached).cache.Get(key); !ok {
			t.Errorf("valkey %v: the cache does not keep the duplicate", o.Valkey)
		}
	}
}
