package spool

import (
	"context"
	"time"
)

// Store is where a spool keeps its events: what a backend implements. Its
// methods are safe for concurrent use. A write returns once it is durable
// (fsynced, or acknowledged by Redis as configured); a failed write leaves
// nothing half done. Errors must not carry a secret: they reach logs and
// the admin API.
type Store interface {
	// Ingest stores rec (with its Body), gives it an ID and marks the
	// replay key accepted until rec.ReceivedAt + acceptFor, in one atomic
	// write, unless the key is already remembered (delivered or accepted,
	// window not ended): then it writes nothing and returns duplicate true.
	Ingest(ctx context.Context, key string, rec *Record, acceptFor time.Duration) (duplicate bool, err error)
	// Get returns the event with its body; false when there is none.
	Get(ctx context.Context, id uint64) (Record, bool, error)
	// List returns the events f selects, newest (highest id) first,
	// without Header, History and Body, one page at a time.
	List(ctx context.Context, f Filter, p Page) ([]Record, error)
	// IDs returns the ids of every event in state (Pending or Dead) of
	// scope ("" every scope).
	IDs(ctx context.Context, state State, scope string) ([]uint64, error)

	// Lease offers the due events (NextAt not after now) of the scopes not
	// paused, earliest first, that are not leased already, until offer
	// says Stop. An event offer Takes is leased to the caller until it
	// reports the attempt's result (Delivered, Failed, Die) or Abandons
	// it; a shared store makes the lease expire when its holder stops
	// renewing it, and another instance may then take it. open lists the
	// targets the caller could start attempts of now, with how many: a
	// store whose events are taken from a shared queue as it reads them
	// (Redis) reads at most that many of each target's, and none of a
	// target not listed; a store read in place (the ledger) may ignore it.
	// Lease returns the time the next event falls due (zero: none known),
	// to wake for; a shared store, whose events other instances add,
	// returns a time soon enough to look again.
	Lease(ctx context.Context, now time.Time, open []Opening, offer func(Due) Verdict) (next time.Time, err error)
	// Extend renews the lease of an event whose attempt runs long.
	Extend(ctx context.Context, id uint64) error
	// Abandon gives a leased event back without a result: it stays due.
	Abandon(ctx context.Context, id uint64)

	// Delivered deletes the event, whose delivery the backend accepted,
	// and marks its replay key delivered until now + window, atomically.
	Delivered(ctx context.Context, id uint64, window time.Duration) error
	// Failed stores the attempts made, the last error and history, and
	// when the next attempt is due.
	Failed(ctx context.Context, rec *Record) error
	// Die makes the event dead (kept, out of the due events) with the
	// attempts made, history and reason, and returns it without body.
	Die(ctx context.Context, rec *Record) (Record, error)

	// Retry makes the event due now: a dead or discarded one pending again
	// with its attempts reset; its replay key stays accepted as long again.
	// A leased event is ErrInFlight.
	Retry(ctx context.Context, id uint64) error
	// Discard makes the event discarded (by whom, at now): kept, listed,
	// retryable until its replay window ends, then purged. A leased event
	// is ErrInFlight.
	Discard(ctx context.Context, id uint64, by string) (Record, error)
	// Forget deletes the event of the replay key, if any, and the key
	// itself: a provider's resend of the event is then new. It returns
	// whether the key was remembered.
	Forget(ctx context.Context, key string) (bool, error)

	// SetPaused holds (or releases) the deliveries of scope; the state is
	// kept, so it survives restarts, and shared stores share it.
	SetPaused(ctx context.Context, scope string, paused bool) error
	// Paused returns the scopes whose deliveries are held.
	Paused(ctx context.Context) (map[string]bool, error)
	// Counts counts the events by scope.
	Counts(ctx context.Context) (map[string]Counts, error)
}

// Due is a due event as Lease offers it, from the store's index.
type Due struct {
	ID         uint64
	NextAt     time.Time
	ReceivedAt time.Time
	Scope      string
	// Target is the key of the handler that accepted it ("" in records
	// of release 0.1.0).
	Target string
	// Losses counts the leases of the event that ended without a result:
	// their holder died or stalled while it held the event (a shared
	// store's pending list tells). The worker makes an event dead at
	// MaxLosses, as one that crashes whoever delivers it.
	Losses int
}

// Opening is a target the worker could start attempts of now.
type Opening struct {
	// Target is the target's key, Scope its scope.
	Target, Scope string
	// Free is how many attempts of it may start now.
	Free int
}

// MaxLosses is how many leases of an event may end without a result (its
// holder died or stalled) before the event is made dead rather than
// attempted again: an event that crashes the instance delivering it would
// otherwise crash every instance in turn.
const MaxLosses = 5

// LeaseExpirer is implemented by a store whose leases expire when they are
// not renewed (a shared store: another instance may then take the event).
type LeaseExpirer interface {
	// LeaseExpiry is how long a lease lasts without renewal; the worker
	// renews the leases it holds more often than that.
	LeaseExpiry() time.Duration
}

// Verdict is what the worker makes of an event Lease offers.
type Verdict int

const (
	// Skip leaves the event due, not leased; Lease goes on.
	Skip Verdict = iota
	// Take leases the event to the worker, which attempts it.
	Take
	// Stop leaves the event due and ends Lease: the worker can take no
	// more now.
	Stop
)
