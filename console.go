package webhookguard

import (
	"cmp"

	"github.com/hookguard/caddy-webhook-guard/console"
)

// The console (package console, handler webhook_guard_console) reads the
// guard's spools and recent outcomes through these.
func init() {
	console.Use(console.Guard{Spools: registeredSpools, RedactHeader: redactHeader, RedactQuery: redactQuery})
}

// noteOutcome gives the delivery's outcome to the console's recent outcomes,
// when a console is loaded: never a body, a header or a secret; the event's
// id and type only once verified (d.event is set after verification).
func (d *delivery) noteOutcome(outcome, reason string, status int) {
	if !console.Recording() {
		return
	}
	console.Record(console.Outcome{
		At:        now(),
		Scope:     cmp.Or(d.h.scope, d.h.Scope, d.h.Provider),
		Provider:  d.h.Provider,
		Outcome:   outcome,
		Reason:    d.h.redact(reason),
		Status:    status,
		EventID:   d.event.ID,
		EventType: d.event.Type,
		ClientIP:  d.clientIP,
	})
}
