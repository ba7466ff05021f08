package dedupe

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand; safe for concurrent use. (The
// external tests use dedupetest.FakeClock; this package's own tests cannot
// import it.)
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// mustClaim claims key and checks the state of the claim.
func mustClaim(t testing.TB, s Store, key string, lease time.Duration, want State) Claim {
	t.Helper()
	c, err := s.Claim(context.Background(), key, lease)
	if err != nil || c.State != want {
		t.Fatalf("Claim(%q) = %v, %v; want %v", key, c.State, err, want)
	}
	return c
}

// waitUntil polls cond until it holds, failing t after timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
