package dedupe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// spoolOne spools an event with the given id and body.
func spoolOne(t testing.TB, s *File, scope, id string, body []byte, at time.Time) (*SpoolRecord, bool) {
	t.Helper()
	rec := &SpoolRecord{
		Scope: scope, Provider: "ivy", EventID: id, EventType: "payment.succeeded",
		ReceivedAt: at, Method: "POST", Path: "/hooks/ivy", Query: "a=1", ClientIP: "192.0.2.1",
		Header: map[string][]string{"Content-Type": {"application/json"}},
		Body:   body,
	}
	dup, err := s.Spool(context.Background(), Key(scope, "ivy", id), rec, 100*time.Hour)
	if err != nil {
		t.Fatalf("Spool(%s): %v", id, err)
	}
	return rec, dup
}

// Ingest stores the record and marks the key accepted in one step; a copy
// of the event is a duplicate and writes nothing; the listing has no body,
// Get has the exact one.
func TestSpoolIngest(t *testing.T) {
	s, clock := newTestFile(t, FileConfig{})
	t0 := clock.now()
	body := []byte(`{"id":"evt_1","amount":100}`)
	rec, dup := spoolOne(t, s, "shop", "evt_1", body, t0)
	if dup || rec.Seq == 0 {
		t.Fatalf("first Spool: duplicate %v, seq %d", dup, rec.Seq)
	}
	if _, dup := spoolOne(t, s, "shop", "evt_1", body, t0); !dup {
		t.Fatal("second Spool of the same event: not a duplicate")
	}
	// The accepted key is a duplicate for Claim too.
	mustClaim(t, s, Key("shop", "ivy", "evt_1"), time.Minute, Delivered)
	// Another scope is another key.
	if _, dup := spoolOne(t, s, "other", "evt_1", body, t0); dup {
		t.Fatal("the same id in another scope: duplicate")
	}

	list, err := s.SpoolList("", "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Seq != rec.Seq || list[0].EventID != "evt_1" || list[0].State != SpoolPending || list[0].Body != nil {
		t.Fatalf("SpoolList = %+v, want the one pending record without body", list)
	}
	got, ok, err := s.SpoolGet(rec.Seq)
	if err != nil || !ok {
		t.Fatalf("SpoolGet: %v %v", ok, err)
	}
	if !bytes.Equal(got.Body, body) || got.Method != "POST" || got.Path != "/hooks/ivy" || got.Query != "a=1" ||
		got.ClientIP != "192.0.2.1" || got.Header["Content-Type"][0] != "application/json" || !got.ReceivedAt.Equal(t0) {
		t.Fatalf("SpoolGet = %+v", got)
	}
	counts, err := s.SpoolCounts()
	if err != nil {
		t.Fatal(err)
	}
	if c := counts["shop"]; c.Pending != 1 || c.Dead != 0 || !c.OldestPending.Equal(t0) {
		t.Fatalf("counts = %+v", counts)
	}
	if all, _ := s.SpoolList("", ""); len(all) != 2 {
		t.Fatalf("SpoolList of every scope: %d records, want 2", len(all))
	}
}

