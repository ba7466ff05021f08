package integration

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// TestVerifierEdges drives the verifiers' edges through the built Caddy:
// repeated headers refused, Shopify's header names without "X-" accepted,
// Slack's ssl_check probe answered 200 without forwarding (and nothing else
// unsigned), and the event in the {http.webhook_guard.*} placeholders as in
// the deprecated {http.webhook.*} ones.
func TestVerifierEdges(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	stdSecret, shopSecret, slackSecret, ghSecret := newWhsec(t), newSecret(t, "shpss_"), newSecret(t, "slack_"), newSecret(t, "gh_")
	proxy := "header_up X-Event-Id {http.webhook_guard.event_id}\n" +
		"header_up X-Event-Type {http.webhook_guard.event_type}\n" +
		"header_up X-Provider {http.webhook_guard.provider}\n" +
		"header_up X-Old-Event-Id {http.webhook.event_id}"
	g := startGuard(t, globalOptions()+site(
		guardRoute("/standard", "standard {\n secret {env.STD}\n}", up.Addr(), proxy),
		guardRoute("/shopify", "shopify {\n secret {env.SHOP}\n}", up.Addr(), proxy),
		guardRoute("/slack", "slack {\n secret {env.SLACK}\n}", up.Addr(), proxy),
		guardRoute("/github", "github {\n secret {env.GH}\n}", up.Addr(), proxy),
	), map[string]string{"STD": stdSecret, "SHOP": shopSecret, "SLACK": slackSecret, "GH": ghSecret})

	refused := func(t *testing.T, what, path string, h http.Header, body []byte, outcome, reason string) {
		t.Helper()
		sg := g.sub(t)
		before, mark := up.Count(), g.LogMark()
		resp := sg.post(path, h, body)
		expectStatus(t, what, resp, http.StatusUnauthorized)
		expectNotForwarded(t, what, up, before)
		sg.expectLog(mark, logWant{Outcome: outcome, Reason: reason, Status: 401})
	}

	t.Run("repeated headers", func(t *testing.T) {
		now := time.Now().Unix()
		id := newID(t, "msg_rep_")
		body := eventBody(id, "payment.succeeded")
		h := signStandard(t, stdSecret, id, now, body)
		for _, name := range []string{"Webhook-Id", "Webhook-Signature", "Webhook-Timestamp"} {
			hh := h.Clone()
			hh.Add(name, hh.Get(name))
			refused(t, "two "+name, "/standard", hh, body, "invalid_signature", "header "+name+" given 2 times")
		}
		gh := headers("X-Hub-Signature-256", "sha256="+hex.EncodeToString(hmacSHA256([]byte(ghSecret), body)),
			"X-GitHub-Delivery", newID(t, "d_"))
		gh.Add("X-GitHub-Delivery", newID(t, "d_"))
		refused(t, "two X-GitHub-Delivery", "/github", gh, body, "invalid_signature", "header X-Github-Delivery given 2 times")

		// The same delivery with each header once is forwarded, once.
		sg := g.sub(t)
		before := up.Count()
		expectStatus(t, "valid", sg.post("/standard", h, body), http.StatusOK)
		rec := expectForwarded(t, "valid", up, before, body)
		if got := rec.Header.Values("Webhook-Id"); len(got) != 1 || got[0] != id {
			t.Errorf("upstream webhook-id %q", got)
		}
	})

	t.Run("shopify header names", func(t *testing.T) {
		sg := g.sub(t)
		body := []byte(`{"id":820982911946154508,"email":"jön@example.com"}`)
		sig := base64.StdEncoding.EncodeToString(hmacSHA256([]byte(shopSecret), body))
		id := newID(t, "shop_")
		h := headers("shopify-hmac-sha256", sig, "shopify-webhook-id", id, "shopify-topic", "orders/create")
		before, mark := up.Count(), g.LogMark()
		expectStatus(t, "new names", sg.post("/shopify", h, body), http.StatusOK)
		rec := expectForwarded(t, "new names", up, before, body)
		if rec.Header.Get("X-Event-Id") != id || rec.Header.Get("X-Event-Type") != "orders/create" || rec.Header.Get("X-Provider") != "shopify" || rec.Header.Get("X-Old-Event-Id") != id {
			t.Errorf("placeholders at the upstream: %v", rec.Header)
		}
		sg.expectLog(mark, logWant{Provider: "shopify", Outcome: "forwarded", EventID: id, Type: "orders/create"})

		body2 := []byte(`{"id":820982911946154509}`)
		sig2 := base64.StdEncoding.EncodeToString(hmacSHA256([]byte(shopSecret), body2))
		both := headers("shopify-hmac-sha256", sig2, "X-Shopify-Hmac-Sha256", sig, "shopify-webhook-id", newID(t, "shop_"))
		refused(t, "both names, different values", "/shopify", both, body2, "invalid_signature", "given 2 times")
	})

	t.Run("slack ssl_check probe", func(t *testing.T) {
		sg := g.sub(t)
		form := headers("Content-Type", "application/x-www-form-urlencoded")
		before, mark := up.Count(), g.LogMark()
		resp := sg.post("/slack", form, []byte("ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO"))
		expectDropped(t, "probe", resp, "probe")
		expectNotForwarded(t, "probe", up, before)
		sg.expectLog(mark, logWant{Provider: "slack", Outcome: "probe", Status: 200})

		refused(t, "unsigned slash command", "/slack", form, []byte("ssl_check=1&token=x&command=%2Fpay"), "invalid_signature", "X-Slack-Signature header missing")
		refused(t, "unsigned JSON", "/slack", headers("Content-Type", "application/json"), []byte(`{"ssl_check":1,"token":"x"}`), "invalid_signature", "header missing")

		// A signed request is verified as ever.
		body := []byte("token=x&command=%2Fweather&trigger_id=" + randomHex(t, 8))
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		h := withHeaders(form, "X-Slack-Request-Timestamp", ts,
			"X-Slack-Signature", "v0="+hex.EncodeToString(hmacSHA256([]byte(slackSecret), []byte("v0:"+ts+":"), body)))
		before = up.Count()
		expectStatus(t, "signed", sg.post("/slack", h, body), http.StatusOK)
		expectForwarded(t, "signed", up, before, body)
	})
}

