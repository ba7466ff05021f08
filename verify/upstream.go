package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// minUpstreamKey is the shortest sign_upstream key accepted, in bytes: the
// Standard Webhooks specification asks for 24 to 64 random bytes, and a
// short key is one a backend's attacker could guess.
const minUpstreamKey = 16

// UpstreamSigner signs what the guard passes to the backend (`sign_upstream`)
// as a Standard Webhooks sender does, so that one Standard Webhooks library on
// the backend verifies the events of every provider, freshly signed at each
// delivery, and knows they came through the guard. It uses the standard
// scheme's v1 signature: HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}"
// keyed by the base64-decoded whsec_ secret. Build it with NewUpstreamSigner;
// it is safe for concurrent use.
type UpstreamSigner struct {
	keys macKeys
}

// NewUpstreamSigner builds a signer from sign_upstream secrets, each a
// Standard Webhooks secret "whsec_<base64>" (the prefix may be left out) of
// at least 16 bytes. With several, every delivery is signed with each (a
// rotation: the backend accepts any). A mistake is a *ConfigError naming the
// option sign_upstream and the entry, never the value.
func NewUpstreamSigner(secrets []string) (*UpstreamSigner, error) {
	if err := requireSecrets("sign_upstream", secrets); err != nil {
		return nil, err
	}
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		nth := "value #" + strconv.Itoa(i+1)
		if strings.HasPrefix(s, signingKeyPrefix) || strings.HasPrefix(s, publicKeyPrefix) {
			return nil, &ConfigError{Option: "sign_upstream", Entry: i + 1, Msg: nth + " is an Ed25519 key: sign_upstream takes a whsec_<base64> secret"}
		}
		rest := strings.TrimPrefix(s, secretPrefix)
		if rest == "" {
			return nil, &ConfigError{Option: "sign_upstream", Entry: i + 1, Msg: nth + " has nothing after its prefix"}
		}
		key, ok := decodeBase64Key(rest)
		if !ok {
			return nil, &ConfigError{Option: "sign_upstream", Entry: i + 1, Msg: nth + " is not a whsec_<base64> Standard Webhooks secret"}
		}
		if len(key) < minUpstreamKey {
			return nil, &ConfigError{Option: "sign_upstream", Entry: i + 1, Msg: fmt.Sprintf("%s is a key of %d bytes: give at least %d random bytes (e.g. whsec_ and the output of `openssl rand -base64 32`)", nth, len(key), minUpstreamKey)}
		}
		keys[i] = key
	}
	return &UpstreamSigner{keys: newMACKeys(sha256.New, keys)}, nil
}

// Standard Webhooks header names, canonical, as UpstreamSigner sets them.
const (
	// UpstreamIDHeader carries the event's id in its header-safe form.
	UpstreamIDHeader = "Webhook-Id"
	// UpstreamTimestampHeader carries the signing time, unix seconds.
	UpstreamTimestampHeader = "Webhook-Timestamp"
	// UpstreamSignatureHeader carries one "v1,<base64>" per secret, space-separated.
	UpstreamSignatureHeader = "Webhook-Signature"
)

// Sign sets in header the Standard Webhooks headers of a delivery of body:
// webhook-id, HeaderEventID(id) (the body's digest id when id is empty);
// webhook-timestamp, now in unix seconds; webhook-signature, a "v1,<base64>"
// entry per secret, in the order configured, space-separated. Any value these
// headers had (a Standard Webhooks provider's own) is replaced, under any
// spelling of their names, never added to. Call it once per delivery attempt,
// with the attempt's time, so that the backend always gets a fresh signature.
func (s *UpstreamSigner) Sign(header http.Header, id string, body []byte, now time.Time) {
	if id == "" {
		id = BodyDigestID(body)
	}
	id = HeaderEventID(id)
	ts := strconv.FormatInt(now.Unix(), 10)
	var sig strings.Builder
	for i := range s.keys.keys {
		if i > 0 {
			sig.WriteByte(' ')
		}
		sig.WriteString("v1,")
		sig.WriteString(base64.StdEncoding.EncodeToString(s.keys.sum(i, []byte(id), []byte{'.'}, []byte(ts), []byte{'.'}, body)))
	}
	for name := range header {
		switch http.CanonicalHeaderKey(name) {
		case UpstreamIDHeader, UpstreamTimestampHeader, UpstreamSignatureHeader:
			delete(header, name) // a name set without canonicalisation
		}
	}
	header[UpstreamIDHeader] = []string{id}
	header[UpstreamTimestampHeader] = []string{ts}
	header[UpstreamSignatureHeader] = []string{sig.String()}
}
