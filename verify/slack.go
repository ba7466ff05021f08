package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Slack signs "v0:{timestamp}:{body}" with HMAC-SHA256 keyed by the app's
// signing secret string and sends "X-Slack-Signature: v0=<hex>" with the
// unix time in X-Slack-Request-Timestamp, checked against the tolerance.
//
// Slack sends no delivery id. Events API bodies carry an "event_id" that a
// retry keeps (a retry is signed again with a new timestamp), so it is the
// event id when present. Other bodies (slash commands, interactivity) fall
// back to the body's digest, not digest plus timestamp: a retry or replay of
// the same bytes is then a duplicate whatever its timestamp, and two distinct
// requests never share a body because Slack puts a fresh trigger_id in each.
// The type is the inner event's type ("app_mention") for an event_callback,
// else the body's "type" ("url_verification"), else "".
const (
	slackSignatureHeader = "X-Slack-Signature"
	slackTimestampHeader = "X-Slack-Request-Timestamp"
	slackVersion         = "v0"
)

func init() {
	Register(Scheme{Name: "slack", New: newSlack, Timestamped: true})
}

type slack struct {
	keys      macKeys
	tolerance time.Duration
}

func newSlack(c Config) (Verifier, error) {
	if err := requireSecrets("secret", c.Secrets); err != nil {
		return nil, err
	}
	return &slack{keys: sha256Keys(c.Secrets), tolerance: c.tolerance()}, nil
}

// slackFields are the Events API fields that identify an event.
type slackFields struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Event   struct {
		Type string `json:"type"`
	} `json:"event"`
}

func (v *slack) Verify(h http.Header, body []byte, now time.Time) (Event, error) {
	sig := h.Get(slackSignatureHeader)
	if sig == "" {
		return Event{}, Invalid("%s header missing", slackSignatureHeader)
	}
	ts := h.Get(slackTimestampHeader)
	if ts == "" {
		return Event{}, Invalid("%s header missing", slackTimestampHeader)
	}
	when, err := checkTimestamp(ts, now, v.tolerance)
	if err != nil {
		return Event{}, err
	}
	mac, ok := decodeMAC(sig, slackVersion+"=", hexMAC, sha256.Size)
	if !ok {
		return Event{}, Invalid("%s is not %s=<hex SHA-256 digest>", slackSignatureHeader, slackVersion)
	}
	if !v.keys.match([][]byte{mac}, []byte(slackVersion+":"), []byte(ts), []byte{':'}, body) {
		return Event{}, Invalid("signature does not match any of %s", secretCount(len(v.keys.keys)))
	}
	var f slackFields
	if json.Unmarshal(body, &f) != nil {
		f = slackFields{} // a form body, or fields of the wrong JSON type
	}
	if f.Type == "event_callback" && f.Event.Type != "" {
		f.Type = f.Event.Type
	}
	return Event{ID: orDigest(f.EventID, body), Type: f.Type, Timestamp: when}, nil
}

// Sign ignores id: Slack's event id, when there is one, is in the body.
func (v *slack) Sign(body []byte, _ string, ts time.Time) (http.Header, error) {
	t := strconv.FormatInt(unixOrNow(ts).Unix(), 10)
	mac := v.keys.sum(0, []byte(slackVersion+":"), []byte(t), []byte{':'}, body)
	h := http.Header{}
	h.Set(slackTimestampHeader, t)
	h.Set(slackSignatureHeader, slackVersion+"="+hex.EncodeToString(mac))
	return h, nil
}
