package verify

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"time"
)

// IVPAY authenticates its callbacks with a static API key in X-API-KEY. It
// carries no event id, so the id is the body's payment_id and status: one
// delivery per payment state.
const ivpayKeyHeader = "X-API-KEY"

func init() {
	Register(Scheme{Name: "ivpay", New: newIVPAY})
}

type ivpay struct {
	keys   []string
	hashes [][32]byte // SHA-256 of each key: equal-length constant-time compares
}

func newIVPAY(c Config) (Verifier, error) {
	if err := requireSecrets("api_key", c.APIKeys); err != nil {
		return nil, err
	}
	v := &ivpay{keys: c.APIKeys}
	for _, k := range c.APIKeys {
		v.hashes = append(v.hashes, sha256.Sum256([]byte(k)))
	}
	return v, nil
}

// ivpayFields are the callback fields that identify a payment state.
type ivpayFields struct {
	PaymentID json.RawMessage `json:"payment_id"`
	Status    string          `json:"status"`
}

func (v *ivpay) Verify(h http.Header, body []byte, _ time.Time) (Event, error) {
	key := h.Get(ivpayKeyHeader)
	if key == "" {
		return Event{}, Invalid("%s header missing", ivpayKeyHeader)
	}
	got := sha256.Sum256([]byte(key))
	ok := 0
	for i := range v.hashes {
		ok |= subtle.ConstantTimeCompare(got[:], v.hashes[i][:])
	}
	if ok != 1 {
		return Event{}, Invalid("API key does not match any of %d configured keys", len(v.hashes))
	}
	var f ivpayFields
	var id string
	if json.Unmarshal(body, &f) == nil {
		if pid := rawScalar(f.PaymentID); pid != "" {
			id = pid + "/" + f.Status
		}
	}
	return Event{ID: orDigest(id, body), Type: f.Status}, nil
}

func (v *ivpay) Sign(_ []byte, _ string, _ time.Time) (http.Header, error) {
	h := http.Header{}
	h.Set(ivpayKeyHeader, v.keys[0])
	return h, nil
}
