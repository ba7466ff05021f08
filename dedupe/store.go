// Package dedupe is the replay store: it remembers which webhook events were
// delivered so that a replayed or duplicate delivery is dropped, and which are
// in flight so that concurrent copies of one event reach the upstream once.
//
// The guarantee (see the README): within the replay window exactly one copy
// of an event reaches the upstream with a 2xx answer, and no event is marked
// delivered unless the upstream answered 2xx. A store remembers every id
// until its window ends: at capacity it refuses new events (ErrFull) rather
// than forget one.
//
// The stores: File (a bbolt ledger that survives restarts and crashes),
// Memory (an exact map, lost on restart), Redis (shared by several
// instances), and Cached, a cache of "delivered" answers in front of any.
package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// State is what a Claim found.
type State int

const (
	// Fresh: the key was free and is now claimed by the caller, for the lease.
	Fresh State = iota
	// InFlight: another delivery of the event holds the key.
	InFlight
	// Delivered: the event was delivered within the replay window.
	Delivered
)

func (s State) String() string {
	switch s {
	case Fresh:
		return "fresh"
	case InFlight:
		return "in_flight"
	case Delivered:
		return "delivered"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Claim is the result of Store.Claim. A Fresh claim must be ended with
// exactly one Commit or Release.
type Claim struct {
	// Key is the store key of the event.
	Key string
	// State is what the store found.
	State State
	// Token identifies the holder of a Fresh claim, so that Release never
	// frees a claim that has since passed to someone else.
	Token string
}

// Store is a replay store. Implementations are safe for concurrent use.
type Store interface {
	// Claim atomically takes the key if it is free: of concurrent claims of
	// one key exactly one is Fresh. A Fresh claim is a lease that expires
	// after lease, so a crashed holder does not block the key forever.
	// At capacity (max_events ids remembered or in flight) a claim of an
	// unknown key fails with an error wrapping ErrFull: a store never
	// evicts an id before its window ends. A store that cannot be reached
	// fails with an error wrapping ErrUnavailable. With an error the
	// returned claim is never Fresh.
	Claim(ctx context.Context, key string, lease time.Duration) (Claim, error)
	// Commit marks the claimed event delivered for window, after the
	// upstream answered 2xx. When it returns nil the fact is durable (the
	// file store has fsynced it, Redis has acknowledged it).
	Commit(ctx context.Context, c Claim, window time.Duration) error
	// Release frees the key after a failed delivery, if c still holds it.
	Release(ctx context.Context, c Claim) error
	// Renew extends the lease of a claim that still holds its key to lease
	// from now; the guard calls it every lease/3 while the upstream call is
	// in flight. It fails with an error wrapping ErrNotHeld if c no longer
	// holds the key (its lease ended, or it was committed or released).
	Renew(ctx context.Context, c Claim, lease time.Duration) error
}

// Health is implemented by the stores that know, before an event is
// forwarded, that its commit would fail: a full disk, a journal that could
// not sync. The guard then refuses a fresh event (503 + Retry-After) rather
// than forward one it could not remember.
type Health interface {
	// Writable returns nil while writes are expected to succeed, else why
	// not: an error wrapping ErrFull (no room) or ErrUnavailable.
	Writable() error
}

// Usage is implemented by the stores that have a capacity, for a warning
// when they fill up and for a gauge.
type Usage interface {
	// Usage returns how many ids the store holds (remembered or in
	// flight) and how many it may hold; capacity 0 means no limit.
	Usage() (remembered, capacity int64)
}

// ErrUnavailable wraps errors of a store that cannot be reached; the guard
// answers 503 and the provider retries.
var ErrUnavailable = errors.New("replay store unavailable")

// ErrClosed wraps the errors of a store that was closed (its last
// configuration unloaded); it matches ErrUnavailable too.
var ErrClosed = fmt.Errorf("%w: store closed", ErrUnavailable)

// ErrFull wraps the error of a claim refused because the store holds
// max_events ids, all within their window or lease; the guard answers 503
// with Retry-After (outcome store_full) and the provider retries later.
var ErrFull = errors.New("replay store full")

// ErrNotHeld wraps the error of Renew when the claim no longer holds its key.
var ErrNotHeld = errors.New("claim no longer held")

// Key builds the store key of an event. Each part is length-prefixed, so no
// two (scope, provider, id) tuples share a key.
func Key(scope, provider, eventID string) string {
	var b strings.Builder
	b.Grow(len(scope) + len(provider) + len(eventID) + 12)
	for _, p := range [...]string{scope, provider, eventID} {
		b.WriteString(strconv.Itoa(len(p)))
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}
