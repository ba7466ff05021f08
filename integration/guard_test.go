package integration

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// coreScheme is one of the issue-2 schemes as TestCoreSchemes drives it.
type coreScheme struct {
	name, path string
	// body returns an event whose identity is id, with non-ASCII bytes in it.
	body func(id string) []byte
	// eventID is the id the module derives from the event made by body(id).
	eventID func(id string) string
	// sign signs body as the provider would, with secret; ts is used by timestamped schemes.
	sign func(t testing.TB, secret, id string, ts int64, body []byte) http.Header
	// secret is configured, wrong is not.
	secret, wrong string
	// authHeader is the header that authenticates the event (removed for "missing header").
	authHeader string
	// timestamped says whether stale and future timestamps are refused.
	timestamped bool
	// keyOnly says the scheme authenticates the sender with a static key and not the body
	// (ivpay): its "tampered" case alters the key, since a changed body cannot be detected.
	keyOnly bool
}

// TestCoreSchemes runs ivy, ivpay and standard through one Caddy: the valid event forwarded byte
// for byte, every refusal (tampered, wrong secret, missing header, stale and future timestamp,
// GET, over max_body with and without Content-Length) answered without reaching the upstream,
// and each outcome logged with its provider, client IP, event id and reason.
func TestCoreSchemes(t *testing.T) {
	up := testkit.StartUpstream(t)
	ivySecret, ivpayKey, stdSecret := newSecret(t, "ivy_"), newSecret(t, "ivpay_"), newWhsec(t)
	g := startGuard(t, globalOptions()+site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n max_body 1KiB\n}", up.Addr(), ""),
		guardRoute("/ivpay", "ivpay {\n api_key {env.IVPAY_KEY}\n max_body 1KiB\n}", up.Addr(), ""),
		guardRoute("/standard", "standard {\n secret {env.STD_SECRET}\n max_body 1KiB\n}", up.Addr(), ""),
	), map[string]string{"IVY_SECRET": ivySecret, "IVPAY_KEY": ivpayKey, "STD_SECRET": stdSecret})

	schemes := []coreScheme{
		{
			name: "ivy", path: "/ivy", secret: ivySecret, wrong: newSecret(t, "ivy_"), authHeader: "X-Ivy-Signature",
			body:    func(id string) []byte { return eventBody(id, "payment.succeeded", `"note":"café ☕ 😀"`) },
			eventID: func(id string) string { return id },
			sign: func(_ testing.TB, secret, _ string, _ int64, body []byte) http.Header {
				return signIvy(secret, body)
			},
		},
		{
			name: "ivpay", path: "/ivpay", secret: ivpayKey, wrong: newSecret(t, "ivpay_"), authHeader: "X-API-KEY",
			keyOnly: true,
			body: func(id string) []byte {
				return []byte(`{"payment_id":"` + id + `","status":"paid","amount":"12.50 €","merchant":"Zürich Ä"}`)
			},
			eventID: func(id string) string { return id + "/paid" },
			sign: func(_ testing.TB, key, _ string, _ int64, _ []byte) http.Header {
				return headers("X-API-KEY", key)
			},
		},
		{
			name: "standard", path: "/standard", secret: stdSecret, wrong: newWhsec(t), authHeader: "webhook-signature",
			timestamped: true,
			body: func(id string) []byte {
				return eventBody("evt_"+id, "invoice.paid", `"note":"naïve – ünïcödé 𝄞"`)
			},
			eventID: func(id string) string { return id },
			sign:    signStandard,
		},
	}

	for _, s := range schemes {
		t.Run(s.name, func(t *testing.T) {
			g := g.sub(t)
			now := time.Now().Unix()
			send := func(what string, h http.Header, body []byte, want int, log logWant) testkit.Response {
				t.Helper()
				before, mark := up.Count(), g.LogMark()
				resp := g.post(s.path, h, body)
				expectStatus(t, what, resp, want)
				if want == http.StatusOK {
					expectForwarded(t, what, up, before, body)
					if string(resp.Body) != "upstream 200" {
						t.Errorf("%s: answer %q, want the upstream's", what, resp.Body)
					}
				} else {
					expectNotForwarded(t, what, up, before)
				}
				log.Provider, log.ClientIP, log.Status = s.name, "127.0.0.1", want
				g.expectLog(mark, log)
				return resp
			}

			id := newID(t, s.name+"_")
			body := s.body(id)
			if bytes.IndexFunc(body, func(r rune) bool { return r > 127 }) < 0 {
				t.Fatal("the test body must hold non-ASCII bytes")
			}
			valid := s.sign(t, s.secret, id, now, body)

			if s.keyOnly {
				key := valid.Get(s.authHeader)
				tamperedKey := withHeaders(valid, s.authHeader, key[:len(key)-1]+string(key[len(key)-1]^1))
				send("tampered key", tamperedKey, body, http.StatusUnauthorized,
					logWant{Msg: "webhook refused", Outcome: "invalid_signature", Reason: "does not match"})
			} else {
				tampered := bytes.Replace(body, []byte(id), []byte(id+"x"), 1)
				send("tampered body", valid, tampered, http.StatusUnauthorized,
					logWant{Msg: "webhook refused", Outcome: "invalid_signature", Reason: "does not match"})
			}
			send("wrong secret", s.sign(t, s.wrong, id, now, body), body, http.StatusUnauthorized,
				logWant{Outcome: "invalid_signature", Reason: "does not match"})
			missing := valid.Clone()
			missing.Del(s.authHeader)
			send("missing "+s.authHeader, missing, body, http.StatusUnauthorized,
				logWant{Outcome: "invalid_signature", Reason: "header missing"})
			if s.timestamped {
				send("stale timestamp", s.sign(t, s.secret, id, now-3600, body), body, http.StatusUnauthorized,
					logWant{Outcome: "stale_timestamp", Reason: "in the past"})
				send("future timestamp", s.sign(t, s.secret, id, now+3600, body), body, http.StatusUnauthorized,
					logWant{Outcome: "stale_timestamp", Reason: "in the future"})
			}

			// Refused before the body is read: method, then size.
			before, mark := up.Count(), g.LogMark()
			resp, err := g.send(nil, http.MethodGet, s.path, valid, nil)
			if err != nil {
				t.Fatal(err)
			}
			expectStatus(t, "GET", resp, http.StatusMethodNotAllowed)
			if allow := resp.Header.Get("Allow"); allow != "POST" {
				t.Errorf("GET: Allow %q, want POST", allow)
			}
			expectNotForwarded(t, "GET", up, before)
			g.expectLog(mark, logWant{Provider: s.name, Outcome: "bad_method", ClientIP: "127.0.0.1", Reason: "GET", Status: 405})

			big := s.body(id + strings.Repeat("x", 1100))
			bigSigned := s.sign(t, s.secret, id, now, big)
			send("over max_body with Content-Length", bigSigned, big, http.StatusRequestEntityTooLarge,
				logWant{Outcome: "too_large", Reason: "max_body"})
			before, mark = up.Count(), g.LogMark()
			resp = g.postChunked(s.path, bigSigned, big)
			expectStatus(t, "over max_body, chunked", resp, http.StatusRequestEntityTooLarge)
			expectNotForwarded(t, "over max_body, chunked", up, before)
			g.expectLog(mark, logWant{Provider: s.name, Outcome: "too_large", ClientIP: "127.0.0.1", Status: 413})

			// The valid event, after all the refusals (none of which claimed it): forwarded once,
			// byte for byte, with the event id logged.
			send("valid", valid, body, http.StatusOK,
				logWant{Msg: "webhook forwarded", Outcome: "forwarded", EventID: s.eventID(id), Reason: "upstream accepted"})

			// A valid event sent chunked reaches the upstream with its Content-Length.
			id2 := newID(t, s.name+"_chunked_")
			body2 := s.body(id2)
			before, mark = up.Count(), g.LogMark()
			resp = g.postChunked(s.path, s.sign(t, s.secret, id2, now, body2), body2)
			expectStatus(t, "valid, chunked", resp, http.StatusOK)
			expectForwarded(t, "valid, chunked", up, before, body2)
			g.expectLog(mark, logWant{Provider: s.name, Outcome: "forwarded", EventID: s.eventID(id2), ClientIP: "127.0.0.1"})
		})
	}
}

