package webhookguard

import (
	"fmt"
	"time"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// timestamped reports whether the handler's events carry a signed timestamp
// checked against the tolerance: the scheme signs one (standard, stripe,
// slack), or hmac was given a timestamp_header.
func (h *Handler) timestamped() bool {
	if s, ok := verify.Lookup(h.Provider); ok && s.Timestamped {
		return true
	}
	return h.Provider == "hmac" && h.HMAC != nil && h.HMAC.TimestampHeader != ""
}

// checkReplayWindow refuses, for a timestamped scheme, a replay_window
// shorter than twice the tolerance: a delivery signed up to one tolerance
// ahead of the clock passes the timestamp check until one tolerance after
// its timestamp, so its exact replay would be forwarded again once its id is
// forgotten. tolerance is the effective one (the default when not set).
func (h *Handler) checkReplayWindow(tolerance time.Duration) error {
	window := time.Duration(h.ReplayWindow)
	if window <= 0 || !h.timestamped() || window >= 2*tolerance {
		return nil
	}
	return fmt.Errorf("replay_window: %s is shorter than twice the tolerance (2 × %s): a replay of a delivery signed up to %s ahead of the clock passes the timestamp check for %s; set replay_window to at least %s, or leave it out (an event with a signed timestamp is then remembered as long as that check lets it through)",
		caddyDuration(window), caddyDuration(tolerance), caddyDuration(tolerance), caddyDuration(2*tolerance), caddyDuration(2*tolerance))
}

// caddyDuration writes d as it would be written in a Caddyfile: 5m, 1h30m, 2s.
func caddyDuration(d time.Duration) string {
	s := d.String()
	for _, unit := range []string{"m0s", "h0m"} {
		if len(s) > len(unit) && s[len(s)-len(unit):] == unit {
			s = s[:len(s)-2]
		}
	}
	return s
}
