package verify

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testNow is the pretend current time of the scheme tests.
var testNow = time.Unix(1700000000, 0)

// Keys of the standard-v1a-ed25519 vector.
const (
	testPublicKey  = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4="
	testSigningKey = "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
)

// everySchemeConfig is one configuration every registered scheme accepts,
// with a timestamp and a signed header for hmac, so that fuzzing and
// benchmarks reach each scheme's whole verification path. The signed header
// is the event id header, so hmac can sign given an id.
func everySchemeConfig() Config {
	return Config{
		Secrets:    []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		APIKeys:    []string{"ivpay_live_key_123"},
		PublicKeys: []string{testPublicKey},
		HMAC: HMACOptions{
			Header:          "X-Signature",
			Prefix:          "sha256=",
			TimestampHeader: "X-Timestamp",
			Signed:          "{timestamp}.{header.X-Request-Id}.{body}",
			EventID:         "header:X-Request-Id",
		},
	}
}

// newScheme builds the named scheme or fails the test.
func newScheme(t testing.TB, name string, c Config) Verifier {
	t.Helper()
	s, ok := Lookup(name)
	if !ok {
		t.Fatalf("scheme %q is not registered", name)
	}
	v, err := s.New(c)
	if err != nil {
		t.Fatalf("building %s: %v", name, err)
	}
	return v
}

// signWith signs body with v, which must be a Signer.
func signWith(t testing.TB, v Verifier, body []byte, id string, ts time.Time) http.Header {
	t.Helper()
	s, ok := v.(Signer)
	if !ok {
		t.Fatalf("%T does not implement Signer", v)
	}
	h, err := s.Sign(body, id, ts)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return h
}

// wantValid verifies a delivery that must pass and returns its event.
func wantValid(t testing.TB, v Verifier, h http.Header, body []byte, now time.Time) Event {
	t.Helper()
	ev, err := v.Verify(h, body, now)
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if ev.ID == "" || ev.ReplayID == "" {
		t.Fatalf("verified event without an id or a replay id: %+v", ev)
	}
	return ev
}

// wantInvalid verifies a delivery that must fail with reason, and checks the
// message is log-safe: it contains no secret and no long header value (a
// signature). It returns the message.
func wantInvalid(t testing.TB, v Verifier, h http.Header, body []byte, now time.Time, reason string, secrets ...string) string {
	t.Helper()
	ev, err := v.Verify(h, body, now)
	if err == nil {
		t.Fatalf("accepted (event %+v)", ev)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is a %T, want *Error", err, err)
	}
	if e.Reason != reason {
		t.Fatalf("reason = %q (%v), want %q", e.Reason, err, reason)
	}
	msg := err.Error()
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			t.Fatalf("message %q contains a secret", msg)
		}
	}
	for _, values := range h {
		for _, val := range values {
			if len(val) >= 16 && strings.Contains(msg, val) {
				t.Fatalf("message %q contains a header value", msg)
			}
		}
	}
	if ev != (Event{}) {
		t.Fatalf("refused delivery returned event %+v", ev)
	}
	return msg
}

// wantConfigError checks err is a *ConfigError about option.
func wantConfigError(t testing.TB, err error, option string) *ConfigError {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want a *ConfigError", err, err)
	}
	if ce.Option != option {
		t.Fatalf("option = %q (%v), want %q", ce.Option, err, option)
	}
	return ce
}

// withHeader returns a copy of h with name set to value, or removed when
// value is "".
func withHeader(h http.Header, name, value string) http.Header {
	h = h.Clone()
	if value == "" {
		h.Del(name)
	} else {
		h.Set(name, value)
	}
	return h
}

// TestEverySchemeSigns checks that every registered scheme implements
// Signer and verifies what it signs, through NewSigner as the sign command
// uses it.
func TestEverySchemeSigns(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"t","data":{"id":"d_1"},"payment_id":"p1","status":"PAID"}`)
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			c := everySchemeConfig()
			if name == "hmac" {
				// {header.X-Request-Id} is signed: without an id, the signer
				// cannot know its value.
				s, err := NewSigner(name, c)
				if err != nil {
					t.Fatal(err)
				}
				_, err = s.Sign(body, "", testNow)
				wantConfigError(t, err, "signed")
			}
			signer, err := NewSigner(name, c)
			if err != nil {
				t.Fatal(err)
			}
			h, err := signer.Sign(body, "evt_1", testNow)
			if err != nil {
				t.Fatal(err)
			}
			wantValid(t, signer.(Verifier), h, body, testNow)
		})
	}
}

func TestNewSignerUnknownProvider(t *testing.T) {
	_, err := NewSigner("nope", Config{})
	wantConfigError(t, err, "provider")
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * time.Minute:              "5m",
		10 * time.Minute:             "10m",
		90 * time.Second:             "1m30s",
		time.Hour:                    "1h",
		time.Hour + time.Minute:      "1h1m",
		30 * time.Second:             "30s",
		1500 * time.Millisecond:      "1.5s",
		2*time.Hour + 30*time.Second: "2h0m30s",
		10 * time.Millisecond:        "10ms",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
