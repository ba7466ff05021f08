package ledger

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

// dueCounts returns the ledger's due counts and a recount from the indexes.
func dueCounts(t *testing.T, s *Ledger) (kept, recounted map[string]int) {
	t.Helper()
	s.spool.mu.Lock()
	kept = maps.Clone(s.spool.due)
	s.spool.mu.Unlock()
	if err := s.countDue(); err != nil {
		t.Fatal(err)
	}
	s.spool.mu.Lock()
	recounted = maps.Clone(s.spool.due)
	s.spool.mu.Unlock()
	return kept, recounted
}

// The due events counted by scope (what lets a Lease see at once that every
// due event is paused) follow every change — ingest, failure, death, retry,
// discard, delivery — through the journal and the checkpoint, and a Lease
// of paused scopes only offers nothing.
func TestDueCountsFollowChanges(t *testing.T) {
	s, clock := newTestFile(t, Config{manualCheckpoint: true})
	ctx := context.Background()
	check := func(what string) {
		t.Helper()
		kept, recounted := dueCounts(t, s)
		if !maps.Equal(kept, recounted) {
			t.Fatalf("%s: due counts kept %v, recounted %v", what, kept, recounted)
		}
	}
	t0 := clock.Now()
	a, _ := spoolOne(t, s, "shop", "evt_a", []byte("a"), t0)
	b, _ := spoolOne(t, s, "shop", "evt_b", []byte("b"), t0)
	c, _ := spoolOne(t, s, "orders", "evt_c", []byte("c"), t0)
	check("after ingests")
	if kept, _ := dueCounts(t, s); kept["shop"] != 2 || kept["orders"] != 1 {
		t.Fatalf("due counts %v, want shop 2, orders 1", kept)
	}
	if err := s.Failed(ctx, &spool.Record{ID: a.ID, Attempts: 1, NextAt: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	check("after a failure")
	if _, err := s.Die(ctx, &spool.Record{ID: b.ID, Attempts: 3}); err != nil {
		t.Fatal(err)
	}
	check("after a death")
	if _, err := s.checkpoint(); err != nil {
		t.Fatal(err)
	}
	check("after a checkpoint")
	if err := s.Retry(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	check("after a retry")
	if _, err := s.Discard(ctx, a.ID, "op"); err != nil {
		t.Fatal(err)
	}
	check("after a discard")
	if err := s.Delivered(ctx, c.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	check("after a delivery")
	if err := s.SetPaused(ctx, "shop", true); err != nil {
		t.Fatal(err)
	}
	if due := dueOrder(t, s, t0.Add(time.Hour)); len(due) != 0 {
		t.Fatalf("a Lease of paused scopes only offered %v", due)
	}
	if err := s.SetPaused(ctx, "shop", false); err != nil {
		t.Fatal(err)
	}
	if due := dueOrder(t, s, t0.Add(time.Hour)); len(due) != 1 || due[0] != b.ID {
		t.Fatalf("due after resuming: %v, want the retried %d", due, b.ID)
	}
}
