package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"time"
)

// Shopify signs the raw body with HMAC-SHA256 keyed by the app's client
// secret string and sends the base64 digest in X-Shopify-Hmac-Sha256. The
// event id is X-Shopify-Webhook-Id (kept on retries), the type
// X-Shopify-Topic ("orders/create").
const (
	shopifySignatureHeader = "X-Shopify-Hmac-Sha256"
	shopifyWebhookIDHeader = "X-Shopify-Webhook-Id"
	shopifyTopicHeader     = "X-Shopify-Topic"
)

func init() {
	Register(Scheme{Name: "shopify", New: newShopify})
}

type shopify struct{ keys macKeys }

func newShopify(c Config) (Verifier, error) {
	if err := requireSecrets("secret", c.Secrets); err != nil {
		return nil, err
	}
	return &shopify{keys: sha256Keys(c.Secrets)}, nil
}

func (v *shopify) Verify(h http.Header, body []byte, _ time.Time) (Event, error) {
	sig := h.Get(shopifySignatureHeader)
	if sig == "" {
		return Event{}, Invalid("%s header missing", shopifySignatureHeader)
	}
	mac, ok := decodeMAC(sig, "", base64MAC, sha256.Size)
	if !ok {
		return Event{}, Invalid("%s is not a base64 SHA-256 digest", shopifySignatureHeader)
	}
	if !v.keys.match([][]byte{mac}, body) {
		return Event{}, Invalid("signature does not match any of %s", secretCount(len(v.keys.keys)))
	}
	return Event{ID: orDigest(h.Get(shopifyWebhookIDHeader), body), Type: h.Get(shopifyTopicHeader)}, nil
}

// Sign sets X-Shopify-Webhook-Id to id when id is not empty; the topic is
// not in the body, so X-Shopify-Topic is left unset.
func (v *shopify) Sign(body []byte, id string, _ time.Time) (http.Header, error) {
	h := http.Header{}
	h.Set(shopifySignatureHeader, base64.StdEncoding.EncodeToString(v.keys.sum(0, body)))
	if id != "" {
		h.Set(shopifyWebhookIDHeader, id)
	}
	return h, nil
}