// The life of a record: failed (due later), dead (listed dead), retried
// (pending, attempts reset), delivered (gone, key delivered), discarded
// (gone, key still accepted).
func TestSpoolLifecycle(t *testing.T) {
	s, clock := newTestFile(t, FileConfig{})
	ctx := context.Background()
	t0 := clock.now()
	a, _ := spoolOne(t, s, "shop", "evt_a", []byte("a"), t0)
	b, _ := spoolOne(t, s, "shop", "evt_b", []byte("b"), t0)

	later := t0.Add(time.Minute)
	if err := s.SpoolFailed(ctx, a.Seq, 1, "status 503", later); err != nil {
		t.Fatal(err)
	}
	got, _, _ := s.SpoolGet(a.Seq)
	if got.Attempts != 1 || got.LastError != "status 503" || !got.NextAt.Equal(later) {
		t.Fatalf("after SpoolFailed: %+v", got)
	}
	var due []uint64
	_ = s.spoolScan(func(e SpoolDue) bool { due = append(due, e.Seq); return true })
	if len(due) != 2 || due[0] != b.Seq || due[1] != a.Seq {
		t.Fatalf("due order %v, want b (due now) then a (later)", due)
	}

	dead, err := s.SpoolDie(ctx, a.Seq, 2, "status 500")
	if err != nil || dead.State != SpoolDead || dead.Attempts != 2 {
		t.Fatalf("SpoolDie = %+v, %v", dead, err)
	}
	if l, _ := s.SpoolList(SpoolDead, ""); len(l) != 1 || l[0].Seq != a.Seq || l[0].LastError != "status 500" {
		t.Fatalf("dead list = %+v", l)
	}
	if l, _ := s.SpoolList(SpoolPending, ""); len(l) != 1 || l[0].Seq != b.Seq {
		t.Fatalf("pending list = %+v", l)
	}
	if c, _ := s.SpoolCounts(); c["shop"].Pending != 1 || c["shop"].Dead != 1 {
		t.Fatalf("counts = %+v", c)
	}

	clock.advance(time.Hour)
	if err := s.SpoolRetry(ctx, a.Seq); err != nil {
		t.Fatal(err)
	}
	got, _, _ = s.SpoolGet(a.Seq)
	if got.State != SpoolPending || got.Attempts != 0 || !got.ReceivedAt.Equal(t0) || !got.AgeFrom().After(t0) {
		t.Fatalf("after SpoolRetry: %+v", got)
	}
	if l, _ := s.SpoolList(SpoolDead, ""); len(l) != 0 {
		t.Fatalf("dead after retry: %+v", l)
	}

	if err := s.SpoolDelivered(ctx, a.Seq, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.SpoolGet(a.Seq); ok {
		t.Fatal("delivered record still there")
	}
	mustClaim(t, s, Key("shop", "ivy", "evt_a"), time.Minute, Delivered)
	if err := s.SpoolDelivered(ctx, a.Seq, time.Hour); !errors.Is(err, ErrNoSpool) {
		t.Fatalf("SpoolDelivered twice = %v, want ErrNoSpool", err)
	}

	gone, err := s.SpoolDiscard(ctx, b.Seq)
	if err != nil || gone.EventID != "evt_b" {
		t.Fatalf("SpoolDiscard = %+v, %v", gone, err)
	}
	if l, _ := s.SpoolList("", ""); len(l) != 0 {
		t.Fatalf("records left: %+v", l)
	}
	mustClaim(t, s, Key("shop", "ivy", "evt_b"), time.Minute, Delivered) // still accepted
	for _, err := range []error{s.SpoolRetry(ctx, b.Seq), s.SpoolFailed(ctx, b.Seq, 1, "x", later)} {
		if !errors.Is(err, ErrNoSpool) {
			t.Fatalf("operation on a discarded record = %v, want ErrNoSpool", err)
		}
	}
	// The accepted key expires with its window, then the id is fresh.
	clock.advance(101 * time.Hour)
	mustClaim(t, s, Key("shop", "ivy", "evt_b"), time.Minute, Fresh)

	// An operator's retry keeps the key accepted as long again from the
	// retry: a provider's retry stays a duplicate while it may be
	// delivered.
	c, _ := spoolOne(t, s, "shop", "evt_c", []byte("c"), clock.now())
	if _, err := s.SpoolDie(ctx, c.Seq, 25, "status 500"); err != nil {
		t.Fatal(err)
	}
	clock.advance(99 * time.Hour)
	if err := s.SpoolRetry(ctx, c.Seq); err != nil {
		t.Fatal(err)
	}
	clock.advance(99 * time.Hour) // 198h after it was received
	mustClaim(t, s, Key("shop", "ivy", "evt_c"), time.Minute, Delivered)
}

// Records, indexes and pause state survive a reopen.
func TestSpoolSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, clock := newTestFile(t, FileConfig{Path: path})
	ctx := context.Background()
	rec, _ := spoolOne(t, s, "shop", "evt_1", []byte("body"), clock.now())
	if err := s.SpoolPause(ctx, "shop", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SpoolPause(ctx, "other", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SpoolPause(ctx, "other", false); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := openFile(FileConfig{Path: path, SweepEvery: time.Hour}, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, ok, err := s2.SpoolGet(rec.Seq); !ok || err != nil || string(got.Body) != "body" {
		t.Fatalf("after reopen: %+v %v %v", got, ok, err)
	}
	paused, err := s2.SpoolPaused()
	if err != nil || len(paused) != 1 || !paused["shop"] {
		t.Fatalf("paused after reopen = %v, %v", paused, err)
	}
	mustClaim(t, s2, Key("shop", "ivy", "evt_1"), time.Minute, Delivered)
	// A new event gets a new sequence number.
	next, _ := spoolOne(t, s2, "shop", "evt_2", nil, clock.now())
	if next.Seq <= rec.Seq {
		t.Fatalf("seq after reopen %d, want > %d", next.Seq, rec.Seq)
	}
}

// A full file (MaxSize) refuses an ingest with ErrDiskFull and leaves
// nothing of it: no record, no index entry, the key not accepted.
func TestSpoolDiskFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, clock := newTestFile(t, FileConfig{Path: path, MaxSize: 256 << 10})
	body := bytes.Repeat([]byte("x"), 4<<10)
	var stored int
	var failedID string
	for i := 0; ; i++ {
		if i == 10_000 {
			t.Fatal("10,000 events of 4 KiB did not fill 256 KiB")
		}
		id := "evt_" + strconv.Itoa(i)
		rec := &SpoolRecord{Scope: "shop", Provider: "ivy", EventID: id, ReceivedAt: clock.now(), Method: "POST", Body: body}
		_, err := s.Spool(context.Background(), Key("shop", "ivy", id), rec, time.Hour)
		if err == nil {
			stored++
			continue
		}
		if !errors.Is(err, ErrDiskFull) || !errors.Is(err, ErrFull) {
			t.Fatalf("Spool on a full file = %v, want ErrDiskFull", err)
		}
		failedID = id
		break
	}
	check := func(s *File) {
		t.Helper()
		list, err := s.SpoolList("", "")
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
		if seqs, _ := s.SpoolSeqs(SpoolPending, ""); len(seqs) != stored {
			t.Fatalf("%d due entries, want %d", len(seqs), stored)
		}
		mustClaim(t, s, Key("shop", "ivy", failedID), time.Minute, Fresh)
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := openFile(FileConfig{Path: path, MaxSize: 256 << 10, SweepEvery: time.Hour}, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2)
	t.Logf("%d events of 4 KiB stored before the file was full", stored)
}

func TestSpoolBackoff(t *testing.T) {
	for _, c := range []struct {
		attempt    int
		retryAfter time.Duration
		jitter     float64
		want       time.Duration
	}{
		{1, 0, 0, 5 * time.Second},
		{2, 0, 0, 30 * time.Second},
		{3, 0, 0, 2 * time.Minute},
		{4, 0, 0, 10 * time.Minute},
		{5, 0, 0, 30 * time.Minute},
		{6, 0, 0, time.Hour},
		{7, 0, 0, 2 * time.Hour},
		{25, 0, 0, 2 * time.Hour},
		{1, 0, 1, 6 * time.Second},
		{1, 0, -1, 4 * time.Second},
		{7, 0, -1, 96 * time.Minute},
		{7, 0, 5, 144 * time.Minute}, // jitter clamped to ±20 %
		{1, time.Minute, 0, time.Minute},
		{3, time.Second, 0, time.Second}, // the backend knows: shorter than the schedule
		{3, time.Millisecond, 0, time.Second},
		{1, 48 * time.Hour, 1, 24 * time.Hour},
	} {
		if got := SpoolBackoff(c.attempt, c.retryAfter, c.jitter); got != c.want {
			t.Errorf("SpoolBackoff(%d, %v, %v) = %v, want %v", c.attempt, c.retryAfter, c.jitter, got, c.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"1", time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"999999999999", 24 * time.Hour, true},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"Mon, 30 Nov 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Mon, 30 Nov 2026 11:00:00 GMT", 0, true}, // in the past: now
		{"Tue, 30 Nov 2027 12:00:00 GMT", 24 * time.Hour, true},
	} {
		got, ok := ParseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "5", "Mon, 30 Nov 2026 12:00:30 GMT", "-1", "99999999999999999999"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		if d < 0 || d > MaxRetryAfter || (!ok && d != 0) {
			t.Fatalf("ParseRetryAfter(%q) = %v, %v", s, d, ok)
		}
	})
}

// fakeBackend is a SpoolTarget.Deliver that answers from a script and
// records each attempt.
type fakeBackend struct {
	mu       sync.Mutex
	answer   func(rec *SpoolRecord, attempt int) Attempt
	attempts []string // event_id#attempt
	calls    chan string
}

func newFakeBackend(answer func(*SpoolRecord, int) Attempt) *fakeBackend {
	return &fakeBackend{answer: answer, calls: make(chan string, 1000)}
}

func (b *fakeBackend) deliver(_ context.Context, rec *SpoolRecord, attempt int) Attempt {
	b.mu.Lock()
	a := b.answer(rec, attempt)
	call := fmt.Sprintf("%s#%d", rec.EventID, attempt)
	b.attempts = append(b.attempts, call)
	b.mu.Unlock()
	b.calls <- call
	return a
}

func (b *fakeBackend) setAnswer(answer func(*SpoolRecord, int) Attempt) {
	b.mu.Lock()
	b.answer = answer
	b.mu.Unlock()
}

// nextCall waits for the backend's next attempt.
func (b *fakeBackend) nextCall(t *testing.T) string {
	t.Helper()
	select {
	case c := <-b.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery attempt within 10s")
		return ""
	}
}

// noCall checks that no attempt is made by a dispatch pass that begins
// after the call (everything due now is looked at).
func (b *fakeBackend) noCall(t *testing.T, w *SpoolWorker) {
	t.Helper()
	waitPass(t, w)
	select {
	case c := <-b.calls:
		t.Fatalf("unexpected attempt %s", c)
	default:
	}
}

// waitPass wakes the worker and waits until a dispatch pass that began
// after the wake has finished and no attempt is in flight.
func waitPass(t *testing.T, w *SpoolWorker) {
	t.Helper()
	started := w.passesStarted.Load()
	w.Wake()
	waitUntil(t, 10*time.Second, "a dispatch pass", func() bool {
		w.mu.Lock()
		n := len(w.inflight)
		w.mu.Unlock()
		return w.passesDone.Load() > started && n == 0
	})
}

// waitIdle waits until no attempt is in flight and a pass after it ran.
func waitIdle(t *testing.T, w *SpoolWorker) {
	t.Helper()
	waitPass(t, w)
}

// The worker's schedule, with the ledger's fake clock: a failed attempt is
// retried per SpoolBackoff (jitter 0) or Retry-After, never before; after
// max_attempts the event is dead and reported; a paused or unregistered
// scope waits; a delivered event leaves the spool.
func TestSpoolWorkerSchedule(t *testing.T) {
	s, clock := newTestFile(t, FileConfig{})
	w := NewSpoolWorker(s, nil)
	w.jitter = func() float64 { return 0 }
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	backend := newFakeBackend(func(*SpoolRecord, int) Attempt { return Attempt{Status: 503} })
	var deadMu sync.Mutex
	var dead []SpoolRecord
	target := &SpoolTarget{
		Deliver: backend.deliver, MaxAttempts: 4, MaxAge: 2 * time.Hour, Timeout: time.Second,
		Concurrency: 2, Window: time.Hour,
		OnDead: func(rec SpoolRecord) { deadMu.Lock(); dead = append(dead, rec); deadMu.Unlock() },
	}
	// No target yet: the event waits.
	rec, _ := spoolOne(t, s, "shop", "evt_1", []byte("b"), clock.now())
	backend.noCall(t, w)
	unregister := w.Register("shop", target)

	if c := backend.nextCall(t); c != "evt_1#1" {
		t.Fatalf("first attempt %s", c)
	}
	waitIdle(t, w)
	got, _, _ := s.SpoolGet(rec.Seq)
	if got.Attempts != 1 || got.LastError != "status 503" || !got.NextAt.Equal(got.NextAt) {
		t.Fatalf("after attempt 1: %+v", got)
	}
	// Not before the backoff (5s).
	clock.advance(4 * time.Second)
	backend.noCall(t, w)
	clock.advance(1500 * time.Millisecond)
	w.Wake()
	if c := backend.nextCall(t); c != "evt_1#2" {
		t.Fatalf("second attempt %s", c)
	}
	waitIdle(t, w)
	// Retry-After, longer than the schedule's 30s, is honoured.
	backend.setAnswer(func(*SpoolRecord, int) Attempt { return Attempt{Status: 429, RetryAfter: 10 * time.Minute} })
	clock.advance(31 * time.Second)
	w.Wake()
	if c := backend.nextCall(t); c != "evt_1#3" {
		t.Fatalf("third attempt %s", c)
	}
	waitIdle(t, w)
	clock.advance(9 * time.Minute)
	backend.noCall(t, w)
	clock.advance(61 * time.Second)
	w.Wake()
	if c := backend.nextCall(t); c != "evt_1#4" {
		t.Fatalf("fourth attempt %s", c)
	}
	waitIdle(t, w)
	// Fourth failed attempt of max_attempts 4: dead, reported, kept.
	got, _, _ = s.SpoolGet(rec.Seq)
	if got.State != SpoolDead || got.Attempts != 4 || got.LastError != "status 429" {
		t.Fatalf("after max_attempts: %+v", got)
	}
	deadMu.Lock()
	if len(dead) != 1 || dead[0].EventID != "evt_1" || dead[0].Attempts != 4 {
		t.Fatalf("OnDead got %+v", dead)
	}
	deadMu.Unlock()
	clock.advance(time.Hour)
	backend.noCall(t, w)

	// Paused: an operator's retry makes it due, but it waits.
	if err := w.Pause(context.Background(), "shop", true); err != nil {
		t.Fatal(err)
	}
	backend.setAnswer(func(*SpoolRecord, int) Attempt { return Attempt{Status: 204} })
	if err := w.Retry(context.Background(), rec.Seq); err != nil {
		t.Fatal(err)
	}
	backend.noCall(t, w)
	if err := w.Pause(context.Background(), "shop", false); err != nil {
		t.Fatal(err)
	}
	if c := backend.nextCall(t); c != "evt_1#1" { // attempts reset by the retry
		t.Fatalf("attempt after retry and resume %s", c)
	}
	waitIdle(t, w)
	if _, ok, _ := s.SpoolGet(rec.Seq); ok {
		t.Fatal("delivered event still spooled")
	}
	mustClaim(t, s, Key("shop", "ivy", "evt_1"), time.Minute, Delivered)

	// max_age: an event older than it dies without an attempt.
	old, _ := spoolOne(t, s, "shop", "evt_old", nil, clock.now().Add(-3*time.Hour))
	waitUntil(t, 10*time.Second, "old event dead", func() bool {
		got, _, _ := s.SpoolGet(old.Seq)
		return got.State == SpoolDead
	})
	backend.noCall(t, w)

	// Unregistered: a new event waits for the next target.
	unregister()
	spoolOne(t, s, "shop", "evt_2", nil, clock.now())
	backend.noCall(t, w)
	w.Register("shop", target)
	if c := backend.nextCall(t); c != "evt_2#1" {
		t.Fatalf("attempt after re-registering %s", c)
	}
}

// A failed attempt never schedules past max_age: the event dies on time.
func TestSpoolWorkerMaxAge(t *testing.T) {
	s, clock := newTestFile(t, FileConfig{})
	w := NewSpoolWorker(s, nil)
	w.jitter = func() float64 { return 0 }
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	backend := newFakeBackend(func(*SpoolRecord, int) Attempt { return Attempt{Err: errors.New("connection refused")} })
	w.Register("shop", &SpoolTarget{Deliver: backend.deliver, MaxAttempts: 25, MaxAge: 10 * time.Second, Timeout: time.Second, Concurrency: 1, Window: time.Hour})
	rec, _ := spoolOne(t, s, "shop", "evt_1", nil, clock.now())
	backend.nextCall(t)
	waitIdle(t, w)
	backend.setAnswer(func(*SpoolRecord, int) Attempt { return Attempt{Status: 503, RetryAfter: time.Hour} })
	clock.advance(6 * time.Second)
	w.Wake()
	backend.nextCall(t)
	waitIdle(t, w)
	got, _, _ := s.SpoolGet(rec.Seq)
	if want := rec.ReceivedAt.Add(10 * time.Second); !got.NextAt.Equal(want) {
		t.Fatalf("next attempt at %v, want the end of max_age %v", got.NextAt, want)
	}
	clock.advance(5 * time.Second)
	w.Wake()
	waitUntil(t, 10*time.Second, "dead at max_age", func() bool {
		got, _, _ := s.SpoolGet(rec.Seq)
		return got.State == SpoolDead
	})
	got, _, _ = s.SpoolGet(rec.Seq)
	if got.Attempts != 2 {
		t.Fatalf("attempts %d, want 2 (no attempt at max_age)", got.Attempts)
	}
	backend.noCall(t, w)
}

// Concurrency bounds the attempts in flight per target.
func TestSpoolWorkerConcurrency(t *testing.T) {
	s, clock := newTestFile(t, FileConfig{})
	w := NewSpoolWorker(s, nil)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	release := make(chan struct{})
	var mu sync.Mutex
	inFlight, most := 0, 0
	delivered := make(chan string, 100)
	w.Register("shop", &SpoolTarget{
		Deliver: func(ctx context.Context, rec *SpoolRecord, _ int) Attempt {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			<-release
			mu.Lock()
			inFlight--
			mu.Unlock()
			delivered <- rec.EventID
			return Attempt{Status: 200}
		},
		MaxAttempts: 3, MaxAge: time.Hour, Timeout: time.Minute, Concurrency: 3, Window: time.Hour,
	})
	for i := range 20 {
		spoolOne(t, s, "shop", "evt_"+strconv.Itoa(i), nil, clock.now())
	}
	waitUntil(t, 10*time.Second, "3 attempts in flight", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return inFlight == 3
	})
	close(release)
	seen := map[string]bool{}
	for range 20 {
		select {
		case id := <-delivered:
			seen[id] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of 20 delivered", len(seen))
		}
	}
	if most != 3 || len(seen) != 20 {
		t.Fatalf("most in flight %d (want 3), delivered %d distinct (want 20)", most, len(seen))
	}
	waitUntil(t, 10*time.Second, "spool empty", func() bool {
		l, _ := s.SpoolList("", "")
		return len(l) == 0
	})
}

// With many events pending, a worker started on the reopened ledger
// starts delivering without reading them all first. The time to the first
// delivery is logged (the benchmark measures it); the test checks that the
// worker delivers from the front of the due index.
func TestSpoolWorkerManyPending(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 events; not in -short")
	}
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, clock := newTestFile(t, FileConfig{Path: path})
	const n = 100_000
	body := bytes.Repeat([]byte("x"), 1024)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 64 {
		wg.Go(func() {
			for i := range next {
				id := "evt_" + strconv.Itoa(i)
				rec := &SpoolRecord{Scope: "shop", Provider: "ivy", EventID: id, ReceivedAt: clock.now(), Method: "POST", Body: body}
				if _, err := s.Spool(context.Background(), Key("shop", "ivy", id), rec, time.Hour); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s2, err := openFile(FileConfig{Path: path, SweepEvery: time.Hour}, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	opened := time.Since(start)
	w := NewSpoolWorker(s2, nil)
	backend := newFakeBackend(func(*SpoolRecord, int) Attempt { return Attempt{Status: 200} })
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	w.Register("shop", &SpoolTarget{Deliver: backend.deliver, MaxAttempts: 3, MaxAge: time.Hour, Timeout: time.Second, Concurrency: 4, Window: time.Hour})
	backend.nextCall(t)
	first := time.Since(start)
	for range 999 {
		backend.nextCall(t)
	}
	t.Logf("%d pending: ledger opened (read through) in %v, first delivery %v after the open began, 1000 deliveries in %v (shared machine)", n, opened, first, time.Since(start))
	if fi, err := os.Stat(path); err == nil {
		t.Logf("ledger %d MiB", fi.Size()>>20)
	}
}
