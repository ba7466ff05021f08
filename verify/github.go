package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"
)

// GitHub signs the raw body with HMAC-SHA256 keyed by the secret string and
// sends "X-Hub-Signature-256: sha256=<hex>". The legacy SHA-1
// X-Hub-Signature is not accepted: it would let a forger pick the weaker
// MAC. The event id is X-GitHub-Delivery (the same on a redelivery), the
// type X-GitHub-Event.
const (
	githubSignatureHeader = "X-Hub-Signature-256"
	githubSignaturePrefix = "sha256="
	githubDeliveryHeader  = "X-GitHub-Delivery"
	githubEventHeader     = "X-GitHub-Event"
)

func init() {
	Register(Scheme{Name: "github", New: newGitHub})
}

type github struct{ keys macKeys }

func newGitHub(c Config) (Verifier, error) {
	if err := requireSecrets("secret", c.Secrets); err != nil {
		return nil, err
	}
	return &github{keys: sha256Keys(c.Secrets)}, nil
}

func (v *github) Verify(h http.Header, body []byte, _ time.Time) (Event, error) {
	sig := h.Get(githubSignatureHeader)
	if sig == "" {
		return Event{}, Invalid("%s header missing", githubSignatureHeader)
	}
	mac, ok := decodeMAC(sig, githubSignaturePrefix, hexMAC, sha256.Size)
	if !ok {
		return Event{}, Invalid("%s is not %s<hex SHA-256 digest>", githubSignatureHeader, githubSignaturePrefix)
	}
	if !v.keys.match([][]byte{mac}, body) {
		return Event{}, Invalid("signature does not match any of %s", secretCount(len(v.keys.keys)))
	}
	return Event{ID: orDigest(h.Get(githubDeliveryHeader), body), Type: h.Get(githubEventHeader)}, nil
}

// Sign sets X-GitHub-Delivery to id when id is not empty; GitHub's event
// type is not in the body, so X-GitHub-Event is left unset.
func (v *github) Sign(body []byte, id string, _ time.Time) (http.Header, error) {
	h := http.Header{}
	h.Set(githubSignatureHeader, githubSignaturePrefix+hex.EncodeToString(v.keys.sum(0, body)))
	if id != "" {
		h.Set(githubDeliveryHeader, id)
	}
	return h, nil
}
