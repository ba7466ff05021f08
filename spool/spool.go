package spool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Target is where the events one handler accepted are delivered, and how:
// registered by the handler with the spool block, found again by Key.
type Target struct {
	// Key identifies the handler across reloads and restarts: an event is
	// delivered only to the target of the key it was accepted with.
	Key string
	// Scope is the handler's replay scope.
	Scope string
	// Deliver makes one attempt of rec (its Body included); attempt is its
	// number, from 1. ctx ends at the attempt's timeout or when the spool
	// stops.
	Deliver func(ctx context.Context, rec *Record, attempt int) Attempt
	// MaxAttempts, when positive, is how many failed attempts make the
	// event dead; 0: no limit but MaxAge.
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
	// Schedule is the retry schedule; DefaultSchedule when empty.
	Schedule Schedule
	// DeadOn, when set, says which backend statuses make the event dead at
	// once (dead_on 4xx): the backend refuses it for good.
	DeadOn func(status int) bool
	// OnAttempt, when set, is told each attempt's result once it is
	// recorded (rec with the attempts made, last error and next time; a
	// zero NextAt and State Dead when it died).
	OnAttempt func(rec *Record, a Attempt)
	// OnDead, when set, is told each event that becomes dead.
	OnDead func(rec Record)
	// OnError, when set, is told of a store write that failed.
	OnError func(rec *Record, err error)

	sem chan struct{}
}

// Options configures a Spool.
type Options struct {
	// Now is the clock; time.Now when nil. Tests move it.
	Now func() time.Time
	// Jitter returns the jitter of a retry delay, in [-1, 1]; uniform
	// random when nil.
	Jitter func() float64
	// OnCounts, when set, gets what the spool holds by scope, and the
	// paused scopes, after changes (at most once a second) and every
	// CountsEvery, for gauges.
	OnCounts func(counts map[string]Counts, paused map[string]bool)
	// OnLeaseError, when set, is told of a failed Lease (a store that
	// cannot be read); the worker backs off and tries again.
	OnLeaseError func(err error)
	// OnOrphans, when set, is told of the pending events that no
	// registered target delivers (their handler's spool block was removed
	// or changed): by scope and target key, when they have been so for
	// CountsEvery, and again whenever that changes.
	OnOrphans func(orphans []Orphans)
	// OnForgotten, when set, is told of each replay key Forget made the
	// store forget, so that a cache in front of the replay store drops it.
	OnForgotten func(key string)
	// Name says which store the spool delivers (a ledger's path, a Redis'
	// address and prefix), the same across reloads and restarts and
	// without any secret: a listing's cursor (ListAcross) names the spools
	// it pages through by it.
	Name string
}

// Orphans counts the pending events of one target that no registered
// target delivers.
type Orphans struct {
	Scope, Target string
	Pending       int
}

// CountsEvery is how often the worker reports counts when nothing changed
// (the oldest pending age grows).
const CountsEvery = 10 * time.Second

// holdFor is how long an event whose result could not be stored is kept
// from a new attempt.
const holdFor = 5 * time.Second

// Spool delivers the events of one store: its worker takes due events of
// registered targets, at most Target.Concurrency at a time per target,
// attempts them and records the results; its methods are the operator
// interface (list, show, retry, discard, pause, resume).
type Spool struct {
	store  Store
	now    func() time.Time
	jitter func() float64
	opts   Options

	mu      sync.Mutex
	targets map[string]*Target // by key
	// inflight holds the events whose attempt runs here.
	inflight map[uint64]bool
	// hold keeps an event whose result could not be written (store full
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

// New returns the spool of store; Start starts its worker.
func New(store Store, opts Options) *Spool {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Spool{
		store:    store,
		now:      opts.Now,
		jitter:   opts.Jitter,
		opts:     opts,
		targets:  map[string]*Target{},
		inflight: map[uint64]bool{},
		hold:     map[uint64]time.Time{},
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.jitter == nil {
		s.jitter = func() float64 { return rand.Float64()*2 - 1 }
	}
	return s
}

// Store returns the spool's store.
func (s *Spool) Store() Store { return s.store }

// Name returns Options.Name: which store the spool delivers.
func (s *Spool) Name() string { return s.opts.Name }

// Start starts the worker.
func (s *Spool) Start() {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return
	}
	s.started = true
	s.mu.Unlock()
	go s.run()
}

// Stop stops the worker: attempts in flight are cancelled and not counted
// (their events stay due, attempted again after a restart), and Stop
// returns once they have ended. The store stays open.
func (s *Spool) Stop() {
	s.once.Do(func() {
		close(s.stop)
		s.cancel()
		s.mu.Lock()
		started := s.started
		s.mu.Unlock()
		if started {
			<-s.done
		}
		s.wg.Wait()
	})
}

// Register makes t the target of the events accepted with t.Key, in place
// of the one before (a reload registers the new config's before the old
// one's cleanup); unregister removes it only if it is still t.
func (s *Spool) Register(t *Target) (unregister func()) {
	if t.Concurrency < 1 {
		t.Concurrency = 1
	}
	t.sem = make(chan struct{}, t.Concurrency)
	s.mu.Lock()
	s.targets[t.Key] = t
	s.mu.Unlock()
	s.Wake()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.targets[t.Key] == t {
			delete(s.targets, t.Key)
		}
	}
}

