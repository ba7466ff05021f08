package dedupe

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// countingStore counts the claims that reach the store.
type countingStore struct {
	Store
	claims atomic.Int64
}

func (s *countingStore) Claim(ctx context.Context, key string, lease time.Duration) (Claim, error) {
	s.claims.Add(1)
	return s.Store.Claim(ctx, key, lease)
}

func (s *countingStore) ClaimWindow(ctx context.Context, key string, lease time.Duration) (Claim, time.Time, error) {
	s.claims.Add(1)
	return s.Store.(WindowClaimer).ClaimWindow(ctx, key, lease)
}

// A duplicate of a committed event is answered from the cache, without a
// claim reaching the store; anything else reaches the store.
func TestCachedAnswersDeliveredFromCache(t *testing.T) {
	ctx := context.Background()
	f, clock := newTestMemory(t, MemoryConfig{})
	inner := &countingStore{Store: f}
	s := NewCached(inner, 1000, clock.now).(*Cached)

	c := mustClaim(t, s, "k", time.Minute, Fresh)
	mustClaim(t, s, "k", time.Minute, InFlight)
	if n := inner.claims.Load(); n != 2 {
		t.Fatalf("%d claims reached the store, want 2", n)
	}
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	s.cache.Wait() // ristretto applies sets asynchronously
	for range 10 {
		mustClaim(t, s, "k", time.Minute, Delivered)
	}
	if n := inner.claims.Load(); n != 2 {
		t.Fatalf("%d claims reached the store, want 2: duplicates were not answered from the cache", n)
	}
	// The cache's answer ends with the window, as the store's.
	clock.advance(time.Hour + time.Second)
	mustClaim(t, s, "k", time.Minute, Fresh)
	if n := inner.claims.Load(); n != 3 {
		t.Fatalf("%d claims reached the store, want 3", n)
	}

	// A cache that forgot answers from the store.
	c = mustClaim(t, s, "k2", time.Minute, Fresh)
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	s.cache.Wait()
	s.cache.Clear()
	mustClaim(t, s, "k2", time.Minute, Delivered)

	// A delivery the cache did not see (before a restart, by another
	// instance) is answered by the store once, then by the cache until its
	// window ends.
	c = mustClaim(t, f, "k4", time.Minute, Fresh)
	if err := f.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	before := inner.claims.Load()
	mustClaim(t, s, "k4", time.Minute, Delivered)
	s.cache.Wait()
	for range 5 {
		mustClaim(t, s, "k4", time.Minute, Delivered)
	}
	if n := inner.claims.Load() - before; n != 1 {
		t.Fatalf("%d claims of a duplicate reached the store, want 1", n)
	}
	clock.advance(time.Hour + time.Second)
	mustClaim(t, s, "k4", time.Minute, Fresh)

	// A failed commit caches nothing.
	c = mustClaim(t, s, "k3", time.Minute, Fresh)
	if err := s.Commit(ctx, Claim{Key: "k3", State: InFlight}, time.Hour); err == nil {
		t.Fatal("Commit of an in-flight claim: no error")
	}
	s.cache.Wait()
	mustClaim(t, s, "k3", time.Minute, InFlight)
	if err := s.Renew(ctx, c, time.Minute); err != nil {
		t.Fatalf("Renew through the cache: %v", err)
	}
	if err := s.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, "k3", time.Minute, Fresh)
}

// closeCounter counts the calls of Close.
type closeCounter struct {
	Store
	closed atomic.Int64
}

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

// NewCached forwards Usage only for a store that has it, and Close to the
// store.
func TestCachedForwardsUsageAndClose(t *testing.T) {
	f, _ := newTestMemory(t, MemoryConfig{MaxEvents: 42})
	s := NewCached(f, 0, nil)
	u, ok := s.(Usage)
	if !ok {
		t.Fatal("cached file store does not implement Usage")
	}
	mustClaim(t, s, "k", time.Minute, Fresh)
	if n, c := u.Usage(); n != 1 || c != 42 {
		t.Fatalf("Usage() = %d, %d; want 1, 42", n, c)
	}
	cc := &closeCounter{Store: f}
	if err := NewCached(cc, 0, nil).(interface{ Close() error }).Close(); err != nil {
		t.Fatal(err)
	}
	if n := cc.closed.Load(); n != 1 {
		t.Fatalf("the cache's Close closed the store %d times, want 1", n)
	}

	if _, ok := NewCached(struct{ Store }{f}, 0, nil).(Usage); ok {
		t.Fatal("a cache in front of a store without Usage implements Usage")
	}
}

// A cache in front of Redis learns the deliveries of other instances from
// Redis, with the window Redis has left.
func TestCachedRedisLearnsOtherInstances(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	a := newTestRedis(t, srv.URL())
	b := &countingStore{Store: newTestRedis(t, srv.URL())}
	cached := NewCached(b, 100, nil).(*Cached)
	c := mustClaim(t, a, "evt", time.Minute, Fresh)
	mustClaim(t, cached, "evt", time.Minute, InFlight)
	if err := a.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, cached, "evt", time.Minute, Delivered)
	cached.cache.Wait()
	for range 5 {
		mustClaim(t, cached, "evt", time.Minute, Delivered)
	}
	if n := b.claims.Load(); n != 2 {
		t.Fatalf("%d claims reached Redis, want 2", n)
	}
	ttl, ok := cached.cache.GetTTL("evt")
	if !ok || ttl <= 59*time.Minute || ttl > time.Hour+time.Second {
		t.Fatalf("cache TTL %v (%v), want the hour Redis has left", ttl, ok)
	}
}
