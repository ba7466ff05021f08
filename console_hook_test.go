package webhookguard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hookguard/caddy-webhook-guard/console"
)

// consolePage provisions a console, as Caddy would, and returns a function
// that reads one of its pages.
func consolePage(t *testing.T) func(path string) string {
	t.Helper()
	c := new(console.Handler)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := c.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Cleanup() })
	return func(path string) string {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:9180"+path, nil)
		w := httptest.NewRecorder()
		req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, &caddyhttp.Server{})
		if err := c.ServeHTTP(w, req, nil); err != nil || w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, w.Code, err)
		}
		return w.Body.String()
	}
}

// TestConsoleRecentOutcomes: with a console loaded, the guard's outcomes
// reach its recent outcomes: the reason, the status and the client; the
// event id and type only once verified; never a body, a header or a secret.
func TestConsoleRecentOutcomes(t *testing.T) {
	if console.Recording() {
		t.Fatal("a console is loaded before the test")
	}
	h, _ := ivyGuard(t)
	up := &upstreamStub{}
	forged := `{"id":"evt_forged_console","type":"order_updated","card":"forged-body-text"}`
	hdr := http.Header{"X-Ivy-Signature": {strings.Repeat("ab", 32)}, "X-Other": {"header-value-text"}}
	if _, err := send(t, h, up, http.MethodPost, "203.0.113.9:5555", hdr, forged); err == nil {
		t.Fatal("forged event accepted")
	}
	page := consolePage(t)
	if got := page("/recent"); !strings.Contains(got, "No outcome") {
		t.Fatal("an outcome from before the console was loaded is shown")
	}

	if _, err := send(t, h, up, http.MethodPost, "203.0.113.9:5555", hdr, forged); err == nil {
		t.Fatal("forged event accepted")
	}
	good := `{"id":"evt_good_console","type":"order_updated","card":"good-body-text"}`
	w, err := send(t, h, up, http.MethodPost, "203.0.113.10:5555", ivyHeaders(good), good)
	if err != nil || w.Code != http.StatusOK {
		t.Fatalf("signed event: %d %v", w.Code, err)
	}
	got := page("/recent")
	for _, want := range []string{
		"invalid_signature", "does not match any of 1 secret", "203.0.113.9", "401",
		"forwarded", "evt_good_console", "order_updated", "203.0.113.10", "upstream accepted",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("recent outcomes lack %q:\n%s", want, got)
		}
	}
	for _, never := range []string{"evt_forged_console", "forged-body-text", "good-body-text", "header-value-text", strings.Repeat("ab", 32), testIvySecret} {
		if strings.Contains(got, never) {
			t.Errorf("recent outcomes show %q", never)
		}
	}
	if overview := page("/"); !strings.Contains(overview, "2 outcomes in the last hour: forwarded 1, invalid_signature 1.") {
		t.Error("the overview's chart does not count the outcomes")
	}
}
