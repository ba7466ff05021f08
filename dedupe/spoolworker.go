package dedupe

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SpoolSchedule is the delay before the next attempt after the nth failed
// one (1-based); after the last entry, SpoolEvery. Each delay gets ±20 %
// jitter, so that events refused together do not come back together.
var SpoolSchedule = []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour}

// SpoolEvery is the delay between attempts after SpoolSchedule.
const SpoolEvery = 2 * time.Hour

// MaxRetryAfter caps the Retry-After a backend may ask for.
const MaxRetryAfter = 24 * time.Hour

// spoolJitter is the jitter's share of a delay.
const spoolJitter = 0.2

// MinRetryAfter is the shortest delay a backend's Retry-After gets.
const MinRetryAfter = time.Second

// SpoolBackoff is the delay before the attempt after the nth failed one
// (1-based): the backend's retryAfter when it sent one (between
// MinRetryAfter and MaxRetryAfter: the backend knows when it will be back),
// else the schedule with jitter (jitter in [-1, 1] scales ±20 %).
func SpoolBackoff(attempt int, retryAfter time.Duration, jitter float64) time.Duration {
	if retryAfter > 0 {
		return min(max(retryAfter, MinRetryAfter), MaxRetryAfter)
	}
	base := SpoolEvery
	if attempt >= 1 && attempt <= len(SpoolSchedule) {
		base = SpoolSchedule[attempt-1]
	}
	return base + time.Duration(float64(base)*spoolJitter*max(-1, min(1, jitter)))
}

// ParseRetryAfter reads a Retry-After header value: delay-seconds or an
// HTTP date (RFC 9110 10.2.3), as a delay from now, capped at
// MaxRetryAfter; ok false when v is empty or malformed.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter), true
}

// Attempt is the result of one delivery attempt.
type Attempt struct {
	// Status is the backend's status, 0 when it did not answer.
	Status int
	// RetryAfter is the delay the backend asked for (Retry-After), 0 none;
	// a Retry-After of 0 is MinRetryAfter.
	RetryAfter time.Duration
	// Err is why there was no answer (connection, TLS, timeout).
	Err error
}

// Delivered says the backend accepted the event (2xx).
func (a Attempt) Delivered() bool { return a.Err == nil && a.Status >= 200 && a.Status < 300 }

// Reason is why the attempt failed, for last_error: "status 503" or the error.
func (a Attempt) Reason() string {
	if a.Err != nil {
		s := a.Err.Error()
		if len(s) > 512 {
			s = s[:512]
		}
		return s
	}
	return "status " + strconv.Itoa(a.Status)
}

// SpoolTarget is where the events of a scope are delivered, registered by
// the handler with the spool block.
type SpoolTarget struct {
	// Deliver makes one attempt of rec (its Body included); attempt is its
	// number, from 1. ctx ends at the attempt's timeout.
	Deliver func(ctx context.Context, rec *SpoolRecord, attempt int) Attempt
	// MaxAttempts: after that many failed attempts the event is dead.
	MaxAttempts int
	// MaxAge: once that long since received (or last retried by an
	// operator) the event is dead.
	MaxAge time.Duration
	// Timeout bounds one attempt.
	Timeout time.Duration
	// Concurrency bounds this target's attempts in flight.
	Concurrency int
	// Window is how long the id of a delivered event stays remembered.
	Window time.Duration
	// OnAttempt, when set, is told each attempt's result once it is
	// recorded (rec with the attempts made, last error and next time).
	OnAttempt func(rec *SpoolRecord, a Attempt)
	// OnDead, when set, is told each event that becomes dead.
	OnDead func(rec SpoolRecord)
	// OnError, when set, is told of a ledger write that failed.
	OnError func(rec *SpoolRecord, err error)

	sem chan struct{}
}

