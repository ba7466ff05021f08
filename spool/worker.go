package spool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// leaseRetry is how long the worker waits after a failed Lease.
const leaseRetry = 5 * time.Second

// run is the worker's loop: a dispatch pass, then sleep until the next due
// time, an ingest, a finished attempt or an operator's action wakes it.
func (s *Spool) run() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var lastCounts time.Time
	dirty := true // the counts may have changed since the last report
	orphans := &orphanWatch{}
	for {
		next := s.dispatch()
		t := s.now()
		if s.opts.OnCounts != nil && t.Sub(lastCounts) >= time.Second && (dirty || t.Sub(lastCounts) >= CountsEvery) {
			lastCounts, dirty = t, false
			counts, err := s.store.Counts(s.ctx)
			paused, perr := s.store.Paused(s.ctx)
			if err == nil && perr == nil {
				s.opts.OnCounts(counts, paused)
				orphans.check(s, t, counts)
			}
		}
		// Next wake: the next due time, or the next report of counts (a
		// second after the last one when something changed: changes come
		// in bursts, an ingest, an attempt ending).
		wait := CountsEvery
		if s.opts.OnCounts != nil && dirty {
			wait = max(lastCounts.Add(time.Second).Sub(t), 0)
		}
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(t), 0))
		}
		timer.Reset(wait)
		select {
		case <-s.stop:
			return
		case <-s.wake:
			dirty = true
			timer.Stop()
		case <-timer.C:
		}
	}
}

// dispatch starts an attempt of every due event it may start now, and
// returns when to look again (zero: when woken).
func (s *Spool) dispatch() (next time.Time) {
	s.passesStarted.Add(1)
	defer s.passesDone.Add(1)
	t := s.now()

	s.mu.Lock()
	if len(s.hold) > 1024 { // entries of events gone meanwhile
		for id, h := range s.hold {
			if !h.After(t) {
				delete(s.hold, id)
			}
		}
	}
	open := make([]Opening, 0, len(s.targets))
	free := 0
	for _, tg := range s.targets {
		if n := cap(tg.sem) - len(tg.sem); n > 0 {
			open = append(open, Opening{Target: tg.Key, Scope: tg.Scope, Free: n})
			free += n
		}
	}
	s.mu.Unlock()
	if free == 0 {
		return time.Time{} // every target busy (or none): an attempt ending wakes us
	}
	slices.SortFunc(open, func(a, b Opening) int { return cmp.Compare(a.Target, b.Target) })

	type start struct {
		t      *Target
		id     uint64
		losses int
	}
	var starts []start
	busy := map[*Target]bool{}
	var held time.Time // the earliest end of a hold
	next, err := s.store.Lease(s.ctx, t, open, func(d Due) Verdict {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inflight[d.ID] {
			return Skip
		}
		if h, ok := s.hold[d.ID]; ok {
			if h.After(t) {
				if held.IsZero() || h.Before(held) {
					held = h
				}
				return Skip
			}
			delete(s.hold, d.ID)
		}
		target := s.target(d.Target, d.Scope)
		if target == nil || busy[target] {
			return Skip
		}
		select {
		case target.sem <- struct{}{}:
		default:
			busy[target] = true
			if len(busy) >= len(s.targets) {
				return Stop // every target busy: an attempt ending wakes us
			}
			return Skip
		}
		select {
		case <-s.stop:
			<-target.sem
			return Stop
		default:
		}
		s.inflight[d.ID] = true
		starts = append(starts, start{target, d.ID, d.Losses})
		return Take
	})
	for _, st := range starts {
		s.wg.Add(1)
		go s.attempt(st.t, st.id, st.losses)
	}
	if err != nil {
		if s.opts.OnLeaseError != nil && s.ctx.Err() == nil {
			s.opts.OnLeaseError(err)
		}
		return t.Add(leaseRetry)
	}
	if !held.IsZero() && (next.IsZero() || held.Before(next)) {
		next = held
	}
	return next
}

