package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unsignedIDHMAC is an hmac configuration whose event id header is not in
// the signed template: the id is not covered by the signature.
func unsignedIDHMAC() Config {
	return Config{Secrets: []string{"hmac-unit-secret"}, HMAC: HMACOptions{
		Header:          "X-Signature",
		TimestampHeader: "X-Timestamp",
		Signed:          "{timestamp}.{body}",
		EventID:         "header:X-Event-Id",
	}}
}

// TestReplayIDBoundToWhatIsSigned: where the event id is not covered by the
// signature, a replay with another (or no) id header keeps its replay id;
// where it is, the replay id is the id.
func TestReplayIDBoundToWhatIsSigned(t *testing.T) {
	body := []byte(`{"id":"evt_r","type":"t","payment_id":"p1","status":"PAID"}`)
	for _, tc := range []struct {
		name     string
		v        Verifier
		idHeader string
	}{
		{"github", newScheme(t, "github", everySchemeConfig()), "X-GitHub-Delivery"},
		{"shopify", newScheme(t, "shopify", everySchemeConfig()), "X-Shopify-Webhook-Id"},
		{"hmac unsigned id header", newScheme(t, "hmac", unsignedIDHMAC()), "X-Event-Id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := signWith(t, tc.v, body, "delivery-1", testNow)
			ev := wantValid(t, tc.v, h, body, testNow)
			if ev.ID != "delivery-1" || !strings.HasPrefix(ev.ReplayID, "sig:") {
				t.Fatalf("event = %+v, want the provider's id and a sig: replay id", ev)
			}
			for _, other := range []string{"delivery-2", ""} {
				replay := wantValid(t, tc.v, withHeader(h, tc.idHeader, other), body, testNow)
				if replay.ReplayID != ev.ReplayID {
					t.Errorf("id header %q: replay id %q, want %q", other, replay.ReplayID, ev.ReplayID)
				}
				if other != "" && replay.ID != other {
					t.Errorf("id = %q, want the header's %q for logs", replay.ID, other)
				}
			}
			other := []byte(`{"id":"evt_s"}`)
			if ev2 := wantValid(t, tc.v, signWith(t, tc.v, other, "delivery-1", testNow), other, testNow); ev2.ReplayID == ev.ReplayID {
				t.Error("another body has the same replay id")
			}
		})
	}
	t.Run("hmac signed timestamp is part of it", func(t *testing.T) {
		v := newScheme(t, "hmac", unsignedIDHMAC())
		a := wantValid(t, v, signWith(t, v, body, "d", testNow), body, testNow)
		b := wantValid(t, v, signWith(t, v, body, "d", testNow.Add(time.Second)), body, testNow)
		if a.ReplayID == b.ReplayID {
			t.Error("a new signed timestamp keeps the replay id")
		}
	})
	for _, name := range []string{"standard", "stripe", "slack", "ivy", "hmac"} {
		t.Run(name+" signed id", func(t *testing.T) {
			v := newScheme(t, name, everySchemeConfig())
			ev := wantValid(t, v, signWith(t, v, body, "evt_r", testNow), body, testNow)
			if ev.ReplayID != ev.ID {
				t.Errorf("replay id %q, want the id %q", ev.ReplayID, ev.ID)
			}
		})
	}
	t.Run("ivpay parts length-prefixed", func(t *testing.T) {
		a := ivpayEvent([]byte(`{"payment_id":"a/b","status":"c"}`))
		b := ivpayEvent([]byte(`{"payment_id":"a","status":"b/c"}`))
		if a.ID != "a/b/c" || b.ID != "a/b/c" {
			t.Fatalf("ids %q, %q: the logged id is payment_id/status", a.ID, b.ID)
		}
		if a.ReplayID == b.ReplayID || a.ReplayID != "3:a/b1:c" {
			t.Errorf("replay ids %q, %q", a.ReplayID, b.ReplayID)
		}
		if d := ivpayEvent([]byte(`[]`)); d.ID != BodyDigestID([]byte(`[]`)) || d.ReplayID != d.ID {
			t.Errorf("no payment_id: %+v", d)
		}
	})
	t.Run("SignedReplayID parts are length-prefixed", func(t *testing.T) {
		if SignedReplayID([]byte("ab"), []byte("c")) == SignedReplayID([]byte("a"), []byte("bc")) {
			t.Error("ab|c and a|bc share a replay id")
		}
	})
}

