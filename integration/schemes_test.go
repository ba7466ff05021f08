package integration

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// placeholderHeaders is the reverse_proxy block of every route of the scheme tests: the
// module's placeholders, sent to the upstream.
const placeholderHeaders = "header_up X-Event-Id {http.webhook.event_id}\n" +
	"header_up X-Event-Type {http.webhook.event_type}\n" +
	"header_up X-Provider {http.webhook.provider}"

// signedScheme is one signing scheme as TestSignedSchemes drives it through its route.
type signedScheme struct {
	name, provider, path string
	// first and second are the two configured secrets (rotation); wrong is not configured.
	first, second, wrong string
	// sign returns the headers the provider sends with body, signed with secret: by the
	// provider's official library where there is one, else by its documented algorithm in Go.
	// typ is the event type, for schemes that carry it in a header.
	sign func(t testing.TB, secret, id, typ string, ts int64, body []byte) http.Header
	// body returns an event with identity id and type typ (non-ASCII bytes included).
	body func(id, typ string) []byte
	// eventID is the id the module must derive from the event made with id and body.
	eventID func(id string, body []byte) string
	// typ is the event type of the test events; wantType the type the module must report.
	typ, wantType string
	// timestamped: the scheme signs a timestamp; stale and future ones are refused.
	timestamped bool
	// malformed turns valid headers into ones with a malformed signature header.
	malformed func(h http.Header) http.Header
	// reasonMalformed is a substring of the reason logged for the malformed header.
	reasonMalformed string
	// sigHeader is the header whose absence must be refused.
	sigHeader string
}

// signingVector is the Ed25519 vector of verify/testdata/signing-vectors.json.
type signingVector struct {
	Name       string `json:"name"`
	PublicKey  string `json:"public_key"`
	SigningKey string `json:"signing_key"`
}

// ed25519Vector reads the standard-v1a-ed25519 vector's keys.
func ed25519Vector(t testing.TB) (publicKey string, signingKey ed25519.PrivateKey, whsk string) {
	t.Helper()
	root, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "verify", "testdata", "signing-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []signingVector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	for _, v := range file.Vectors {
		if v.Name != "standard-v1a-ed25519" {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(v.SigningKey, "whsk_"))
		if err != nil || len(key) != ed25519.PrivateKeySize {
			t.Fatalf("the vector's whsk_ key is not a base64 Ed25519 private key")
		}
		return v.PublicKey, ed25519.PrivateKey(key), v.SigningKey
	}
	t.Fatal("no standard-v1a-ed25519 vector in signing-vectors.json")
	return "", nil, ""
}

// signEd25519 returns Standard Webhooks headers with a v1a signature: Ed25519 over
// id.timestamp.body, base64.
func signEd25519(key ed25519.PrivateKey, id string, ts int64, body []byte) http.Header {
	tsText := strconv.FormatInt(ts, 10)
	msg := append([]byte(id+"."+tsText+"."), body...)
	return headers("webhook-id", id, "webhook-timestamp", tsText,
		"webhook-signature", "v1a,"+base64.StdEncoding.EncodeToString(ed25519.Sign(key, msg)))
}

