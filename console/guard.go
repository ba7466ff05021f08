package console

import (
	"net/http"
	"sync/atomic"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

// Guard is what the console reads of the guard's handlers of the same Caddy.
// Package webhookguard (the guard) provides it when it is loaded, with Use;
// the console package does not import the guard, which imports it.
type Guard struct {
	// Spools returns the spools of the loaded configurations (one per
	// store), as the admin API finds them.
	Spools func() []*spool.Spool
	// RedactHeader returns a copy of a stored request's headers with the
	// credentials redacted, as the admin API shows them.
	RedactHeader func(http.Header) http.Header
	// RedactQuery returns a raw query with the values of credential
	// parameters redacted, as the admin API shows it.
	RedactQuery func(string) string
}

// guard is the Guard given to Use.
var guard atomic.Pointer[Guard]

// Use makes g the guard the consoles read. Package webhookguard calls it
// from its init.
func Use(g Guard) { guard.Store(&g) }

// theGuard returns the guard given to Use; without one (the console built
// without the guard), no spool and nothing shown of a request's headers or
// query.
func theGuard() Guard {
	g := guard.Load()
	if g == nil {
		return Guard{}
	}
	return *g
}

// redactHeader redacts h with the guard's rules; without a guard every value
// is hidden.
func (g Guard) redactHeader(h http.Header) http.Header {
	if g.RedactHeader != nil {
		return g.RedactHeader(h)
	}
	out := make(http.Header, len(h))
	for name, values := range h {
		out[name] = make([]string, len(values))
		for i := range values {
			out[name][i] = redacted
		}
	}
	return out
}

// redactQuery redacts q with the guard's rules; without a guard a non-empty
// query is hidden.
func (g Guard) redactQuery(q string) string {
	if g.RedactQuery != nil {
		return g.RedactQuery(q)
	}
	if q == "" {
		return ""
	}
	return redacted
}

// redacted stands for a hidden value.
const redacted = "[REDACTED]"
