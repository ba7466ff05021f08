package verify

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The official Standard Webhooks vector.
const (
	standardSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	standardID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	standardTS     = "1614265330"
	standardV1     = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	standardV1a    = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg=="
	standardBody   = `{"test": 2432232314}`
)

var standardNow = time.Unix(1614265330, 0)

func standardHeader(sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", standardID)
	h.Set("webhook-timestamp", standardTS)
	h.Set("webhook-signature", sig)
	return h
}

// otherV1 is a well-formed v1 entry that matches nothing.
var otherV1 = "v1," + base64.StdEncoding.EncodeToString(make([]byte, 32))

// otherV1a is a well-formed v1a entry that matches nothing.
var otherV1a = "v1a," + base64.StdEncoding.EncodeToString(make([]byte, 64))

func TestStandardHMAC(t *testing.T) {
	body := []byte(`{"type":"invoice.paid","test": 2432232314}`)
	v := newScheme(t, "standard", Config{Secrets: []string{standardSecret}})
	h := signWith(t, v, body, "msg_1", testNow)

	t.Run("valid", func(t *testing.T) {
		ev := wantValid(t, v, h, body, testNow)
		if ev.ID != "msg_1" || ev.Type != "invoice.paid" || !ev.Timestamp.Equal(testNow) {
			t.Errorf("event = %+v", ev)
		}
	})
	t.Run("official vector, Sign", func(t *testing.T) {
		got := signWith(t, v, []byte(standardBody), standardID, standardNow)
		if got.Get("webhook-signature") != standardV1 {
			t.Errorf("Sign = %q, want %q", got.Get("webhook-signature"), standardV1)
		}
	})
	t.Run("svix headers", func(t *testing.T) {
		sh := http.Header{}
		sh.Set("svix-id", h.Get("webhook-id"))
		sh.Set("svix-timestamp", h.Get("webhook-timestamp"))
		sh.Set("svix-signature", h.Get("webhook-signature"))
		wantValid(t, v, sh, body, testNow)
	})
	t.Run("tampered body", func(t *testing.T) {
		wantInvalid(t, v, h, []byte(`{"type":"invoice.paid","test": 2432232315}`), testNow, ReasonSignature, standardSecret)
	})
	t.Run("tampered id", func(t *testing.T) {
		wantInvalid(t, v, withHeader(h, "webhook-id", "msg_2"), body, testNow, ReasonSignature, standardSecret)
	})
	t.Run("wrong secret", func(t *testing.T) {
		other := newScheme(t, "standard", Config{Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString([]byte("another key"))}})
		wantInvalid(t, other, h, body, testNow, ReasonSignature, standardSecret)
	})
	t.Run("rotation: second secret matches", func(t *testing.T) {
		rot := newScheme(t, "standard", Config{Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString([]byte("old")), standardSecret}})
		wantValid(t, rot, h, body, testNow)
	})
	t.Run("several signatures, last matches", func(t *testing.T) {
		wantValid(t, v, withHeader(h, "webhook-signature", otherV1+" v2,abc "+otherV1a+" "+h.Get("webhook-signature")), body, testNow)
	})
	for _, name := range []string{"webhook-id", "webhook-signature", "webhook-timestamp"} {
		t.Run("missing "+name, func(t *testing.T) {
			wantInvalid(t, v, withHeader(h, name, ""), body, testNow, ReasonSignature, standardSecret)
		})
	}
	for _, bad := range []string{"v1,", "v1,!!!", "v2," + h.Get("webhook-signature")[3:], "garbage", h.Get("webhook-signature")[3:], otherV1a} {
		t.Run("malformed "+bad, func(t *testing.T) {
			wantInvalid(t, v, withHeader(h, "webhook-signature", bad), body, testNow, ReasonSignature, standardSecret)
		})
	}
	t.Run("stale", func(t *testing.T) {
		wantInvalid(t, v, h, body, testNow.Add(301*time.Second), ReasonTimestamp, standardSecret)
	})
	t.Run("future", func(t *testing.T) {
		wantInvalid(t, v, h, body, testNow.Add(-301*time.Second), ReasonTimestamp, standardSecret)
	})
	t.Run("error names no secret", func(t *testing.T) {
		_, err := newStandard(Config{Secrets: []string{"whsec_not base64!"}})
		ce := wantConfigError(t, err, "secret")
		if strings.Contains(ce.Error(), "not base64!") {
			t.Errorf("message %q contains the secret", ce)
		}
	})
}