// SpoolWorker delivers the spooled events of one ledger, at most one per
// ledger: it walks the due index in order (never loading every pending
// event), starts an attempt of each due event of a registered and not
// paused scope while the scope's concurrency allows, records the result,
// and sleeps until the next due time, an ingest, a finished attempt or an
// operator's retry wakes it.
type SpoolWorker struct {
	f      *File
	now    func() time.Time
	jitter func() float64
	// onCounts, when set, gets what the spool holds by scope after changes
	// (at most once a second) and every CountsEvery, for gauges.
	onCounts func(map[string]SpoolCounts)

	mu       sync.Mutex
	targets  map[string]*SpoolTarget
	paused   map[string]bool
	inflight map[uint64]bool
	// hold keeps an event whose result could not be written (ledger full
	// or failing) from being attempted again before the time it maps to.
	hold map[uint64]time.Time

	// passes counts the dispatch passes started and finished (tests wait
	// for a pass that began after a change).
	passesStarted, passesDone atomic.Int64

	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
	once    sync.Once
}

// CountsEvery is how often the worker reports counts when nothing changed
// (the oldest pending age grows).
const CountsEvery = 10 * time.Second

// NewSpoolWorker returns the worker of f's spool; Start starts it.
// onCounts may be nil.
func NewSpoolWorker(f *File, onCounts func(map[string]SpoolCounts)) *SpoolWorker {
	ctx, cancel := context.WithCancel(context.Background())
	return &SpoolWorker{
		f:        f,
		now:      f.now,
		jitter:   func() float64 { return rand.Float64()*2 - 1 },
		onCounts: onCounts,
		targets:  map[string]*SpoolTarget{},
		paused:   map[string]bool{},
		inflight: map[uint64]bool{},
		hold:     map[uint64]time.Time{},
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
	}
}

// File returns the ledger the worker delivers from.
func (w *SpoolWorker) File() *File { return w.f }

// Start reads the paused scopes from the ledger and starts delivering.
func (w *SpoolWorker) Start() error {
	paused, err := w.f.SpoolPaused()
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.paused = paused
	w.started = true
	w.mu.Unlock()
	wake := w.Wake
	w.f.spooled.Store(&wake)
	go w.run()
	return nil
}

// Stop stops the worker: attempts in flight are cancelled and not counted
// (their events stay due, delivered again after a restart), and Stop
// returns once they have ended. The ledger stays open.
func (w *SpoolWorker) Stop() {
	w.once.Do(func() {
		w.f.spooled.Store(nil)
		close(w.stop)
		w.cancel()
		w.mu.Lock()
		started := w.started
		w.mu.Unlock()
		if started {
			<-w.done
		}
		w.wg.Wait()
	})
}

// Register makes t the target of scope's events, in place of the one
// before (a reload registers the new config's before the old one's
// cleanup); unregister removes it only if it is still t's.
func (w *SpoolWorker) Register(scope string, t *SpoolTarget) (unregister func()) {
	if t.Concurrency < 1 {
		t.Concurrency = 1
	}
	t.sem = make(chan struct{}, t.Concurrency)
	w.mu.Lock()
	w.targets[scope] = t
	w.mu.Unlock()
	w.Wake()
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.targets[scope] == t {
			delete(w.targets, scope)
		}
	}
}

