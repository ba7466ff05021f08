package dedupe

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// contractStore is a store under the contract test, with a way to move its
// clock.
type contractStore struct {
	Store
	// advance moves the store's clock forward by d: a fake clock's, or real
	// time (by waiting) for a store whose clock is elsewhere (Redis).
	advance func(d time.Duration)
}

// openContractStore opens an empty store for one subtest; maxEvents 0 means
// the store's default capacity (or none).
type openContractStore func(t *testing.T, maxEvents int64) contractStore

// fakeClock is a clock tests move by hand; safe for concurrent use.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// testStoreContract checks what every Store promises. unit is the time
// scale of its leases and windows: any value for a fake clock, long enough
// for a real one that a step of the test takes well under a unit.
func testStoreContract(t *testing.T, unit time.Duration, open openContractStore) {
	ctx := context.Background()
	lease, window := 2*unit, 4*unit

	t.Run("FreshInFlightDelivered", func(t *testing.T) {
		s := open(t, 0)
		key := Key("shop", "ivy", "evt_1")
		c := mustClaim(t, s, key, lease, Fresh)
		mustClaim(t, s, key, lease, InFlight)
		if err := s.Commit(ctx, mustClaim(t, s, key, lease, InFlight), window); err == nil {
			t.Fatal("Commit of an in-flight claim: no error")
		}
		if err := s.Commit(ctx, c, window); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		mustClaim(t, s, key, lease, Delivered)
		// A late release by the holder keeps the event delivered.
		if err := s.Release(ctx, c); err != nil {
			t.Fatalf("Release after Commit: %v", err)
		}
		mustClaim(t, s, key, lease, Delivered)
		if err := s.Renew(ctx, c, lease); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Renew after Commit = %v, want ErrNotHeld", err)
		}

		// A released claim frees the key for the provider's retry.
		key2 := Key("shop", "ivy", "evt_2")
		c2 := mustClaim(t, s, key2, lease, Fresh)
		if err := s.Release(ctx, c2); err != nil {
			t.Fatalf("Release: %v", err)
		}
		c3 := mustClaim(t, s, key2, lease, Fresh)
		if c3.Token == c2.Token {
			t.Fatalf("two claims share the token %q", c3.Token)
		}
		// Releasing a claim that is not fresh does nothing.
		if err := s.Release(ctx, mustClaim(t, s, key2, lease, InFlight)); err != nil {
			t.Fatalf("Release of an in-flight claim: %v", err)
		}
		mustClaim(t, s, key2, lease, InFlight)
		// Neither does a second release of a claim already released.
		if err := s.Release(ctx, c2); err != nil {
			t.Fatalf("Release again: %v", err)
		}
		mustClaim(t, s, key2, lease, InFlight)

		// Keys of other scopes and providers are other keys.
		mustClaim(t, s, Key("other", "ivy", "evt_1"), lease, Fresh)
		mustClaim(t, s, Key("shop", "stripe", "evt_1"), lease, Fresh)
	})

	t.Run("LeaseExpiry", func(t *testing.T) {
		s := open(t, 0)
		// The holder "dies": it never commits nor releases.
		key := Key("shop", "ivy", "evt_crash")
		old := mustClaim(t, s, key, lease, Fresh)
		s.advance(lease / 2)
		mustClaim(t, s, key, lease, InFlight)
		s.advance(lease)
		c := mustClaim(t, s, key, lease, Fresh)
		mustClaim(t, s, key, lease, InFlight)

		// The old holder's release must not free the new holder's claim.
		if err := s.Release(ctx, old); err != nil {
			t.Fatalf("Release of a lost claim: %v", err)
		}
		mustClaim(t, s, key, lease, InFlight)
		if err := s.Renew(ctx, old, lease); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Renew of a lost claim = %v, want ErrNotHeld", err)
		}
		// Its late commit still records the delivery: the upstream took it.
		if err := s.Commit(ctx, old, window); err != nil {
			t.Fatalf("late Commit: %v", err)
		}
		mustClaim(t, s, key, lease, Delivered)
		// And the new holder's release then changes nothing.
		if err := s.Release(ctx, c); err != nil {
			t.Fatalf("Release: %v", err)
		}
		mustClaim(t, s, key, lease, Delivered)
	})

	t.Run("Renew", func(t *testing.T) {
		s := open(t, 0)
		key := Key("shop", "ivy", "evt_slow")
		c := mustClaim(t, s, key, lease, Fresh)
		s.advance(lease / 2)
		if err := s.Renew(ctx, c, lease); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		// Past the original lease, the claim holds.
		s.advance(lease * 3 / 4)
		mustClaim(t, s, key, lease, InFlight)
		if err := s.Renew(ctx, c, lease); err != nil {
			t.Fatalf("second Renew: %v", err)
		}
		s.advance(lease * 3 / 4)
		mustClaim(t, s, key, lease, InFlight)
		// A renewed claim commits as any other.
		if err := s.Commit(ctx, c, window); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		mustClaim(t, s, key, lease, Delivered)

		// A claim not renewed in time is lost, and stays lost.
		key2 := Key("shop", "ivy", "evt_lost")
		c2 := mustClaim(t, s, key2, lease, Fresh)
		s.advance(lease + unit/2)
		if err := s.Renew(ctx, c2, lease); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Renew after the lease = %v, want ErrNotHeld", err)
		}
		other := mustClaim(t, s, key2, lease, Fresh)
		if err := s.Renew(ctx, c2, lease); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Renew of a claim taken over = %v, want ErrNotHeld", err)
		}
		if err := s.Renew(ctx, other, lease); err != nil {
			t.Fatalf("Renew by the new holder: %v", err)
		}
		// A released claim cannot be renewed.
		if err := s.Release(ctx, other); err != nil {
			t.Fatal(err)
		}
		if err := s.Renew(ctx, other, lease); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Renew after Release = %v, want ErrNotHeld", err)
		}
	})

	t.Run("WindowExpiry", func(t *testing.T) {
		s := open(t, 0)
		key := Key("shop", "ivy", "evt_window")
		c := mustClaim(t, s, key, lease, Fresh)
		if err := s.Commit(ctx, c, window); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		s.advance(window - unit)
		mustClaim(t, s, key, lease, Delivered)
		s.advance(2 * unit)
		c = mustClaim(t, s, key, lease, Fresh)
		// The id can be delivered and remembered again.
		if err := s.Commit(ctx, c, window); err != nil {
			t.Fatalf("second Commit: %v", err)
		}
		mustClaim(t, s, key, lease, Delivered)
	})

	t.Run("ConcurrentClaims", func(t *testing.T) {
		s := open(t, 0)
		const claimers = 32
		for round := range 10 {
			key := Key("shop", "ivy", "evt_race_"+strconv.Itoa(round))
			var (
				wg     sync.WaitGroup
				start  = make(chan struct{})
				claims = make([]Claim, claimers)
				errs   = make([]error, claimers)
			)
			for i := range claimers {
				wg.Go(func() {
					<-start
					claims[i], errs[i] = s.Claim(ctx, key, time.Hour)
				})
			}
			close(start)
			wg.Wait()
			var fresh []Claim
			for i := range claimers {
				if errs[i] != nil {
					t.Fatalf("round %d claimer %d: %v", round, i, errs[i])
				}
				switch claims[i].State {
				case Fresh:
					fresh = append(fresh, claims[i])
				case InFlight:
				default:
					t.Fatalf("round %d claimer %d: %v", round, i, claims[i].State)
				}
			}
			if len(fresh) != 1 {
				t.Fatalf("round %d: %d of %d concurrent claims were fresh, want exactly 1", round, len(fresh), claimers)
			}

			// While the holder commits, other claims see the event in
			// flight, then delivered: never free.
			var seen sync.Map
			stop := make(chan struct{})
			for range 4 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						c, err := s.Claim(ctx, key, time.Hour)
						if err != nil {
							t.Errorf("Claim during Commit: %v", err)
							return
						}
						seen.Store(c.State, true)
						if c.State == Fresh {
							t.Errorf("round %d: a claim during Commit was fresh", round)
							return
						}
					}
				})
			}
			if err := s.Commit(ctx, fresh[0], window); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			mustClaim(t, s, key, lease, Delivered)
			close(stop)
			wg.Wait()
		}
	})

	t.Run("Capacity", func(t *testing.T) {
		const max = 6
		s := open(t, max)
		var delivered, inFlight []Claim
		for i := range max {
			c := mustClaim(t, s, Key("shop", "ivy", "evt_cap_"+strconv.Itoa(i)), window, Fresh)
			if i < max-2 {
				if err := s.Commit(ctx, c, window); err != nil {
					t.Fatalf("Commit %d: %v", i, err)
				}
				delivered = append(delivered, c)
			} else {
				inFlight = append(inFlight, c)
			}
		}
		if u, ok := s.Store.(Usage); ok {
			if n, capacity := u.Usage(); n != max || capacity != max {
				t.Fatalf("Usage() = %d, %d; want %d, %d", n, capacity, max, max)
			}
		}
		// Full: a new id is refused, never taken by forgetting another.
		for i := range 3 {
			c, err := s.Claim(ctx, Key("shop", "ivy", "evt_new_"+strconv.Itoa(i)), lease)
			if !errors.Is(err, ErrFull) {
				t.Fatalf("Claim of a new id at capacity = %v, %v; want ErrFull", c.State, err)
			}
			if c.State == Fresh {
				t.Fatal("a refused claim is Fresh")
			}
		}
		for _, c := range delivered {
			mustClaim(t, s, c.Key, lease, Delivered)
		}
		for _, c := range inFlight {
			mustClaim(t, s, c.Key, lease, InFlight)
		}
		// A released claim makes room for one.
		if err := s.Release(ctx, inFlight[0]); err != nil {
			t.Fatal(err)
		}
		mustClaim(t, s, Key("shop", "ivy", "evt_new_0"), window, Fresh)
		if _, err := s.Claim(ctx, Key("shop", "ivy", "evt_new_1"), lease); !errors.Is(err, ErrFull) {
			t.Fatalf("Claim at capacity again = %v, want ErrFull", err)
		}
		// Once windows and leases end, there is room again.
		s.advance(window + unit)
		for i := range max {
			c := mustClaim(t, s, Key("shop", "ivy", "evt_later_"+strconv.Itoa(i)), window, Fresh)
			if err := s.Commit(ctx, c, window); err != nil {
				t.Fatalf("Commit after expiry %d: %v", i, err)
			}
		}
		if _, err := s.Claim(ctx, Key("shop", "ivy", "evt_one_more"), lease); !errors.Is(err, ErrFull) {
			t.Fatalf("Claim beyond capacity after expiry = %v, want ErrFull", err)
		}
	})
}

