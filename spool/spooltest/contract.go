// Package spooltest is the contract every spool.Store keeps, as a test any
// store's package runs (the ledger file, Redis), so that the stores behave
// alike behind the spool.
package spooltest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// Store is a store under the contract: a spool store that is also the
// replay store of its keys (an accepted key is a duplicate to Claim).
type Store interface {
	spool.Store
	dedupe.Store
}

// ContractStore is a store under the contract test, with its clock.
type ContractStore struct {
	Store
	// Now is the store's clock (the times it writes in records).
	Now func() time.Time
	// Advance moves the store's clock forward by d: a fake clock's, or
	// real time (by waiting) for a store whose keys expire on a clock
	// elsewhere (Redis).
	Advance func(d time.Duration)
}

// OpenContractStore opens an empty store for one subtest.
type OpenContractStore func(t *testing.T) ContractStore

// The targets and scopes of the contract's events.
const (
	scopeShop  = "shop"
	scopeOther = "other"
)

// target is the target key of the events of scope.
func target(scope string) string { return scope + "/ivy/http://backend.test" }

// openAll is the openings of every target of the contract, with room.
var openAll = []spool.Opening{
	{Target: target(scopeShop), Scope: scopeShop, Free: 100},
	{Target: target(scopeOther), Scope: scopeOther, Free: 100},
}