// Wake makes the worker look at the due index now (after an ingest or a
// retry).
func (w *SpoolWorker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Pause holds (or, paused false, releases) the deliveries of scope, in
// the ledger (it survives restarts) and at once. An attempt in flight ends
// as it would have.
func (w *SpoolWorker) Pause(ctx context.Context, scope string, paused bool) error {
	if err := w.f.SpoolPause(ctx, scope, paused); err != nil {
		return err
	}
	w.mu.Lock()
	if paused {
		w.paused[scope] = true
	} else {
		delete(w.paused, scope)
	}
	w.mu.Unlock()
	w.Wake()
	return nil
}

// Paused says whether scope's deliveries are held.
func (w *SpoolWorker) Paused(scope string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.paused[scope]
}

// Retry makes seq due now (see File.SpoolRetry) and wakes the worker.
func (w *SpoolWorker) Retry(ctx context.Context, seq uint64) error {
	if err := w.f.SpoolRetry(ctx, seq); err != nil {
		return err
	}
	w.changed()
	return nil
}

// RetryAll retries every event in state ("" both) and scope ("" all) and
// returns how many it made due.
func (w *SpoolWorker) RetryAll(ctx context.Context, state, scope string) (int, error) {
	seqs, err := w.f.SpoolSeqs(state, scope)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, seq := range seqs {
		switch err := w.f.SpoolRetry(ctx, seq); {
		case errors.Is(err, ErrNoSpool): // delivered or discarded meanwhile
		case err != nil:
			w.changed()
			return n, err
		default:
			n++
		}
	}
	w.changed()
	return n, nil
}

// Discard deletes seq (see File.SpoolDiscard).
func (w *SpoolWorker) Discard(ctx context.Context, seq uint64) (SpoolRecord, error) {
	rec, err := w.f.SpoolDiscard(ctx, seq)
	if err == nil {
		w.changed()
	}
	return rec, err
}

// changed wakes the worker and has it report the counts.
func (w *SpoolWorker) changed() { w.Wake() }

// run is the worker's loop.
func (w *SpoolWorker) run() {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var lastCounts time.Time
	dirty := true // the counts may have changed since the last report
	for {
		next := w.dispatch()
		t := w.now()
		if w.onCounts != nil && t.Sub(lastCounts) >= time.Second && (dirty || t.Sub(lastCounts) >= CountsEvery) {
			lastCounts, dirty = t, false
			w.reportCounts()
		}
		// Next wake: the next due time, or the next report of counts (a
		// second after the last one when something changed: changes come
		// in bursts, an ingest, an attempt ending).
		wait := CountsEvery
		if w.onCounts != nil && dirty {
			wait = max(lastCounts.Add(time.Second).Sub(t), 0)
		}
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(t), 0))
		}
		timer.Reset(wait)
		select {
		case <-w.stop:
			return
		case <-w.wake:
			dirty = true
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-timer.C:
		}
	}
}

// reportCounts hands the counts to onCounts.
func (w *SpoolWorker) reportCounts() {
	counts, err := w.f.SpoolCounts()
	if err != nil {
		return
	}
	w.onCounts(counts)
}

// dispatch starts an attempt of every due event it may start now, and
// returns the next due time (zero: none, or every target busy).
func (w *SpoolWorker) dispatch() (next time.Time) {
	w.passesStarted.Add(1)
	defer w.passesDone.Add(1)
	t := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.hold) > 1024 { // entries of events gone meanwhile
		for seq, h := range w.hold {
			if !h.After(t) {
				delete(w.hold, seq)
			}
		}
	}
	busy := map[string]bool{}
	open := 0 // targets not paused
	for scope := range w.targets {
		if !w.paused[scope] {
			open++
		}
	}
	if open == 0 {
		return time.Time{}
	}
	_ = w.f.spoolScan(func(e SpoolDue) bool {
		if e.NextAt.After(t) {
			if next.IsZero() || e.NextAt.Before(next) {
				next = e.NextAt
			}
			return false
		}
		if w.inflight[e.Seq] || busy[e.Scope] || w.paused[e.Scope] {
			return true
		}
		if h, ok := w.hold[e.Seq]; ok {
			if h.After(t) {
				if next.IsZero() || h.Before(next) {
					next = h
				}
				return true
			}
			delete(w.hold, e.Seq)
		}
		target := w.targets[e.Scope]
		if target == nil {
			return true
		}
		select {
		case target.sem <- struct{}{}:
		default:
			busy[e.Scope] = true
			return len(busy) < open // every target busy: an attempt ending wakes us
		}
		select {
		case <-w.stop:
			<-target.sem
			return false
		default:
		}
		w.inflight[e.Seq] = true
		w.wg.Add(1)
		go w.attempt(target, e.Seq)
		return true
	})
	return next
}

