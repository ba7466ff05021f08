package webhookguard

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// checkEventType refuses an `events` entry that no provider's event type
// could equal: types are letters, digits and . _ - / : ("payment.succeeded",
// "orders/create", "charge:confirmed"). A comma or a quote is a list written
// as in another language (`events a, b` would wait for "a," for ever), a
// space inside a quoted type never matches, and a * is not a wildcard.
func checkEventType(t string) error {
	if t == "" {
		return errors.New("an event type is empty")
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			continue
		case c == '.' || c == '_' || c == '-' || c == '/' || c == ':':
			continue
		}
		what := strconv.QuoteRune(rune(c))
		if c >= 0x80 {
			what = "a non-ASCII character"
		} else if c == ' ' {
			what = "a space"
		}
		hint := "list the types separated by spaces, without commas or quotes; a type has letters, digits and . _ - / : only"
		if c == '*' || c == '?' {
			hint = "types are matched exactly: there are no wildcards, list each type"
		}
		return fmt.Errorf("%s has %s, which no provider's event type has: %s", strconv.Quote(t), what, hint)
	}
	return nil
}

// provisionEvents checks `events` and builds the set of forwarded types. A
// type the provider does not publish (stripe, github, shopify list theirs)
// is logged at WARN, with the nearest published type when one is close: it
// is a typo or a type newer than the list, and events of other types are
// answered 200 and never forwarded.
func (h *Handler) provisionEvents() error {
	h.ignored = &seenTypes{}
	if len(h.Events) == 0 {
		return nil
	}
	h.events = make(map[string]struct{}, len(h.Events))
	for _, e := range h.Events {
		if err := checkEventType(e); err != nil {
			return fmt.Errorf("events: %w", err)
		}
		h.events[e] = struct{}{}
	}
	for _, e := range h.Events {
		if h.scheme.PublishesEventType(e) {
			continue
		}
		fields := []zap.Field{zap.String("provider", h.Provider), zap.String("event_type", e)}
		if near := nearest(e, h.scheme.EventTypes); near != "" {
			fields = append(fields, zap.String("did_you_mean", near))
		}
		h.logger.Warn("events names a type the provider does not publish: check it, events of the types not listed are answered 200 ignored_type and never forwarded", fields...)
	}
	return nil
}

// nearest returns the published type closest to t when it is within three
// edits (a typo), else "".
func nearest(t string, published []string) string {
	best, bestDist := "", 4
	for _, p := range published {
		if d := editDistance(t, p, bestDist); d < bestDist {
			best, bestDist = p, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, or limit when it is
// at least limit.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], limit)
}

// maxSeenTypes bounds the ignored event types a handler remembers having
// warned about; past it, the first event of a new type is logged at INFO
// like the others. Types come from verified events only, so only a sender
// holding the secret can make new ones.
const maxSeenTypes = 1000

// seenTypes remembers the event types already dropped as ignored_type, so
// that the first of each is logged at WARN: an event type missing from
// `events` is a lost event, while later ones of a type seen once are the
// expected life of a filter.
type seenTypes struct {
	mu    sync.Mutex
	types map[string]struct{}
}

// first reports whether t is seen for the first time (and remembers it,
// while there is room).
func (s *seenTypes) first(t string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, seen := s.types[t]; seen || len(s.types) >= maxSeenTypes {
		return false
	}
	if s.types == nil {
		s.types = make(map[string]struct{})
	}
	s.types[t] = struct{}{}
	return true
}

// ignoreType answers 200 ignored_type for a verified event whose type is not
// in `events`: at WARN for the first event of its type since the config was
// loaded, at INFO after.
func (d *delivery) ignoreType(w http.ResponseWriter) {
	reason := fmt.Sprintf("event type %q is not in events", d.event.Type)
	if d.h.ignored.first(d.event.Type) {
		d.logAt(zapcore.WarnLevel, outcomeIgnoredType, reason+" (the first of this type since the config was loaded; later ones are logged at INFO)", http.StatusOK)
	} else {
		d.log(outcomeIgnoredType, reason, http.StatusOK)
	}
	w.Header().Set(outcomeHeader, outcomeIgnoredType)
	w.WriteHeader(http.StatusOK)
}