// mustClaim claims key and checks the claim has state want.
func mustClaim(t testing.TB, s Store, key string, lease time.Duration, want State) Claim {
	t.Helper()
	c, err := s.Claim(context.Background(), key, lease)
	if err != nil {
		t.Fatalf("Claim(%q): %v", key, err)
	}
	if c.State != want {
		t.Fatalf("Claim(%q) = %v, want %v", key, c.State, want)
	}
	if c.Key != key {
		t.Fatalf("Claim(%q).Key = %q", key, c.Key)
	}
	if (c.State == Fresh) != (c.Token != "") {
		t.Fatalf("Claim(%q) = %v with token %q", key, c.State, c.Token)
	}
	return c
}

func TestMemoryContract(t *testing.T) {
	testStoreContract(t, time.Second, func(t *testing.T, maxEvents int64) contractStore {
		s, clock := newTestMemory(t, MemoryConfig{MaxEvents: maxEvents})
		return contractStore{Store: s, advance: clock.advance}
	})
}

func TestFileContract(t *testing.T) {
	testStoreContract(t, time.Second, func(t *testing.T, maxEvents int64) contractStore {
		s, clock := newTestFile(t, FileConfig{MaxEvents: maxEvents})
		return contractStore{Store: s, advance: clock.advance}
	})
}

func TestCachedFileContract(t *testing.T) {
	testStoreContract(t, time.Second, func(t *testing.T, maxEvents int64) contractStore {
		s, clock := newTestFile(t, FileConfig{MaxEvents: maxEvents})
		return contractStore{Store: newCached(s, 1000, clock.now), advance: clock.advance}
	})
}

func TestRedisContract(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	var n atomic.Int64
	testStoreContract(t, 500*time.Millisecond, func(t *testing.T, maxEvents int64) contractStore {
		prefix := "contract" + strconv.FormatInt(n.Add(1), 10) + ":"
		s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: prefix, MaxEvents: maxEvents})
		return contractStore{Store: s, advance: time.Sleep}
	})
}