// TestRepeatedHeadersRefused: every header a scheme reads, given twice
// (even with the same value), is refused with its name.
func TestRepeatedHeadersRefused(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"t","payment_id":"p1","status":"PAID"}`)
	for name, v := range fuzzVerifiers(t) {
		h := signWith(t, v, body, "evt_1", testNow)
		switch name {
		case "github":
			h.Set("X-GitHub-Event", "push")
		case "shopify":
			h.Set("X-Shopify-Topic", "orders/create")
		}
		wantValid(t, v, h, body, testNow)
		for header, values := range h {
			t.Run(name+" "+header, func(t *testing.T) {
				hh := h.Clone()
				hh.Add(header, values[0])
				msg := wantInvalid(t, v, hh, body, testNow, ReasonSignature)
				if msg != "header "+header+" given 2 times" {
					t.Errorf("message = %q", msg)
				}
			})
		}
	}
	t.Run("svix names", func(t *testing.T) {
		v := newScheme(t, "standard", everySchemeConfig())
		h := http.Header{}
		for k, vs := range signWith(t, v, body, "msg_1", testNow) {
			h["Svix"+strings.TrimPrefix(k, "Webhook")] = vs
		}
		wantValid(t, v, h, body, testNow)
		h.Add("Svix-Id", "msg_2")
		wantInvalid(t, v, h, body, testNow, ReasonSignature)
	})
	t.Run("hmac signed header", func(t *testing.T) {
		c := everySchemeConfig()
		c.HMAC.EventID = ""
		v := newScheme(t, "hmac", c)
		h := http.Header{"X-Request-Id": {"r1"}}
		signed := signWith(t, newScheme(t, "hmac", everySchemeConfig()), body, "r1", testNow)
		h.Set("X-Signature", signed.Get("X-Signature"))
		h.Set("X-Timestamp", signed.Get("X-Timestamp"))
		wantValid(t, v, h, body, testNow)
		h.Add("X-Request-Id", "r2")
		wantInvalid(t, v, h, body, testNow, ReasonSignature)
	})
}

// timestampedSchemes builds each scheme that signs a timestamp, with the
// given tolerance.
func timestampedSchemes(t *testing.T, tolerance time.Duration) map[string]Verifier {
	c := everySchemeConfig()
	c.Tolerance = tolerance
	vs := map[string]Verifier{}
	for _, name := range []string{"standard", "stripe", "slack", "hmac"} {
		vs[name] = newScheme(t, name, c)
	}
	return vs
}

// TestTimestampEdges: whole seconds, nothing at or before 1970 even when the
// tolerance reaches back to it, no overflow far in the future.
func TestTimestampEdges(t *testing.T) {
	body := []byte(`{"id":"evt_ts","type":"t"}`)
	const century = 100 * 365 * 24 * time.Hour
	for name, v := range timestampedSchemes(t, century) {
		t.Run(name, func(t *testing.T) {
			for _, ts := range []int64{0, -1, -99_999_999_999} {
				msg := wantInvalid(t, v, signWith(t, v, body, "evt_ts", time.Unix(ts, 0)), body, testNow, ReasonTimestamp)
				if !strings.Contains(msg, "not after 1970") {
					t.Errorf("ts %d: message %q", ts, msg)
				}
			}
			wantValid(t, v, signWith(t, v, body, "evt_ts", time.Unix(1, 0)), body, testNow)
			// 31,000 years ahead: once accepted whatever the tolerance, the
			// duration having overflowed.
			msg := wantInvalid(t, v, signWith(t, v, body, "evt_ts", time.Unix(999_999_999_999, 0)), body, testNow, ReasonTimestamp)
			if !strings.Contains(msg, "years in the future") {
				t.Errorf("message %q", msg)
			}
			for _, ts := range []int64{1 << 62, 1<<63 - 1} {
				wantInvalid(t, v, signWith(t, v, body, "evt_ts", time.Unix(ts, 0)), body, testNow, ReasonSignature)
			}
		})
	}
}

// TestTimestampAsTheLibraries runs, on every timestamped scheme, the
// tolerance cases of the providers' own test suites: the Standard Webhooks
// and Svix Go libraries (webhook_test.go, and the v1a one,
// webhook_asymmetric_test.go: "old timestamp fails" signs at now minus the
// tolerance, "new timestamp fails" at now plus the tolerance and a second)
// and stripe-go's (TestConstructEventWithOptions_UsesDefaultToleranceWhenNoneProvided:
// DefaultTolerance less a second passes, DefaultTolerance and a millisecond
// fails). Each signs the whole seconds of its time and verifies at the clock
// with its nanoseconds, as the libraries do.
func TestTimestampAsTheLibraries(t *testing.T) {
	body := []byte(`{"id":"evt_ts","type":"t"}`)
	const tolerance = 5 * time.Minute // theirs, and DefaultTolerance
	// A clock between two seconds, as time.Now() almost always is.
	now := time.Unix(1700000000, 250_000_000)
	for name, v := range timestampedSchemes(t, tolerance) {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				signed time.Time
				ok     bool
			}{
				{"standard webhooks, svix: valid signature is valid", now, true},
				{"standard webhooks, svix: old timestamp fails", now.Add(-tolerance), false},
				{"standard webhooks, svix: new timestamp fails", now.Add(tolerance + time.Second), false},
				{"stripe: default tolerance less a second passes", now.Add(-tolerance).Add(time.Second), true},
				{"stripe: default tolerance and a millisecond fails", now.Add(-tolerance).Add(-time.Millisecond), false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					h := signWith(t, v, body, "evt_ts", tc.signed)
					if tc.ok {
						wantValid(t, v, h, body, now)
					} else {
						wantInvalid(t, v, h, body, now, ReasonTimestamp)
					}
				})
			}
		})
		t.Run(name+" boundary", func(t *testing.T) {
			signed := time.Unix(1700000000, 0)
			h := signWith(t, v, body, "evt_ts", signed)
			// Exactly the tolerance old or ahead: not more than it.
			wantValid(t, v, h, body, signed.Add(tolerance))
			wantValid(t, v, h, body, signed.Add(-tolerance))
			msg := wantInvalid(t, v, h, body, signed.Add(tolerance+time.Nanosecond), ReasonTimestamp)
			if msg != "timestamp 5m0.000000001s in the past, tolerance 5m" {
				t.Errorf("message %q", msg)
			}
			msg = wantInvalid(t, v, h, body, signed.Add(-tolerance-time.Nanosecond), ReasonTimestamp)
			if msg != "timestamp 5m0.000000001s in the future, tolerance 5m" {
				t.Errorf("message %q", msg)
			}
			msg = wantInvalid(t, v, h, body, signed.Add(tolerance+1900*time.Millisecond), ReasonTimestamp)
			if msg != "timestamp 5m1s in the past, tolerance 5m" {
				t.Errorf("message %q", msg)
			}
		})
	}
}

func TestCheckTimestamp(t *testing.T) {
	const maxDuration = time.Duration(1<<63 - 1)
	now := time.Unix(1700000000, 999_999_999)
	for _, tc := range []struct {
		raw    string
		now    time.Time
		tol    time.Duration
		reason string // "" when accepted
	}{
		{"1700000000", now, time.Second, ""},
		{"1700000000", now, 999_999_999, ""},
		{"1700000000", now, 999_999_998, ReasonTimestamp},
		{"1699999999", now, time.Second, ReasonTimestamp},
		{"1699999999", now, 1999_999_999, ""},
		{"1700000001", now, time.Nanosecond, ""},
		{"1700000002", now, time.Second + time.Nanosecond, ""},
		{"1700000002", now, time.Second, ReasonTimestamp},
		{"1700000003", now, time.Second, ReasonTimestamp},
		{"0", now, maxDuration, ReasonTimestamp},
		{"-1", now, maxDuration, ReasonTimestamp},
		{"1", now, maxDuration, ""},
		{"999999999999", now, maxDuration, ReasonTimestamp},
		{"9223372036854775807", now, maxDuration, ReasonSignature},
		{"4611686018427387904", now, maxDuration, ReasonSignature},
		{"+1700000000", now, time.Second, ""},
		{"1e9", now, time.Hour, ReasonSignature},
		{"", now, time.Hour, ReasonSignature},
		// Clocks at the ends of int64: nothing overflows.
		{"999999999999", time.Unix(-1<<63, 0), maxDuration, ReasonTimestamp},
		{"1", time.Unix(1<<63-1, 999_999_999), maxDuration, ReasonTimestamp},
		{"1", time.Unix(-1<<63+1, 0), maxDuration, ReasonTimestamp},
	} {
		_, err := checkTimestamp(tc.raw, tc.now, tc.tol)
		if got := reasonOrEmpty(err); got != tc.reason {
			t.Errorf("checkTimestamp(%q, now %d.%09d, tolerance %v) = %v, want reason %q", tc.raw, tc.now.Unix(), tc.now.Nanosecond(), tc.tol, err, tc.reason)
		}
	}
}

// reasonOrEmpty is the reason of err, "" for nil.
func reasonOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return ReasonOf(err)
}

// TestBlankSecretsRefused: a whitespace-only secret, API key or public key
// fails the build, naming the option.
func TestBlankSecretsRefused(t *testing.T) {
	for _, name := range Names() {
		s, _ := Lookup(name)
		for _, blank := range []string{" ", "\t\n", ""} {
			c := everySchemeConfig()
			option := s.KeyOption
			if option == KeyOptionAPIKey {
				c.APIKeys = []string{"good-key", blank}
			} else {
				c.Secrets = []string{c.Secrets[0], blank}
			}
			_, err := s.New(c)
			ce := wantConfigError(t, err, option)
			if !strings.Contains(ce.Msg, "value #2") {
				t.Errorf("%s: message %q", name, ce.Msg)
			}
		}
	}
	c := Config{PublicKeys: []string{testPublicKey, "  "}}
	_, err := newStandard(c)
	wantConfigError(t, err, "public_key")
}

// TestStandardKeysUnpaddedAndEmpty: unpadded base64 is accepted, as the
// reference library accepts it; a prefix with nothing after it is refused
// with a message that does not contain the secret's text.
func TestStandardKeysUnpaddedAndEmpty(t *testing.T) {
	key := make([]byte, 25)
	rand.Read(key)
	padded := "whsec_" + base64.StdEncoding.EncodeToString(key)
	unpadded := "whsec_" + base64.RawStdEncoding.EncodeToString(key)
	if padded == unpadded {
		t.Fatal("the test key needs padding")
	}
	body := []byte(`{"type":"t"}`)
	h := signWith(t, newScheme(t, "standard", Config{Secrets: []string{padded}}), body, "msg_1", testNow)
	wantValid(t, newScheme(t, "standard", Config{Secrets: []string{unpadded}}), h, body, testNow)

	pub := newScheme(t, "standard", Config{PublicKeys: []string{strings.TrimRight(testPublicKey, "=")}})
	signer := newScheme(t, "standard", Config{Secrets: []string{testSigningKey}})
	wantValid(t, pub, signWith(t, signer, body, "msg_1", testNow), body, testNow)

	for _, tc := range []struct{ option, value string }{
		{"secret", "whsec_"}, {"secret", "whsk_"}, {"public_key", "whpk_"},
	} {
		c := Config{}
		if tc.option == "secret" {
			c.Secrets = []string{tc.value}
		} else {
			c.PublicKeys = []string{tc.value}
		}
		_, err := newStandard(c)
		ce := wantConfigError(t, err, tc.option)
		if strings.Contains(ce.Error(), tc.value) || !strings.Contains(ce.Msg, "nothing after its prefix") {
			t.Errorf("%s %q: message %q", tc.option, tc.value, ce.Error())
		}
	}
	for _, bad := range []string{"whsec_!!!", "whsec_" + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff})} {
		_, err := newStandard(Config{Secrets: []string{bad}})
		wantConfigError(t, err, "secret")
	}
}

// TestShopifyHeaderNames: the names without "X-" are accepted too; both
// names with different values are refused.
func TestShopifyHeaderNames(t *testing.T) {
	body := []byte(`{"id":820982911946154508}`)
	v := newScheme(t, "shopify", Config{Secrets: []string{shopifySecret}})
	sig := signWith(t, v, body, "", testNow).Get("X-Shopify-Hmac-Sha256")
	modern := http.Header{}
	modern.Set("shopify-hmac-sha256", sig)
	modern.Set("shopify-webhook-id", "b54557e4")
	modern.Set("shopify-topic", "orders/create")
	ev := wantValid(t, v, modern, body, testNow)
	if ev.ID != "b54557e4" || ev.Type != "orders/create" || !strings.HasPrefix(ev.ReplayID, "sig:") {
		t.Errorf("event = %+v", ev)
	}

	both := modern.Clone()
	both.Set("X-Shopify-Hmac-Sha256", sig)
	both.Set("X-Shopify-Webhook-Id", "b54557e4")
	both.Set("X-Shopify-Topic", "orders/create")
	if ev2 := wantValid(t, v, both, body, testNow); ev2 != ev {
		t.Errorf("both sets, same values: %+v, want %+v", ev2, ev)
	}
	for _, name := range []string{"X-Shopify-Hmac-Sha256", "X-Shopify-Webhook-Id", "X-Shopify-Topic"} {
		msg := wantInvalid(t, v, withHeader(both, name, "other-value"), body, testNow, ReasonSignature)
		if !strings.Contains(msg, "given 2 times") {
			t.Errorf("%s differs: message %q", name, msg)
		}
	}
}

// slackProbeHeader is the header of Slack's ssl_check probe.
var slackProbeHeader = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}

// TestSlackProbe: Slack's unsigned ssl_check probe, exactly, is a probe;
// nothing else unsigned passes.
func TestSlackProbe(t *testing.T) {
	v := newScheme(t, "slack", Config{Secrets: []string{slackSecret}})
	probe := []byte("ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO")
	for _, tc := range []struct {
		name string
		h    http.Header
		body []byte
	}{
		{"probe", slackProbeHeader, probe},
		{"token first", slackProbeHeader, []byte("token=x&ssl_check=1")},
		{"charset", http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}}, probe},
	} {
		_, err := v.Verify(tc.h, tc.body, testNow)
		if ReasonOf(err) != ReasonProbe || strings.Contains(err.Error(), "gIkuvaNz") {
			t.Errorf("%s: %v, want a probe", tc.name, err)
		}
	}
	signed := slackHeader(slackSecret, testNow.Unix(), probe)
	signed.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, tc := range []struct {
		name string
		h    http.Header
		body []byte
	}{
		{"ssl_check=0", slackProbeHeader, []byte("ssl_check=0&token=x")},
		{"no token", slackProbeHeader, []byte("ssl_check=1")},
		{"extra field", slackProbeHeader, []byte("ssl_check=1&token=x&command=%2Fpay")},
		{"token twice", slackProbeHeader, []byte("ssl_check=1&token=x&token=y")},
		{"ssl_check twice", slackProbeHeader, []byte("ssl_check=1&ssl_check=1&token=x")},
		{"JSON type", http.Header{"Content-Type": {"application/json"}}, probe},
		{"no type", http.Header{}, probe},
		{"two types", http.Header{"Content-Type": {"application/x-www-form-urlencoded", "application/x-www-form-urlencoded"}}, probe},
		{"bad escape", slackProbeHeader, []byte("ssl_check=1&token=%zz")},
		{"too long", slackProbeHeader, append([]byte("ssl_check=1&token="), bytes.Repeat([]byte("a"), 1100)...)},
		{"with a timestamp", withHeader(slackProbeHeader, "X-Slack-Request-Timestamp", strconv.FormatInt(testNow.Unix(), 10)), probe},
		{"with a bad signature", withHeader(slackProbeHeader, "X-Slack-Signature", "v0=00"), probe},
		{"signed wrongly", withHeader(signed, "X-Slack-Signature", "v0="+strings.Repeat("0", 64)), probe},
	} {
		wantInvalid(t, v, tc.h, tc.body, testNow, ReasonSignature, slackSecret)
	}
	// A signed probe is an ordinary signed request.
	wantValid(t, v, signed, probe, testNow)
}

// TestEd25519WorkBounded: distinct v1a signatures beyond the budget of
// maxEd25519Checks verifications (at least keys + 1 signatures) are not
// tried; repeats of one are tried once.
func TestEd25519WorkBounded(t *testing.T) {
	v := newScheme(t, "standard", Config{Secrets: []string{testSigningKey}}) // one public key
	body := []byte(`{"type":"t"}`)
	h := signWith(t, v, body, "msg_1", testNow)
	good := h.Get("Webhook-Signature")
	forged := func(b byte) string {
		return "v1a," + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, ed25519.SignatureSize))
	}
	forgeries := func(n int) string {
		var list []string
		for i := range n {
			list = append(list, forged(byte(i+1)))
		}
		return strings.Join(list, " ")
	}
	// 16 copies of one forged signature: one distinct, so the real one is
	// still tried (it was cut at 16 entries before).
	repeats := strings.TrimSpace(strings.Repeat(forged(1)+" ", 16)) + " " + good
	wantValid(t, v, withHeader(h, "Webhook-Signature", repeats), body, testNow)
	if got := parseSignatures(repeats, "v1a", 2, true); len(got) != 2 {
		t.Errorf("%d distinct signatures, want 2", len(got))
	}
	// With one key, 8 signatures are tried: 7 forged ones and the real one
	// pass, 8 forged ones fill the budget.
	wantValid(t, v, withHeader(h, "Webhook-Signature", forgeries(7)+" "+good), body, testNow)
	wantInvalid(t, v, withHeader(h, "Webhook-Signature", forgeries(8)+" "+good), body, testNow, ReasonSignature)
	for _, c := range []struct{ keys, signatures int }{{1, 8}, {2, 4}, {3, 4}, {4, 5}, {10, 11}} {
		sv := &standard{publicKeys: make([]ed25519.PublicKey, c.keys)}
		if got := sv.ed25519Signatures(); got != c.signatures {
			t.Errorf("%d keys: %d signatures tried, want %d", c.keys, got, c.signatures)
		}
	}
}

// TestEd25519SenderWithMoreKeys: a sender signing with three Ed25519 keys,
// in any order, passes a receiver that knows one of them (was 401 when the
// receiver's key signed third: only keys + 1 = 2 entries were tried).
func TestEd25519SenderWithMoreKeys(t *testing.T) {
	body := []byte(`{"type":"invoice.paid"}`)
	const id = "msg_three_keys"
	ts := strconv.FormatInt(testNow.Unix(), 10)
	var keys []ed25519.PrivateKey
	var entries []string
	for i := range 3 {
		key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(0x41 + i)}, ed25519.SeedSize))
		keys = append(keys, key)
		entries = append(entries, "v1a,"+base64.StdEncoding.EncodeToString(ed25519.Sign(key, standardMessage(id, ts, body))))
	}
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", ts)
	h.Set("webhook-signature", strings.Join(entries, " "))
	for i, key := range keys {
		pub := "whpk_" + base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
		v := newScheme(t, "standard", Config{PublicKeys: []string{pub}})
		if ev := wantValid(t, v, h, body, testNow); ev.ID != id {
			t.Errorf("key #%d: event %+v", i+1, ev)
		}
	}
}

// TestSchemeFacts: each scheme's facts are in its Scheme and agree with its
// verifier: the key option, the test event, the delivery id header, the IP
// preset.
func TestSchemeFacts(t *testing.T) {
	for _, name := range Names() {
		s, _ := Lookup(name)
		t.Run(name, func(t *testing.T) {
			if s.KeyOption != KeyOptionSecret && s.KeyOption != KeyOptionAPIKey {
				t.Fatalf("KeyOption = %q", s.KeyOption)
			}
			a, b := s.TestEvent(), s.TestEvent()
			if len(a) == 0 || bytes.Equal(a, b) {
				t.Fatalf("test events %q, %q: want fresh ones", a, b)
			}
			v := newScheme(t, name, everySchemeConfig())
			id := ""
			if s.NewDeliveryID != nil {
				id = s.NewDeliveryID()
			}
			h := signWith(t, v, a, id, testNow)
			ev := wantValid(t, v, h, a, testNow)
			if s.DeliveryIDHeader != "" {
				if s.NewDeliveryID == nil || h.Get(s.DeliveryIDHeader) != id || ev.ID != id {
					t.Errorf("delivery id %q: header %q, event %q", id, h.Get(s.DeliveryIDHeader), ev.ID)
				}
			} else if name != "hmac" && name != "slack" && ev.ID == BodyDigestID(a) {
				t.Errorf("the test event %s has no id of its own", a)
			}
		})
	}
	if ips, ok := IPPreset("ivy"); !ok || !slices.Equal(ips, IvySourceIPs) {
		t.Errorf("IPPreset(ivy) = %v, %v", ips, ok)
	}
	for _, name := range []string{"stripe", "nope", ""} {
		if _, ok := IPPreset(name); ok {
			t.Errorf("IPPreset(%q) exists", name)
		}
	}
}