// TestSignedSchemes runs every signing scheme end to end through one Caddy, each route
// configured with two secrets (rotation) and passing the module's placeholders upstream. Events
// are signed at run time by the official libraries (stripe, @octokit/webhooks-methods,
// standardwebhooks) or, where there is none, by the algorithm the provider documents, computed
// here with crypto/hmac and crypto/ed25519 (shopify, slack, ivy, Coinbase-style hmac,
// timestamped hmac, Ed25519 v1a). For each: an event signed with the second secret, and one with
// the first, is forwarded once with its bytes and placeholders; a tampered body, a wrong secret,
// a stale and a future timestamp (where signed), a malformed and a missing signature header are
// refused 401 and forward nothing.
func TestSignedSchemes(t *testing.T) {
	up := testkit.StartUpstream(t)
	env := map[string]string{}
	secret := func(name, value string) string {
		env[name] = value
		return value
	}
	edPublic, edKey, edWhsk := ed25519Vector(t)
	edOtherPub, edOtherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edWrongKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	schemes := []signedScheme{
		{
			name: "stripe", provider: "stripe", path: "/stripe", timestamped: true,
			first: secret("STRIPE_1", "whsec_"+randomHex(t, 16)), second: secret("STRIPE_2", "whsec_"+randomHex(t, 16)),
			wrong: "whsec_" + randomHex(t, 16),
			sign: func(t testing.TB, secret, id, _ string, ts int64, body []byte) http.Header {
				return testkit.NodeSign(t, testkit.LibStripe, secret, body, id, ts)
			},
			body: func(id, typ string) []byte {
				return []byte(`{"id":"` + id + `","object":"event","type":"` + typ + `","data":{"object":{"description":"Café crème – 3 €"}}}`)
			},
			eventID: func(id string, _ []byte) string { return id },
			typ:     "payment_intent.succeeded", wantType: "payment_intent.succeeded",
			malformed: func(h http.Header) http.Header {
				return withHeaders(h, "Stripe-Signature", "v1="+strings.Repeat("ab", 32))
			},
			reasonMalformed: "is not a t=<unix>,v1=<hex> list", sigHeader: "Stripe-Signature",
		},
		{
			name: "github", provider: "github", path: "/github",
			first: secret("GITHUB_1", randomHex(t, 20)), second: secret("GITHUB_2", randomHex(t, 20)), wrong: randomHex(t, 20),
			sign: func(t testing.TB, secret, id, typ string, _ int64, body []byte) http.Header {
				h := testkit.NodeSign(t, testkit.LibGitHub, secret, body, id, 0)
				h.Set("X-GitHub-Event", typ)
				return h
			},
			// Two events differ in their bytes: the replay key of github is the signed body
			// (X-GitHub-Delivery is not signed), so the delivery id alone does not make an event.
			body: func(id, _ string) []byte {
				return []byte(`{"ref":"refs/heads/main","after":"` + id + `","pusher":{"name":"Zoë"},"head_commit":{"message":"Überarbeitung ✓"}}`)
			},
			eventID: func(id string, _ []byte) string { return id },
			typ:     "push", wantType: "push",
			malformed: func(h http.Header) http.Header {
				return withHeaders(h, "X-Hub-Signature-256", "sha1="+strings.Repeat("ab", 20))
			},
			reasonMalformed: "is not sha256=<hex SHA-256 digest>", sigHeader: "X-Hub-Signature-256",
		},
		{
			name: "shopify", provider: "shopify", path: "/shopify",
			first: secret("SHOPIFY_1", randomHex(t, 16)), second: secret("SHOPIFY_2", randomHex(t, 16)), wrong: randomHex(t, 16),
			sign: func(_ testing.TB, secret, id, typ string, _ int64, body []byte) http.Header {
				// Shopify: X-Shopify-Hmac-Sha256 is the base64 HMAC-SHA256 of the raw body.
				return headers("X-Shopify-Hmac-Sha256", base64.StdEncoding.EncodeToString(hmacSHA256([]byte(secret), body)),
					"X-Shopify-Webhook-Id", id, "X-Shopify-Topic", typ, "X-Shopify-Shop-Domain", "example.myshopify.com")
			},
			body: func(id, _ string) []byte {
				return []byte(`{"id":820982911946154508,"email":"jöns@example.com","note":"` + id + ` – größer"}`)
			},
			eventID: func(id string, _ []byte) string { return id },
			typ:     "orders/create", wantType: "orders/create",
			malformed: func(h http.Header) http.Header {
				return withHeaders(h, "X-Shopify-Hmac-Sha256", "not base64 at all!")
			},
			reasonMalformed: "is not a base64 SHA-256 digest", sigHeader: "X-Shopify-Hmac-Sha256",
		},
		{
			name: "slack", provider: "slack", path: "/slack", timestamped: true,
			first: secret("SLACK_1", randomHex(t, 16)), second: secret("SLACK_2", randomHex(t, 16)), wrong: randomHex(t, 16),
			sign: func(_ testing.TB, secret, _, _ string, ts int64, body []byte) http.Header {
				// Slack: v0= + hex HMAC-SHA256 of "v0:{timestamp}:{body}".
				tsText := strconv.FormatInt(ts, 10)
				return headers("X-Slack-Request-Timestamp", tsText,
					"X-Slack-Signature", "v0="+hex.EncodeToString(hmacSHA256([]byte(secret), []byte("v0:"+tsText+":"), body)))
			},
			body: func(id, typ string) []byte {
				return []byte(`{"token":"XXYYZZ","team_id":"T123ABC456","type":"event_callback","event_id":"` + id +
					`","event":{"type":"` + typ + `","text":"Grüße, <@U0LAN0Z89>! 🎉"}}`)
			},
			eventID: func(id string, _ []byte) string { return id },
			typ:     "app_mention", wantType: "app_mention",
			malformed: func(h http.Header) http.Header {
				return withHeaders(h, "X-Slack-Signature", "v1="+strings.Repeat("ab", 32))
			},
			reasonMalformed: "is not v0=<hex SHA-256 digest>", sigHeader: "X-Slack-Signature",
		},
		{
			name: "ivy", provider: "ivy", path: "/ivy",
			first: secret("IVY_1", randomHex(t, 24)), second: secret("IVY_2", randomHex(t, 24)), wrong: randomHex(t, 24),
			sign: func(_ testing.TB, secret, _, _ string, _ int64, body []byte) http.Header {
				return signIvy(secret, body)
			},
			body:    func(id, typ string) []byte { return eventBody(id, typ, `"reference":"Bestellung Nr. 42 – Müller"`) },
			eventID: func(id string, _ []byte) string { return id },
			typ:     "payment.succeeded", wantType: "payment.succeeded",
			malformed: func(h http.Header) http.Header {
				return withHeaders(h, "X-Ivy-Signature", "sha256="+h.Get("X-Ivy-Signature"))
			},
			reasonMalformed: "is not a hex SHA-256 digest", sigHeader: "X-Ivy-Signature",
		},
		{
			name: "hmac coinbase-style", provider: "hmac", path: "/coinbase",
			first: secret("CC_1", randomHex(t, 18)), second: secret("CC_2", randomHex(t, 18)), wrong: randomHex(t, 18),
			sign: func(_ testing.TB, secret, _, _ string, _ int64, body []byte) http.Header {
				// Coinbase Commerce: X-CC-Webhook-Signature is the hex HMAC-SHA256 of the raw body.
				return headers("X-CC-Webhook-Signature", hex.EncodeToString(hmacSHA256([]byte(secret), body)))
			},
			body: func(id, typ string) []byte {
				return []byte(`{"id":1,"scheduled_for":"2017-01-31T20:50:02Z","event":{"id":"` + id +
					`","type":"` + typ + `","data":{"name":"Thé vert","description":"Mate 🧉"}}}`)
			},
			eventID: func(id string, _ []byte) string { return id },
			// The type is inside "event", which the generic scheme does not read.
			typ: "charge:confirmed", wantType: "",
			malformed: func(h http.Header) http.Header {
				return withHeaders(h, "X-CC-Webhook-Signature", "zz"+h.Get("X-CC-Webhook-Signature")[2:])
			},
			reasonMalformed: "has no well-formed hex SHA-256 digest", sigHeader: "X-CC-Webhook-Signature",
		},
		{
			name: "hmac timestamped", provider: "hmac", path: "/hmac-ts", timestamped: true,
			first: secret("HMAC_TS_1", randomHex(t, 18)), second: secret("HMAC_TS_2", randomHex(t, 18)), wrong: randomHex(t, 18),
			sign: func(_ testing.TB, secret, _, _ string, ts int64, body []byte) http.Header {
				tsText := strconv.FormatInt(ts, 10)
				return headers("X-Timestamp", tsText,
					"X-Signature", hex.EncodeToString(hmacSHA256([]byte(secret), []byte(tsText+"."), body)))
			},
			body: func(id, typ string) []byte { return eventBody(id, typ, `"city":"Kraków"`) },
			eventID: func(_ string, body []byte) string {
				sum := sha256.Sum256(body)
				return "sha256:" + hex.EncodeToString(sum[:])
			},
			typ: "order.paid", wantType: "order.paid",
			malformed: func(h http.Header) http.Header {
				return withHeaders(h, "X-Timestamp", "yesterday")
			},
			reasonMalformed: "timestamp is not a unix time", sigHeader: "X-Signature",
		},
		{
			name: "standard", provider: "standard", path: "/standard", timestamped: true,
			first: secret("STD_1", newWhsec(t)), second: secret("STD_2", newWhsec(t)), wrong: newWhsec(t),
			sign: func(t testing.TB, secret, id, _ string, ts int64, body []byte) http.Header {
				return testkit.NodeSign(t, testkit.LibStandardWebhooks, secret, body, id, ts)
			},
			body:    func(_, typ string) []byte { return eventBody("evt_inner", typ, `"customer":"Ærøskøbing ÅS"`) },
			eventID: func(id string, _ []byte) string { return id },
			typ:     "invoice.paid", wantType: "invoice.paid",
			malformed: func(h http.Header) http.Header {
				return withHeaders(h, "webhook-signature", "v1,***not-base64***")
			},
			reasonMalformed: "has no well-formed v1 signature", sigHeader: "webhook-signature",
		},
		{
			name: "standard ed25519 v1a", provider: "standard", path: "/ed25519", timestamped: true,
			// Public keys: the first a fresh one, the second the vector's, whose whsk_ key signs.
			first: "whpk_" + base64.StdEncoding.EncodeToString(edOtherPub), second: edPublic, wrong: "",
			sign: func(t testing.TB, public, id, _ string, ts int64, body []byte) http.Header {
				switch public {
				case edPublic:
					return signEd25519(edKey, id, ts, body)
				case "whpk_" + base64.StdEncoding.EncodeToString(edOtherPub):
					return signEd25519(edOtherKey, id, ts, body)
				}
				return signEd25519(edWrongKey, id, ts, body)
			},
			body:    func(_, typ string) []byte { return eventBody("evt_ed", typ, `"memo":"Ωmega ∑ 🚀"`) },
			eventID: func(id string, _ []byte) string { return id },
			typ:     "invoice.paid", wantType: "invoice.paid",
			malformed: func(h http.Header) http.Header {
				return withHeaders(h, "webhook-signature", strings.Replace(h.Get("webhook-signature"), "v1a,", "v1a ", 1))
			},
			reasonMalformed: "has no well-formed v1a signature", sigHeader: "webhook-signature",
		},
	}
	env["ED_PUB_1"], env["ED_PUB_2"] = schemes[len(schemes)-1].first, edPublic

	routes := []string{
		guardRoute("/stripe", "stripe {\n secret {env.STRIPE_1}\n secret {env.STRIPE_2}\n}", up.Addr(), placeholderHeaders),
		guardRoute("/github", "github {\n secret {env.GITHUB_1}\n secret {env.GITHUB_2}\n}", up.Addr(), placeholderHeaders),
		guardRoute("/shopify", "shopify {\n secret {env.SHOPIFY_1}\n secret {env.SHOPIFY_2}\n}", up.Addr(), placeholderHeaders),
		guardRoute("/slack", "slack {\n secret {env.SLACK_1}\n secret {env.SLACK_2}\n}", up.Addr(), placeholderHeaders),
		guardRoute("/ivy", "ivy {\n secret {env.IVY_1}\n secret {env.IVY_2}\n allow_ips 127.0.0.1\n}", up.Addr(), placeholderHeaders),
		guardRoute("/coinbase", "hmac {\n secret {env.CC_1}\n secret {env.CC_2}\n header X-CC-Webhook-Signature\n event_id json:event.id\n}", up.Addr(), placeholderHeaders),
		guardRoute("/hmac-ts", "hmac {\n secret {env.HMAC_TS_1}\n secret {env.HMAC_TS_2}\n header X-Signature\n"+
			" signed \"{timestamp}.{body}\"\n timestamp_header X-Timestamp\n scope hmac_ts\n}", up.Addr(), placeholderHeaders),
		guardRoute("/standard", "standard {\n secret {env.STD_1}\n secret {env.STD_2}\n}", up.Addr(), placeholderHeaders),
		guardRoute("/ed25519", "standard {\n public_key {env.ED_PUB_1}\n public_key {env.ED_PUB_2}\n scope ed25519\n}", up.Addr(), placeholderHeaders),
	}
	var wrongs []string
	for _, s := range schemes {
		if s.wrong != "" {
			wrongs = append(wrongs, s.wrong)
		}
	}
	g := startGuard(t, globalOptions()+site(routes...), env, wrongs...)
	g.addSecret(edWhsk) // the Ed25519 signing key is not configured, but must never show either

	for _, s := range schemes {
		t.Run(s.name, func(t *testing.T) {
			g := g.sub(t)
			now := time.Now().Unix()
			refuse := func(what string, h http.Header, body []byte, outcome, reason string) {
				t.Helper()
				before, mark := up.Count(), g.LogMark()
				resp := g.post(s.path, h, body)
				expectStatus(t, what, resp, http.StatusUnauthorized)
				expectNotForwarded(t, what, up, before)
				g.expectLog(mark, logWant{Provider: s.provider, Outcome: outcome, ClientIP: "127.0.0.1", Reason: reason, Status: 401})
			}
			accept := func(what, id string, h http.Header, body []byte) {
				t.Helper()
				before, mark := up.Count(), g.LogMark()
				resp := g.post(s.path, h, body)
				expectStatus(t, what, resp, http.StatusOK)
				if string(resp.Body) != "upstream 200" {
					t.Errorf("%s: answer %q, want the upstream's", what, resp.Body)
				}
				rec := expectForwarded(t, what, up, before, body)
				wantID := s.eventID(id, body)
				for name, want := range map[string]string{"X-Event-Id": wantID, "X-Event-Type": s.wantType, "X-Provider": s.provider} {
					if got := rec.Header.Get(name); got != want {
						t.Errorf("%s: the upstream got %s %q, want %q", what, name, got, want)
					}
				}
				g.expectLog(mark, logWant{Msg: "webhook forwarded", Provider: s.provider, Outcome: "forwarded",
					ClientIP: "127.0.0.1", EventID: wantID, Type: s.wantType, Status: 200})
			}

			id := newID(t, "evt_"+s.provider+"_")
			body := s.body(id, s.typ)
			valid := s.sign(t, s.second, id, s.typ, now, body)

			tampered := bytes.Replace(body, []byte(`":"`), []byte(`": "`), 1)
			if bytes.Equal(tampered, body) {
				t.Fatal("the tampered body is the body")
			}
			refuse("tampered body", valid, tampered, "invalid_signature", "does not match")
			if s.wrong != "" {
				refuse("wrong secret", s.sign(t, s.wrong, id, s.typ, now, body), body, "invalid_signature", "does not match")
			} else {
				refuse("wrong key", s.sign(t, "", id, s.typ, now, body), body, "invalid_signature", "does not match")
			}
			if s.timestamped {
				refuse("stale timestamp", s.sign(t, s.second, id, s.typ, now-3600, body), body, "stale_timestamp", "in the past")
				refuse("future timestamp", s.sign(t, s.second, id, s.typ, now+3600, body), body, "stale_timestamp", "in the future")
			}
			refuse("malformed signature header", s.malformed(valid), body, "invalid_signature", s.reasonMalformed)
			missing := valid.Clone()
			missing.Del(s.sigHeader)
			refuse("missing "+s.sigHeader, missing, body, "invalid_signature", "missing")

			// Rotation: signed with the second secret, then another event with the first.
			accept("signed with the second secret", id, valid, body)
			id1 := newID(t, "evt_"+s.provider+"_first_")
			body1 := s.body(id1, s.typ)
			accept("signed with the first secret", id1, s.sign(t, s.first, id1, s.typ, now, body1), body1)
		})
	}
}

