package integration

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// closedPort returns a loopback port nothing listens on: it was free a moment ago and is closed.
func closedPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// ivpayGuard is an ivpay guard block reading its key from {env.IVPAY_KEY}, with extra lines.
func ivpayGuard(extra ...string) string {
	return "ivpay {\n api_key {env.IVPAY_KEY}\n allow_ips 127.0.0.1\n max_body 1KiB\n" +
		strings.Join(extra, "\n") + "\n}"
}

// ivpayEvent is an IVPAY callback body for payment id.
func ivpayEvent(id string) []byte {
	return []byte(`{"payment_id":"` + id + `","status":"paid","amount":"12.50"}`)
}

// expectNoKeyAt fails the test if any request up received carries key in a header value.
func expectNoKeyAt(t testing.TB, what string, up *testkit.Upstream, key string) {
	t.Helper()
	for _, rec := range up.Requests() {
		for name, vs := range rec.Header {
			for _, v := range vs {
				if strings.Contains(v, key) {
					t.Errorf("%s: request #%d reached the upstream with the API key in %s", what, rec.Seq, name)
				}
			}
		}
	}
}

// TestIVPAYKeyNeverLogged runs every refusal and failure path of an ivpay guard (401, 403, 413,
// 502 with the upstream down, 503 with the Redis store down, 504 with an upstream that hangs past
// response_header_timeout) with Caddy's default logging and no `log` directive, and checks that
// the API key appears nowhere in Caddy's output nor at the upstream: Caddy logs a handler's 5xx
// error with the request as it was before any handler ran, headers included. It runs once
// without error routes (Caddy would log at ERROR) and once with handle_errors and `debug` (Caddy
// would log every handler error at DEBUG), where handle_errors must still see each status.
// forward_credentials hands the key on to the upstream, and only there (at INFO).
func TestIVPAYKeyNeverLogged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	for _, variant := range []struct {
		name        string
		global      string
		errorRoutes bool
	}{
		{name: "default logging", global: testkit.GlobalOptions("")},
		{name: "handle_errors and debug", global: testkit.GlobalOptions("debug"), errorRoutes: true},
	} {
		t.Run(variant.name, func(t *testing.T) {
			up := testkit.StartUpstream(t)
			hanging := testkit.StartUpstream(t)
			release := hanging.Block()
			defer release()
			key := newSecret(t, "ivpay_key_")
			routes := []string{
				guardRoute("/ok", ivpayGuard(), up.Addr(), ""),
				guardRoute("/keep", ivpayGuard("forward_credentials"), up.Addr(), ""),
				guardRoute("/down", ivpayGuard(), "127.0.0.1:"+strconv.Itoa(closedPort(t)), ""),
				guardRoute("/redis", ivpayGuard("store redis redis://127.0.0.1:"+strconv.Itoa(closedPort(t))), up.Addr(), ""),
				guardRoute("/slow", ivpayGuard(), hanging.Addr(), "transport http {\n response_header_timeout 1s\n}"),
			}
			if variant.errorRoutes {
				routes = append(routes, "handle_errors {\n respond \"guard error {err.status_code}\" {err.status_code}\n}\n")
			}
			g := startGuard(t, variant.global+site(routes...), map[string]string{"IVPAY_KEY": key})

			cases := []struct {
				name, from, path string
				body             []byte
				key              string
				want             int
				outcome          string
			}{
				{"forwarded", "", "/ok", ivpayEvent("pay_ok_" + randomHex(t, 4)), key, 200, "forwarded"},
				{"405 GET with the key", "", "/ok", nil, key, 405, "bad_method"},
				{"401 wrong key", "", "/ok", ivpayEvent("pay_401"), key + "x", 401, "invalid_signature"},
				{"403 source not allowed", "127.0.0.2", "/ok", ivpayEvent("pay_403"), key, 403, "ip_denied"},
				{"413 body over max_body", "", "/ok", bytes.Repeat([]byte("x"), 2048), key, 413, "too_large"},
				{"502 upstream down", "", "/down", ivpayEvent("pay_502_" + randomHex(t, 4)), key, 502, "upstream_failed"},
				{"503 redis store down", "", "/redis", ivpayEvent("pay_503_" + randomHex(t, 4)), key, 503, "store_unavailable"},
				{"504 upstream hangs", "", "/slow", ivpayEvent("pay_504_" + randomHex(t, 4)), key, 504, "upstream_failed"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					g := g.sub(t)
					before, mark := up.Count(), g.LogMark()
					method := http.MethodPost
					if tc.want == http.StatusMethodNotAllowed {
						method = http.MethodGet
					}
					var client *http.Client
					if tc.from != "" {
						client = testkit.ClientFrom(tc.from)
					}
					resp, err := g.send(client, method, tc.path, headers("X-API-KEY", tc.key), tc.body)
					if err != nil {
						t.Fatal(err)
					}
					expectStatus(t, tc.name, resp, tc.want)
					if tc.want == http.StatusOK {
						rec := expectForwarded(t, tc.name, up, before, tc.body)
						if v, ok := rec.Header["X-Api-Key"]; ok {
							t.Errorf("the upstream received X-API-KEY (%d values)", len(v))
						}
					} else if variant.errorRoutes {
						if want := "guard error " + strconv.Itoa(tc.want); string(resp.Body) != want {
							t.Errorf("answer %q, want %q from handle_errors", resp.Body, want)
						}
					}
					if tc.want != http.StatusOK && tc.path == "/ok" {
						expectNotForwarded(t, tc.name, up, before)
					}
					if tc.want != http.StatusOK || variant.errorRoutes { // "webhook forwarded" is a DEBUG line
						g.expectLog(mark, logWant{Provider: "ivpay", Outcome: tc.outcome, Status: tc.want})
					}
				})
			}
			if hanging.Count() != 1 {
				t.Errorf("the hanging upstream received %d requests, want 1", hanging.Count())
			}

			// With `debug`, reverse_proxy's "upstream roundtrip" line prints the headers it
			// forwards: a key kept by forward_credentials among them. Checked at INFO only.
			t.Run("forward_credentials keeps the key for the upstream", func(t *testing.T) {
				if variant.errorRoutes {
					t.Skip("debug logging prints the forwarded headers")
				}
				g := g.sub(t)
				before := up.Count()
				body := ivpayEvent("pay_keep_" + randomHex(t, 4))
				resp := g.post("/keep", headers("X-API-KEY", key), body)
				expectStatus(t, "forward_credentials", resp, http.StatusOK)
				rec := expectForwarded(t, "forward_credentials", up, before, body)
				if got := rec.Header.Get("X-API-KEY"); got != key {
					t.Errorf("the upstream received X-API-KEY of %d bytes, want the key", len(got))
				}
				up.Reset()
			})

			g.Stop()
			expectNoKeyAt(t, "ok", up, key)
			expectNoKeyAt(t, "slow", hanging, key)
		})
	}
}
