package ledger

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
)

// With HoldLeases (Caddy's file store) a claim is held until it is committed
// or released, however long past its lease: a process stopped longer than
// the lease must not let a copy through. Renew still works; nothing but
// Commit and Release ends the claim.
func TestHeldLeases(t *testing.T) {
	s, clock := newTestFile(t, Config{HoldLeases: true, MaxEvents: 10})
	ctx := context.Background()
	key := dedupe.Key("shop", "ivy", "evt_stopped")
	c := dedupetest.MustClaim(t, s, key, time.Second, dedupe.Fresh)
	clock.Advance(time.Hour)
	dedupetest.MustClaim(t, s, key, time.Second, dedupe.InFlight)
	s.forgetLeases()
	s.makeRoom()
	dedupetest.MustClaim(t, s, key, time.Second, dedupe.InFlight)
	if err := s.Renew(ctx, c, time.Second); err != nil {
		t.Fatalf("Renew an hour past the lease: %v", err)
	}
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	dedupetest.MustClaim(t, s, key, time.Second, dedupe.Delivered)
	if err := s.Renew(ctx, c, time.Second); !errors.Is(err, dedupe.ErrNotHeld) {
		t.Fatalf("Renew after Commit = %v, want ErrNotHeld", err)
	}

	other := dedupe.Key("shop", "ivy", "evt_released")
	c2 := dedupetest.MustClaim(t, s, other, time.Second, dedupe.Fresh)
	clock.Advance(time.Hour)
	if err := s.Release(ctx, c2); err != nil {
		t.Fatal(err)
	}
	dedupetest.MustClaim(t, s, other, time.Second, dedupe.Fresh)
}

// After a write that failed for lack of room (here max_size), Writable says
// so (ErrDiskFull, which matches dedupe.ErrFull) until a write succeeds
// again: once expired ids are swept, the checkpoint finds room.
func TestWritableAfterFullDisk(t *testing.T) {
	s, clock := newTestFile(t, Config{MaxSize: 128 << 10})
	ctx := context.Background()
	if err := s.Writable(); err != nil {
		t.Fatalf("Writable of a new ledger: %v", err)
	}
	for i := 0; ; i++ {
		if i == 100_000 {
			t.Fatal("100,000 commits did not fill 128 KiB")
		}
		c := dedupetest.MustClaim(t, s, "k"+strconv.Itoa(i), time.Minute, dedupe.Fresh)
		if err := s.Commit(ctx, c, time.Minute); err != nil {
			break
		}
	}
	if err := s.Writable(); !errors.Is(err, ErrDiskFull) || !errors.Is(err, dedupe.ErrFull) {
		t.Fatalf("Writable after a failed commit = %v, want ErrDiskFull", err)
	}
	clock.Advance(time.Hour)
	for {
		n, err := s.sweepOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if err := s.Writable(); err != nil {
		t.Fatalf("Writable after the sweep freed room: %v", err)
	}
}
