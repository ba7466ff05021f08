package verify

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestUpstreamSignerVector: the Standard Webhooks specification's test
// vector (the libraries' TestWebhookSign).
func TestUpstreamSignerVector(t *testing.T) {
	s, err := NewUpstreamSigner([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	s.Sign(h, "msg_p5jXN8AQM9LWM0D4loKWxJek", []byte(`{"test": 2432232314}`), time.Unix(1614265330, 999_000_000))
	want := http.Header{
		"Webhook-Id":        {"msg_p5jXN8AQM9LWM0D4loKWxJek"},
		"Webhook-Timestamp": {"1614265330"},
		"Webhook-Signature": {"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
	}
	if !headersEqual(h, want) {
		t.Fatalf("headers %v, want %v", h, want)
	}
}

// TestUpstreamSigner: what it signs verifies with the standard scheme under
// each secret (rotation: one entry per secret, in order), a provider's own
// Standard Webhooks or oddly spelled headers are replaced, not added to, the
// id is header-safe and the other headers are kept.
func TestUpstreamSigner(t *testing.T) {
	a, b := "whsec_"+base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", 32))), base64.StdEncoding.EncodeToString([]byte(strings.Repeat("b", 24)))
	s, err := NewUpstreamSigner([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"evt_1","type":"charge.succeeded"}`)
	now := time.Unix(1700000000, 500_000_000)
	h := http.Header{
		"Webhook-Id":        {"msg_provider"},
		"Webhook-Signature": {"v1,cHJvdmlkZXI=", "v1,c2Vjb25k"},
		"webhook-timestamp": {"1"}, // not canonical: set by hand
		"Stripe-Signature":  {"t=1,v1=00"},
	}
	s.Sign(h, "evt_\x01", body, now)
	if len(h) != 4 || h.Get("Stripe-Signature") != "t=1,v1=00" {
		t.Fatalf("headers %v: want the three Standard Webhooks ones and Stripe's, once each", h)
	}
	if got := h["Webhook-Id"]; len(got) != 1 || got[0] != "~b64:ZXZ0XwE" {
		t.Errorf("webhook-id %q", got)
	}
	if got := h["Webhook-Timestamp"]; len(got) != 1 || got[0] != "1700000000" {
		t.Errorf("webhook-timestamp %q", got)
	}
	entries := strings.Split(h.Get("Webhook-Signature"), " ")
	if len(h["Webhook-Signature"]) != 1 || len(entries) != 2 {
		t.Fatalf("webhook-signature %q: want one value with two entries", h["Webhook-Signature"])
	}
	for i, secret := range []string{a, b} {
		v := newScheme(t, "standard", Config{Secrets: []string{secret}})
		ev := wantValid(t, v, h, body, now)
		if ev.ID != "~b64:ZXZ0XwE" {
			t.Errorf("secret #%d: event %+v", i+1, ev)
		}
		// The entry of this secret is the i-th.
		only := h.Clone()
		only.Set("Webhook-Signature", entries[i])
		wantValid(t, v, only, body, now)
	}
	other := newScheme(t, "standard", Config{Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("c", 32)))}})
	wantInvalid(t, other, h, body, now, ReasonSignature)

	// A later attempt is signed afresh.
	s.Sign(h, "evt_\x01", body, now.Add(10*time.Minute))
	if h.Get("Webhook-Timestamp") != "1700000600" || len(h["Webhook-Signature"]) != 1 {
		t.Errorf("re-signed: %v", h)
	}
	// An empty id is the body's digest.
	s.Sign(h, "", body, now)
	if h.Get("Webhook-Id") != BodyDigestID(body) {
		t.Errorf("empty id: webhook-id %q", h.Get("Webhook-Id"))
	}
}

// TestUpstreamSignerConfig: each mistake names sign_upstream and the entry,
// never the value.
func TestUpstreamSignerConfig(t *testing.T) {
	good := "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	for _, c := range []struct {
		secrets []string
		want    string
	}{
		{nil, "sign_upstream: at least one is required"},
		{[]string{" "}, "sign_upstream: value #1 is empty or only whitespace"},
		{[]string{good, "whsec_"}, "sign_upstream: value #2 has nothing after its prefix"},
		{[]string{"whsec_not*base64!"}, "sign_upstream: value #1 is not a whsec_<base64> Standard Webhooks secret"},
		{[]string{"whsec_" + base64.StdEncoding.EncodeToString([]byte("short-key"))}, "sign_upstream: value #1 is a key of 9 bytes: give at least 16"},
		{[]string{testPublicKey}, "sign_upstream: value #1 is an Ed25519 key"},
		{[]string{testSigningKey}, "sign_upstream: value #1 is an Ed25519 key"},
	} {
		_, err := NewUpstreamSigner(c.secrets)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Option != "sign_upstream" || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.secrets, err, c.want)
			continue
		}
		for _, s := range c.secrets {
			if rest := strings.TrimPrefix(s, "whsec_"); len(rest) > 3 && strings.Contains(err.Error(), rest) {
				t.Errorf("%q: the error holds the secret: %v", c.secrets, err)
			}
		}
	}
	if _, err := NewUpstreamSigner([]string{good, strings.TrimPrefix(good, "whsec_")}); err != nil {
		t.Errorf("good secrets: %v", err)
	}
}

// headersEqual compares two headers exactly.
func headersEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb := b[k]
		if len(va) != len(vb) {
			return false
		}
		for i := range va {
			if va[i] != vb[i] {
				return false
			}
		}
	}
	return true
}
