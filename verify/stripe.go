package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Stripe signs "{t}.{body}" with HMAC-SHA256 keyed by the whole endpoint
// secret string (whsec_ prefix included, not base64-decoded) and sends
// "Stripe-Signature: t=<unix>,v1=<hex>", with one v1 per active secret while
// a secret is being rolled and a v0 (legacy test-mode scheme, ignored). Every
// v1 is tried. The event id and type are the body's "id" and "type".
const stripeSignatureHeader = "Stripe-Signature"

func init() {
	Register(Scheme{Name: "stripe", New: newStripe, Timestamped: true})
}

type stripe struct {
	keys      macKeys
	tolerance time.Duration
}

func newStripe(c Config) (Verifier, error) {
	if err := requireSecrets("secret", c.Secrets); err != nil {
		return nil, err
	}
	return &stripe{keys: sha256Keys(c.Secrets), tolerance: c.tolerance()}, nil
}

// ParseStripeSignature splits a Stripe-Signature header into its timestamp,
// as written, and its decoded v1 signatures. v1 values that are not hex
// SHA-256 digests are skipped, as are entries of other schemes (v0). ok is
// false unless the header is a comma-separated list of key=value pairs with
// exactly one non-empty t. It never panics.
func ParseStripeSignature(header string) (ts string, v1 [][]byte, ok bool) {
	seenT := false
	for item := range strings.SplitSeq(header, ",") {
		key, val, found := strings.Cut(strings.TrimSpace(item), "=")
		if !found {
			return "", nil, false
		}
		switch key {
		case "t":
			if seenT {
				return "", nil, false
			}
			seenT, ts = true, val
		case "v1":
			if sig, err := hex.DecodeString(val); err == nil && len(sig) == sha256.Size {
				v1 = append(v1, sig)
			}
		}
	}
	if ts == "" {
		return "", nil, false
	}
	return ts, v1, true
}

func (v *stripe) Verify(h http.Header, body []byte, now time.Time) (Event, error) {
	header := h.Get(stripeSignatureHeader)
	if header == "" {
		return Event{}, Invalid("%s header missing", stripeSignatureHeader)
	}
	ts, sigs, ok := ParseStripeSignature(header)
	if !ok {
		return Event{}, Invalid("%s is not a t=<unix>,v1=<hex> list", stripeSignatureHeader)
	}
	when, err := checkTimestamp(ts, now, v.tolerance)
	if err != nil {
		return Event{}, err
	}
	if len(sigs) == 0 {
		return Event{}, Invalid("%s has no well-formed v1 signature", stripeSignatureHeader)
	}
	if !v.keys.match(sigs, []byte(ts), []byte{'.'}, body) {
		return Event{}, Invalid("signature does not match any of %s", secretCount(len(v.keys.keys)))
	}
	id, typ := jsonIDAndType(body)
	return Event{ID: orDigest(id, body), Type: typ, Timestamp: when}, nil
}

// Sign ignores id: Stripe's event id is in the body.
func (v *stripe) Sign(body []byte, _ string, ts time.Time) (http.Header, error) {
	t := strconv.FormatInt(unixOrNow(ts).Unix(), 10)
	mac := v.keys.sum(0, []byte(t), []byte{'.'}, body)
	h := http.Header{}
	h.Set(stripeSignatureHeader, "t="+t+",v1="+hex.EncodeToString(mac))
	return h, nil
}
