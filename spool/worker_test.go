package spool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
	"github.com/hookguard/caddy-webhook-guard/ledger"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// newSpool returns a spool over a new ledger with a fake clock and no
// jitter, started, stopped when the test ends.
func newSpool(t testing.TB, path string) (*spool.Spool, *ledger.Ledger, *dedupetest.FakeClock) {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "ledger.db")
	}
	clock := &dedupetest.FakeClock{}
	l, err := ledger.Open(ledger.Config{Path: path, SweepEvery: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	sp := spool.New(l, spool.Options{Now: clock.Now, Jitter: func() float64 { return 0 }})
	sp.Start()
	t.Cleanup(func() { sp.Stop(); _ = l.Close() })
	return sp, l, clock
}

// spoolOne spools an event of scope (target key scope+"/target") with the
// given id and body.
func spoolOne(t testing.TB, s *spool.Spool, scope, id string, body []byte, at time.Time) *spool.Record {
	t.Helper()
	rec := &spool.Record{
		Target: scope + "/target", Scope: scope, Provider: "ivy", EventID: id, EventType: "payment.succeeded",
		ReceivedAt: at, Method: "POST", Path: "/hooks/ivy", Body: body,
	}
	if dup, err := s.Ingest(context.Background(), dedupe.Key(scope, "ivy", id), rec, 100*time.Hour); err != nil || dup {
		t.Fatalf("Ingest(%s) = %v, %v", id, dup, err)
	}
	return rec
}

// get returns the event id of s.
func get(t testing.TB, s *spool.Spool, id uint64) (spool.Record, bool) {
	t.Helper()
	rec, ok, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rec, ok
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
		got, ok := spool.ParseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("spool.ParseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "5", "Mon, 30 Nov 2026 12:00:30 GMT", "-1", "99999999999999999999"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := spool.ParseRetryAfter(s, now)
		if d < 0 || d > spool.MaxRetryAfter || (!ok && d != 0) {
			t.Fatalf("spool.ParseRetryAfter(%q) = %v, %v", s, d, ok)
		}
	})
}

// fakeBackend is a SpoolTarget.Deliver that answers from a script and
// records each attempt.
type fakeBackend struct {
	mu       sync.Mutex
	answer   func(rec *spool.Record, attempt int) spool.Attempt
	attempts []string // event_id#attempt
	calls    chan string
}

func newFakeBackend(answer func(*spool.Record, int) spool.Attempt) *fakeBackend {
	return &fakeBackend{answer: answer, calls: make(chan string, 1000)}
}

func (b *fakeBackend) deliver(_ context.Context, rec *spool.Record, attempt int) spool.Attempt {
	b.mu.Lock()
	a := b.answer(rec, attempt)
	call := fmt.Sprintf("%s#%d", rec.EventID, attempt)
	b.attempts = append(b.attempts, call)
	b.mu.Unlock()
	b.calls <- call
	return a
}

