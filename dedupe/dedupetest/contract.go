// Package dedupetest is the contract every dedupe.Store keeps, as a test
// any store's package runs, and the helpers those tests share.
package dedupetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// ContractStore is a store under the contract test, with a way to move its
// clock.
type ContractStore struct {
	dedupe.Store
	// Advance moves the store's clock forward by d: a fake clock's, or real
	// time (by waiting) for a store whose clock is elsewhere (Redis).
	Advance func(d time.Duration)
}

// OpenContractStore opens an empty store for one subtest; maxEvents 0 means
// the store's default capacity (or none).
type OpenContractStore func(t *testing.T, maxEvents int64) ContractStore

// FakeClock is a clock tests move by hand: real time plus an offset; safe
// for concurrent use.
type FakeClock struct{ offset atomic.Int64 }

// Now is the clock's time.
func (c *FakeClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// Contract checks what every dedupe.Store promises. unit is the time
// scale of its leases and windows: any value for a fake clock, long enough
// for a real one that a step of the test takes well under a unit.
func Contract(t *testing.T, unit time.Duration, open OpenContractStore) {
	ctx := context.Background()
	lease, window := 2*unit, 4*unit

	t.Run("FreshInFlightDelivered", func(t *testing.T) {
		s := open(t, 0)
		key := dedupe.Key("shop", "ivy", "evt_1")
		c := MustClaim(t, s, key, lease, dedupe.Fresh)
		MustClaim(t, s, key, lease, dedupe.InFlight)
		if err := s.Commit(ctx, MustClaim(t, s, key, lease, dedupe.InFlight), window); err == nil {
			t.Fatal("Commit of an in-flight claim: no error")
		}
		if err := s.Commit(ctx, c, window); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		MustClaim(t, s, key, lease, dedupe.Delivered)
		// A late release by the holder keeps the event delivered.
		if err := s.Release(ctx, c); err != nil {
			t.Fatalf("Release after Commit: %v", err)
		}
		MustClaim(t, s, key, lease, dedupe.Delivered)
		if err := s.Renew(ctx, c, lease); !errors.Is(err, dedupe.ErrNotHeld) {
			t.Fatalf("Renew after Commit = %v, want ErrNotHeld", err)
		}

		// A released claim frees the key for the provider's retry.
		key2 := dedupe.Key("shop", "ivy", "evt_2")
		c2 := MustClaim(t, s, key2, lease, dedupe.Fresh)
		if err := s.Release(ctx, c2); err != nil {
			t.Fatalf("Release: %v", err)
		}
		c3 := MustClaim(t, s, key2, lease, dedupe.Fresh)
		if c3.Token == c2.Token {
			t.Fatalf("two claims share the token %q", c3.Token)
		}
		// Releasing a claim that is not fresh does nothing.
		if err := s.Release(ctx, MustClaim(t, s, key2, lease, dedupe.InFlight)); err != nil {
			t.Fatalf("Release of an in-flight claim: %v", err)
		}
		MustClaim(t, s, key2, lease, dedupe.InFlight)
		// Neither does a second release of a claim already released.
		if err := s.Release(ctx, c2); err != nil {
			t.Fatalf("Release again: %v", err)
		}
		MustClaim(t, s, key2, lease, dedupe.InFlight)

		// Keys of other scopes and providers are other keys.
		MustClaim(t, s, dedupe.Key("other", "ivy", "evt_1"), lease, dedupe.Fresh)
		MustClaim(t, s, dedupe.Key("shop", "stripe", "evt_1"), lease, dedupe.Fresh)
	})

	t.Run("LeaseExpiry", func(t *testing.T) {
		s := open(t, 0)
		// The holder "dies": it never commits nor releases.
		key := dedupe.Key("shop", "ivy", "evt_crash")
		old := MustClaim(t, s, key, lease, dedupe.Fresh)
		s.Advance(lease / 2)
		MustClaim(t, s, key, lease, dedupe.InFlight)
		s.Advance(lease)
		c := MustClaim(t, s, key, lease, dedupe.Fresh)
		MustClaim(t, s, key, lease, dedupe.InFlight)

		// The old holder's release must not free the new holder's claim.
		if err := s.Release(ctx, old); err != nil {
			t.Fatalf("Release of a lost claim: %v", err)
		}
		MustClaim(t, s, key, lease, dedupe.InFlight)
		if err := s.Renew(ctx, old, lease); !errors.Is(err, dedupe.ErrNotHeld) {
			t.Fatalf("Renew of a lost claim = %v, want ErrNotHeld", err)
		}
		// Its late commit still records the delivery: the upstream took it.
		if err := s.Commit(ctx, old, window); err != nil {
			t.Fatalf("late Commit: %v", err)
		}
		MustClaim(t, s, key, lease, dedupe.Delivered)
		// And the new holder's release then changes nothing.
		if err := s.Release(ctx, c); err != nil {
			t.Fatalf("Release: %v", err)
		}
		MustClaim(t, s, key, lease, dedupe.Delivered)
	})

	t.Run("Renew", func(t *testing.T) {
		s := open(t, 0)
		key := dedupe.Key("shop", "ivy", "evt_slow")
		c := MustClaim(t, s, key, lease, dedupe.Fresh)
		s.Advance(lease / 2)
		if err := s.Renew(ctx, c, lease); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		// Past the original lease, the claim holds.
		s.Advance(lease * 3 / 4)
		MustClaim(t, s, key, lease, dedupe.InFlight)
		if err := s.Renew(ctx, c, lease); err != nil {
			t.Fatalf("second Renew: %v", err)
		}
		s.Advance(lease * 3 / 4)
		MustClaim(t, s, key, lease, dedupe.InFlight)
		// A renewed claim commits as any other.
		if err := s.Commit(ctx, c, window); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		MustClaim(t, s, key, lease, dedupe.Delivered)

		// A claim not renewed in time is lost, and stays lost.
		key2 := dedupe.Key("shop", "ivy", "evt_lost")
		c2 := MustClaim(t, s, key2, lease, dedupe.Fresh)
		s.Advance(lease + unit/2)
		if err := s.Renew(ctx, c2, lease); !errors.Is(err, dedupe.ErrNotHeld) {
			t.Fatalf("Renew after the lease = %v, want ErrNotHeld", err)
		}
		other := MustClaim(t, s, key2, lease, dedupe.Fresh)
		if err := s.Renew(ctx, c2, lease); !errors.Is(err, dedupe.ErrNotHeld) {
			t.Fatalf("Renew of a claim taken over = %v, want ErrNotHeld", err)
		}
		if err := s.Renew(ctx, other, lease); err != nil {
			t.Fatalf("Renew by the new holder: %v", err)
		}
		// A released claim cannot be renewed.
		if err := s.Release(ctx, other); err != nil {
			t.Fatal(err)
		}
		if err := s.Renew(ctx, other, lease); !errors.Is(err, dedupe.ErrNotHeld) {
			t.Fatalf("Renew after Release = %v, want ErrNotHeld", err)
		}
	})

	t.Run("WindowExpiry", func(t *testing.T) {
		s := open(t, 0)
		key := dedupe.Key("shop", "ivy", "evt_window")
		c := MustClaim(t, s, key, lease, dedupe.Fresh)
		if err := s.Commit(ctx, c, window); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		s.Advance(window - unit)
		MustClaim(t, s, key, lease, dedupe.Delivered)
		s.Advance(2 * unit)
		c = MustClaim(t, s, key, lease, dedupe.Fresh)
		// The id can be delivered and remembered again.
		if err := s.Commit(ctx, c, window); err != nil {
			t.Fatalf("second Commit: %v", err)
		}
		MustClaim(t, s, key, lease, dedupe.Delivered)
	})

	t.Run("ConcurrentClaims", func(t *testing.T) {
		s := open(t, 0)
		const claimers = 32
		for round := range 10 {
			key := dedupe.Key("shop", "ivy", "evt_race_"+strconv.Itoa(round))
			var (
				wg     sync.WaitGroup
				start  = make(chan struct{})
				claims = make([]dedupe.Claim, claimers)
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
			var fresh []dedupe.Claim
			for i := range claimers {
				if errs[i] != nil {
					t.Fatalf("round %d claimer %d: %v", round, i, errs[i])
				}
				switch claims[i].State {
				case dedupe.Fresh:
					fresh = append(fresh, claims[i])
				case dedupe.InFlight:
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
						if c.State == dedupe.Fresh {
							t.Errorf("round %d: a claim during Commit was fresh", round)
							return
						}
					}
				})
			}
			if err := s.Commit(ctx, fresh[0], window); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			MustClaim(t, s, key, lease, dedupe.Delivered)
			close(stop)
			wg.Wait()
		}
	})

	t.Run("Capacity", func(t *testing.T) {
		const max = 6
		s := open(t, max)
		var delivered, inFlight []dedupe.Claim
		for i := range max {
			c := MustClaim(t, s, dedupe.Key("shop", "ivy", "evt_cap_"+strconv.Itoa(i)), window, dedupe.Fresh)
			if i < max-2 {
				if err := s.Commit(ctx, c, window); err != nil {
					t.Fatalf("Commit %d: %v", i, err)
				}
				delivered = append(delivered, c)
			} else {
				inFlight = append(inFlight, c)
			}
		}
		if u, ok := s.Store.(dedupe.Usage); ok {
			if n, capacity := u.Usage(); n != max || capacity != max {
				t.Fatalf("Usage() = %d, %d; want %d, %d", n, capacity, max, max)
			}
		}
		// Full: a new id is refused, never taken by forgetting another.
		for i := range 3 {
			c, err := s.Claim(ctx, dedupe.Key("shop", "ivy", "evt_new_"+strconv.Itoa(i)), lease)
			if !errors.Is(err, dedupe.ErrFull) {
				t.Fatalf("Claim of a new id at capacity = %v, %v; want ErrFull", c.State, err)
			}
			if c.State == dedupe.Fresh {
				t.Fatal("a refused claim is Fresh")
			}
		}
		for _, c := range delivered {
			MustClaim(t, s, c.Key, lease, dedupe.Delivered)
		}
		for _, c := range inFlight {
			MustClaim(t, s, c.Key, lease, dedupe.InFlight)
		}
		// A released claim makes room for one.
		if err := s.Release(ctx, inFlight[0]); err != nil {
			t.Fatal(err)
		}
		MustClaim(t, s, dedupe.Key("shop", "ivy", "evt_new_0"), window, dedupe.Fresh)
		if _, err := s.Claim(ctx, dedupe.Key("shop", "ivy", "evt_new_1"), lease); !errors.Is(err, dedupe.ErrFull) {
			t.Fatalf("Claim at capacity again = %v, want ErrFull", err)
		}
		// Once windows and leases end, there is room again.
		s.Advance(window + unit)
		for i := range max {
			c := MustClaim(t, s, dedupe.Key("shop", "ivy", "evt_later_"+strconv.Itoa(i)), window, dedupe.Fresh)
			if err := s.Commit(ctx, c, window); err != nil {
				t.Fatalf("Commit after expiry %d: %v", i, err)
			}
		}
		if _, err := s.Claim(ctx, dedupe.Key("shop", "ivy", "evt_one_more"), lease); !errors.Is(err, dedupe.ErrFull) {
			t.Fatalf("Claim beyond capacity after expiry = %v, want ErrFull", err)
		}
	})

	// At capacity, once every window ended, concurrent claims of new ids
	// all go through: whoever's sweep freed the room, each claim takes a
	// place while the store holds fewer ids than max_events.
	t.Run("CapacityAfterExpiryConcurrently", func(t *testing.T) {
		const max = 60
		s := open(t, max)
		for i := range max {
			c := MustClaim(t, s, dedupe.Key("shop", "ivy", "evt_old_"+strconv.Itoa(i)), lease, dedupe.Fresh)
			if err := s.Commit(ctx, c, window); err != nil {
				t.Fatalf("Commit %d: %v", i, err)
			}
		}
		s.Advance(window + unit)
		var wg sync.WaitGroup
		errs := make(chan error, max)
		for i := range max {
			wg.Go(func() {
				c, err := s.Claim(ctx, dedupe.Key("shop", "ivy", "evt_next_"+strconv.Itoa(i)), window)
				if err == nil && c.State != dedupe.Fresh {
					err = fmt.Errorf("claim %d is %v", i, c.State)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		var refused []error
		for err := range errs {
			refused = append(refused, err)
		}
		if len(refused) > 0 {
			t.Fatalf("%d of %d claims refused once every window had ended, e.g. %v", len(refused), max, refused[0])
		}
	})
}

// MustClaim claims key and checks the claim has state want.
func MustClaim(t testing.TB, s dedupe.Store, key string, lease time.Duration, want dedupe.State) dedupe.Claim {
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
	if (c.State == dedupe.Fresh) != (c.Token != "") {
		t.Fatalf("Claim(%q) = %v with token %q", key, c.State, c.Token)
	}
	return c
}

// BenchClaimCommit runs a fresh dedupe.Claim and its Commit per iteration from
// goroutines goroutines (rounded up to a multiple of GOMAXPROCS), each
// event with its own key, as the guard does for every forwarded event.
func BenchClaimCommit(b *testing.B, s dedupe.Store, goroutines int) {
	ctx := context.Background()
	var seq atomic.Uint64
	run := func() error {
		key := dedupe.Key("bench", "standard", "msg_"+strconv.FormatUint(seq.Add(1), 10))
		c, err := s.Claim(ctx, key, time.Minute)
		if err != nil {
			return err
		}
		return s.Commit(ctx, c, time.Hour)
	}
	b.ReportAllocs()
	if goroutines == 1 {
		for b.Loop() {
			if err := run(); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism((goroutines + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := run(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

// WaitUntil polls cond until it holds, failing t after timeout.
func WaitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