// TestEventsFilter proves the `events` option for the schemes whose type comes from the body
// (stripe `type`, standard `type`) or a header (github X-GitHub-Event, shopify X-Shopify-Topic):
// an unwanted type is answered 200 with Webhook-Guard-Outcome: ignored_type and not forwarded
// (logged at WARN for the first of its type, at INFO after), a wanted one is forwarded with its
// type in the placeholder. A type the provider does not publish (a typo) is a WARN at load.
func TestEventsFilter(t *testing.T) {
	up := testkit.StartUpstream(t)
	stripeSecret, githubSecret, shopifySecret, stdSecret := "whsec_"+randomHex(t, 16), randomHex(t, 20), randomHex(t, 16), newWhsec(t)
	g := startGuard(t, globalOptions()+site(
		guardRoute("/stripe-typo", "stripe {\n secret {env.STRIPE}\n scope typo\n events payment_intent.succeded\n}", up.Addr(), ""),
		guardRoute("/stripe", "stripe {\n secret {env.STRIPE}\n events payment_intent.succeeded charge.refunded\n}", up.Addr(), placeholderHeaders),
		guardRoute("/github", "github {\n secret {env.GITHUB}\n events push\n}", up.Addr(), placeholderHeaders),
		guardRoute("/shopify", "shopify {\n secret {env.SHOPIFY}\n events orders/create\n events orders/paid\n}", up.Addr(), placeholderHeaders),
		guardRoute("/standard", "standard {\n secret {env.STD}\n events invoice.paid\n}", up.Addr(), placeholderHeaders),
	), map[string]string{"STRIPE": stripeSecret, "GITHUB": githubSecret, "SHOPIFY": shopifySecret, "STD": stdSecret})

	// At load: one WARN for the typo, naming the published type it is close to, and none for the
	// types Stripe, GitHub and Shopify publish.
	const unpublished = "events names a type the provider does not publish: check it, events of the types not listed are answered 200 ignored_type and never forwarded"
	var warned []testkit.LogEntry
	for _, e := range g.Logs() {
		if e.Logger == guardLogger && e.Msg == unpublished {
			warned = append(warned, e)
		}
	}
	if len(warned) != 1 || warned[0].Level != "warn" || warned[0].Field("provider") != "stripe" ||
		warned[0].Field("event_type") != "payment_intent.succeded" || warned[0].Field("did_you_mean") != "payment_intent.succeeded" {
		t.Errorf("load warnings: %d lines %v, want one WARN for stripe payment_intent.succeded (did you mean payment_intent.succeeded)", len(warned), warned)
	}

	type signer func(t testing.TB, id, typ string) (http.Header, []byte)
	cases := []struct {
		provider, path, wanted, unwanted string
		sign                             signer
		eventID                          func(id string) string
	}{
		{"stripe", "/stripe", "charge.refunded", "customer.created", func(t testing.TB, id, typ string) (http.Header, []byte) {
			body := []byte(`{"id":"` + id + `","object":"event","type":"` + typ + `"}`)
			return testkit.NodeSign(t, testkit.LibStripe, stripeSecret, body, id, time.Now().Unix()), body
		}, func(id string) string { return id }},
		{"github", "/github", "push", "issues", func(t testing.TB, id, typ string) (http.Header, []byte) {
			body := []byte(`{"action":"opened","zen":"Non-blocking is better than blocking – ✓"}`)
			h := testkit.NodeSign(t, testkit.LibGitHub, githubSecret, body, id, 0)
			h.Set("X-GitHub-Event", typ)
			return h, body
		}, func(id string) string { return id }},
		{"shopify", "/shopify", "orders/paid", "customers/create", func(_ testing.TB, id, typ string) (http.Header, []byte) {
			body := []byte(`{"id":450789469,"note":"Überweisung"}`)
			return headers("X-Shopify-Hmac-Sha256", base64.StdEncoding.EncodeToString(hmacSHA256([]byte(shopifySecret), body)),
				"X-Shopify-Webhook-Id", id, "X-Shopify-Topic", typ), body
		}, func(id string) string { return id }},
		{"standard", "/standard", "invoice.paid", "invoice.created", func(t testing.TB, id, typ string) (http.Header, []byte) {
			body := eventBody("evt_"+id, typ)
			return testkit.NodeSign(t, testkit.LibStandardWebhooks, stdSecret, body, id, time.Now().Unix()), body
		}, func(id string) string { return id }},
	}
	for _, tc := range cases {
		t.Run(tc.provider, func(t *testing.T) {
			g := g.sub(t)
			id := newID(t, "evt_"+tc.provider+"_")
			h, body := tc.sign(t, id, tc.unwanted)
			before, mark := up.Count(), g.LogMark()
			resp := g.post(tc.path, h, body)
			expectDropped(t, "unwanted type "+tc.unwanted, resp, "ignored_type")
			expectNotForwarded(t, "unwanted type", up, before)
			line := g.expectLog(mark, logWant{Msg: "webhook dropped", Provider: tc.provider, Outcome: "ignored_type",
				EventID: tc.eventID(id), Type: tc.unwanted, ClientIP: "127.0.0.1", Reason: "not in events", Status: 200})
			if line.Level != "warn" || !strings.Contains(line.Field("reason"), "the first of this type since the config was loaded") {
				t.Errorf("first ignored %s: %s %q, want warn, the first of this type", tc.unwanted, line.Level, line.Field("reason"))
			}
			id = newID(t, "evt_"+tc.provider+"_")
			h, body = tc.sign(t, id, tc.unwanted)
			before, mark = up.Count(), g.LogMark()
			expectDropped(t, "unwanted type again", g.post(tc.path, h, body), "ignored_type")
			expectNotForwarded(t, "unwanted type again", up, before)
			line = g.expectLog(mark, logWant{Msg: "webhook dropped", Outcome: "ignored_type", EventID: tc.eventID(id), Type: tc.unwanted})
			if line.Level != "info" || line.Field("reason") != fmt.Sprintf("event type %q is not in events", tc.unwanted) {
				t.Errorf("second ignored %s: %s %q, want info", tc.unwanted, line.Level, line.Field("reason"))
			}

			id = newID(t, "evt_"+tc.provider+"_")
			h, body = tc.sign(t, id, tc.wanted)
			before, mark = up.Count(), g.LogMark()
			resp = g.post(tc.path, h, body)
			expectStatus(t, "wanted type "+tc.wanted, resp, http.StatusOK)
			if o := resp.Header.Get("Webhook-Guard-Outcome"); o != "" {
				t.Errorf("wanted type: Webhook-Guard-Outcome %q", o)
			}
			rec := expectForwarded(t, "wanted type", up, before, body)
			if got := rec.Header.Get("X-Event-Type"); got != tc.wanted {
				t.Errorf("the upstream got X-Event-Type %q, want %q", got, tc.wanted)
			}
			g.expectLog(mark, logWant{Provider: tc.provider, Outcome: "forwarded", EventID: tc.eventID(id), Type: tc.wanted})
		})
	}
}

