package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (and Svix, which uses the same scheme under svix-*
// header names) sign "{id}.{timestamp}.{body}". webhook-signature is a
// space-separated list of version-tagged entries; any valid one passes:
//
//   - "v1,<base64>": HMAC-SHA256 keyed by the base64-decoded secret (after an
//     optional whsec_ prefix);
//   - "v1a,<base64>": Ed25519, verified with the public keys (whpk_<base64>,
//     32 bytes) and with the public half of any whsk_ signing key among the
//     secrets.
//
// A header may mix both. The event id is webhook-id, the type the body's
// "type".
const (
	standardPrefix   = "webhook-"
	svixPrefix       = "svix-"
	secretPrefix     = "whsec_"
	publicKeyPrefix  = "whpk_"
	signingKeyPrefix = "whsk_"
)

func init() {
	Register(Scheme{Name: "standard", New: newStandard, Timestamped: true, DeliveryIDHeader: "webhook-id", NewDeliveryID: msgID})
}

type standard struct {
	keys       macKeys             // v1 HMAC keys, from whsec_ secrets
	publicKeys []ed25519.PublicKey // v1a keys, from public_key and whsk_ secrets
	signingKey ed25519.PrivateKey  // set when the first secret is whsk_: Sign emits v1a
	tolerance  time.Duration
	versions   string // the versions accepted, for messages: "v1", "v1a" or "v1 or v1a"
	keyCount   string // "1 secret", "1 secret or 2 public keys", for messages
}

// standardVerifier is a standard verifier built from public keys only: it
// verifies but has nothing to sign with, so it does not implement Signer.
type standardVerifier struct{ v *standard }

func (s standardVerifier) Verify(h http.Header, body []byte, now time.Time) (Event, error) {
	return s.v.Verify(h, body, now)
}

func newStandard(c Config) (Verifier, error) {
	if len(c.Secrets) == 0 && len(c.PublicKeys) == 0 {
		return nil, &ConfigError{Option: "secret", Msg: "secret or public_key required"}
	}
	if len(c.Secrets) > 0 {
		if err := requireSecrets("secret", c.Secrets); err != nil {
			return nil, err
		}
	}
	if len(c.PublicKeys) > 0 {
		if err := requireSecrets("public_key", c.PublicKeys); err != nil {
			return nil, err
		}
	}
	v := &standard{tolerance: c.tolerance()}
	var hmacKeys [][]byte // v1 HMAC keys, from whsec_ secrets
	for i, s := range c.Secrets {
		nth := "value #" + strconv.Itoa(i+1)
		if rest, ok := strings.CutPrefix(s, signingKeyPrefix); ok {
			if rest == "" {
				return nil, &ConfigError{Option: "secret", Msg: nth + " has nothing after its prefix"}
			}
			priv, ok := parseSigningKey(rest)
			if !ok {
				return nil, &ConfigError{Option: "secret", Msg: nth + " is not a whsk_<base64> Ed25519 signing key"}
			}
			if i == 0 {
				v.signingKey = priv
			}
			v.publicKeys = append(v.publicKeys, priv.Public().(ed25519.PublicKey))
			continue
		}
		if strings.HasPrefix(s, publicKeyPrefix) {
			return nil, &ConfigError{Option: "secret", Msg: nth + " is a whpk_ public key: give it as public_key"}
		}
		rest := strings.TrimPrefix(s, secretPrefix)
		if rest == "" {
			// Not "after whsec_": the message must not hold the secret's
			// text, which the handler redacts wherever it appears.
			return nil, &ConfigError{Option: "secret", Msg: nth + " has nothing after its prefix"}
		}
		key, ok := decodeBase64Key(rest)
		if !ok {
			return nil, &ConfigError{Option: "secret", Msg: nth + " is not a whsec_<base64> Standard Webhooks secret"}
		}
		hmacKeys = append(hmacKeys, key)
	}
	v.keys = newMACKeys(sha256.New, hmacKeys)
	for i, s := range c.PublicKeys {
		nth := "value #" + strconv.Itoa(i+1)
		rest := strings.TrimPrefix(s, publicKeyPrefix)
		if rest == "" {
			return nil, &ConfigError{Option: "public_key", Msg: nth + " has nothing after its prefix"}
		}
		key, ok := decodeBase64Key(rest)
		if !ok || len(key) != ed25519.PublicKeySize {
			return nil, &ConfigError{Option: "public_key", Msg: nth + " is not a whpk_<base64> Ed25519 public key"}
		}
		v.publicKeys = append(v.publicKeys, ed25519.PublicKey(key))
	}
	switch {
	case len(v.keys.keys) == 0:
		v.versions, v.keyCount = "v1a", countOf(len(v.publicKeys), "public key")
	case len(v.publicKeys) == 0:
		v.versions, v.keyCount = "v1", secretCount(len(v.keys.keys))
	default:
		v.versions = "v1 or v1a"
		v.keyCount = secretCount(len(v.keys.keys)) + " or " + countOf(len(v.publicKeys), "public key")
	}
	if len(c.Secrets) == 0 {
		return standardVerifier{v}, nil
	}
	return v, nil
}

// parseSigningKey decodes the base64 of an Ed25519 private key: 64 bytes
// (seed and public key, as Svix issues them) or a 32-byte seed. A 64-byte
// key whose public half does not belong to its seed is refused.
func parseSigningKey(b64 string) (ed25519.PrivateKey, bool) {
	raw, ok := decodeBase64Key(b64)
	if !ok {
		return nil, false
	}
	switch len(raw) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), true
	case ed25519.PrivateKeySize:
		priv := ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
		return priv, bytes.Equal(priv, raw)
	}
	return nil, false
}