// Contract checks what every spool.Store promises. unit is the time scale
// of its replay windows: any value for a fake clock, long enough for a real
// one that a step of the test takes well under a unit.
func Contract(t *testing.T, unit time.Duration, open OpenContractStore) {
	ctx := context.Background()
	acceptFor := 4 * unit

	// ingest spools an event of scope with id and body, received at the
	// store's now (to the millisecond, as every store keeps it).
	ingest := func(t *testing.T, s ContractStore, scope, id string, body []byte) (*spool.Record, bool) {
		t.Helper()
		rec := &spool.Record{
			Target: target(scope), Scope: scope, Provider: "ivy", EventID: id, EventType: "payment.succeeded",
			ReceivedAt: s.Now().Truncate(time.Millisecond), Method: "POST", Path: "/hooks/ivy", Query: "a=1",
			ClientIP: "192.0.2.1", Host: "hooks.example", Proto: "https",
			Header: map[string][]string{"Content-Type": {"application/json"}, "X-Ivy-Signature": {"ab12"}},
			Body:   body,
		}
		dup, err := s.Ingest(ctx, dedupe.Key(scope, "ivy", id), rec, acceptFor)
		if err != nil {
			t.Fatalf("Ingest(%s): %v", id, err)
		}
		return rec, dup
	}
	mustIngest := func(t *testing.T, s ContractStore, scope, id string, body []byte) *spool.Record {
		t.Helper()
		rec, dup := ingest(t, s, scope, id, body)
		if dup || rec.ID == 0 {
			t.Fatalf("Ingest(%s): duplicate %v, id %d; want a new event", id, dup, rec.ID)
		}
		return rec
	}
	// lease offers the due events at now, answering each with verdict,
	// and returns the ids offered, in order, and the next due time.
	lease := func(t *testing.T, s ContractStore, now time.Time, verdict func(spool.Due) spool.Verdict) ([]uint64, time.Time) {
		t.Helper()
		var ids []uint64
		next, err := s.Lease(ctx, now, openAll, func(d spool.Due) spool.Verdict {
			ids = append(ids, d.ID)
			return verdict(d)
		})
		if err != nil {
			t.Fatalf("Lease: %v", err)
		}
		return ids, next
	}
	take := func(spool.Due) spool.Verdict { return spool.Take }
	// takeOnly leases the due events at now and takes those of ids,
	// skipping the others; it fails unless all of ids were offered.
	takeOnly := func(t *testing.T, s ContractStore, now time.Time, ids ...uint64) {
		t.Helper()
		got, _ := lease(t, s, now, func(d spool.Due) spool.Verdict {
			if slices.Contains(ids, d.ID) {
				return spool.Take
			}
			return spool.Skip
		})
		for _, id := range ids {
			if !slices.Contains(got, id) {
				t.Fatalf("Lease at %v offered %v, not %d", now, got, id)
			}
		}
	}
	get := func(t *testing.T, s ContractStore, id uint64) (spool.Record, bool) {
		t.Helper()
		rec, ok, err := s.Get(ctx, id)
		if err != nil {
			t.Fatalf("Get(%d): %v", id, err)
		}
		return rec, ok
	}
	list := func(t *testing.T, s ContractStore, f spool.Filter) []spool.Record {
		t.Helper()
		var out []spool.Record
		page := spool.Page{Limit: 2}
		for {
			got, err := s.List(ctx, f, page)
			if err != nil {
				t.Fatalf("List(%+v): %v", f, err)
			}
			out = append(out, got...)
			if len(got) < page.Limit {
				return out
			}
			page.After = got[len(got)-1].ID
		}
	}
	ids := func(recs []spool.Record) []uint64 {
		out := make([]uint64, len(recs))
		for i, r := range recs {
			out[i] = r.ID
		}
		return out
	}
	counts := func(t *testing.T, s ContractStore) map[string]spool.Counts {
		t.Helper()
		c, err := s.Counts(ctx)
		if err != nil {
			t.Fatalf("Counts: %v", err)
		}
		return c
	}
	key := func(scope, id string) string { return dedupe.Key(scope, "ivy", id) }

	t.Run("IngestGetList", func(t *testing.T) {
		s := open(t)
		body := []byte(`{"id":"evt_1","amount":100}` + "\x00\xff binary")
		rec := mustIngest(t, s, scopeShop, "evt_1", body)
		if _, dup := ingest(t, s, scopeShop, "evt_1", body); !dup {
			t.Fatal("a second copy of the event is not a duplicate")
		}
		// The accepted key is a duplicate for a claim too.
		dedupetest.MustClaim(t, s, key(scopeShop, "evt_1"), time.Minute, dedupe.Delivered)
		// Another scope is another key.
		other := mustIngest(t, s, scopeOther, "evt_1", body)
		if other.ID == rec.ID {
			t.Fatalf("two events share id %d", rec.ID)
		}

		got, ok := get(t, s, rec.ID)
		if !ok {
			t.Fatal("Get: no event")
		}
		if !bytes.Equal(got.Body, body) || got.Method != "POST" || got.Path != "/hooks/ivy" || got.Query != "a=1" ||
			got.ClientIP != "192.0.2.1" || got.Host != "hooks.example" || got.Proto != "https" ||
			got.Header["X-Ivy-Signature"][0] != "ab12" || !got.ReceivedAt.Equal(rec.ReceivedAt) ||
			got.State != spool.Pending || got.Attempts != 0 || got.EventID != "evt_1" || got.Target != target(scopeShop) ||
			got.Scope != scopeShop || got.Provider != "ivy" || got.EventType != "payment.succeeded" {
			t.Fatalf("Get = %+v", got)
		}
		all := list(t, s, spool.Filter{})
		if !slices.Equal(ids(all), []uint64{other.ID, rec.ID}) && !slices.Equal(ids(all), []uint64{max(other.ID, rec.ID), min(other.ID, rec.ID)}) {
			t.Fatalf("List = %v, want both, newest first", ids(all))
		}
		for _, l := range all {
			if l.Body != nil || l.Header != nil || l.History != nil || l.State != spool.Pending || l.EventID != "evt_1" {
				t.Fatalf("List entry %+v: want no body, headers or history", l)
			}
		}
		if l := list(t, s, spool.Filter{Scope: scopeShop}); !slices.Equal(ids(l), []uint64{rec.ID}) {
			t.Fatalf("List of scope shop = %v", ids(l))
		}
		if _, ok := get(t, s, rec.ID+other.ID+100); ok {
			t.Fatal("Get of an unknown id found an event")
		}
		c := counts(t, s)
		if c[scopeShop].Pending != 1 || c[scopeShop].Dead != 0 || !c[scopeShop].OldestPending.Equal(rec.ReceivedAt) ||
			c[scopeShop].PendingByTarget[target(scopeShop)] != 1 || c[scopeOther].Pending != 1 {
			t.Fatalf("Counts = %+v", c)
		}
	})

	t.Run("ConcurrentIngests", func(t *testing.T) {
		s := open(t)
		const copies = 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		fresh := 0
		for range copies {
			wg.Go(func() {
				rec := &spool.Record{Target: target(scopeShop), Scope: scopeShop, Provider: "ivy", EventID: "evt_race",
					ReceivedAt: s.Now(), Method: "POST", Body: []byte("x")}
				dup, err := s.Ingest(ctx, key(scopeShop, "evt_race"), rec, acceptFor)
				if err != nil {
					t.Error(err)
					return
				}
				if !dup {
					mu.Lock()
					fresh++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if fresh != 1 {
			t.Fatalf("%d of %d concurrent copies were stored, want 1", fresh, copies)
		}
		if l := list(t, s, spool.Filter{}); len(l) != 1 {
			t.Fatalf("%d events stored, want 1", len(l))
		}
	})

	t.Run("LeaseTakeSkipAbandon", func(t *testing.T) {
		s := open(t)
		a := mustIngest(t, s, scopeShop, "evt_a", []byte("a"))
		s.Advance(time.Millisecond)
		b := mustIngest(t, s, scopeShop, "evt_b", []byte("b"))
		now := s.Now()
		// Offered earliest first; a taken, b skipped.
		got, _ := lease(t, s, now, func(d spool.Due) spool.Verdict {
			if d.ID == a.ID {
				if d.Scope != scopeShop || d.Target != target(scopeShop) || !d.ReceivedAt.Equal(a.ReceivedAt) || d.Losses != 0 {
					t.Errorf("offered %+v", d)
				}
				return spool.Take
			}
			return spool.Skip
		})
		if !slices.Equal(got, []uint64{a.ID, b.ID}) {
			t.Fatalf("Lease offered %v, want %d then %d", got, a.ID, b.ID)
		}
		// A leased event is not offered again; a skipped one is (at the
		// latest a little later: a shared store does not offer it back at
		// once).
		later := now.Add(time.Minute)
		got, _ = lease(t, s, later, func(spool.Due) spool.Verdict { return spool.Stop })
		if !slices.Equal(got, []uint64{b.ID}) {
			t.Fatalf("Lease after taking a offered %v, want only b (%d)", got, b.ID)
		}
		// Stopped: b is still due.
		if err := s.Extend(ctx, a.ID); err != nil {
			t.Fatalf("Extend of a leased event: %v", err)
		}
		// Abandoned, a is due again.
		s.Abandon(ctx, a.ID)
		got, _ = lease(t, s, later, func(spool.Due) spool.Verdict { return spool.Skip })
		slices.Sort(got)
		if want := []uint64{a.ID, b.ID}; !slices.Equal(got, want) {
			t.Fatalf("Lease after Abandon offered %v, want %v", got, want)
		}
		if c := counts(t, s); c[scopeShop].Pending != 2 {
			t.Fatalf("Counts = %+v", c)
		}
	})

	t.Run("Lifecycle", func(t *testing.T) {
		s := open(t)
		a := mustIngest(t, s, scopeShop, "evt_a", []byte("a"))
		b := mustIngest(t, s, scopeShop, "evt_b", []byte("b"))
		now := s.Now()

		// A failed attempt: due again at its next time, not before.
		takeOnly(t, s, now, a.ID)
		nextAt := now.Add(2 * time.Minute).Truncate(time.Millisecond)
		history := []spool.AttemptLog{{At: now.Truncate(time.Millisecond), Duration: 30 * time.Millisecond, Status: 503, Error: "status 503"}}
		if err := s.Failed(ctx, &spool.Record{ID: a.ID, Attempts: 1, LastError: "status 503", NextAt: nextAt, History: history}); err != nil {
			t.Fatalf("Failed: %v", err)
		}
		got, _ := get(t, s, a.ID)
		if got.Attempts != 1 || got.LastError != "status 503" || !got.NextAt.Equal(nextAt) || got.State != spool.Pending ||
			len(got.History) != 1 || got.History[0].Status != 503 || got.History[0].Duration != 30*time.Millisecond || string(got.Body) != "a" {
			t.Fatalf("after Failed: %+v", got)
		}
		offered, next := lease(t, s, now.Add(time.Minute), func(spool.Due) spool.Verdict { return spool.Skip })
		if slices.Contains(offered, a.ID) {
			t.Fatalf("a offered before its next attempt: %v", offered)
		}
		if next.IsZero() || next.After(nextAt) {
			t.Fatalf("Lease says the next event is due at %v, want by %v", next, nextAt)
		}
		var due spool.Due
		offered, _ = lease(t, s, nextAt, func(d spool.Due) spool.Verdict {
			if d.ID == a.ID {
				due = d
				return spool.Take
			}
			return spool.Skip
		})
		if !slices.Contains(offered, a.ID) || !due.NextAt.Equal(nextAt) {
			t.Fatalf("at its next attempt a is offered: %v, %+v", offered, due)
		}

		// Dead: out of the due events, listed dead, counted.
		dead, err := s.Die(ctx, &spool.Record{ID: a.ID, Attempts: 2, LastError: "status 500", History: history})
		if err != nil || dead.State != spool.Dead || dead.Attempts != 2 || dead.LastError != "status 500" || dead.Body != nil || dead.DiedAt.IsZero() {
			t.Fatalf("Die = %+v, %v", dead, err)
		}
		if l := list(t, s, spool.Filter{State: spool.Dead}); !slices.Equal(ids(l), []uint64{a.ID}) || l[0].LastError != "status 500" {
			t.Fatalf("dead list = %+v", l)
		}
		if l := list(t, s, spool.Filter{State: spool.Pending}); !slices.Equal(ids(l), []uint64{b.ID}) {
			t.Fatalf("pending list = %v", ids(l))
		}
		if offered, _ := lease(t, s, nextAt.Add(time.Hour), func(spool.Due) spool.Verdict { return spool.Skip }); slices.Contains(offered, a.ID) {
			t.Fatalf("a dead event is offered: %v", offered)
		}
		if c := counts(t, s); c[scopeShop].Pending != 1 || c[scopeShop].Dead != 1 || c[scopeShop].PendingByTarget[target(scopeShop)] != 1 {
			t.Fatalf("counts = %+v", c)
		}
		if got, err := s.IDs(ctx, spool.Dead, scopeShop); err != nil || !slices.Equal(got, []uint64{a.ID}) {
			t.Fatalf("IDs(dead, shop) = %v, %v", got, err)
		}
		if got, err := s.IDs(ctx, spool.Dead, scopeOther); err != nil || len(got) != 0 {
			t.Fatalf("IDs(dead, other) = %v, %v", got, err)
		}

		// An operator's retry: pending again, attempts reset, age from now.
		s.Advance(time.Millisecond)
		if err := s.Retry(ctx, a.ID); err != nil {
			t.Fatalf("Retry: %v", err)
		}
		got, _ = get(t, s, a.ID)
		if got.State != spool.Pending || got.Attempts != 0 || !got.ReceivedAt.Equal(a.ReceivedAt) || !got.AgeFrom().After(a.ReceivedAt) || !got.DiedAt.IsZero() {
			t.Fatalf("after Retry: %+v", got)
		}
		if l := list(t, s, spool.Filter{State: spool.Dead}); len(l) != 0 {
			t.Fatalf("dead after retry: %v", ids(l))
		}
		pending, err := s.IDs(ctx, spool.Pending, scopeShop)
		slices.Sort(pending)
		if err != nil || !slices.Equal(pending, []uint64{a.ID, b.ID}) {
			t.Fatalf("IDs(pending, shop) = %v, %v", pending, err)
		}

		// Delivered: gone, its key delivered.
		takeOnly(t, s, s.Now().Add(time.Minute), a.ID)
		if err := s.Delivered(ctx, a.ID, time.Hour); err != nil {
			t.Fatalf("Delivered: %v", err)
		}
		if _, ok := get(t, s, a.ID); ok {
			t.Fatal("a delivered event is still there")
		}
		dedupetest.MustClaim(t, s, key(scopeShop, "evt_a"), time.Minute, dedupe.Delivered)
		if _, dup := ingest(t, s, scopeShop, "evt_a", []byte("a")); !dup {
			t.Fatal("a copy of a delivered event is not a duplicate")
		}
		if err := s.Delivered(ctx, a.ID, time.Hour); !errors.Is(err, spool.ErrNotFound) {
			t.Fatalf("Delivered twice = %v, want spool.ErrNotFound", err)
		}

		// Discarded: kept, listed, not due, its key still accepted; a
		// retry undoes it.
		gone, err := s.Discard(ctx, b.ID, "ops")
		if err != nil || gone.EventID != "evt_b" || gone.State != spool.Discarded || gone.DiscardedBy != "ops" || gone.Body != nil || gone.DiscardedAt.IsZero() {
			t.Fatalf("Discard = %+v, %v", gone, err)
		}
		if l := list(t, s, spool.Filter{State: spool.Discarded}); !slices.Equal(ids(l), []uint64{b.ID}) || l[0].DiscardedBy != "ops" {
			t.Fatalf("discarded list = %+v", l)
		}
		if l := list(t, s, spool.Filter{State: spool.Pending}); len(l) != 0 {
			t.Fatalf("pending after discard: %v", ids(l))
		}
		if offered, _ := lease(t, s, s.Now().Add(time.Hour), take); len(offered) != 0 {
			t.Fatalf("offered after discard: %v", offered)
		}
		if c := counts(t, s); c[scopeShop].Discarded != 1 || c[scopeShop].Pending != 0 || c[scopeShop].Dead != 0 {
			t.Fatalf("counts after discard = %+v", c)
		}
		dedupetest.MustClaim(t, s, key(scopeShop, "evt_b"), time.Minute, dedupe.Delivered)
		if err := s.Retry(ctx, b.ID); err != nil {
			t.Fatalf("Retry of a discarded event: %v", err)
		}
		if got, _ := get(t, s, b.ID); got.State != spool.Pending || got.DiscardedBy != "" || string(got.Body) != "b" {
			t.Fatalf("after retrying a discarded event: %+v", got)
		}
		if c := counts(t, s); c[scopeShop].Discarded != 0 || c[scopeShop].Pending != 1 {
			t.Fatalf("counts after the retry = %+v", c)
		}

		// Operations on an event that is not there.
		missing := a.ID
		for name, err := range map[string]error{
			"Retry":  s.Retry(ctx, missing),
			"Failed": s.Failed(ctx, &spool.Record{ID: missing, Attempts: 1, LastError: "x", NextAt: nextAt}),
		} {
			if !errors.Is(err, spool.ErrNotFound) {
				t.Errorf("%s of a delivered event = %v, want spool.ErrNotFound", name, err)
			}
		}
		if _, err := s.Discard(ctx, missing, "ops"); !errors.Is(err, spool.ErrNotFound) {
			t.Errorf("Discard of a delivered event = %v, want spool.ErrNotFound", err)
		}
	})

	t.Run("InFlight", func(t *testing.T) {
		s := open(t)
		a := mustIngest(t, s, scopeShop, "evt_a", []byte("a"))
		takeOnly(t, s, s.Now(), a.ID)
		if err := s.Retry(ctx, a.ID); !errors.Is(err, spool.ErrInFlight) {
			t.Fatalf("Retry of a leased event = %v, want spool.ErrInFlight", err)
		}
		if _, err := s.Discard(ctx, a.ID, "ops"); !errors.Is(err, spool.ErrInFlight) {
			t.Fatalf("Discard of a leased event = %v, want spool.ErrInFlight", err)
		}
		if err := s.Failed(ctx, &spool.Record{ID: a.ID, Attempts: 1, LastError: "status 503", NextAt: s.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Retry(ctx, a.ID); err != nil {
			t.Fatalf("Retry once the attempt ended: %v", err)
		}
		if offered, _ := lease(t, s, s.Now().Add(time.Second), func(spool.Due) spool.Verdict { return spool.Skip }); !slices.Equal(offered, []uint64{a.ID}) {
			t.Fatalf("a retried event is not due: %v", offered)
		}
	})

	t.Run("Pause", func(t *testing.T) {
		s := open(t)
		a := mustIngest(t, s, scopeShop, "evt_a", []byte("a"))
		b := mustIngest(t, s, scopeOther, "evt_b", []byte("b"))
		if err := s.SetPaused(ctx, scopeShop, true); err != nil {
			t.Fatal(err)
		}
		if p, err := s.Paused(ctx); err != nil || len(p) != 1 || !p[scopeShop] {
			t.Fatalf("Paused = %v, %v", p, err)
		}
		offered, _ := lease(t, s, s.Now().Add(time.Minute), func(spool.Due) spool.Verdict { return spool.Skip })
		if !slices.Equal(offered, []uint64{b.ID}) {
			t.Fatalf("with shop paused, Lease offered %v, want only %d", offered, b.ID)
		}
		if err := s.SetPaused(ctx, scopeShop, false); err != nil {
			t.Fatal(err)
		}
		if p, err := s.Paused(ctx); err != nil || len(p) != 0 {
			t.Fatalf("Paused after resume = %v, %v", p, err)
		}
		offered, _ = lease(t, s, s.Now().Add(time.Hour), func(spool.Due) spool.Verdict { return spool.Skip })
		if !slices.Contains(offered, a.ID) {
			t.Fatalf("after resume, Lease offered %v, want %d among them", offered, a.ID)
		}
	})

	t.Run("ListPages", func(t *testing.T) {
		s := open(t)
		var all []uint64
		for i := range 5 {
			scope := scopeShop
			if i%2 == 1 {
				scope = scopeOther
			}
			all = append(all, mustIngest(t, s, scope, "evt_"+strconv.Itoa(i), []byte("x")).ID)
		}
		slices.Reverse(all)
		if got := ids(list(t, s, spool.Filter{})); !slices.Equal(got, all) {
			t.Fatalf("List pages = %v, want %v", got, all)
		}
		if got := ids(list(t, s, spool.Filter{Scope: scopeOther})); !slices.Equal(got, []uint64{all[1], all[3]}) {
			t.Fatalf("List of other = %v", got)
		}
		if got := list(t, s, spool.Filter{EventID: "evt_2"}); len(got) != 1 || got[0].EventID != "evt_2" {
			t.Fatalf("List of evt_2 = %+v", got)
		}
		page, err := s.List(ctx, spool.Filter{}, spool.Page{Limit: 2, After: all[1]})
		if err != nil || !slices.Equal(ids(page), all[2:4]) {
			t.Fatalf("page after %d = %v, %v; want %v", all[1], ids(page), err, all[2:4])
		}
	})

	t.Run("Forget", func(t *testing.T) {
		s := open(t)
		a := mustIngest(t, s, scopeShop, "evt_a", []byte("a"))
		if ok, err := s.Forget(ctx, key(scopeShop, "evt_a")); err == nil || ok {
			t.Fatalf("Forget of a pending event's id = %v, %v; want an error", ok, err)
		}
		if _, err := s.Discard(ctx, a.ID, "ops"); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Forget(ctx, key(scopeShop, "evt_a")); err != nil || !ok {
			t.Fatalf("Forget of a discarded event's id = %v, %v; want true", ok, err)
		}
		if _, ok := get(t, s, a.ID); ok {
			t.Fatal("the discarded event of a forgotten id is still there")
		}
		dedupetest.MustClaim(t, s, key(scopeShop, "evt_a"), time.Minute, dedupe.Fresh)
		if ok, err := s.Forget(ctx, key(scopeShop, "evt_never")); err != nil || ok {
			t.Fatalf("Forget of an unknown id = %v, %v; want false", ok, err)
		}
	})

	t.Run("AcceptWindow", func(t *testing.T) {
		s := open(t)
		// An operator's retry keeps the key accepted as long again from
		// the retry: a provider's copy stays a duplicate while the event
		// may be delivered.
		c := mustIngest(t, s, scopeShop, "evt_c", []byte("c"))
		takeOnly(t, s, s.Now(), c.ID)
		if _, err := s.Die(ctx, &spool.Record{ID: c.ID, Attempts: 25, LastError: "status 500"}); err != nil {
			t.Fatal(err)
		}
		s.Advance(3 * unit)
		if err := s.Retry(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		s.Advance(3 * unit) // past the first accept window
		dedupetest.MustClaim(t, s, key(scopeShop, "evt_c"), time.Minute, dedupe.Delivered)
		if _, dup := ingest(t, s, scopeShop, "evt_c", []byte("c")); !dup {
			t.Fatal("a copy of a retried event is not a duplicate")
		}
		// Without a retry the key is forgotten after the window: a copy
		// then is new.
		mustIngest(t, s, scopeShop, "evt_d", []byte("d"))
		s.Advance(acceptFor + unit)
		if _, dup := ingest(t, s, scopeShop, "evt_d", []byte("d")); dup {
			t.Fatal("a copy after the accept window is a duplicate")
		}
	})
}
