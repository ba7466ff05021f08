// Package spoolapi is the wire format of the spool's admin API
// (/webhook_guard/spool): written by the admin module, read by the
// `caddy webhook-guard spool` commands, defined once for both.
package spoolapi

import (
	"net/http"
	"time"
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
	NextAttemptAt *time.Time `json:"next_attempt_at"` // null when not due (dead)
	LastError     string     `json:"last_error"`
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
}