// TestEventIDHeaderSafe: the README's `header_up X-Webhook-Event-Id {http.webhook_guard.event_id}`
// delivers events whose id has control characters or is 20 KB long (was 502, or 431 at the
// upstream, on every copy): the placeholder holds the id's header-safe form, "~b64:" and its
// base64url up to 188 bytes, else "~sha256:" and its hex SHA-256, exactly as asserted at the
// upstream; the log line keeps the raw id, and a replay is still a duplicate.
func TestEventIDHeaderSafe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	secret := "whsec_" + randomHex(t, 16)
	g := startGuard(t, globalOptions()+site(
		guardRoute("/stripe", "stripe {\n secret {env.STRIPE}\n}", up.Addr(),
			"header_up X-Webhook-Event-Id {http.webhook_guard.event_id}\nheader_up X-Webhook-Event-Type {http.webhook_guard.event_type}"),
	), map[string]string{"STRIPE": secret})

	control := newID(t, "evt_\x01\n\t")
	long := newID(t, "evt_") + strings.Repeat("a", 20<<10)
	longSum := sha256.Sum256([]byte(long))
	for _, c := range []struct {
		name, id, want string
	}{
		{"control characters", control, "~b64:" + base64.RawURLEncoding.EncodeToString([]byte(control))},
		{"20 KB", long, "~sha256:" + hex.EncodeToString(longSum[:])},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := g.sub(t)
			idJSON, _ := json.Marshal(c.id)
			body := []byte(`{"id":` + string(idJSON) + `,"object":"event","type":"payment_intent.succeeded"}`)
			h := testkit.NodeSign(t, testkit.LibStripe, secret, body, c.id, time.Now().Unix())
			before, mark := up.Count(), g.LogMark()
			resp := g.post("/stripe", h, body)
			expectStatus(t, c.name, resp, http.StatusOK)
			rec := expectForwarded(t, c.name, up, before, body)
			if got := rec.Header.Values("X-Webhook-Event-Id"); len(got) != 1 || got[0] != c.want {
				t.Errorf("the upstream got X-Webhook-Event-Id %.80q, want %.80q", got, c.want)
			}
			if got := rec.Header.Get("X-Webhook-Event-Type"); got != "payment_intent.succeeded" {
				t.Errorf("the upstream got X-Webhook-Event-Type %q", got)
			}
			// The log line keeps the raw id (matched here without logWant, which would print 20 KB).
			rawID := func(outcome string) func(testkit.LogEntry) bool {
				return func(e testkit.LogEntry) bool {
					return e.Logger == guardLogger && e.Field("outcome") == outcome && e.Field("event_id") == c.id
				}
			}
			g.WaitLogSince(t, mark, rawID("forwarded"))

			before, mark = up.Count(), g.LogMark()
			expectDropped(t, c.name+" replayed", g.post("/stripe", h, body), "duplicate")
			expectNotForwarded(t, c.name+" replayed", up, before)
			g.WaitLogSince(t, mark, rawID("duplicate"))
		})
	}
}
