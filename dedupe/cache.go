package dedupe

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// DefaultCacheItems is the number of delivered answers a cache keeps when
// NewCached is given no size.
const DefaultCacheItems = 100_000

// Cached is a replay store with a cache of its "delivered" answers in
// front (ristretto), so that a duplicate is answered without a disk read or
// a network round trip. The cache may forget an answer at any time; that
// costs only a lookup in the store, which remains the authority.
type Cached struct {
	inner Store
	cache *ristretto.Cache[string, int64] // key → end of its window (unix ns)
	now   func() time.Time
	// forgets counts the calls of Forget and ForgetAll: a claim or commit
	// that saw it change while it asked the store drops the answer it
	// cached, which a forget meanwhile may have made stale.
	forgets atomic.Uint64

	// closeMu orders Forget (from an admin's forget, or another instance's
	// through Redis) before Close: ristretto must not be used once closed.
	closeMu sync.RWMutex
	closed  bool
}

// cachedUsage is a Cached whose store has a capacity.
type cachedUsage struct{ *Cached }

// Usage implements Usage with the figures of the store.
func (c cachedUsage) Usage() (remembered, capacity int64) { return c.inner.(Usage).Usage() }

// NewCached puts a cache of up to maxItems delivered answers (default
// DefaultCacheItems) in front of s, whose clock is now (time.Now when nil).
// The result implements Usage if s does, and its Close frees the cache and
// closes s if s has a Close method.
func NewCached(s Store, maxItems int64, now func() time.Time) Store {
	clock := now
	if clock == nil {
		clock = time.Now
	}
	if maxItems <= 0 {
		maxItems = DefaultCacheItems
	}
	cache, err := ristretto.NewCache(&ristretto.Config[string, int64]{
		NumCounters:        maxItems * 10,
		MaxCost:            maxItems,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		// Only a config error, and the config above is valid.
		panic("dedupe: ristretto: " + err.Error())
	}
	c := &Cached{inner: s, cache: cache, now: clock}
	if _, ok := s.(Usage); ok {
		return cachedUsage{c}
	}
	return c
}

// WindowClaimer is implemented by the stores whose Claim can say when the
// window of a Delivered id ends (the ledger, memory, Redis), so that Cached
// keeps their answers too: a duplicate of an event delivered before a
// restart, or by another instance, reaches the store once, then the cache.
type WindowClaimer interface {
	// ClaimWindow is Claim, with the end of the window of a Delivered
	// claim (zero if unknown).
	ClaimWindow(ctx context.Context, key string, lease time.Duration) (Claim, time.Time, error)
}

// Claim implements Store: a key the cache knows as delivered is answered
// from the cache, any other from the store. A Delivered answer of the store
// is kept in the cache until the window ends, if the store says when.
func (c *Cached) Claim(ctx context.Context, key string, lease time.Duration) (Claim, error) {
	now := c.now()
	if end, ok := c.cache.Get(key); ok && now.UnixNano() < end {
		return Claim{Key: key, State: Delivered}, nil
	}
	wc, ok := c.inner.(WindowClaimer)
	if !ok {
		return c.inner.Claim(ctx, key, lease)
	}
	forgets := c.forgets.Load()
	cl, until, err := wc.ClaimWindow(ctx, key, lease)
	if err == nil && cl.State == Delivered && until.After(now) {
		c.remember(key, until.UnixNano(), until.Sub(now), forgets)
	}
	return cl, err
}

// remember caches key as delivered until end (unix ns), for ttl, as the
// store answered while forgets was the count of forgets: if one came since,
// the answer may be stale (the store forgot key after it answered) and is
// dropped again. A forget counts before it clears the cache, so either it
// clears this set, or this sees the count changed.
func (c *Cached) remember(key string, end int64, ttl time.Duration, forgets uint64) {
	c.cache.SetWithTTL(key, end, 1, ttl)
	if c.forgets.Load() != forgets {
		c.closeMu.RLock()
		defer c.closeMu.RUnlock()
		if !c.closed {
			c.cache.Del(key) // after the set: ristretto applies them in order
		}
	}
}

// Commit implements Store: once the store has committed, the cache knows
// the key as delivered until its window ends.
func (c *Cached) Commit(ctx context.Context, cl Claim, window time.Duration) error {
	end := c.now().Add(window).UnixNano()
	forgets := c.forgets.Load()
	if err := c.inner.Commit(ctx, cl, window); err != nil {
		return err
	}
	c.remember(cl.Key, end, window, forgets)
	return nil
}

// Writable implements Health with the store's answer (nil for a store that
// does not implement it).
func (c *Cached) Writable() error {
	if h, ok := c.inner.(Health); ok {
		return h.Writable()
	}
	return nil
}

// Release implements Store.
func (c *Cached) Release(ctx context.Context, cl Claim) error { return c.inner.Release(ctx, cl) }

// Renew implements Store.
func (c *Cached) Renew(ctx context.Context, cl Claim, lease time.Duration) error {
	return c.inner.Renew(ctx, cl, lease)
}

// Forget drops key from the cache, for an id the store was made to forget
// (the spool's Forget): the next Claim of it asks the store. Sets still
// buffered by ristretto are applied first, so none brings it back.
func (c *Cached) Forget(key string) {
	c.forgets.Add(1)
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed {
		return
	}
	c.cache.Wait()
	c.cache.Del(key)
}

// ForgetAll empties the cache, for a store whose forgets this instance
// may have missed (WatchForgotten, after a lost subscription): every
// next Claim asks the store.
func (c *Cached) ForgetAll() {
	c.forgets.Add(1)
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed {
		return
	}
	c.cache.Wait()
	c.cache.Clear()
}

// Close frees the cache and closes the store if it has a Close method.
func (c *Cached) Close() error {
	var err error
	if cl, ok := c.inner.(interface{ Close() error }); ok {
		err = cl.Close() // first: a Redis store's watcher of forgotten ids ends
	}
	c.closeMu.Lock()
	c.closed = true
	c.cache.Close()
	c.closeMu.Unlock()
	return err
}

var (
	_ Store  = (*Cached)(nil)
	_ Usage  = cachedUsage{}
	_ Health = (*Cached)(nil)
)
