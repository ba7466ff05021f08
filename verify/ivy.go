package verify

import (
	"encoding/hex"
	"net/http"
	"time"
)

// IvySourceIPs are Ivy's published production webhook source addresses.
var IvySourceIPs = []string{"18.159.27.193", "3.120.50.145", "3.66.64.118"}

// Ivy signs the raw body with HMAC-SHA256 keyed by the secret string and
// sends the lowercase hex digest in X-Ivy-Signature. The event id and type
// are the body's "id" and "type".
const ivySignatureHeader = "X-Ivy-Signature"

func init() {
	Register(Scheme{
		Name:            "ivy",
		New:             newIvy,
		DefaultAllowIPs: IvySourceIPs,
	})
}

type ivy struct{ keys macKeys }

func newIvy(c Config) (Verifier, error) {
	if err := requireSecrets("secret", c.Secrets); err != nil {
		return nil, err
	}
	return &ivy{keys: sha256Keys(c.Secrets)}, nil
}

func (v *ivy) Verify(h http.Header, body []byte, _ time.Time) (Event, error) {
	sig := h.Get(ivySignatureHeader)
	if sig == "" {
		return Event{}, Invalid("%s header missing", ivySignatureHeader)
	}
	mac, err := hex.DecodeString(sig)
	if err != nil || len(mac) != 32 {
		return Event{}, Invalid("%s is not a hex SHA-256 digest", ivySignatureHeader)
	}
	if !v.keys.match([][]byte{mac}, body) {
		return Event{}, Invalid("signature does not match any of %s", secretCount(len(v.keys.keys)))
	}
	id, typ := jsonIDAndType(body)
	return Event{ID: orDigest(id, body), Type: typ}, nil
}

func (v *ivy) Sign(body []byte, _ string, _ time.Time) (http.Header, error) {
	h := http.Header{}
	h.Set(ivySignatureHeader, hex.EncodeToString(v.keys.sum(0, body)))
	return h, nil
}