func (b *fakeBackend) setAnswer(answer func(*spool.Record, int) spool.Attempt) {
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
func (b *fakeBackend) noCall(t *testing.T, w *spool.Spool) {
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
func waitPass(t *testing.T, w *spool.Spool) {
	t.Helper()
	started, _ := w.Passes()
	w.Wake()
	dedupetest.WaitUntil(t, 10*time.Second, "a dispatch pass", func() bool {
		_, done := w.Passes()
		return done > started && w.InFlightCount() == 0
	})
}

// waitIdle waits until no attempt is in flight and a pass after it ran.
func waitIdle(t *testing.T, w *spool.Spool) {
	t.Helper()
	waitPass(t, w)
}

// The worker's schedule, with the ledger's fake clock: a failed attempt is
// retried per SpoolBackoff (jitter 0) or Retry-After, never before; after
// max_attempts the event is dead and reported; a paused or unregistered
// scope waits; a delivered event leaves the spool.
func TestSpoolWorkerSchedule(t *testing.T) {
	w, l, clock := newSpool(t, "")

	backend := newFakeBackend(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 503} })
	var deadMu sync.Mutex
	var dead []spool.Record
	target := &spool.Target{
		Key: "shop/target", Scope: "shop", Deliver: backend.deliver, MaxAttempts: 4, MaxAge: 2 * time.Hour, Timeout: time.Second,
		Concurrency: 2, Window: time.Hour,
		OnDead: func(rec spool.Record) { deadMu.Lock(); dead = append(dead, rec); deadMu.Unlock() },
	}
	// No target yet: the event waits.
	rec := spoolOne(t, w, "shop", "evt_1", []byte("b"), clock.Now())
	backend.noCall(t, w)
	unregister := w.Register(target)

	if c := backend.nextCall(t); c != "evt_1#1" {
		t.Fatalf("first attempt %s", c)
	}
	waitIdle(t, w)
	got, _ := get(t, w, rec.ID)
	if got.Attempts != 1 || got.LastError != "status 503" || !got.NextAt.Equal(got.NextAt) {
		t.Fatalf("after attempt 1: %+v", got)
	}
	// Not before the backoff (5s).
	clock.Advance(4 * time.Second)
	backend.noCall(t, w)
	clock.Advance(1500 * time.Millisecond)
	w.Wake()
	if c := backend.nextCall(t); c != "evt_1#2" {
		t.Fatalf("second attempt %s", c)
	}
	waitIdle(t, w)
	// Retry-After, longer than the schedule's 30s, is honoured.
	backend.setAnswer(func(*spool.Record, int) spool.Attempt {
		return spool.Attempt{Status: 429, RetryAfter: 10 * time.Minute}
	})
	clock.Advance(31 * time.Second)
	w.Wake()
	if c := backend.nextCall(t); c != "evt_1#3" {
		t.Fatalf("third attempt %s", c)
	}
	waitIdle(t, w)
	clock.Advance(9 * time.Minute)
	backend.noCall(t, w)
	clock.Advance(61 * time.Second)
	w.Wake()
	if c := backend.nextCall(t); c != "evt_1#4" {
		t.Fatalf("fourth attempt %s", c)
	}
	waitIdle(t, w)
	// Fourth failed attempt of max_attempts 4: dead, reported, kept.
	got, _ = get(t, w, rec.ID)
	if got.State != spool.Dead || got.Attempts != 4 || got.LastError != "status 429" {
		t.Fatalf("after max_attempts: %+v", got)
	}
	deadMu.Lock()
	if len(dead) != 1 || dead[0].EventID != "evt_1" || dead[0].Attempts != 4 {
		t.Fatalf("OnDead got %+v", dead)
	}
	deadMu.Unlock()
	clock.Advance(time.Hour)
	backend.noCall(t, w)

	// Paused: an operator's retry makes it due, but it waits.
	if err := w.Pause(context.Background(), "shop", true); err != nil {
		t.Fatal(err)
	}
	backend.setAnswer(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 204} })
	if err := w.Retry(context.Background(), rec.ID); err != nil {
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
	if _, ok := get(t, w, rec.ID); ok {
		t.Fatal("delivered event still spooled")
	}
	dedupetest.MustClaim(t, l, dedupe.Key("shop", "ivy", "evt_1"), time.Minute, dedupe.Delivered)

	// max_age: an event older than it dies without an attempt.
	old := spoolOne(t, w, "shop", "evt_old", nil, clock.Now().Add(-3*time.Hour))
	dedupetest.WaitUntil(t, 10*time.Second, "old event dead", func() bool {
		got, _ := get(t, w, old.ID)
		return got.State == spool.Dead
	})
	backend.noCall(t, w)

	// Unregistered: a new event waits for the next target.
	unregister()
	spoolOne(t, w, "shop", "evt_2", nil, clock.Now())
	backend.noCall(t, w)
	w.Register(target)
	if c := backend.nextCall(t); c != "evt_2#1" {
		t.Fatalf("attempt after re-registering %s", c)
	}
}

