package integration

import (
	"net/http"
	"testing"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// looseProxiesWarning starts the warning webhook_guard logs when an allow-list meets
// trusted_proxies without trusted_proxies_strict.
const looseProxiesWarning = "allow_ips is enforced on a client IP read from a trusted proxy's headers without trusted_proxies_strict"

// TestTrustedProxiesStrict sends, from a trusted proxy (127.0.0.1), an Ivy event with
// X-Forwarded-For: 18.159.27.193, 203.0.113.9: the client (203.0.113.9) prepended one of Ivy's
// addresses. Without trusted_proxies_strict Caddy takes the leftmost address and the event passes
// Ivy's allow-list: the guard warns, once per handler. With it, Caddy takes the rightmost
// untrusted address and the guard refuses 403, without the warning.
func TestTrustedProxiesStrict(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	for _, tc := range []struct {
		name     string
		strict   string
		want     int
		clientIP string
	}{
		{"not strict: warned", "", http.StatusOK, "18.159.27.193"},
		{"strict: refused", "\t\ttrusted_proxies_strict\n", http.StatusForbidden, "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := testkit.StartUpstream(t)
			secret := newSecret(t, "ivy_proxy_")
			servers := "servers {\n" +
				"\t\ttrusted_proxies static 127.0.0.1/32\n" +
				"\t\tclient_ip_headers X-Forwarded-For\n" + tc.strict +
				"\t}"
			g := startGuard(t, globalOptions(servers)+site(
				guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n}", up.Addr(), ""),
				guardRoute("/open", "ivy {\n secret {env.IVY_SECRET}\n allow_ips any\n}", up.Addr(), ""),
			), map[string]string{"IVY_SECRET": secret})

			mark := g.LogMark()
			for range 2 {
				id := newID(t, "evt_proxy_")
				body := eventBody(id, "payment.succeeded")
				h := withHeaders(signIvy(secret, body), "X-Forwarded-For", "18.159.27.193, 203.0.113.9")
				before := up.Count()
				resp := g.post("/ivy", h, body)
				expectStatus(t, "spoofed X-Forwarded-For", resp, tc.want)
				if tc.want == http.StatusOK {
					expectForwarded(t, "spoofed X-Forwarded-For", up, before, body)
					g.expectLog(mark, logWant{Outcome: "forwarded", ClientIP: tc.clientIP, EventID: id})
				} else {
					expectNotForwarded(t, "spoofed X-Forwarded-For", up, before)
					g.expectLog(mark, logWant{Outcome: "ip_denied", ClientIP: tc.clientIP, Status: 403})
				}
				// The handler without an allow-list never warns.
				body = eventBody(newID(t, "evt_open_"), "payment.succeeded")
				expectStatus(t, "no allow-list", g.post("/open", withHeaders(signIvy(secret, body),
					"X-Forwarded-For", "18.159.27.193, 203.0.113.9"), body), http.StatusOK)
			}
			g.Stop()
			var warnings []testkit.LogEntry
			for _, e := range g.Logs()[mark:] {
				if e.Logger == guardLogger && len(e.Msg) >= len(looseProxiesWarning) && e.Msg[:len(looseProxiesWarning)] == looseProxiesWarning {
					warnings = append(warnings, e)
				}
			}
			want := 0
			if tc.strict == "" {
				want = 1
			}
			if len(warnings) != want {
				t.Fatalf("%d warnings about trusted_proxies_strict, want %d", len(warnings), want)
			}
			if want == 1 && (warnings[0].Level != "warn" || warnings[0].Field("provider") != "ivy") {
				t.Errorf("warning %s: want level warn, provider ivy", warnings[0].Raw)
			}
		})
	}
}