// attempt makes one delivery attempt of seq and records its result.
func (w *SpoolWorker) attempt(t *SpoolTarget, seq uint64) {
	defer func() {
		<-t.sem
		w.mu.Lock()
		delete(w.inflight, seq)
		w.mu.Unlock()
		w.wg.Done()
		w.Wake()
	}()
	rec, ok, err := w.f.SpoolGet(seq)
	if err != nil {
		rec.Seq = seq
		w.report(t, &rec, err)
		return
	}
	if !ok || rec.State != SpoolPending {
		// A due entry without its pending record (never written so:
		// they change in one transaction): not looked at again soon.
		w.mu.Lock()
		w.hold[seq] = w.now().Add(SpoolEvery)
		w.mu.Unlock()
		return
	}
	// Records are written without a context: a result must land even
	// while the worker stops.
	ctx := context.Background()
	if rec.Attempts >= t.MaxAttempts || !w.now().Before(rec.AgeFrom().Add(t.MaxAge)) {
		reason := rec.LastError
		if rec.Attempts < t.MaxAttempts {
			reason = fmt.Sprintf("max_age %v passed (last error: %s)", t.MaxAge, cmp.Or(rec.LastError, "none"))
		}
		w.die(ctx, t, &rec, rec.Attempts, reason)
		return
	}
	n := rec.Attempts + 1
	actx, cancel := context.WithTimeout(w.ctx, t.Timeout)
	a := t.Deliver(actx, &rec, n)
	cancel()
	if !a.Delivered() && w.ctx.Err() != nil {
		return // stopping: not counted, delivered after the restart
	}
	rec.Attempts = n
	if a.Delivered() {
		if err := w.f.SpoolDelivered(ctx, seq, t.Window); err != nil && !errors.Is(err, ErrNoSpool) {
			w.report(t, &rec, err)
		}
		w.attempted(t, &rec, a)
		return
	}
	rec.LastError = a.Reason()
	if n >= t.MaxAttempts {
		rec.NextAt = time.Time{} // none: it dies
		w.attempted(t, &rec, a)
		w.die(ctx, t, &rec, n, a.Reason())
		return
	}
	rec.NextAt = w.now().Add(SpoolBackoff(n, a.RetryAfter, w.jitter()))
	if end := rec.AgeFrom().Add(t.MaxAge); rec.NextAt.After(end) {
		rec.NextAt = end // then it dies, on time
	}
	if err := w.f.SpoolFailed(ctx, seq, n, a.Reason(), rec.NextAt); err != nil && !errors.Is(err, ErrNoSpool) {
		w.report(t, &rec, err)
	}
	w.attempted(t, &rec, a)
}

// attempted tells the target of an attempt whose result is recorded.
func (w *SpoolWorker) attempted(t *SpoolTarget, rec *SpoolRecord, a Attempt) {
	if t.OnAttempt != nil {
		t.OnAttempt(rec, a)
	}
}

// die makes rec dead and tells the target.
func (w *SpoolWorker) die(ctx context.Context, t *SpoolTarget, rec *SpoolRecord, attempts int, reason string) {
	dead, err := w.f.SpoolDie(ctx, rec.Seq, attempts, reason)
	if err != nil {
		if !errors.Is(err, ErrNoSpool) {
			w.report(t, rec, err)
		}
		return
	}
	if t.OnDead != nil {
		t.OnDead(dead)
	}
}

// report tells the target of a ledger error, and holds the event back for
// a while: its result is not on disk, so it is still due.
func (w *SpoolWorker) report(t *SpoolTarget, rec *SpoolRecord, err error) {
	w.mu.Lock()
	w.hold[rec.Seq] = w.now().Add(SpoolSchedule[0])
	w.mu.Unlock()
	if t.OnError != nil {
		t.OnError(rec, err)
	}
}