// TestStandardOfficialLibraries proves that Standard Webhooks events signed at run time by the
// official standardwebhooks and svix npm libraries, with webhook-* and svix-* headers and
// non-ASCII bodies, are accepted end to end and deduplicated by their message id.
func TestStandardOfficialLibraries(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newWhsec(t)
	g := startGuard(t, globalOptions()+site(
		guardRoute("/standard", "standard {\n secret {env.STD_SECRET}\n}", up.Addr(), placeholderHeaders),
	), map[string]string{"STD_SECRET": secret})

	for _, tc := range []struct{ lib, prefix, other string }{
		{testkit.LibStandardWebhooks, "Webhook-", "Svix-"},
		{testkit.LibSvix, "Svix-", "Webhook-"},
	} {
		t.Run(tc.lib, func(t *testing.T) {
			g := g.sub(t)
			id := newID(t, "msg_"+tc.lib+"_")
			body := []byte(`{"type":"payment.succeeded","data":{"payer":"Jürgen Groß","amount":"1 234,50 €","note":"日本語 🎌 ½"}}`)
			h := testkit.NodeSign(t, tc.lib, secret, body, id, time.Now().Unix())
			for _, name := range []string{"Id", "Timestamp", "Signature"} {
				if h.Get(tc.prefix+name) == "" || h.Get(tc.other+name) != "" {
					t.Fatalf("%s signed with headers %v, want %s* only", tc.lib, h, tc.prefix)
				}
			}
			before, mark := up.Count(), g.LogMark()
			resp := g.post("/standard", h, body)
			expectStatus(t, "signed by "+tc.lib, resp, http.StatusOK)
			rec := expectForwarded(t, "signed by "+tc.lib, up, before, body)
			if rec.Header.Get("X-Event-Id") != id || rec.Header.Get("X-Event-Type") != "payment.succeeded" {
				t.Errorf("the upstream got X-Event-Id %q, X-Event-Type %q", rec.Header.Get("X-Event-Id"), rec.Header.Get("X-Event-Type"))
			}
			if got := rec.Header.Get(tc.prefix + "Signature"); got != h.Get(tc.prefix+"Signature") {
				t.Errorf("the upstream got %sSignature %q, want the sender's", tc.prefix, got)
			}
			g.expectLog(mark, logWant{Provider: "standard", Outcome: "forwarded", EventID: id, ClientIP: "127.0.0.1"})

			// The library signs the retry anew (a later timestamp): still the same message.
			retry := testkit.NodeSign(t, tc.lib, secret, body, id, time.Now().Unix()+1)
			before, mark = up.Count(), g.LogMark()
			expectDropped(t, "retry signed by "+tc.lib, g.post("/standard", retry, body), "duplicate")
			expectNotForwarded(t, "retry", up, before)
			g.expectLog(mark, logWant{Provider: "standard", Outcome: "duplicate", EventID: id})
		})
	}
}
