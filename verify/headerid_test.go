package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
)

func TestHeaderEventID(t *testing.T) {
	digest := func(id string) string {
		sum := sha256.Sum256([]byte(id))
		return "~sha256:" + hex.EncodeToString(sum[:])
	}
	for _, c := range []struct{ id, want string }{
		{"", ""},
		{"evt_1NQ2abc", "evt_1NQ2abc"},
		{"3f1c0e6a-5b2d-4e8f-9a7c-1d2e3f4a5b6c", "3f1c0e6a-5b2d-4e8f-9a7c-1d2e3f4a5b6c"},
		{"sha256:" + strings.Repeat("ab", 32), "sha256:" + strings.Repeat("ab", 32)},
		{strings.Repeat("a", 256), strings.Repeat("a", 256)},
		{"evt_\x01\n", "~b64:ZXZ0XwEK"},
		{"evt 1", "~b64:ZXZ0IDE"},
		{"évt", "~b64:w6l2dA"},
		{"~b64:ZXZ0XwEK", "~b64:fmI2NDpaWFowWHdFSw"},
		{"~", "~b64:fg"},
		{strings.Repeat("a", 257), digest(strings.Repeat("a", 257))},
		{strings.Repeat("x", 20<<10), digest(strings.Repeat("x", 20<<10))},
	} {
		if got := HeaderEventID(c.id); got != c.want {
			t.Errorf("HeaderEventID(%.40q) = %q, want %q", c.id, got, c.want)
		}
	}
	// The longest id given in base64 fits, one byte more is digested.
	for n, prefix := range map[int]string{188: "~b64:", 189: "~sha256:"} {
		id := strings.Repeat("\x00", n)
		got := HeaderEventID(id)
		if !strings.HasPrefix(got, prefix) || len(got) > MaxHeaderEventID {
			t.Errorf("%d NUL bytes: %q (%d bytes)", n, got, len(got))
		}
		if prefix == "~b64:" {
			if raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(got, prefix)); err != nil || string(raw) != id {
				t.Errorf("%d NUL bytes: does not decode back", n)
			}
		}
	}
}

// FuzzHeaderEventID: every form is a valid header value of at most
// MaxHeaderEventID bytes that survives an http.Header round trip unchanged,
// an id passes as it is only when it is safe, and a base64 form decodes back
// to the id.
func FuzzHeaderEventID(f *testing.F) {
	for _, id := range []string{"evt_1", "evt_\x01\n", "~b64:AA", " x ", "é", strings.Repeat("z", 300), "\xff\xfe"} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		got := HeaderEventID(id)
		if id == "" {
			if got != "" {
				t.Fatalf("empty id: %q", got)
			}
			return
		}
		if len(got) > MaxHeaderEventID || strings.IndexFunc(got, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			t.Fatalf("%q: form %q is not at most %d bytes of printable ASCII", id, got, MaxHeaderEventID)
		}
		h := http.Header{}
		h.Set("Webhook-Guard-Event-Id", got)
		if h.Get("Webhook-Guard-Event-Id") != got {
			t.Fatalf("%q: the header changes it", got)
		}
		switch {
		case got == id:
			if !headerSafe(id) {
				t.Fatalf("%q passed unchanged", id)
			}
		case strings.HasPrefix(got, HeaderIDBase64Prefix):
			raw, err := base64.RawURLEncoding.DecodeString(got[len(HeaderIDBase64Prefix):])
			if err != nil || string(raw) != id {
				t.Fatalf("%q: %q does not decode back", id, got)
			}
		case strings.HasPrefix(got, HeaderIDDigestPrefix):
			if len(id) <= maxBase64ID {
				t.Fatalf("%q digested although short", id)
			}
		default:
			t.Fatalf("%q: form %q", id, got)
		}
	})
}
