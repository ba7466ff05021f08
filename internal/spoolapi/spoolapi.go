// Package spoolapi is the wire format of the spool's admin API
// (/webhook_guard/spool): written by the admin module, read by the
// `caddy webhook-guard spool` commands, defined once for both; and the
// header names a guard and its tools share.
package spoolapi

import (
	"net/http"
	"time"
)

// Headers a guard sets.
const (
	// OutcomeHeader tells whoever sent an event that was acknowledged
	// without being forwarded why (duplicate, ignored_type, spooled).
	OutcomeHeader = "Webhook-Guard-Outcome"
	// EventIDHeader carries the provider's event id to the backend, the
	// same at every attempt: a backend drops a redelivery by it.
	EventIDHeader = "Webhook-Guard-Event-Id"
	// AttemptHeader is the number of a spooled delivery's attempt, from 1.
	AttemptHeader = "Webhook-Guard-Attempt"
)

// The states of a spooled event, as the admin API shows and filters them.
const (
	StatePending   = "pending"
	StateDead      = "dead"
	StateDiscarded = "discarded"
)

// Event is a spooled event as the admin API lists it.
type Event struct {
	ID            uint64     `json:"id"`
	Scope         string     `json:"scope"`
	Provider      string     `json:"provider"`
	EventID       string     `json:"event_id"`
	EventType     string     `json:"event_type"`
	State         string     `json:"state"`
	Attempts      int        `json:"attempts"`
	ReceivedAt    *time.Time `json:"received_at"`
	NextAttemptAt *time.Time `json:"next_attempt_at"` // null when not due (dead, discarded)
	LastError     string     `json:"last_error"`
	// Paused says the event's scope is paused: it waits for a resume.
	Paused bool `json:"paused,omitempty"`
	// Waiting says why a pending event is not delivered now, when it is
	// not just its time: "scope paused", "no handler delivers it".
	Waiting string `json:"waiting,omitempty"`
	// DiscardedAt and DiscardedBy say when and by whom it was discarded.
	DiscardedAt *time.Time `json:"discarded_at,omitempty"`
	DiscardedBy string     `json:"discarded_by,omitempty"`
}

// Attempt is one delivery attempt of an event.
type Attempt struct {
	At         time.Time `json:"at"`
	DurationMS int64     `json:"duration_ms"`
	Status     int       `json:"status,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// EventDetail is one event with its request, credentials redacted, as
// GET /webhook_guard/spool/<id> shows it.
type EventDetail struct {
	Event
	Method   string      `json:"method"`
	Path     string      `json:"path"`
	Query    string      `json:"query"`
	ClientIP string      `json:"client_ip"`
	Headers  http.Header `json:"headers"`
	// Body is the body when it is valid UTF-8, else BodyBase64 is.
	Body       *string `json:"body,omitempty"`
	BodyBase64 *string `json:"body_base64,omitempty"`
	// History is the last attempts, oldest first.
	History []Attempt `json:"history,omitempty"`
}

// List is the answer of GET /webhook_guard/spool: one page of events,
// newest first, and the scopes that are paused.
type List struct {
	Events []Event `json:"events"`
	// Next, when set, is the value of ?after= for the next page.
	Next string `json:"next,omitempty"`
	// Paused lists the paused scopes.
	Paused []string `json:"paused"`
	// Admin is the admin address that answered (set by the CLI).
	Admin string `json:"-"`
}