func TestStandardEd25519(t *testing.T) {
	body := []byte(standardBody)
	pub := newScheme(t, "standard", Config{PublicKeys: []string{testPublicKey}})
	h := standardHeader(standardV1a)

	t.Run("official vector", func(t *testing.T) {
		ev := wantValid(t, pub, h, body, standardNow)
		if ev.ID != standardID {
			t.Errorf("id = %q", ev.ID)
		}
	})
	t.Run("Sign with whsk_ reproduces the vector", func(t *testing.T) {
		signer := newScheme(t, "standard", Config{Secrets: []string{testSigningKey}})
		got := signWith(t, signer, body, standardID, standardNow)
		if got.Get("webhook-signature") != standardV1a {
			t.Errorf("Sign = %q, want %q", got.Get("webhook-signature"), standardV1a)
		}
		wantValid(t, signer, got, body, standardNow) // a whsk_ secret verifies too
		wantValid(t, pub, got, body, standardNow)
	})
	t.Run("Sign with a 32-byte seed", func(t *testing.T) {
		seed := ed25519.NewKeyFromSeed(make([]byte, 32)).Seed()
		v := newScheme(t, "standard", Config{Secrets: []string{"whsk_" + base64.StdEncoding.EncodeToString(seed)}})
		wantValid(t, v, signWith(t, v, body, "", testNow), body, testNow)
	})
	t.Run("first secret decides the version", func(t *testing.T) {
		v := newScheme(t, "standard", Config{Secrets: []string{standardSecret, testSigningKey}})
		got := signWith(t, v, body, standardID, standardNow)
		if got.Get("webhook-signature") != standardV1 {
			t.Errorf("Sign = %q, want v1", got.Get("webhook-signature"))
		}
	})
	t.Run("public key only cannot sign", func(t *testing.T) {
		if _, ok := pub.(Signer); ok {
			t.Error("a public-key-only verifier implements Signer")
		}
		_, err := NewSigner("standard", Config{PublicKeys: []string{testPublicKey}})
		wantConfigError(t, err, "provider")
	})
	t.Run("tampered body", func(t *testing.T) {
		wantInvalid(t, pub, h, []byte(`{"test": 2432232315}`), standardNow, ReasonSignature)
	})
	t.Run("tampered timestamp", func(t *testing.T) {
		wantInvalid(t, pub, withHeader(h, "webhook-timestamp", "1614265331"), body, standardNow, ReasonSignature)
	})
	t.Run("wrong key", func(t *testing.T) {
		otherPub, _, _ := ed25519.GenerateKey(nil)
		other := newScheme(t, "standard", Config{PublicKeys: []string{"whpk_" + base64.StdEncoding.EncodeToString(otherPub)}})
		msg := wantInvalid(t, other, h, body, standardNow, ReasonSignature)
		if msg != "signature does not match any of 1 public key" {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("rotation: second key matches", func(t *testing.T) {
		otherPub, _, _ := ed25519.GenerateKey(nil)
		rot := newScheme(t, "standard", Config{PublicKeys: []string{"whpk_" + base64.StdEncoding.EncodeToString(otherPub), testPublicKey}})
		wantValid(t, rot, h, body, standardNow)
	})
	t.Run("unprefixed public key", func(t *testing.T) {
		bare := newScheme(t, "standard", Config{PublicKeys: []string{strings.TrimPrefix(testPublicKey, "whpk_")}})
		wantValid(t, bare, h, body, standardNow)
	})
	t.Run("v1 entries ignored without a secret", func(t *testing.T) {
		msg := wantInvalid(t, pub, standardHeader(standardV1), body, standardNow, ReasonSignature)
		if msg != "webhook-signature has no well-formed v1a signature" {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("malformed v1a", func(t *testing.T) {
		for _, bad := range []string{"v1a,", "v1a,!!", "v1a," + base64.StdEncoding.EncodeToString([]byte("short")), otherV1a} {
			wantInvalid(t, pub, standardHeader(bad), body, standardNow, ReasonSignature)
		}
	})
	t.Run("stale", func(t *testing.T) {
		wantInvalid(t, pub, h, body, standardNow.Add(6*time.Minute), ReasonTimestamp)
	})

	both := newScheme(t, "standard", Config{Secrets: []string{standardSecret}, PublicKeys: []string{testPublicKey}})
	t.Run("mixed header, v1a matches", func(t *testing.T) {
		wantValid(t, both, standardHeader(otherV1+" "+standardV1a), body, standardNow)
	})
	t.Run("mixed header, v1 matches", func(t *testing.T) {
		wantValid(t, both, standardHeader(otherV1a+" "+standardV1), body, standardNow)
	})
	t.Run("mixed header, none matches", func(t *testing.T) {
		msg := wantInvalid(t, both, standardHeader(otherV1+" "+otherV1a), body, standardNow, ReasonSignature, standardSecret)
		if msg != "signature does not match any of 1 secret or 1 public key" {
			t.Errorf("message = %q", msg)
		}
	})
	t.Run("a v1 MAC under the public key is not a v1a", func(t *testing.T) {
		pk, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(testPublicKey, "whpk_"))
		mac := hmac.New(sha256.New, pk)
		mac.Write([]byte(standardID + "." + standardTS + "." + standardBody))
		forged := base64.StdEncoding.EncodeToString(mac.Sum(nil))
		wantInvalid(t, pub, standardHeader("v1,"+forged+" v1a,"+forged), body, standardNow, ReasonSignature)
	})
}

func TestStandardConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		option string
		msg    string
	}{
		{"nothing", Config{}, "secret", "secret or public_key required"},
		{"empty secret", Config{Secrets: []string{""}}, "secret", ""},
		{"empty public key", Config{PublicKeys: []string{""}}, "public_key", ""},
		{"secret not base64", Config{Secrets: []string{"whsec_***"}}, "secret", ""},
		{"public key as secret", Config{Secrets: []string{testPublicKey}}, "secret", "public_key"},
		{"bad signing key", Config{Secrets: []string{"whsk_AAAA"}}, "secret", ""},
		{"mismatched signing key", Config{Secrets: []string{"whsk_" + base64.StdEncoding.EncodeToString(make([]byte, 64))}}, "secret", ""},
		{"public key not base64", Config{PublicKeys: []string{"whpk_***"}}, "public_key", ""},
		{"public key too short", Config{PublicKeys: []string{"whpk_" + base64.StdEncoding.EncodeToString(make([]byte, 31))}}, "public_key", ""},
		{"signing key as public key", Config{PublicKeys: []string{testSigningKey}}, "public_key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newStandard(tc.cfg)
			ce := wantConfigError(t, err, tc.option)
			if !strings.Contains(ce.Msg, tc.msg) {
				t.Errorf("message %q lacks %q", ce.Msg, tc.msg)
			}
			for _, s := range append(tc.cfg.Secrets, tc.cfg.PublicKeys...) {
				if len(s) > 8 && strings.Contains(ce.Error(), s) {
					t.Errorf("message %q contains a key", ce)
				}
			}
		})
	}
}

func TestParseStandardSignatures(t *testing.T) {
	h := "v1,AAAA v1a,AQID  v1,!! v2,AAAA v1,  v1a " + "v1,BBBB"
	if got := ParseStandardSignatures(h, "v1"); len(got) != 2 {
		t.Errorf("v1: %d entries, want 2", len(got))
	}
	if got := ParseStandardSignatures(h, "v1a"); len(got) != 1 || string(got[0]) != "\x01\x02\x03" {
		t.Errorf("v1a: %q", got)
	}
	if got := ParseStandardSignatures("", "v1"); got != nil {
		t.Errorf("empty: %q", got)
	}
}

// TestStandardSignatureCountBounded: a header with thousands of entries is
// read only up to maxSignatures, so it cannot make the guard verify
// thousands of Ed25519 signatures.
func TestStandardSignatureCountBounded(t *testing.T) {
	entry := "v1a," + strings.Repeat("A", 86) + "== "
	got := ParseStandardSignatures(strings.Repeat(entry, 5000), "v1a")
	if len(got) != maxSignatures {
		t.Fatalf("decoded %d signatures, want %d", len(got), maxSignatures)
	}
}