// A failed attempt never schedules past max_age: the event dies on time.
func TestSpoolWorkerMaxAge(t *testing.T) {
	w, _, clock := newSpool(t, "")
	backend := newFakeBackend(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Err: errors.New("connection refused")} })
	w.Register(&spool.Target{Key: "shop/target", Scope: "shop", Deliver: backend.deliver, MaxAttempts: 25, MaxAge: 10 * time.Second, Timeout: time.Second, Concurrency: 1, Window: time.Hour})
	rec := spoolOne(t, w, "shop", "evt_1", nil, clock.Now())
	backend.nextCall(t)
	waitIdle(t, w)
	backend.setAnswer(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 503, RetryAfter: time.Hour} })
	clock.Advance(6 * time.Second)
	w.Wake()
	backend.nextCall(t)
	waitIdle(t, w)
	got, _ := get(t, w, rec.ID)
	if want := rec.ReceivedAt.Add(10 * time.Second); !got.NextAt.Equal(want) {
		t.Fatalf("next attempt at %v, want the end of max_age %v", got.NextAt, want)
	}
	clock.Advance(5 * time.Second)
	w.Wake()
	dedupetest.WaitUntil(t, 10*time.Second, "dead at max_age", func() bool {
		got, _ := get(t, w, rec.ID)
		return got.State == spool.Dead
	})
	got, _ = get(t, w, rec.ID)
	if got.Attempts != 2 {
		t.Fatalf("attempts %d, want 2 (no attempt at max_age)", got.Attempts)
	}
	backend.noCall(t, w)
}

