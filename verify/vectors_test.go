package verify

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// vector is one entry of testdata/signing-vectors.json, a copy of the
// project's shared/vectors/signing-vectors.json.
type vector struct {
	Name         string            `json:"name"`
	Scheme       string            `json:"scheme"`
	Secret       string            `json:"secret"`
	APIKey       string            `json:"api_key"`
	PublicKey    string            `json:"public_key"`
	SigningKey   string            `json:"signing_key"`
	Headers      map[string]string `json:"headers"`
	Body         string            `json:"body"`
	Now          int64             `json:"now"`
	Valid        bool              `json:"valid"`
	EventID      string            `json:"event_id"`
	EventIDParts []string          `json:"event_id_parts"`
	HMAC         *HMACOptions      `json:"hmac"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/signing-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Vectors []vector }
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return file.Vectors
}

// TestVectorsMatchShared keeps the in-repo copy equal to the shared file when
// the shared folder is beside the checkout (as in CI).
func TestVectorsMatchShared(t *testing.T) {
	shared, err := os.ReadFile("../../shared/vectors/signing-vectors.json")
	if err != nil {
		t.Skip("shared/ not beside this checkout")
	}
	ours, err := os.ReadFile("testdata/signing-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shared, ours) {
		t.Fatal("verify/testdata/signing-vectors.json differs from shared/vectors/signing-vectors.json: copy it again")
	}
}

// vectorConfig builds a scheme configuration from a vector.
func (v vector) config() Config {
	c := Config{}
	if v.Secret != "" {
		c.Secrets = []string{v.Secret}
	}
	if v.APIKey != "" {
		c.APIKeys = []string{v.APIKey}
	}
	if v.PublicKey != "" {
		c.PublicKeys = []string{v.PublicKey}
	}
	if v.HMAC != nil {
		c.HMAC = *v.HMAC
	}
	return c
}

func (v vector) header() http.Header {
	h := http.Header{}
	for k, val := range v.Headers {
		h.Set(k, val)
	}
	return h
}

func (v vector) now() time.Time {
	if v.Now == 0 {
		return time.Now()
	}
	return time.Unix(v.Now, 0)
}

// TestVectors checks every published vector: each passes or fails exactly as
// it says, and a passing one yields the event id it gives.
func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			s, ok := Lookup(v.Scheme)
			if !ok {
				t.Fatalf("scheme %q is not registered", v.Scheme)
			}
			ver, err := s.New(v.config())
			if err != nil {
				t.Fatalf("building verifier: %v", err)
			}
			ev, err := ver.Verify(v.header(), []byte(v.Body), v.now())
			if v.Valid != (err == nil) {
				t.Fatalf("valid = %v, want %v (err: %v)", err == nil, v.Valid, err)
			}
			if err != nil {
				if strings.Contains(err.Error(), v.Secret+"x") || (v.Secret != "" && strings.Contains(err.Error(), v.Secret)) {
					t.Fatal("error message contains the secret")
				}
				return
			}
			if v.EventID != "" && ev.ID != v.EventID {
				t.Errorf("event id = %q, want %q", ev.ID, v.EventID)
			}
			for _, part := range v.EventIDParts {
				if !strings.Contains(ev.ID, part) {
					t.Errorf("event id %q lacks %q", ev.ID, part)
				}
			}
			if ev.ID == "" || ev.ReplayID == "" {
				t.Error("verified event without an id or a replay id")
			}
		})
	}
}

// TestSignRoundTrip checks that each scheme verifies what it signs, and
// refuses it after one byte of the body changes.
func TestSignRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 0)
	body := []byte(`{"id":"evt_42","type":"payment.succeeded","payment_id":"p1","status":"PAID"}`)
	for _, v := range loadVectors(t) {
		if !v.Valid || v.Secret == "" && v.APIKey == "" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			s, _ := Lookup(v.Scheme)
			if s.New == nil {
				t.Skipf("scheme %q is not registered", v.Scheme)
			}
			ver, err := s.New(v.config())
			if err != nil {
				t.Fatal(err)
			}
			signer, ok := ver.(Signer)
			if !ok {
				t.Skip("scheme cannot sign")
			}
			h, err := signer.Sign(body, "evt_42", now)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ver.Verify(h, body, now); err != nil {
				t.Fatalf("own signature refused: %v", err)
			}
			if v.Scheme == "ivpay" {
				return // a static key does not cover the body
			}
			tampered := bytes.Clone(body)
			tampered[len(tampered)-2] ^= 1
			if _, err := ver.Verify(h, tampered, now); err == nil {
				t.Fatal("tampered body accepted")
			}
		})
	}
}