// decodeBase64Key decodes a key's base64, padded or not (as the reference
// Python library accepts it: standard encoding first, then unpadded). An
// empty key is refused.
func decodeBase64Key(b64 string) ([]byte, bool) {
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(b64)
	}
	return key, err == nil && len(key) > 0
}

// The id, timestamp and signature header names, canonical, so that reading
// them needs no canonicalisation (and no allocation) per delivery.
var (
	standardHeaderNames = [3]string{"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"}
	svixHeaderNames     = [3]string{"Svix-Id", "Svix-Timestamp", "Svix-Signature"}
)

// standardHeaders returns the id, timestamp and signature headers, from the
// webhook-* names or, when webhook-id is absent, the svix-* names. Any of the
// six given more than once is refused.
func standardHeaders(h http.Header) (id, ts, sigs string, err error) {
	if err := refuseRepeated(h, standardHeaderNames[:]...); err != nil {
		return "", "", "", err
	}
	if err := refuseRepeated(h, svixHeaderNames[:]...); err != nil {
		return "", "", "", err
	}
	names := &standardHeaderNames
	if headerValue(h, names[0]) == "" && headerValue(h, svixHeaderNames[0]) != "" {
		names = &svixHeaderNames
	}
	return headerValue(h, names[0]), headerValue(h, names[1]), headerValue(h, names[2]), nil
}

// headerValue is h.Get(key) for a key already in canonical form.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// maxSignatures bounds how many signatures of one version a delivery may
// make the guard check: a provider sends one per active key (two during a
// rotation); an attacker's header with thousands of v1a entries would
// otherwise cost an Ed25519 verification each.
const maxSignatures = 16

// ParseStandardSignatures splits a webhook-signature header into its
// version-tagged entries and decodes those of the given version ("v1" for
// HMAC, "v1a" for Ed25519), at most maxSignatures of them. Malformed entries
// and other versions are skipped; it never fails.
func ParseStandardSignatures(header, version string) [][]byte {
	return parseSignatures(header, version, maxSignatures, false)
}

