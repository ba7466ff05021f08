package ledger

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
	"github.com/hookguard/caddy-webhook-guard/spool"
	"github.com/hookguard/caddy-webhook-guard/spool/spooltest"
)

// listAll lists the events of state and scope, every page.
func listAll(t testing.TB, s *Ledger, state spool.State, scope string) ([]spool.Record, error) {
	t.Helper()
	var out []spool.Record
	page := spool.Page{Limit: 2}
	for {
		got, err := s.List(context.Background(), spool.Filter{State: state, Scope: scope}, page)
		if err != nil {
			return out, err
		}
		out = append(out, got...)
		if len(got) < page.Limit {
			return out, nil
		}
		page.After = got[len(got)-1].ID
	}
}

// dueOrder is the order in which Lease offers the due events at now.
func dueOrder(t testing.TB, s *Ledger, now time.Time) []uint64 {
	t.Helper()
	var due []uint64
	if _, err := s.Lease(context.Background(), now, nil, func(d spool.Due) spool.Verdict { due = append(due, d.ID); return spool.Skip }); err != nil {
		t.Fatal(err)
	}
	return due
}

// spoolOne spools an event with the given id and body.
func spoolOne(t testing.TB, s *Ledger, scope, id string, body []byte, at time.Time) (*spool.Record, bool) {
	t.Helper()
	rec := &spool.Record{
		Scope: scope, Provider: "ivy", EventID: id, EventType: "payment.succeeded",
		ReceivedAt: at, Method: "POST", Path: "/hooks/ivy", Query: "a=1", ClientIP: "192.0.2.1",
		Header: map[string][]string{"Content-Type": {"application/json"}},
		Body:   body,
	}
	dup, err := s.Ingest(context.Background(), dedupe.Key(scope, "ivy", id), rec, 100*time.Hour)
	if err != nil {
		t.Fatalf("Spool(%s): %v", id, err)
	}
	return rec, dup
}

