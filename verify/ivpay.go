package verify

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"
)

// IVPAY authenticates its callbacks with a static API key in X-API-KEY. It
// carries no event id, so the id is the body's payment_id and status
// ("<payment_id>/<status>"): one delivery per payment state. The replay id
// holds the two length-prefixed, so no pair of values can stand for another.
const ivpayKeyHeader = "X-Api-Key"

func init() {
	Register(Scheme{Name: "ivpay", New: newIVPAY, KeyOption: KeyOptionAPIKey, TestEvent: ivpayTestEvent,
		CredentialHeaders: []string{ivpayKeyHeader}, ReplayID: ivpayReplayID})
}

// ivpayReplayID is the replay id of an IVPAY event id as ivpayEvent makes
// it: "<payment_id>/<status>" is keyed on both, length-prefixed; a body
// digest id (no payment_id) is its own replay id.
func ivpayReplayID(eventID string) (string, bool) {
	if i := strings.LastIndexByte(eventID, '/'); i >= 0 {
		return lengthPrefixed(eventID[:i], eventID[i+1:]), true
	}
	return eventID, true
}

// ivpayTestEvent is {"payment_id":"<random hex>","status":"PAID"}.
func ivpayTestEvent() []byte {
	return []byte(`{"payment_id":"` + randomHex(12) + `","status":"PAID"}`)
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

// ivpayQuery reads the callback fields that identify a payment state, as
// json.Unmarshal into a struct with a raw payment_id and a string status
// did.
var ivpayQuery = newJSONQuery(false, "payment_id", "status").textFields(1)

func (v *ivpay) Verify(h http.Header, body []byte, _ time.Time) (Event, error) {
	key, err := oneHeader(h, ivpayKeyHeader)
	if err != nil {
		return Event{}, err
	}
	if key == "" {
		return Event{}, Invalid("%s header missing", "X-API-KEY")
	}
	got := sha256.Sum256([]byte(key))
	ok := 0
	for i := range v.hashes {
		ok |= subtle.ConstantTimeCompare(got[:], v.hashes[i][:])
	}
	if ok != 1 {
		return Event{}, Invalid("API key does not match any of %d configured keys", len(v.hashes))
	}
	return ivpayEvent(body), nil
}

// ivpayEvent is the event of an authenticated callback body.
func ivpayEvent(body []byte) Event {
	var out [2][]byte
	ivpayQuery.scan(body, out[:])
	status := jsonString(out[1])
	if pid := rawScalar(out[0]); pid != "" {
		return Event{ID: pid + "/" + status, ReplayID: lengthPrefixed(pid, status), Type: status}
	}
	id := BodyDigestID(body)
	return Event{ID: id, ReplayID: id, Type: status}
}

func (v *ivpay) Sign(_ []byte, _ string, _ time.Time) (http.Header, error) {
	h := http.Header{}
	h.Set(ivpayKeyHeader, v.keys[0])
	return h, nil
}
