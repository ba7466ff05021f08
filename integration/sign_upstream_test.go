package integration

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// TestSignUpstream: with `sign_upstream`, what reverse_proxy forwards carries Standard Webhooks
// headers that the official standardwebhooks npm library accepts under each sign_upstream secret
// (two: a rotation, one v1 entry each): webhook-id is the event's id, webhook-timestamp the
// forwarding time. A Standard Webhooks provider's own webhook-* headers are replaced, not
// duplicated, so its secret no longer verifies the forwarded request. Through a spool, the
// delivery is signed at its attempt. No secret reaches Caddy's
// output or an answer (checked when the test ends).
func TestSignUpstream(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	stripeSecret, stdSecret, sign1, sign2 := "whsec_"+randomHex(t, 16), newWhsec(t), newWhsec(t), newWhsec(t)
	g := startGuard(t, globalOptions()+site(
		guardRoute("/stripe", "stripe {\n secret {env.STRIPE}\n sign_upstream {env.SIGN1}\n sign_upstream {env.SIGN2}\n}", up.Addr(), ""),
		guardRoute("/standard", "standard {\n secret {env.STD}\n sign_upstream {env.SIGN1}\n}", up.Addr(), ""),
	), map[string]string{"STRIPE": stripeSecret, "STD": stdSecret, "SIGN1": sign1, "SIGN2": sign2})

	// forwarded posts a signed event and returns what the upstream received, checking that the
	// guard signed it between the sending and the answer.
	forwarded := func(t *testing.T, path string, h http.Header, body []byte) testkit.Recorded {
		t.Helper()
		sg := g.sub(t)
		before := up.Count()
		sent := time.Now().Unix()
		resp := sg.post(path, h, body)
		answered := time.Now().Unix()
		expectStatus(t, path, resp, http.StatusOK)
		rec := expectForwarded(t, path, up, before, body)
		for _, name := range []string{"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"} {
			if n := len(rec.Header.Values(name)); n != 1 {
				t.Errorf("the upstream got %s %d times: %q", name, n, rec.Header.Values(name))
			}
		}
		ts, err := strconv.ParseInt(rec.Header.Get("Webhook-Timestamp"), 10, 64)
		if err != nil || ts < sent || ts > answered {
			t.Errorf("webhook-timestamp %q, want the forwarding time (%d to %d)", rec.Header.Get("Webhook-Timestamp"), sent, answered)
		}
		return rec
	}

	t.Run("stripe, two secrets", func(t *testing.T) {
		id := newID(t, "evt_up_")
		body := []byte(`{"id":"` + id + `","object":"event","type":"payment_intent.succeeded"}`)
		rec := forwarded(t, "/stripe", testkit.NodeSign(t, testkit.LibStripe, stripeSecret, body, id, time.Now().Unix()), body)
		if got := rec.Header.Get("Webhook-Id"); got != id {
			t.Errorf("webhook-id %q, want the event's id %q", got, id)
		}
		if entries := strings.Fields(rec.Header.Get("Webhook-Signature")); len(entries) != 2 || !strings.HasPrefix(entries[0], "v1,") || !strings.HasPrefix(entries[1], "v1,") {
			t.Errorf("webhook-signature %q, want two v1 entries", rec.Header.Get("Webhook-Signature"))
		}
		for i, secret := range []string{sign1, sign2} {
			if err := testkit.NodeVerify(t, testkit.LibStandardWebhooks, secret, rec.Header, rec.Body, 0); err != nil {
				t.Errorf("sign_upstream secret #%d: the standardwebhooks library refuses the forwarded request: %v", i+1, err)
			}
		}
		if rec.Header.Get("Stripe-Signature") == "" {
			t.Error("the provider's Stripe-Signature was removed")
		}
	})

	t.Run("standard, provider headers replaced", func(t *testing.T) {
		id := newID(t, "msg_up_")
		body := eventBody("evt_"+id, "invoice.paid")
		h := testkit.NodeSign(t, testkit.LibStandardWebhooks, stdSecret, body, id, time.Now().Unix())
		rec := forwarded(t, "/standard", h, body)
		if got := rec.Header.Get("Webhook-Id"); got != id {
			t.Errorf("webhook-id %q, want the provider's %q", got, id)
		}
		if rec.Header.Get("Webhook-Signature") == h.Get("webhook-signature") {
			t.Error("the provider's webhook-signature was forwarded as it was")
		}
		if err := testkit.NodeVerify(t, testkit.LibStandardWebhooks, sign1, rec.Header, rec.Body, 0); err != nil {
			t.Errorf("the standardwebhooks library refuses the forwarded request: %v", err)
		}
		if err := testkit.NodeVerify(t, testkit.LibStandardWebhooks, stdSecret, rec.Header, rec.Body, 0); err == nil {
			t.Error("the provider's secret verifies the forwarded request: its signature was kept")
		}
	})

	t.Run("spool", func(t *testing.T) {
		spooled := testkit.StartUpstream(t)
		sg := startGuard(t, globalOptions()+site(spoolRoute("/stripe",
			"stripe {\n secret {env.STRIPE}\n sign_upstream {env.SIGN1}\n spool {\n  to http://"+spooled.Addr()+"\n }\n}")),
			map[string]string{"STRIPE": stripeSecret, "SIGN1": sign1})
		id := newID(t, "evt_spool_up_")
		body := []byte(`{"id":"` + id + `","object":"event","type":"payment_intent.succeeded"}`)
		sent := time.Now().Unix()
		expectDropped(t, "spooled", sg.post("/stripe", testkit.NodeSign(t, testkit.LibStripe, stripeSecret, body, id, sent), body), "spooled")
		rec := spooled.WaitArrival(t)
		if string(rec.Body) != string(body) || rec.Header.Get("Webhook-Id") != id || rec.Header.Get("Webhook-Guard-Event-Id") != id {
			t.Fatalf("delivered %q with webhook-id %q", rec.Body, rec.Header.Get("Webhook-Id"))
		}
		if ts, err := strconv.ParseInt(rec.Header.Get("Webhook-Timestamp"), 10, 64); err != nil || ts < sent {
			t.Errorf("webhook-timestamp %q, want the delivery time (from %d)", rec.Header.Get("Webhook-Timestamp"), sent)
		}
		if err := testkit.NodeVerify(t, testkit.LibStandardWebhooks, sign1, rec.Header, rec.Body, 0); err != nil {
			t.Errorf("the standardwebhooks library refuses the spooled delivery: %v", err)
		}
		if n := spooled.Count(); n != 1 {
			t.Errorf("the backend received %d deliveries, want 1", n)
		}
	})
}