// Ingest stores the record and marks the key accepted in one step; a copy
// of the event is a duplicate and writes nothing; the listing has no body,
// Get has the exact one.
func TestSpoolIngest(t *testing.T) {
	s, clock := newTestFile(t, Config{})
	t0 := clock.Now()
	body := []byte(`{"id":"evt_1","amount":100}`)
	rec, dup := spoolOne(t, s, "shop", "evt_1", body, t0)
	if dup || rec.ID == 0 {
		t.Fatalf("first Spool: duplicate %v, seq %d", dup, rec.ID)
	}
	if _, dup := spoolOne(t, s, "shop", "evt_1", body, t0); !dup {
		t.Fatal("second Spool of the same event: not a duplicate")
	}
	// The accepted key is a duplicate for dedupe.Claim too.
	dedupetest.MustClaim(t, s, dedupe.Key("shop", "ivy", "evt_1"), time.Minute, dedupe.Delivered)
	// Another scope is another key.
	if _, dup := spoolOne(t, s, "other", "evt_1", body, t0); dup {
		t.Fatal("the same id in another scope: duplicate")
	}

	ctx := context.Background()
	list, err := listAll(t, s, "", "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != rec.ID || list[0].EventID != "evt_1" || list[0].State != spool.Pending || list[0].Body != nil {
		t.Fatalf("SpoolList = %+v, want the one pending record without body", list)
	}
	got, ok, err := s.Get(ctx, rec.ID)
	if err != nil || !ok {
		t.Fatalf("SpoolGet: %v %v", ok, err)
	}
	if !bytes.Equal(got.Body, body) || got.Method != "POST" || got.Path != "/hooks/ivy" || got.Query != "a=1" ||
		got.ClientIP != "192.0.2.1" || got.Header["Content-Type"][0] != "application/json" || !got.ReceivedAt.Equal(t0) {
		t.Fatalf("SpoolGet = %+v", got)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := counts["shop"]; c.Pending != 1 || c.Dead != 0 || !c.OldestPending.Equal(t0) {
		t.Fatalf("counts = %+v", counts)
	}
	if all, _ := listAll(t, s, "", ""); len(all) != 2 {
		t.Fatalf("SpoolList of every scope: %d records, want 2", len(all))
	}
}

// The life of a record: failed (due later), dead (listed dead), retried
// (pending, attempts reset), delivered (gone, key delivered), discarded
// (gone, key still accepted).
func TestSpoolLifecycle(t *testing.T) {
	s, clock := newTestFile(t, Config{})
	ctx := context.Background()
	t0 := clock.Now()
	a, _ := spoolOne(t, s, "shop", "evt_a", []byte("a"), t0)
	b, _ := spoolOne(t, s, "shop", "evt_b", []byte("b"), t0)

	later := t0.Add(time.Minute)
	if err := s.Failed(ctx, &spool.Record{ID: a.ID, Attempts: 1, LastError: "status 503", NextAt: later}); err != nil {
		t.Fatal(err)
	}
	got, _, _ := s.Get(ctx, a.ID)
	if got.Attempts != 1 || got.LastError != "status 503" || !got.NextAt.Equal(later) {
		t.Fatalf("after SpoolFailed: %+v", got)
	}
	if due := dueOrder(t, s, later); len(due) != 2 || due[0] != b.ID || due[1] != a.ID {
		t.Fatalf("due order %v, want b (due now) then a (later)", due)
	}
	if due := dueOrder(t, s, t0); len(due) != 1 || due[0] != b.ID {
		t.Fatalf("due now %v, want b only", due)
	}

	dead, err := s.Die(ctx, &spool.Record{ID: a.ID, Attempts: 2, LastError: "status 500"})
	if err != nil || dead.State != spool.Dead || dead.Attempts != 2 {
		t.Fatalf("SpoolDie = %+v, %v", dead, err)
	}
	if l, _ := listAll(t, s, spool.Dead, ""); len(l) != 1 || l[0].ID != a.ID || l[0].LastError != "status 500" {
		t.Fatalf("dead list = %+v", l)
	}
	if l, _ := listAll(t, s, spool.Pending, ""); len(l) != 1 || l[0].ID != b.ID {
		t.Fatalf("pending list = %+v", l)
	}
	if c, _ := s.Counts(ctx); c["shop"].Pending != 1 || c["shop"].Dead != 1 {
		t.Fatalf("counts = %+v", c)
	}

	clock.Advance(time.Hour)
	if err := s.Retry(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	got, _, _ = s.Get(ctx, a.ID)
	if got.State != spool.Pending || got.Attempts != 0 || !got.ReceivedAt.Equal(t0) || !got.AgeFrom().After(t0) {
		t.Fatalf("after SpoolRetry: %+v", got)
	}
	if l, _ := listAll(t, s, spool.Dead, ""); len(l) != 0 {
		t.Fatalf("dead after retry: %+v", l)
	}

	if err := s.Delivered(ctx, a.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(ctx, a.ID); ok {
		t.Fatal("delivered record still there")
	}
	dedupetest.MustClaim(t, s, dedupe.Key("shop", "ivy", "evt_a"), time.Minute, dedupe.Delivered)
	if err := s.Delivered(ctx, a.ID, time.Hour); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("SpoolDelivered twice = %v, want spool.ErrNotFound", err)
	}

	gone, err := s.Discard(ctx, b.ID, "ops")
	if err != nil || gone.EventID != "evt_b" || gone.State != spool.Discarded || gone.DiscardedBy != "ops" || gone.Body != nil {
		t.Fatalf("Discard = %+v, %v", gone, err)
	}
	// Kept, listed, not due, and its id still accepted.
	if l, _ := listAll(t, s, spool.Discarded, ""); len(l) != 1 || l[0].ID != b.ID || !l[0].DiscardedAt.Equal(clock.Now()) && l[0].DiscardedAt.IsZero() {
		t.Fatalf("discarded list: %+v", l)
	}
	if l, _ := listAll(t, s, spool.Pending, ""); len(l) != 0 {
		t.Fatalf("pending after discard: %+v", l)
	}
	if due := dueOrder(t, s, clock.Now().Add(time.Hour)); len(due) != 0 {
		t.Fatalf("due after discard: %v", due)
	}
	if c, _ := s.Counts(ctx); c["shop"].Discarded != 1 || c["shop"].Pending != 0 {
		t.Fatalf("counts after discard = %+v", c)
	}
	dedupetest.MustClaim(t, s, dedupe.Key("shop", "ivy", "evt_b"), time.Minute, dedupe.Delivered) // still accepted
	// A mistaken discard is undone by a retry: pending again, attempts reset.
	if err := s.Retry(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Get(ctx, b.ID); got.State != spool.Pending || got.DiscardedBy != "" || string(got.Body) != "b" {
		t.Fatalf("after retrying a discarded event: %+v", got)
	}
	if _, err := s.Discard(ctx, b.ID, "ops"); err != nil {
		t.Fatal(err)
	}
	// Once its accepted key expires, the sweep purges it, and the id is
	// fresh.
	clock.Advance(101 * time.Hour)
	if n, err := s.purgeDiscarded(ctx); n != 1 || err != nil {
		t.Fatalf("purgeDiscarded = %d, %v; want 1", n, err)
	}
	if _, ok, _ := s.Get(ctx, b.ID); ok {
		t.Fatal("discarded record not purged")
	}
	for _, err := range []error{s.Retry(ctx, b.ID), s.Failed(ctx, &spool.Record{ID: b.ID, Attempts: 1, LastError: "x", NextAt: later})} {
		if !errors.Is(err, spool.ErrNotFound) {
			t.Fatalf("operation on a purged record = %v, want spool.ErrNotFound", err)
		}
	}
	dedupetest.MustClaim(t, s, dedupe.Key("shop", "ivy", "evt_b"), time.Minute, dedupe.Fresh)

	// An operator's retry keeps the key accepted as long again from the
	// retry: a provider's retry stays a duplicate while it may be
	// delivered.
	c, _ := spoolOne(t, s, "shop", "evt_c", []byte("c"), clock.Now())
	if _, err := s.Die(ctx, &spool.Record{ID: c.ID, Attempts: 25, LastError: "status 500"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(99 * time.Hour)
	if err := s.Retry(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	clock.Advance(99 * time.Hour) // 198h after it was received
	dedupetest.MustClaim(t, s, dedupe.Key("shop", "ivy", "evt_c"), time.Minute, dedupe.Delivered)
}

// Records, indexes and pause state survive a reopen.
func TestSpoolSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, clock := newTestFile(t, Config{Path: path})
	ctx := context.Background()
	rec, _ := spoolOne(t, s, "shop", "evt_1", []byte("body"), clock.Now())
	if err := s.SetPaused(ctx, "shop", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPaused(ctx, "other", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPaused(ctx, "other", false); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := open(Config{Path: path, SweepEvery: time.Hour}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, ok, err := s2.Get(ctx, rec.ID); !ok || err != nil || string(got.Body) != "body" {
		t.Fatalf("after reopen: %+v %v %v", got, ok, err)
	}
	paused, err := s2.Paused(ctx)
	if err != nil || len(paused) != 1 || !paused["shop"] {
		t.Fatalf("paused after reopen = %v, %v", paused, err)
	}
	dedupetest.MustClaim(t, s2, dedupe.Key("shop", "ivy", "evt_1"), time.Minute, dedupe.Delivered)
	// A new event gets a new sequence number.
	next, _ := spoolOne(t, s2, "shop", "evt_2", nil, clock.Now())
	if next.ID <= rec.ID {
		t.Fatalf("seq after reopen %d, want > %d", next.ID, rec.ID)
	}
}

// A full file (MaxSize) refuses an ingest with ErrDiskFull and leaves
// nothing of it: no record, no index entry, the key not accepted.
func TestSpoolDiskFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, clock := newTestFile(t, Config{Path: path, MaxSize: 256 << 10})
	body := bytes.Repeat([]byte("x"), 4<<10)
	var stored int
	var failedID string
	for i := 0; ; i++ {
		if i == 10_000 {
			t.Fatal("10,000 events of 4 KiB did not fill 256 KiB")
		}
		id := "evt_" + strconv.Itoa(i)
		rec := &spool.Record{Scope: "shop", Provider: "ivy", EventID: id, ReceivedAt: clock.Now(), Method: "POST", Body: body}
		_, err := s.Ingest(context.Background(), dedupe.Key("shop", "ivy", id), rec, time.Hour)
		if err == nil {
			stored++
			continue
		}
		if !errors.Is(err, ErrDiskFull) || !errors.Is(err, dedupe.ErrFull) {
			t.Fatalf("Spool on a full file = %v, want ErrDiskFull", err)
		}
		failedID = id
		break
	}
	check := func(s *Ledger) {
		t.Helper()
		list, err := listAll(t, s, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != stored {
			t.Fatalf("%d records, want the %d stored", len(list), stored)
		}
		for _, rec := range list {
			if rec.EventID == failedID {
				t.Fatalf("the refused event %s has a record", failedID)
			}
		}
		if seqs, _ := s.IDs(context.Background(), spool.Pending, ""); len(seqs) != stored {
			t.Fatalf("%d due entries, want %d", len(seqs), stored)
		}
		dedupetest.MustClaim(t, s, dedupe.Key("shop", "ivy", failedID), time.Minute, dedupe.Fresh)
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := open(Config{Path: path, MaxSize: 256 << 10, SweepEvery: time.Hour}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2)
	t.Logf("%d events of 4 KiB stored before the file was full", stored)
}

// TestSpoolListText: the console's search finds events by id, type or last
// error in any ASCII case, or by their number; the raw pre-filter never
// hides a match that JSON wrote escaped, and a header's text matches
// nothing.
func TestSpoolListText(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "ledger.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Unix(1_700_000_000, 0)
	plain, _ := spoolOne(t, s, "shop", "evt_Plain_1", []byte("{}"), at)
	marked, _ := spoolOne(t, s, "shop", `evt_<b>&"x"`, []byte("{}"), at)
	accent, _ := spoolOne(t, s, "shop", "evt_café", []byte("{}"), at)
	search := func(text string) []uint64 {
		t.Helper()
		got, err := s.List(context.Background(), spool.Filter{Text: text}, spool.Page{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []uint64
		for _, r := range got {
			ids = append(ids, r.ID)
		}
		return ids
	}
	for text, want := range map[string][]uint64{
		"PLAIN_1":                         {plain.ID},
		"SUCCEEDED":                       {accent.ID, marked.ID, plain.ID},
		`<b>&"x"`:                         {marked.ID},
		"café":                            {accent.ID},
		strconv.FormatUint(marked.ID, 10): {marked.ID},
		"application/json":                nil, // a header, not searched
		"evt_none":                        nil,
	} {
		if got := search(text); !slices.Equal(got, want) {
			t.Errorf("search %q: %v, want %v", text, got, want)
		}
	}
}

// The ledger keeps the contract of every spool store.
func TestSpoolContract(t *testing.T) {
	spooltest.Contract(t, time.Hour, func(t *testing.T) spooltest.ContractStore {
		s, clock := newTestFile(t, Config{})
		return spooltest.ContractStore{Store: s, Now: clock.Now, Advance: clock.Advance}
	})
}