// Concurrency bounds the attempts in flight per target.
func TestSpoolWorkerConcurrency(t *testing.T) {
	w, _, clock := newSpool(t, "")
	release := make(chan struct{})
	var mu sync.Mutex
	inFlight, most := 0, 0
	delivered := make(chan string, 100)
	w.Register(&spool.Target{Key: "shop/target", Scope: "shop",
		Deliver: func(ctx context.Context, rec *spool.Record, _ int) spool.Attempt {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			<-release
			mu.Lock()
			inFlight--
			mu.Unlock()
			delivered <- rec.EventID
			return spool.Attempt{Status: 200}
		},
		MaxAttempts: 3, MaxAge: time.Hour, Timeout: time.Minute, Concurrency: 3, Window: time.Hour,
	})
	for i := range 20 {
		spoolOne(t, w, "shop", "evt_"+strconv.Itoa(i), nil, clock.Now())
	}
	dedupetest.WaitUntil(t, 10*time.Second, "3 attempts in flight", func() bool {
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
	dedupetest.WaitUntil(t, 10*time.Second, "spool empty", func() bool {
		l, _ := w.List(context.Background(), spool.Filter{}, spool.Page{})
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
	clock := &dedupetest.FakeClock{}
	s, err := ledger.Open(ledger.Config{Path: path, SweepEvery: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	body := bytes.Repeat([]byte("x"), 1024)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 64 {
		wg.Go(func() {
			for i := range next {
				id := "evt_" + strconv.Itoa(i)
				rec := &spool.Record{Target: "shop/target", Scope: "shop", Provider: "ivy", EventID: id, ReceivedAt: clock.Now(), Method: "POST", Body: body}
				if _, err := s.Ingest(context.Background(), dedupe.Key("shop", "ivy", id), rec, time.Hour); err != nil {
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
	s2, err := ledger.Open(ledger.Config{Path: path, SweepEvery: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	opened := time.Since(start)
	w := spool.New(s2, spool.Options{Now: clock.Now})
	backend := newFakeBackend(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 200} })
	w.Start()
	defer w.Stop()
	w.Register(&spool.Target{Key: "shop/target", Scope: "shop", Deliver: backend.deliver, MaxAttempts: 3, MaxAge: time.Hour, Timeout: time.Second, Concurrency: 4, Window: time.Hour})
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

func TestScheduleDelay(t *testing.T) {
	for _, c := range []struct {
		s       spool.Schedule
		attempt int
		jitter  float64
		want    time.Duration
	}{
		{nil, 1, 0, 5 * time.Second},
		{spool.DefaultSchedule, 2, 0, 30 * time.Second},
		{spool.DefaultSchedule, 3, 0, 2 * time.Minute},
		{spool.DefaultSchedule, 4, 0, 10 * time.Minute},
		{spool.DefaultSchedule, 5, 0, 30 * time.Minute},
		{spool.DefaultSchedule, 6, 0, time.Hour},
		{spool.DefaultSchedule, 7, 0, 2 * time.Hour},
		{spool.DefaultSchedule, 25, 0, 2 * time.Hour}, // the last repeated
		{spool.DefaultSchedule, 1, 1, 6 * time.Second},
		{spool.DefaultSchedule, 1, -1, 4 * time.Second},
		{spool.DefaultSchedule, 7, -1, 96 * time.Minute},
		{spool.DefaultSchedule, 7, 5, 144 * time.Minute}, // jitter clamped to ±20 %
		{spool.Schedule{time.Second, time.Minute}, 1, 0, time.Second},
		{spool.Schedule{time.Second, time.Minute}, 9, 0, time.Minute},
	} {
		if got := c.s.Delay(c.attempt, c.jitter); got != c.want {
			t.Errorf("%v.Delay(%d, %v) = %v, want %v", c.s, c.attempt, c.jitter, got, c.want)
		}
	}
	if err := (spool.Schedule{}).Check(); err == nil {
		t.Error("an empty schedule: no error")
	}
	if err := (spool.Schedule{time.Second, 500 * time.Millisecond}).Check(); err == nil {
		t.Error("a delay under 1s: no error")
	}
}

// Retry-After means "not before": a backend answering 503 with
// Retry-After: 0 (or a date in the past, parsed as 0) does not speed the
// attempts up; the schedule still applies. A longer Retry-After delays the
// attempt past the schedule.
func TestRetryAfterIsNotBefore(t *testing.T) {
	w, _, clock := newSpool(t, "")
	backend := newFakeBackend(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 503, RetryAfter: 0} })
	w.Register(&spool.Target{Key: "shop/target", Scope: "shop", Deliver: backend.deliver, MaxAge: time.Hour, Timeout: time.Second,
		Concurrency: 1, Window: time.Hour, Schedule: spool.Schedule{10 * time.Second}})
	rec := spoolOne(t, w, "shop", "evt_ra", nil, clock.Now())
	if c := backend.nextCall(t); c != "evt_ra#1" {
		t.Fatalf("first attempt %s", c)
	}
	waitIdle(t, w)
	got, _ := get(t, w, rec.ID)
	if d := got.NextAt.Sub(clock.Now()); d < 9*time.Second {
		t.Fatalf("after Retry-After 0 the next attempt is due in %v, want the schedule's 10s", d)
	}
	clock.Advance(5 * time.Second)
	backend.noCall(t, w)
	backend.setAnswer(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 429, RetryAfter: time.Minute} })
	clock.Advance(6 * time.Second)
	w.Wake()
	if c := backend.nextCall(t); c != "evt_ra#2" {
		t.Fatalf("second attempt %s", c)
	}
	waitIdle(t, w)
	clock.Advance(30 * time.Second)
	backend.noCall(t, w) // the schedule (10s) has passed, Retry-After (1m) not
	clock.Advance(31 * time.Second)
	w.Wake()
	if c := backend.nextCall(t); c != "evt_ra#3" {
		t.Fatalf("third attempt %s", c)
	}
}

// While an attempt runs, the event cannot be discarded or retried (it may
// be delivered): ErrInFlight; once it ended, it can.
func TestDiscardInFlightRefused(t *testing.T) {
	w, _, clock := newSpool(t, "")
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	w.Register(&spool.Target{Key: "shop/target", Scope: "shop", MaxAge: time.Hour, Timeout: time.Minute, Concurrency: 1, Window: time.Hour,
		Schedule: spool.Schedule{time.Hour},
		Deliver: func(ctx context.Context, rec *spool.Record, _ int) spool.Attempt {
			started <- struct{}{}
			<-release
			return spool.Attempt{Status: 500}
		}})
	rec := spoolOne(t, w, "shop", "evt_busy", nil, clock.Now())
	<-started
	ctx := context.Background()
	if _, err := w.Discard(ctx, rec.ID, "ops"); !errors.Is(err, spool.ErrInFlight) {
		t.Fatalf("Discard during the attempt = %v, want ErrInFlight", err)
	}
	if err := w.Retry(ctx, rec.ID); !errors.Is(err, spool.ErrInFlight) {
		t.Fatalf("Retry during the attempt = %v, want ErrInFlight", err)
	}
	close(release)
	waitIdle(t, w)
	if got, _ := get(t, w, rec.ID); got.State != spool.Pending || got.Attempts != 1 {
		t.Fatalf("after the attempt: %+v", got)
	}
	gone, err := w.Discard(ctx, rec.ID, "ops")
	if err != nil || gone.State != spool.Discarded || gone.DiscardedBy != "ops" {
		t.Fatalf("Discard after the attempt = %+v, %v", gone, err)
	}
}

// Two handlers share a scope: each event goes to the target it was
// accepted with, never to the other (nor to the last one registered).
func TestEventsGoToTheirOwnTarget(t *testing.T) {
	w, _, clock := newSpool(t, "")
	orders := newFakeBackend(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 200} })
	billing := newFakeBackend(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 200} })
	w.Register(&spool.Target{Key: "ivpay/shop/orders", Scope: "shop", Deliver: orders.deliver, MaxAge: time.Hour, Timeout: time.Second, Concurrency: 1, Window: time.Hour})
	w.Register(&spool.Target{Key: "ivpay/shop/billing", Scope: "shop", Deliver: billing.deliver, MaxAge: time.Hour, Timeout: time.Second, Concurrency: 1, Window: time.Hour})
	for i, target := range []string{"ivpay/shop/orders", "ivpay/shop/billing", "ivpay/shop/orders"} {
		rec := &spool.Record{Target: target, Scope: "shop", Provider: "ivpay", EventID: "evt_" + strconv.Itoa(i), ReceivedAt: clock.Now(), Method: "POST"}
		if _, err := w.Ingest(context.Background(), dedupe.Key("shop", "ivpay", rec.EventID), rec, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]bool{}
	for range 2 {
		got[orders.nextCall(t)] = true
	}
	if c := billing.nextCall(t); c != "evt_1#1" || !got["evt_0#1"] || !got["evt_2#1"] {
		t.Fatalf("orders got %v, billing %s", got, c)
	}
	// An event whose target is gone waits; its handler's return delivers it.
	rec := &spool.Record{Target: "ivpay/shop/gone", Scope: "shop", Provider: "ivpay", EventID: "evt_gone", ReceivedAt: clock.Now(), Method: "POST"}
	if _, err := w.Ingest(context.Background(), dedupe.Key("shop", "ivpay", "evt_gone"), rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	orders.noCall(t, w)
	billing.noCall(t, w)
	if !w.Orphan(rec.Target, rec.Scope) {
		t.Fatal("an event of a removed handler is not an orphan")
	}
	back := newFakeBackend(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 200} })
	w.Register(&spool.Target{Key: "ivpay/shop/gone", Scope: "shop", Deliver: back.deliver, MaxAge: time.Hour, Timeout: time.Second, Concurrency: 1, Window: time.Hour})
	if c := back.nextCall(t); c != "evt_gone#1" {
		t.Fatalf("the returning handler got %s", c)
	}
}

// Orphaned events are reported once they have been so for CountsEvery
// (a config registers its targets one by one), and again when that changes.
func TestOrphansReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	clock := &dedupetest.FakeClock{}
	l, err := ledger.Open(ledger.Config{Path: path, SweepEvery: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	reports := make(chan []spool.Orphans, 10)
	w := spool.New(l, spool.Options{Now: clock.Now, OnCounts: func(map[string]spool.Counts, map[string]bool) {},
		OnOrphans: func(o []spool.Orphans) { reports <- o }})
	w.Start()
	t.Cleanup(func() { w.Stop(); _ = l.Close() })
	rec := &spool.Record{Target: "ivy/shop/old", Scope: "shop", Provider: "ivy", EventID: "evt_o", ReceivedAt: clock.Now(), Method: "POST"}
	if _, err := w.Ingest(context.Background(), dedupe.Key("shop", "ivy", "evt_o"), rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	waitPass(t, w)
	select {
	case r := <-reports:
		t.Fatalf("reported at once: %v", r)
	default:
	}
	clock.Advance(spool.CountsEvery + time.Second)
	w.Wake()
	var r []spool.Orphans
	dedupetest.WaitUntil(t, 10*time.Second, "an orphan report", func() bool {
		select {
		case r = <-reports:
			return true
		default:
			clock.Advance(time.Second)
			w.Wake()
			return false
		}
	})
	if len(r) != 1 || r[0] != (spool.Orphans{Scope: "shop", Target: "ivy/shop/old", Pending: 1}) {
		t.Fatalf("report %v", r)
	}
}

// dead_on: a backend status it names makes the event dead at once, with no
// further attempt; another failure is retried as usual. Without
// max_attempts, only max_age ends the attempts.
func TestDeadOn(t *testing.T) {
	w, _, clock := newSpool(t, "")
	var deadMu sync.Mutex
	var dead []spool.Record
	backend := newFakeBackend(func(rec *spool.Record, _ int) spool.Attempt {
		if rec.EventID == "evt_gone" {
			return spool.Attempt{Status: 410, Answer: "no such order"}
		}
		return spool.Attempt{Status: 503}
	})
	w.Register(&spool.Target{Key: "shop/target", Scope: "shop", Deliver: backend.deliver, MaxAge: time.Hour, Timeout: time.Second,
		Concurrency: 1, Window: time.Hour, Schedule: spool.Schedule{time.Second},
		DeadOn: func(status int) bool { return status/100 == 4 },
		OnDead: func(rec spool.Record) { deadMu.Lock(); dead = append(dead, rec); deadMu.Unlock() }})
	gone := spoolOne(t, w, "shop", "evt_gone", nil, clock.Now())
	if c := backend.nextCall(t); c != "evt_gone#1" {
		t.Fatalf("attempt %s", c)
	}
	waitIdle(t, w)
	got, _ := get(t, w, gone.ID)
	if got.State != spool.Dead || got.Attempts != 1 || got.LastError != "dead_on status 410: no such order" || len(got.History) != 1 {
		t.Fatalf("after a 410: %+v", got)
	}
	deadMu.Lock()
	if len(dead) != 1 || dead[0].EventID != "evt_gone" {
		t.Fatalf("OnDead got %+v", dead)
	}
	deadMu.Unlock()
	clock.Advance(time.Hour)
	backend.noCall(t, w)

	// A 503 is retried, many times: no max_attempts.
	busy := spoolOne(t, w, "shop", "evt_busy", nil, clock.Now())
	for i := 1; i <= 30; i++ {
		if c := backend.nextCall(t); c != "evt_busy#"+strconv.Itoa(i) {
			t.Fatalf("attempt %d: %s", i, c)
		}
		waitIdle(t, w)
		clock.Advance(2 * time.Second)
		w.Wake()
	}
	if got, _ := get(t, w, busy.ID); got.State != spool.Pending || got.Attempts < 30 || len(got.History) != spool.MaxHistory {
		t.Fatalf("after 30 refusals: state %s, %d attempts, %d in history", got.State, got.Attempts, len(got.History))
	}
}

// lossyStore is a ledger whose leases expire after expiry and whose events
// come with losses: a stand-in for a shared store, to test what the worker
// makes of them.
type lossyStore struct {
	*ledger.Ledger
	losses  int
	expiry  time.Duration
	extends atomic.Int64
}

func (s *lossyStore) Lease(ctx context.Context, now time.Time, open []spool.Opening, offer func(spool.Due) spool.Verdict) (time.Time, error) {
	return s.Ledger.Lease(ctx, now, open, func(d spool.Due) spool.Verdict {
		d.Losses = s.losses
		return offer(d)
	})
}

func (s *lossyStore) Extend(ctx context.Context, id uint64) error {
	s.extends.Add(1)
	return s.Ledger.Extend(ctx, id)
}

func (s *lossyStore) LeaseExpiry() time.Duration { return s.expiry }

// newLossySpool is newSpool over a lossyStore.
func newLossySpool(t *testing.T, losses int, expiry time.Duration) (*spool.Spool, *lossyStore) {
	t.Helper()
	l, err := ledger.Open(ledger.Config{Path: filepath.Join(t.TempDir(), "ledger.db"), SweepEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	st := &lossyStore{Ledger: l, losses: losses, expiry: expiry}
	sp := spool.New(st, spool.Options{Jitter: func() float64 { return 0 }})
	sp.Start()
	t.Cleanup(func() { sp.Stop(); _ = l.Close() })
	return sp, st
}

// An event whose leases ended MaxLosses times without a result (it crashed
// or stalled whoever delivered it) is made dead without another attempt,
// and the reason says so; with fewer losses it is attempted.
func TestSpoolWorkerLosses(t *testing.T) {
	for _, losses := range []int{spool.MaxLosses - 1, spool.MaxLosses} {
		w, _ := newLossySpool(t, losses, 0)
		backend := newFakeBackend(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 204} })
		dead := make(chan spool.Record, 1)
		w.Register(&spool.Target{Key: "shop/target", Scope: "shop", Deliver: backend.deliver, MaxAge: time.Hour,
			Timeout: time.Second, Concurrency: 1, Window: time.Hour, OnDead: func(rec spool.Record) { dead <- rec }})
		rec := spoolOne(t, w, "shop", "evt_crashy", []byte("b"), time.Now())
		if losses < spool.MaxLosses {
			if c := backend.nextCall(t); c != "evt_crashy#1" {
				t.Fatalf("attempt %s", c)
			}
			continue
		}
		select {
		case d := <-dead:
			if d.ID != rec.ID || d.State != spool.Dead || !strings.Contains(d.LastError, "5 deliveries of it ended without a result") {
				t.Fatalf("dead %+v", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not dead within 10s")
		}
		backend.noCall(t, w)
	}
}

// A store whose leases expire has them renewed more often than they last,
// even when the attempt's timeout is longer.
func TestSpoolWorkerRenewsBeforeExpiry(t *testing.T) {
	w, st := newLossySpool(t, 0, 300*time.Millisecond)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	w.Register(&spool.Target{Key: "shop/target", Scope: "shop", MaxAge: time.Hour, Timeout: time.Minute, Concurrency: 1, Window: time.Hour,
		Deliver: func(ctx context.Context, _ *spool.Record, _ int) spool.Attempt {
			started <- struct{}{}
			<-release
			return spool.Attempt{Status: 204}
		}})
	spoolOne(t, w, "shop", "evt_slow", nil, time.Now())
	<-started
	// Renewed every 100ms (a third of the 300ms lease), not every 20s (a
	// third of the minute's timeout).
	dedupetest.WaitUntil(t, 10*time.Second, "three renewals", func() bool { return st.extends.Load() >= 3 })
	close(release)
}

// staleOffers is a store whose Lease first offers, once, an event as due
// at a time before its last attempt was recorded: what a dispatch pass that
// began while that attempt ended sees.
type staleOffers struct {
	*ledger.Ledger
	once  sync.Once
	stale spool.Due
}

func (s *staleOffers) Lease(ctx context.Context, now time.Time, open []spool.Opening, offer func(spool.Due) spool.Verdict) (time.Time, error) {
	stop := false
	s.once.Do(func() { stop = offer(s.stale) == spool.Stop })
	if stop {
		return now, nil
	}
	return s.Ledger.Lease(ctx, now, open, offer)
}

// An event offered from a stale view — its failed attempt recorded, with
// its next attempt an hour away, after the pass began — is not attempted
// again at once: the worker finds it not due and gives it back. (Under
// load TestSpoolWorkerSchedule saw a second attempt right after the first.)
func TestSpoolWorkerSkipsAStaleOffer(t *testing.T) {
	clock := &dedupetest.FakeClock{}
	l, err := ledger.Open(ledger.Config{Path: filepath.Join(t.TempDir(), "ledger.db"), SweepEvery: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	store := &staleOffers{Ledger: l}
	sp := spool.New(store, spool.Options{Now: clock.Now, Jitter: func() float64 { return 0 }})
	sp.Start()
	t.Cleanup(func() { sp.Stop(); _ = l.Close() })
	t0 := clock.Now()
	rec := spoolOne(t, sp, "shop", "evt_1", []byte("b"), t0)
	failed := *rec
	failed.Attempts, failed.LastError, failed.NextAt = 1, "status 503", t0.Add(time.Hour)
	if err := l.Failed(context.Background(), &failed); err != nil {
		t.Fatal(err)
	}
	store.stale = spool.Due{ID: rec.ID, NextAt: t0, ReceivedAt: t0, Scope: "shop", Target: "shop/target"}
	backend := newFakeBackend(func(*spool.Record, int) spool.Attempt { return spool.Attempt{Status: 200} })
	sp.Register(&spool.Target{Key: "shop/target", Scope: "shop", Deliver: backend.deliver, MaxAttempts: 4,
		MaxAge: 2 * time.Hour, Timeout: time.Second, Concurrency: 2, Window: time.Hour})
	backend.noCall(t, sp)
	got, _ := get(t, sp, rec.ID)
	if got.State != spool.Pending || got.Attempts != 1 || !got.NextAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("after the stale offer: %+v", got)
	}
	clock.Advance(time.Hour)
	sp.Wake()
	if c := backend.nextCall(t); c != "evt_1#2" {
		t.Fatalf("the attempt once due: %s", c)
	}
}
