package webhookguard

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// TestEventTypesRefused: an `events` entry with a character no provider's
// type has (the trailing comma of `events a, b`, quotes, a space inside a
// quoted type, a wildcard) fails the Caddyfile with the line, and the JSON
// config at provisioning naming the option; the types providers use pass.
func TestEventTypesRefused(t *testing.T) {
	for line, want := range map[string]string{
		"events payment_intent.succeeded, charge.refunded": `events: "payment_intent.succeeded," has ',', which no provider's event type has: list the types separated by spaces, without commas or quotes`,
		`events 'invoice.paid'`:                            `events: "'invoice.paid'" has '\''`,
		"events `invoice.paid`":                            "", // Caddy's backquotes quote: invoice.paid
		`events "invoice paid"`:                            `events: "invoice paid" has a space`,
		`events "invoice.paid\"`:                           `has '"'`,
		"events payment_intent.*":                          "types are matched exactly: there are no wildcards",
		"events paiement.réussi":                           "has a non-ASCII character",
		`events ""`:                                        "an event type is empty",
		"events orders/create charge:confirmed PAYMENT.CAPTURE.COMPLETED app_mention invoice-paid": "",
	} {
		d := caddyfile.NewTestDispenser("webhook_guard hmac {\nsecret s3cr3t-value\nheader X-Sig\n" + line + "\n}")
		err := new(Handler).UnmarshalCaddyfile(d)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", line, err)
		case want == "":
		case err == nil || !strings.Contains(err.Error(), want):
			t.Errorf("%s: error %v, want %q", line, err, want)
		case !strings.Contains(err.Error(), ", at Testfile:4"):
			t.Errorf("%s: error %v without its line", line, err)
		}
	}
	for _, e := range []string{"charge.refunded,", `"charge.refunded"`, "charge refunded", ""} {
		h := Handler{Provider: "ivy", Secrets: []string{"s3cr3t-value"}, DedupeOff: true, Events: []string{"charge.succeeded", e}}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := h.Provision(ctx)
		h.Cleanup()
		cancel()
		if err == nil || !strings.Contains(err.Error(), ": events: ") {
			t.Errorf("JSON events %q: error %v, want one naming events", e, err)
		}
	}
}

// TestEventTypesWarnedAtLoad: for providers that publish their types, an
// `events` entry outside the list is a warning at load (with the nearest
// published type when it looks like a typo), never an error; providers
// without a list warn about nothing.
func TestEventTypesWarnedAtLoad(t *testing.T) {
	for _, c := range []struct {
		provider string
		events   []string
		warned   map[string]string // event_type -> did_you_mean ("" for none)
	}{
		{"stripe", []string{"payment_intent.succeeded", "charge.refunded"}, nil},
		{"stripe", []string{"payment_intent.succeded", "charge.refunded", "treasury.new_thing.created"},
			map[string]string{"payment_intent.succeded": "payment_intent.succeeded", "treasury.new_thing.created": ""}},
		{"github", []string{"push", "pull_requests", "ping"}, map[string]string{"pull_requests": "pull_request"}},
		{"shopify", []string{"orders/create", "orders/crate", "customers/redact"}, map[string]string{"orders/crate": "orders/create"}},
		{"ivy", []string{"anything.at_all"}, nil},
		{"standard", []string{"invoice.paid"}, nil},
	} {
		scheme, _ := verify.Lookup(c.provider)
		core, logs := observer.New(zapcore.DebugLevel)
		h := &Handler{Provider: c.provider, Events: c.events, scheme: scheme, logger: zap.New(core)}
		if err := h.provisionEvents(); err != nil {
			t.Fatalf("%s %v: %v", c.provider, c.events, err)
		}
		got := map[string]string{}
		for _, e := range logs.All() {
			f := e.ContextMap()
			if e.Level != zapcore.WarnLevel || e.Message != "events names a type the provider does not publish: check it, events of the types not listed are answered 200 ignored_type and never forwarded" || f["provider"] != c.provider {
				t.Errorf("%s: log line %s %q %v", c.provider, e.Level, e.Message, f)
				continue
			}
			near, _ := f["did_you_mean"].(string)
			got[f["event_type"].(string)] = near
		}
		if len(got) != len(c.warned) {
			t.Errorf("%s %v: warned about %v, want %v", c.provider, c.events, got, c.warned)
		}
		for typ, near := range c.warned {
			if g, ok := got[typ]; !ok || g != near {
				t.Errorf("%s: %q warned %v with did_you_mean %q, want %q", c.provider, typ, ok, g, near)
			}
		}
	}
}

// TestPublishedEventTypes: each provider's list is sorted, without
// duplicates, and every entry passes checkEventType.
func TestPublishedEventTypes(t *testing.T) {
	for _, name := range []string{"stripe", "github", "shopify"} {
		s, _ := verify.Lookup(name)
		if len(s.EventTypes) < 50 {
			t.Errorf("%s: %d published types", name, len(s.EventTypes))
		}
		for i, e := range s.EventTypes {
			if err := checkEventType(e); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if i > 0 && s.EventTypes[i-1] >= e {
				t.Errorf("%s: %q after %q: not sorted", name, e, s.EventTypes[i-1])
			}
			if !s.PublishesEventType(e) {
				t.Errorf("%s: %q not found", name, e)
			}
		}
	}
}

// TestSeenTypesBounded: each type is first once; past maxSeenTypes no new
// type is remembered (nor reported first), so the set stays bounded.
func TestSeenTypesBounded(t *testing.T) {
	var s seenTypes
	if !s.first("a") || s.first("a") {
		t.Fatal("a: first twice, or never")
	}
	for i := 1; i < maxSeenTypes; i++ {
		if !s.first("t" + strconv.Itoa(i)) {
			t.Fatalf("type %d not first", i)
		}
	}
	for range 2 { // neither reported first nor remembered, however often it comes
		if s.first("one.too.many") || len(s.types) != maxSeenTypes {
			t.Fatalf("past the bound: %d types remembered", len(s.types))
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "abc", 0}, {"payment_intent.succeded", "payment_intent.succeeded", 1},
		{"kitten", "sitting", 3}, {"a", "abcdefgh", 4}, {"orders/crate", "orders/create", 1},
	} {
		if got := editDistance(c.a, c.b, 4); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
