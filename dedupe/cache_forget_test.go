package dedupe

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// forgettingStore remembers one id as delivered until it is forgotten.
// Its ClaimWindow, while gated (entered set), tells entered once it has
// its answer and returns it only when release is closed: the test acts in
// between, as another goroutine would.
type forgettingStore struct {
	now              func() time.Time
	delivered        atomic.Bool
	entered, release chan struct{}
}

func (s *forgettingStore) ClaimWindow(_ context.Context, key string, _ time.Duration) (Claim, time.Time, error) {
	c, until := Claim{Key: key, State: Fresh, Token: "t"}, time.Time{}
	if s.delivered.Load() {
		c, until = Claim{Key: key, State: Delivered}, s.now().Add(time.Hour)
	}
	if s.entered != nil {
		close(s.entered)
		<-s.release
	}
	return c, until, nil
}

func (s *forgettingStore) Claim(ctx context.Context, key string, lease time.Duration) (Claim, error) {
	c, _, err := s.ClaimWindow(ctx, key, lease)
	return c, err
}

func (s *forgettingStore) Commit(context.Context, Claim, time.Duration) error {
	s.delivered.Store(true)
	return nil
}

func (s *forgettingStore) Release(context.Context, Claim) error              { return nil }
func (s *forgettingStore) Renew(context.Context, Claim, time.Duration) error { return nil }

// An id forgotten (the spool's Forget: the store, then the cache) while a
// claim of it was between the store's "delivered" answer and caching it, or
// while its commit was between the store and the cache: the cache must not
// keep an answer the store no longer gives, or every resend the forget was
// meant to let through is dropped as a duplicate until the window ends.
// (An adversarial review found both cached after the forget.)
func TestCachedForgetDuringClaimOrCommit(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{}
	inner := &forgettingStore{now: clock.now}
	s := NewCached(inner, 1000, clock.now).(*Cached)
	inner.delivered.Store(true)

	// A claim.
	inner.entered, inner.release = make(chan struct{}), make(chan struct{})
	claimed := make(chan Claim)
	go func() {
		c, err := s.Claim(ctx, "k", time.Minute)
		if err != nil {
			t.Error(err)
		}
		claimed <- c
	}()
	<-inner.entered // the store answered delivered
	inner.delivered.Store(false)
	s.Forget("k")
	close(inner.release)
	if c := <-claimed; c.State != Delivered {
		t.Fatalf("the claim begun before the forget: %v, want delivered", c.State)
	}
	inner.entered = nil
	s.cache.Wait()
	mustClaim(t, s, "k", time.Minute, Fresh)

	// A commit: the forget lands between the store's commit and the cache.
	s2 := NewCached(&forgetOnCommit{forgettingStore: inner, forget: func() {
		inner.delivered.Store(false)
	}}, 1000, clock.now).(*Cached)
	defer s2.Close()
	fc := s2.inner.(*forgetOnCommit)
	fc.cache = s2
	if err := s2.Commit(ctx, Claim{Key: "k2", State: Fresh, Token: "t"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	s2.cache.Wait()
	mustClaim(t, s2, "k2", time.Minute, Fresh)
	_ = s.Close()
}

// forgetOnCommit forgets the id, in the store and in the cache, as its
// commit returns.
type forgetOnCommit struct {
	*forgettingStore
	forget func()
	cache  *Cached
}

func (s *forgetOnCommit) Commit(ctx context.Context, c Claim, window time.Duration) error {
	err := s.forgettingStore.Commit(ctx, c, window)
	s.forget()
	s.cache.Forget(c.Key)
	return err
}