// attempt makes one delivery attempt of the leased event id and records
// its result; losses is how many of its leases ended without a result.
func (s *Spool) attempt(t *Target, id uint64, losses int) {
	ctx := context.WithoutCancel(s.ctx) // results are written even while stopping
	defer func() {
		<-t.sem
		s.mu.Lock()
		delete(s.inflight, id)
		s.mu.Unlock()
		s.wg.Done()
		s.Wake()
	}()
	rec, ok, err := s.store.Get(ctx, id)
	if err != nil {
		rec.ID = id
		s.failedWrite(ctx, t, &rec, err)
		return
	}
	if !ok || rec.State != Pending {
		// Delivered, discarded or retried meanwhile by another instance;
		// a store whose index still offers it is not asked again soon.
		s.store.Abandon(ctx, id)
		s.mu.Lock()
		s.hold[id] = s.now().Add(time.Hour)
		s.mu.Unlock()
		return
	}
	start := s.now()
	if rec.NextAt.After(start) {
		// Offered from a view taken before its last attempt was recorded
		// (a pass that began while that attempt ended): not due yet.
		s.store.Abandon(ctx, id)
		return
	}
	if losses >= MaxLosses {
		rec.LastError = fmt.Sprintf("%d deliveries of it ended without a result: the instance delivering it died or stalled each time "+
			"(an event that crashes Caddy?); last error: %s", losses, cmp.Or(rec.LastError, "none"))
		s.die(ctx, t, &rec)
		return
	}
	if t.MaxAttempts > 0 && rec.Attempts >= t.MaxAttempts || !start.Before(rec.AgeFrom().Add(t.MaxAge)) {
		reason := rec.LastError
		if t.MaxAttempts == 0 || rec.Attempts < t.MaxAttempts {
			reason = fmt.Sprintf("max_age %v passed (last error: %s)", t.MaxAge, cmp.Or(rec.LastError, "none"))
		}
		rec.LastError = reason
		s.die(ctx, t, &rec)
		return
	}
	n := rec.Attempts + 1
	actx, cancel := context.WithTimeout(s.ctx, t.Timeout)
	renewed := s.renewWhile(actx, id, s.renewEvery(t))
	a := t.Deliver(actx, &rec, n)
	cancel()
	<-renewed
	if !a.Delivered() && s.ctx.Err() != nil {
		s.store.Abandon(ctx, id) // stopping: not counted, attempted after the restart
		return
	}
	end := s.now()
	rec.Attempts = n
	logged := AttemptLog{At: start, Duration: end.Sub(start), Status: a.Status}
	if a.Delivered() {
		if err := s.store.Delivered(ctx, id, t.Window); err != nil && !errors.Is(err, ErrNotFound) {
			s.failedWrite(ctx, t, &rec, err)
		}
		rec.NextAt = time.Time{}
		s.attempted(t, &rec, a)
		return
	}
	logged.Error = a.Reason()
	rec.LastError = logged.Error
	rec.logAttempt(logged)
	if t.MaxAttempts > 0 && n >= t.MaxAttempts || t.DeadOn != nil && a.Err == nil && t.DeadOn(a.Status) {
		if t.MaxAttempts == 0 || n < t.MaxAttempts {
			rec.LastError = "dead_on " + rec.LastError
		}
		rec.NextAt = time.Time{} // none: it dies
		rec.State = Dead
		s.attempted(t, &rec, a)
		s.die(ctx, t, &rec)
		return
	}
	// The next attempt: the schedule's delay, or later when the backend
	// asked for it (Retry-After means not before).
	rec.NextAt = end.Add(max(t.Schedule.Delay(n, s.jitter()), a.RetryAfter))
	if ageEnd := rec.AgeFrom().Add(t.MaxAge); rec.NextAt.After(ageEnd) {
		rec.NextAt = ageEnd // then it dies, on time
	}
	if err := s.store.Failed(ctx, &rec); err != nil {
		s.failedWrite(ctx, t, &rec, err)
	}
	s.attempted(t, &rec, a)
}

// renewEvery is how often the lease of an attempt of t is renewed: a third
// of its timeout, or of the store's lease if that is shorter.
func (s *Spool) renewEvery(t *Target) time.Duration {
	lease := t.Timeout
	if le, ok := s.store.(LeaseExpirer); ok && le.LeaseExpiry() > 0 {
		lease = min(lease, le.LeaseExpiry())
	}
	return max(lease/3, 100*time.Millisecond)
}

// renewWhile renews the lease of id every period while ctx lasts; the
// returned channel is closed when it has stopped.
func (s *Spool) renewWhile(ctx context.Context, id uint64, every time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = s.store.Extend(ctx, id)
			}
		}
	}()
	return done
}

// attempted tells the target of an attempt whose result is recorded.
func (s *Spool) attempted(t *Target, rec *Record, a Attempt) {
	if t.OnAttempt != nil {
		t.OnAttempt(rec, a)
	}
}

// die makes rec dead and tells the target.
func (s *Spool) die(ctx context.Context, t *Target, rec *Record) {
	dead, err := s.store.Die(ctx, rec)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			s.failedWrite(ctx, t, rec, err)
		}
		return
	}
	if t.OnDead != nil {
		t.OnDead(dead)
	}
}

// failedWrite tells the target of a store error, gives the lease back and
// holds the event back for a while: its result is not stored, so it is
// still due.
func (s *Spool) failedWrite(ctx context.Context, t *Target, rec *Record, err error) {
	s.store.Abandon(ctx, rec.ID)
	s.mu.Lock()
	s.hold[rec.ID] = s.now().Add(holdFor)
	s.mu.Unlock()
	if t.OnError != nil {
		t.OnError(rec, err)
	}
}

// orphanWatch reports pending events without a target once they have been
// so for CountsEvery (a config being provisioned registers its targets one
// by one), and again when that changes.
type orphanWatch struct {
	since    map[Orphans]time.Time // first seen, by scope, target and count
	reported []Orphans
}

// check looks at counts taken at t.
func (w *orphanWatch) check(s *Spool, t time.Time, counts map[string]Counts) {
	if s.opts.OnOrphans == nil {
		return
	}
	seen := map[Orphans]time.Time{}
	var ready []Orphans
	for scope, c := range counts {
		for target, n := range c.PendingByTarget {
			if !s.Orphan(target, scope) {
				continue
			}
			o := Orphans{Scope: scope, Target: target, Pending: n}
			first, ok := w.since[o]
			if !ok {
				first = t
			}
			seen[o] = first
			if t.Sub(first) >= CountsEvery {
				ready = append(ready, o)
			}
		}
	}
	w.since = seen
	slices.SortFunc(ready, func(a, b Orphans) int { return cmp.Or(cmp.Compare(a.Scope, b.Scope), cmp.Compare(a.Target, b.Target)) })
	if !slices.Equal(ready, w.reported) && (len(ready) > 0 || len(w.reported) > 0) {
		w.reported = ready
		s.opts.OnOrphans(ready)
	}
}