// TestSourceAllowLists proves the allow-lists work on Caddy's client IP: Ivy's default list
// refuses a loopback source and accepts an Ivy address given by a trusted proxy's
// X-Forwarded-For, ignores that header from an untrusted peer; `allow_ips 127.0.0.2` accepts
// only that source.
func TestSourceAllowLists(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	servers := "servers {\n" +
		"\t\ttrusted_proxies static 127.0.0.1/32\n" +
		"\t\tclient_ip_headers X-Forwarded-For\n" +
		"\t}"
	g := startGuard(t, globalOptions(servers)+site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n}", up.Addr(), ""),
		guardRoute("/only2", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.2\n}", up.Addr(), ""),
	), map[string]string{"IVY_SECRET": secret})

	cases := []struct {
		name, path, from, xff string
		want                  int
		clientIP              string
	}{
		{"ivy default list refuses loopback", "/ivy", "127.0.0.1", "", http.StatusForbidden, "127.0.0.1"},
		{"ivy address through a trusted proxy", "/ivy", "127.0.0.1", "3.120.50.145", http.StatusOK, "3.120.50.145"},
		{"X-Forwarded-For from an untrusted peer is ignored", "/ivy", "127.0.0.3", "3.120.50.145", http.StatusForbidden, "127.0.0.3"},
		{"allow_ips 127.0.0.2 refuses 127.0.0.1", "/only2", "127.0.0.1", "", http.StatusForbidden, "127.0.0.1"},
		{"allow_ips 127.0.0.2 accepts 127.0.0.2", "/only2", "127.0.0.2", "", http.StatusOK, "127.0.0.2"},
		{"allow_ips 127.0.0.2 through a trusted proxy", "/only2", "127.0.0.1", "127.0.0.2", http.StatusOK, "127.0.0.2"},
		{"allow_ips 127.0.0.2 spoofed by an untrusted peer", "/only2", "127.0.0.3", "127.0.0.2", http.StatusForbidden, "127.0.0.3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := g.sub(t)
			id := newID(t, "evt_ip_")
			body := eventBody(id, "payment.succeeded")
			h := signIvy(secret, body)
			if tc.xff != "" {
				h.Set("X-Forwarded-For", tc.xff)
			}
			before, mark := up.Count(), g.LogMark()
			resp := g.postFrom(tc.from, tc.path, h, body)
			expectStatus(t, tc.name, resp, tc.want)
			if tc.want == http.StatusOK {
				expectForwarded(t, tc.name, up, before, body)
				g.expectLog(mark, logWant{Provider: "ivy", Outcome: "forwarded", ClientIP: tc.clientIP, EventID: id})
			} else {
				expectNotForwarded(t, tc.name, up, before)
				g.expectLog(mark, logWant{Provider: "ivy", Outcome: "ip_denied", ClientIP: tc.clientIP, Status: 403,
					Reason: "client IP " + tc.clientIP + " is not in allow_ips"})
			}
		})
	}
}
