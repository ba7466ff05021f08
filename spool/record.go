// Package spool is the guard's delivery engine: an event acknowledged once
// it is stored, then delivered to the backend with retries by a worker, and
// steered by operators (list, show, retry, discard, pause, resume).
//
// The engine is Spool: the worker and the operator interface that the admin
// API and the console call. Where the events are kept is a Store: the ledger
// file of one Caddy instance (package ledger), or Redis shared by several.
// This package imports neither Caddy nor a database.
package spool

import (
	"errors"
	"strconv"
	"time"
)

// State is where a spooled event stands.
type State string

// The states of a spooled event.
const (
	// Pending is an event waiting for its next delivery attempt.
	Pending State = "pending"
	// Dead is an event that ran out of attempts or age (or that the backend
	// refused for good, dead_on): kept until an operator retries or
	// discards it.
	Dead State = "dead"
	// Discarded is an event an operator discarded: kept, retryable, for the
	// replay window, then purged.
	Discarded State = "discarded"
)

// Valid says whether s is one of the states.
func (s State) Valid() bool { return s == Pending || s == Dead || s == Discarded }

// Record is one spooled event. Its JSON form is the record's metadata as the
// ledger file stores it (the body is stored beside it), so a field's name
// and meaning never change.
type Record struct {
	// ID is the event's number in its store, unique per store (a ledger
	// file, a Redis prefix); set by Store.Ingest.
	ID uint64 `json:"-"`
	// Target is the key of the handler that accepted the event (see
	// Target.Key): the event is delivered to that handler's backend, with
	// its options, and to no other. Empty in records of release 0.1.0,
	// which are delivered by scope when one handler has it.
	Target string `json:"target,omitempty"`
	// Scope and Provider are the handler's replay scope and scheme.
	Scope    string `json:"scope"`
	Provider string `json:"provider"`
	// EventID is the provider's id of the event (sent to the backend as
	// Webhook-Guard-Event-Id), EventType its type.
	EventID   string `json:"event_id"`
	EventType string `json:"event_type,omitempty"`
	// State is Pending, Dead or Discarded.
	State State `json:"state"`
	// Attempts counts the delivery attempts made (since the last retry by
	// an operator, which resets it).
	Attempts int `json:"attempts"`
	// ReceivedAt is when the event was spooled; NextAt when it is due
	// (pending); DiedAt when it became dead.
	ReceivedAt time.Time `json:"received_at"`
	NextAt     time.Time `json:"next_at,omitzero"`
	DiedAt     time.Time `json:"died_at,omitzero"`
	// RetriedAt is when an operator last retried the event; max_age then
	// counts from it rather than from ReceivedAt.
	RetriedAt time.Time `json:"retried_at,omitzero"`
	// DiscardedAt and DiscardedBy say when and by whom (the admin API's
	// caller, the console's user) a discarded event was discarded.
	DiscardedAt time.Time `json:"discarded_at,omitzero"`
	DiscardedBy string    `json:"discarded_by,omitempty"`
	// LastError says why the last attempt failed.
	LastError string `json:"last_error,omitempty"`
	// History is the last MaxHistory attempts, oldest first.
	History []AttemptLog `json:"history,omitempty"`
	// The original request: method, path, raw query, client IP and its
	// headers (without hop-by-hop, forwarding and credential headers: the
	// handler removes them before Ingest).
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	Query    string              `json:"query,omitempty"`
	ClientIP string              `json:"client_ip,omitempty"`
	Header   map[string][]string `json:"header,omitempty"`
	// Host and Proto are the original request's host and scheme (http or
	// https), sent to the backend as X-Forwarded-Host and -Proto.
	Host  string `json:"host,omitempty"`
	Proto string `json:"proto,omitempty"`
	// Body is the exact body received; empty in listings.
	Body []byte `json:"-"`
}

// MaxHistory is how many attempts a record keeps in History.
const MaxHistory = 25

// AttemptLog is one delivery attempt as a record keeps it.
type AttemptLog struct {
	// At is when the attempt started; Duration how long it took.
	At       time.Time     `json:"at"`
	Duration time.Duration `json:"duration"`
	// Status is the backend's status, 0 when it did not answer.
	Status int `json:"status,omitempty"`
	// Error is why the attempt failed ("" when delivered).
	Error string `json:"error,omitempty"`
}

// AgeFrom is when the event's max_age starts: when it was received, or
// last retried by an operator.
func (r *Record) AgeFrom() time.Time {
	if r.RetriedAt.After(r.ReceivedAt) {
		return r.RetriedAt
	}
	return r.ReceivedAt
}

// logAttempt appends a to the record's history, keeping the last
// MaxHistory.
func (r *Record) logAttempt(a AttemptLog) {
	r.History = append(r.History, a)
	if n := len(r.History) - MaxHistory; n > 0 {
		r.History = append(r.History[:0:0], r.History[n:]...)
	}
}

// Counts is what the spool holds of one scope.
type Counts struct {
	Pending, Dead, Discarded int
	// OldestPending is the received time of the oldest pending event.
	OldestPending time.Time
	// PendingByTarget counts the pending events by target key.
	PendingByTarget map[string]int
}

// Errors of the operator interface.
var (
	// ErrNotFound: the store holds no such event (delivered, purged,
	// never spooled).
	ErrNotFound = errors.New("no such spooled event")
	// ErrInFlight: a delivery attempt of the event is running; it cannot
	// be discarded or retried until the attempt ends.
	ErrInFlight = errors.New("a delivery attempt of the event is in flight")
)

// Filter selects events for List and RetryAll. Zero fields select all.
type Filter struct {
	// State selects events in one state.
	State State
	// Scope selects the events of one scope.
	Scope string
	// EventID selects the events with this provider event id.
	EventID string
	// Text selects the events whose provider event id, event type or last
	// error contains it (ASCII letters in either case), or whose id it is
	// (the console's search).
	Text string
}

// Match says whether rec is selected by f.
func (f Filter) Match(rec *Record) bool {
	return (f.State == "" || rec.State == f.State) && (f.Scope == "" || rec.Scope == f.Scope) &&
		(f.EventID == "" || rec.EventID == f.EventID) && (f.Text == "" || rec.containsText(f.Text))
}

// containsText says whether the record's provider event id, event type or
// last error contains text, ignoring ASCII case, or text is its id.
func (r *Record) containsText(text string) bool {
	if strconv.FormatUint(r.ID, 10) == text {
		return true
	}
	for _, field := range []string{r.EventID, r.EventType, r.LastError} {
		if containsFold(field, text) {
			return true
		}
	}
	return false
}

// containsFold says whether s contains sub, ignoring ASCII case.
func containsFold(s, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		if asciiEqualFold(s[i:i+n], sub) {
			return true
		}
	}
	return false
}

// asciiEqualFold says whether a and b, of one length, are equal ignoring
// ASCII case.
func asciiEqualFold(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// DefaultLimit is the size of a page when a listing names none; MaxLimit the
// largest page.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Page asks for one page of a listing, newest event first.
type Page struct {
	// Limit is the most events returned: DefaultLimit when 0, at most
	// MaxLimit.
	Limit int
	// After continues a listing after the event with this id (the last of
	// the previous page): events with a lower id. 0 starts at the newest.
	After uint64
}

// Size is the page's limit, defaults and bounds applied.
func (p Page) Size() int {
	if p.Limit <= 0 {
		return DefaultLimit
	}
	return min(p.Limit, MaxLimit)
}