// parseSignatures is ParseStandardSignatures returning at most max
// signatures, each once when distinct is set.
func parseSignatures(header, version string, max int, distinct bool) [][]byte {
	var out [][]byte
	for entry := range strings.FieldsSeq(header) {
		if len(out) == max {
			break
		}
		v, sig, ok := strings.Cut(entry, ",")
		if !ok || v != version {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(sig)
		if err != nil || len(raw) == 0 {
			continue
		}
		if distinct && slices.ContainsFunc(out, func(o []byte) bool { return bytes.Equal(o, raw) }) {
			continue
		}
		out = append(out, raw)
	}
	return out
}

func (v *standard) Verify(h http.Header, body []byte, now time.Time) (Event, error) {
	id, ts, sigs, err := standardHeaders(h)
	if err != nil {
		return Event{}, err
	}
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
	var macs, eds [][]byte
	if len(v.keys.keys) > 0 {
		macs = ParseStandardSignatures(sigs, "v1")
	}
	if len(v.publicKeys) > 0 {
		// Each costs a verification over the whole body under every key
		// before anything is authenticated: only the first few distinct
		// signatures are tried (see ed25519Signatures).
		eds = parseSignatures(sigs, "v1a", v.ed25519Signatures(), true)
	}
	if len(macs) == 0 && len(eds) == 0 {
		return Event{}, Invalid("webhook-signature has no well-formed %s signature", v.versions)
	}
	ok := len(macs) > 0 && v.keys.match(macs, []byte(id), []byte{'.'}, []byte(ts), []byte{'.'}, body)
	if !ok && len(eds) > 0 {
		ok = v.verifyEd25519(eds, standardMessage(id, ts, body))
	}
	if !ok {
		return Event{}, Invalid("signature does not match any of %s", v.keyCount)
	}
	_, typ := jsonIDAndType(body)
	// The id is signed: it is the replay id as well.
	return Event{ID: id, ReplayID: id, Type: typ, Timestamp: when}, nil
}

// maxEd25519Checks is the budget of Ed25519 verifications a delivery may
// cost, each over the whole body, before anything is authenticated. v1a
// entries carry no key id, so a receiver cannot pick the entry of the key it
// knows: it tries each entry with each of its keys.
const maxEd25519Checks = 8

// ed25519Signatures is how many distinct v1a signatures a delivery may make
// the guard try, each with every public key: as many as maxEd25519Checks
// verifications allow, and never fewer than the keys plus one (both sides
// rotating). With one public key, a sender signing with up to 8 keys (its
// own rotation, or one endpoint's keys for several receivers) passes
// whatever the order of its entries; with k keys above 2, (k+1)·k
// verifications at most.
func (v *standard) ed25519Signatures() int {
	return max(maxEd25519Checks/len(v.publicKeys), len(v.publicKeys)+1)
}

// verifyEd25519 reports whether any signature verifies under any public key:
// each key is tried once per signature, and the signatures are distinct and
// few (see Verify). Public-key verification leaks nothing secret, so it may
// stop at the first success.
func (v *standard) verifyEd25519(sigs [][]byte, msg []byte) bool {
	for _, sig := range sigs {
		for _, pub := range v.publicKeys {
			if ed25519.Verify(pub, msg, sig) {
				return true
			}
		}
	}
	return false
}

// standardMessage is the signed content "{id}.{timestamp}.{body}" in one
// buffer, as Ed25519 needs it.
func standardMessage(id, ts string, body []byte) []byte {
	msg := make([]byte, 0, len(id)+len(ts)+2+len(body))
	msg = append(msg, id...)
	msg = append(msg, '.')
	msg = append(msg, ts...)
	msg = append(msg, '.')
	return append(msg, body...)
}

// Sign signs with the first secret: a v1a Ed25519 signature when it is a
// whsk_ signing key, else a v1 HMAC. An empty id is derived from the body.
func (v *standard) Sign(body []byte, id string, ts time.Time) (http.Header, error) {
	if id == "" {
		id = "msg_" + BodyDigestID(body)[7:31]
	}
	t := strconv.FormatInt(unixOrNow(ts).Unix(), 10)
	var sig string
	if v.signingKey != nil {
		sig = "v1a," + base64.StdEncoding.EncodeToString(ed25519.Sign(v.signingKey, standardMessage(id, t, body)))
	} else {
		sig = "v1," + base64.StdEncoding.EncodeToString(v.keys.sum(0, []byte(id), []byte{'.'}, []byte(t), []byte{'.'}, body))
	}
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", t)
	h.Set("webhook-signature", sig)
	return h, nil
}