// Targets returns the keys of the registered targets.
func (s *Spool) Targets() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.targets))
	for k, t := range s.targets {
		out[k] = t.Scope
	}
	return out
}

// HasScope says whether a registered target has scope.
func (s *Spool) HasScope(scope string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.targets {
		if t.Scope == scope {
			return true
		}
	}
	return false
}

// target is the target of an event: the one of its key; for a record of
// release 0.1.0 (no key), the one target of its scope, if only one has it.
// s.mu is held.
func (s *Spool) target(key, scope string) *Target {
	if key != "" {
		return s.targets[key]
	}
	var found *Target
	for _, t := range s.targets {
		if t.Scope == scope {
			if found != nil {
				return nil // two handlers share the scope: which one is unknown
			}
			found = t
		}
	}
	return found
}

// Orphan says whether an event of this target key and scope has no
// registered target: it waits until its handler is back.
func (s *Spool) Orphan(key, scope string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.target(key, scope) == nil
}

// Wake makes the worker look at the due events now (after an ingest or a
// retry, or a clock moved by a test).
func (s *Spool) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Ingest stores rec and marks key accepted (see Store.Ingest), then wakes
// the worker.
func (s *Spool) Ingest(ctx context.Context, key string, rec *Record, acceptFor time.Duration) (duplicate bool, err error) {
	if acceptFor <= 0 {
		return false, fmt.Errorf("spool: accept window must be positive, got %v", acceptFor)
	}
	rec.State = Pending
	if rec.NextAt.IsZero() {
		rec.NextAt = rec.ReceivedAt
	}
	dup, err := s.store.Ingest(ctx, key, rec, acceptFor)
	if err == nil && !dup {
		s.Wake()
	}
	return dup, err
}

// List returns one page of the events f selects, newest first, without
// headers and body.
func (s *Spool) List(ctx context.Context, f Filter, p Page) ([]Record, error) {
	return s.store.List(ctx, f, p)
}

// Get returns the event with its headers and body.
func (s *Spool) Get(ctx context.Context, id uint64) (Record, bool, error) {
	return s.store.Get(ctx, id)
}

// InFlight says whether an attempt of the event runs in this process.
func (s *Spool) InFlight(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight[id]
}

// Retry makes the event due now (a dead or discarded one pending again,
// its attempts reset) and wakes the worker. An event whose attempt runs is
// ErrInFlight; a missing one ErrNotFound.
func (s *Spool) Retry(ctx context.Context, id uint64) error {
	if s.InFlight(id) {
		return ErrInFlight
	}
	if err := s.store.Retry(ctx, id); err != nil {
		return err
	}
	s.Wake()
	return nil
}

// RetryAll retries every event of state (Dead, Discarded or Pending) and
// scope ("" every scope) and returns how many it made due. Events whose
// attempt runs are left alone.
func (s *Spool) RetryAll(ctx context.Context, state State, scope string) (int, error) {
	if !state.Valid() {
		return 0, fmt.Errorf("spool: retry of state %q: want pending, dead or discarded", state)
	}
	ids, err := s.store.IDs(ctx, state, scope)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		switch err := s.Retry(ctx, id); {
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrInFlight): // delivered or busy meanwhile
		case err != nil:
			s.Wake()
			return n, err
		default:
			n++
		}
	}
	s.Wake()
	return n, nil
}

// Discard makes the event discarded by whom (kept, retryable, for its
// replay window) and returns it without body. An event whose attempt runs
// is ErrInFlight: it may be delivered; retry the discard when it ended.
func (s *Spool) Discard(ctx context.Context, id uint64, by string) (Record, error) {
	if s.InFlight(id) {
		return Record{}, ErrInFlight
	}
	rec, err := s.store.Discard(ctx, id, by)
	if err == nil {
		s.Wake()
	}
	return rec, err
}

// Forget makes the store forget the replay key (and drop its event, if
// spooled and not in flight), so that a provider's resend is new.
func (s *Spool) Forget(ctx context.Context, key string) (bool, error) {
	ok, err := s.store.Forget(ctx, key)
	if err == nil && s.opts.OnForgotten != nil {
		s.opts.OnForgotten(key)
	}
	return ok, err
}

// Pause holds (or, paused false, releases) the deliveries of scope, in the
// store (it survives restarts) and at once. An attempt in flight ends as it
// would have.
func (s *Spool) Pause(ctx context.Context, scope string, paused bool) error {
	if err := s.store.SetPaused(ctx, scope, paused); err != nil {
		return err
	}
	s.Wake()
	return nil
}

// Paused returns the paused scopes.
func (s *Spool) Paused(ctx context.Context) (map[string]bool, error) {
	return s.store.Paused(ctx)
}

// Counts counts the events by scope.
func (s *Spool) Counts(ctx context.Context) (map[string]Counts, error) {
	return s.store.Counts(ctx)
}
