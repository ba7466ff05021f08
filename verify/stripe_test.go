package verify

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"testing"
	"time"
)

const stripeSecret = "whsec_test_secret"

// stripeHeader builds a Stripe-Signature by hand, keyed with the whole
// secret string as Stripe does, with one v1 per secret.
func stripeHeader(t int64, body []byte, secrets ...string) http.Header {
	ts := strconv.FormatInt(t, 10)
	v := "t=" + ts
	for _, s := range secrets {
		mac := hmac.New(sha256.New, []byte(s))
		mac.Write([]byte(ts + "."))
		mac.Write(body)
		v += ",v1=" + hex.EncodeToString(mac.Sum(nil))
	}
	return http.Header{"Stripe-Signature": {v}}
}

func TestStripe(t *testing.T) {
	body := []byte(`{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"payment_intent.succeeded"}`)
	v := newScheme(t, "stripe", Config{Secrets: []string{stripeSecret}})
	h := stripeHeader(testNow.Unix(), body, stripeSecret)

	t.Run("valid", func(t *testing.T) {
		ev := wantValid(t, v, h, body, testNow)
		if ev.ID != "evt_1NG8Du2eZvKYlo2CUI79vXWy" || ev.Type != "payment_intent.succeeded" {
			t.Errorf("event = %+v", ev)
		}
		if !ev.Timestamp.Equal(testNow) {
			t.Errorf("timestamp = %v, want %v", ev.Timestamp, testNow)
		}
	})
	t.Run("signed by Sign", func(t *testing.T) {
		got := signWith(t, v, body, "ignored", testNow)
		if got.Get("Stripe-Signature") != h.Get("Stripe-Signature") {
			t.Errorf("Sign = %q, want %q", got.Get("Stripe-Signature"), h.Get("Stripe-Signature"))
		}
	})
	t.Run("tampered body", func(t *testing.T) {
		wantInvalid(t, v, h, bytes.Replace(body, []byte("succeeded"), []byte("succeedeD"), 1), testNow, ReasonSignature, stripeSecret)
	})
	t.Run("wrong secret", func(t *testing.T) {
		other := newScheme(t, "stripe", Config{Secrets: []string{stripeSecret + "x"}})
		wantInvalid(t, other, h, body, testNow, ReasonSignature, stripeSecret, stripeSecret+"x")
	})
	t.Run("secret used base64-decoded", func(t *testing.T) {
		// Standard Webhooks decodes whsec_; Stripe does not.
		wantInvalid(t, v, stripeHeader(testNow.Unix(), body, "test_secret"), body, testNow, ReasonSignature, stripeSecret)
	})
	t.Run("rotation: second secret matches", func(t *testing.T) {
		rot := newScheme(t, "stripe", Config{Secrets: []string{"whsec_old", stripeSecret}})
		wantValid(t, rot, h, body, testNow)
	})
	t.Run("rolling: second v1 matches", func(t *testing.T) {
		wantValid(t, v, stripeHeader(testNow.Unix(), body, "whsec_new", stripeSecret), body, testNow)
	})
	t.Run("v0 ignored", func(t *testing.T) {
		hv := withHeader(h, "Stripe-Signature", "t="+strconv.FormatInt(testNow.Unix(), 10)+",v0="+h.Get("Stripe-Signature")[len("t=1700000000,v1="):])
		wantInvalid(t, v, hv, body, testNow, ReasonSignature, stripeSecret)
	})
	t.Run("missing header", func(t *testing.T) {
		msg := wantInvalid(t, v, http.Header{}, body, testNow, ReasonSignature, stripeSecret)
		if msg != "Stripe-Signature header missing" {
			t.Errorf("message = %q", msg)
		}
	})
	for _, bad := range []string{
		"garbage",
		"v1=" + hex.EncodeToString(make([]byte, 32)),
		"t=1700000000,t=1700000000,v1=" + hex.EncodeToString(make([]byte, 32)),
		"t=,v1=" + hex.EncodeToString(make([]byte, 32)),
		"t=1700000000,v1",
		"t=1700000000,v1=zz",
		"t=1700000000,v1=abcd",
		"t=1700000000",
		"t=now,v1=" + hex.EncodeToString(make([]byte, 32)),
	} {
		t.Run("malformed "+bad, func(t *testing.T) {
			wantInvalid(t, v, withHeader(h, "Stripe-Signature", bad), body, testNow, ReasonSignature, stripeSecret)
		})
	}
	t.Run("stale", func(t *testing.T) {
		msg := wantInvalid(t, v, h, body, testNow.Add(5*time.Minute+time.Second), ReasonTimestamp, stripeSecret)
		if msg != "timestamp 5m1s in the past, tolerance 5m" {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("future", func(t *testing.T) {
		wantInvalid(t, v, h, body, testNow.Add(-5*time.Minute-time.Second), ReasonTimestamp, stripeSecret)
	})
	t.Run("edge of tolerance", func(t *testing.T) {
		wantValid(t, v, h, body, testNow.Add(5*time.Minute))
		wantValid(t, v, h, body, testNow.Add(-5*time.Minute))
	})
	t.Run("configured tolerance", func(t *testing.T) {
		short := newScheme(t, "stripe", Config{Secrets: []string{stripeSecret}, Tolerance: 10 * time.Second})
		wantInvalid(t, short, h, body, testNow.Add(11*time.Second), ReasonTimestamp, stripeSecret)
	})
	t.Run("no id in body", func(t *testing.T) {
		b := []byte(`not json`)
		ev := wantValid(t, v, stripeHeader(testNow.Unix(), b, stripeSecret), b, testNow)
		if ev.ID != BodyDigestID(b) || ev.Type != "" {
			t.Errorf("event = %+v", ev)
		}
	})
	t.Run("config", func(t *testing.T) {
		_, err := stripePreset.build(Config{})
		wantConfigError(t, err, "secret")
		_, err = stripePreset.build(Config{Secrets: []string{""}})
		wantConfigError(t, err, "secret")
	})
}

func TestParseStripeSignature(t *testing.T) {
	sig := hex.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	for _, tc := range []struct {
		header string
		ts     string
		n      int
		ok     bool
	}{
		{"t=1,v1=" + sig, "1", 1, true},
		{"t=1, v1=" + sig + ", v1=" + sig + ",v0=" + sig, "1", 2, true},
		{"v1=" + sig + ",t=1", "1", 1, true},
		{"t=1,v1=nothex,v1=" + sig[:10], "1", 0, true},
		{"t=1,x=y", "1", 0, true},
		{"", "", 0, false},
		{"t=1,t=2", "", 0, false},
		{"t=1,,v1=" + sig, "", 0, false},
		{"t", "", 0, false},
		{"v1=" + sig, "", 0, false},
		{"t==1", "=1", 0, true},
	} {
		ts, v1, ok := ParseStripeSignature(tc.header)
		if ts != tc.ts || len(v1) != tc.n || ok != tc.ok {
			t.Errorf("ParseStripeSignature(%q) = %q, %d sigs, %v; want %q, %d, %v", tc.header, ts, len(v1), ok, tc.ts, tc.n, tc.ok)
		}
	}
}
