package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (and Svix, which uses the same scheme under svix-*
// header names) sign "{id}.{timestamp}.{body}" with HMAC-SHA256 keyed by the
// base64-decoded secret (after an optional whsec_ prefix). webhook-signature
// is a space-separated list of "v1,<base64>" entries; any valid one passes.
// The event id is webhook-id, the type the body's "type".
const (
	standardPrefix = "webhook-"
	svixPrefix     = "svix-"
	secretPrefix   = "whsec_"
)

func init() {
	Register(Scheme{Name: "standard", New: newStandard, Timestamped: true})
}

type standard struct {
	keys      macKeys
	tolerance time.Duration
}

func newStandard(c Config) (Verifier, error) {
	if err := requireSecrets("secret", c.Secrets); err != nil {
		return nil, err
	}
	v := &standard{keys: macKeys{newHash: sha256.New}, tolerance: c.tolerance()}
	for i, s := range c.Secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, secretPrefix))
		if err != nil || len(key) == 0 {
			return nil, &ConfigError{Option: "secret", Msg: "value #" + strconv.Itoa(i+1) + " is not a whsec_<base64> Standard Webhooks secret"}
		}
		v.keys.keys = append(v.keys.keys, key)
	}
	return v, nil
}

// standardHeaders returns the id, timestamp and signature headers, from the
// webhook-* names or, when webhook-id is absent, the svix-* names.
func standardHeaders(h http.Header) (id, ts, sigs string) {
	prefix := standardPrefix
	if h.Get(prefix+"id") == "" && h.Get(svixPrefix+"id") != "" {
		prefix = svixPrefix
	}
	return h.Get(prefix + "id"), h.Get(prefix + "timestamp"), h.Get(prefix + "signature")
}

// ParseStandardSignatures splits a webhook-signature header into its
// version-tagged entries and decodes those of the given version (e.g. "v1").
// Malformed entries and other versions are skipped; it never fails.
func ParseStandardSignatures(header, version string) [][]byte {
	var out [][]byte
	for _, entry := range strings.Fields(header) {
		v, sig, ok := strings.Cut(entry, ",")
		if !ok || v != version {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(sig)
		if err != nil || len(raw) == 0 {
			continue
		}
		out = append(out, raw)
	}
	return out
}

func (v *standard) Verify(h http.Header, body []byte, now time.Time) (Event, error) {
	id, ts, sigs := standardHeaders(h)
	if id == "" {
		return Event{}, Invalid("webhook-id header missing")
	}
	if sigs == "" {
		return Event{}, Invalid("webhook-signature header missing")
	}
	when, err := checkTimestamp(ts, now, v.tolerance)
	if err != nil {
		return Event{}, err
	}
	candidates := ParseStandardSignatures(sigs, "v1")
	if len(candidates) == 0 {
		return Event{}, Invalid("webhook-signature has no well-formed v1 signature")
	}
	if !v.keys.match(candidates, []byte(id), []byte{'.'}, []byte(ts), []byte{'.'}, body) {
		return Event{}, Invalid("signature does not match any of %s", secretCount(len(v.keys.keys)))
	}
	_, typ := jsonIDAndType(body)
	return Event{ID: id, Type: typ, Timestamp: when}, nil
}

func (v *standard) Sign(body []byte, id string, ts time.Time) (http.Header, error) {
	if id == "" {
		id = "msg_" + BodyDigestID(body)[7:31]
	}
	t := strconv.FormatInt(unixOrNow(ts).Unix(), 10)
	mac := v.keys.sum(0, []byte(id), []byte{'.'}, []byte(t), []byte{'.'}, body)
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", t)
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac))
	return h, nil
}
