package verify

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
)

// githubSecret and githubSignature are GitHub's documented example: the
// body "Hello, World!".
const (
	githubSecret    = "It's a Secret to Everybody"
	githubSignature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
)

func TestGitHub(t *testing.T) {
	body := []byte("Hello, World!")
	v := newScheme(t, "github", Config{Secrets: []string{githubSecret}})
	h := http.Header{}
	h.Set("X-Hub-Signature-256", githubSignature)
	h.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	h.Set("X-GitHub-Event", "push")

	t.Run("valid", func(t *testing.T) {
		ev := wantValid(t, v, h, body, testNow)
		if ev.ID != "72d3162e-cc78-11e3-81ab-4c9367dc0958" || ev.Type != "push" || !ev.Timestamp.IsZero() {
			t.Errorf("event = %+v", ev)
		}
	})
	t.Run("no delivery header", func(t *testing.T) {
		ev := wantValid(t, v, withHeader(h, "X-GitHub-Delivery", ""), body, testNow)
		if ev.ID != BodyDigestID(body) {
			t.Errorf("id = %q, want the body digest", ev.ID)
		}
	})
	t.Run("signed by Sign", func(t *testing.T) {
		got := signWith(t, v, body, "d1", testNow)
		if got.Get("X-Hub-Signature-256") != githubSignature || got.Get("X-GitHub-Delivery") != "d1" {
			t.Errorf("Sign = %v", got)
		}
	})
	t.Run("tampered body", func(t *testing.T) {
		wantInvalid(t, v, h, []byte("Hello, World?"), testNow, ReasonSignature, githubSecret)
	})
	t.Run("wrong secret", func(t *testing.T) {
		other := newScheme(t, "github", Config{Secrets: []string{"It's a secret to everybody"}})
		msg := wantInvalid(t, other, h, body, testNow, ReasonSignature, githubSecret, "It's a secret to everybody")
		if msg != "signature does not match any of 1 secret" {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("rotation: second secret matches", func(t *testing.T) {
		rot := newScheme(t, "github", Config{Secrets: []string{"old", githubSecret}})
		wantValid(t, rot, h, body, testNow)
		msg := wantInvalid(t, rot, h, body[1:], testNow, ReasonSignature, "old", githubSecret)
		if !strings.Contains(msg, "2 secrets") {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("missing header", func(t *testing.T) {
		wantInvalid(t, v, withHeader(h, "X-Hub-Signature-256", ""), body, testNow, ReasonSignature, githubSecret)
	})
	t.Run("legacy SHA-1 header alone", func(t *testing.T) {
		mac := hmac.New(sha1.New, []byte(githubSecret))
		mac.Write(body)
		hh := withHeader(h, "X-Hub-Signature-256", "")
		hh.Set("X-Hub-Signature", "sha1="+hex.EncodeToString(mac.Sum(nil)))
		wantInvalid(t, v, hh, body, testNow, ReasonSignature, githubSecret)
	})
	for _, bad := range []string{
		githubSignature[len("sha256="):],           // no prefix
		"sha1=" + githubSignature[len("sha256="):], // wrong prefix
		"SHA256=" + githubSignature[len("sha256="):],
		"sha256=" + strings.Repeat("zz", 32),
		githubSignature[:len(githubSignature)-2], // short
		githubSignature + "00",                   // long
		"sha256=",
	} {
		t.Run("malformed "+bad, func(t *testing.T) {
			wantInvalid(t, v, withHeader(h, "X-Hub-Signature-256", bad), body, testNow, ReasonSignature, githubSecret)
		})
	}
	t.Run("uppercase hex", func(t *testing.T) {
		wantValid(t, v, withHeader(h, "X-Hub-Signature-256", "sha256="+strings.ToUpper(githubSignature[len("sha256="):])), body, testNow)
	})
	t.Run("config", func(t *testing.T) {
		_, err := githubPreset.build(Config{})
		wantConfigError(t, err, "secret")
	})
}
