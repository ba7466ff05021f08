package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// macPreset describes one provider of the HMAC family: a MAC of a message
// built from the body (and a timestamp, and headers), keyed by the secret
// string's bytes, sent in a header. ivy, github, shopify, slack and stripe
// are presets (presets.go); hmac builds one from its options. A new provider
// of this kind is a table entry and its vectors.
type macPreset struct {
	// signature names the signature header, canonical; the first name is
	// the one Sign writes, the others are accepted as well (Shopify's
	// X-Shopify-Hmac-Sha256 and Shopify-Hmac-Sha256).
	signature []string
	// prefix is written before the MAC ("sha256=", "v0=").
	prefix string
	// encoding is the MAC's encoding.
	encoding macEncoding
	// newHash is the hash of the HMAC; nil means SHA-256.
	newHash func() hash.Hash
	// hashName is the hash's name for messages ("SHA-256" when empty).
	hashName string
	// list: the header holds one or more comma-separated MACs, each with
	// prefix, as HTTP lists allow (unless the prefix has a comma).
	list bool
	// stripe: the header is Stripe's "t=<unix>,v1=<hex>,..." list, which
	// carries the signed timestamp.
	stripe bool
	// timestamp names the header with the signed unix time, if any.
	timestamp []string
	// signed is the template of the signed message; "" means {body}.
	signed string
	// idHeader names the header with the provider's delivery id, if any.
	idHeader []string
	// typeHeader names the header with the event type, if any.
	typeHeader []string
	// fields reads the event id and type from the body, if the scheme
	// takes them from there. A header (idHeader, typeHeader) wins over it.
	fields func(body []byte) (id, typ string)
	// probe, when set, is asked about a delivery that carries neither the
	// signature nor the timestamp header: an *Error with ReasonProbe when it
	// is the provider's reachability probe, nil otherwise.
	probe func(h http.Header, body []byte) error
}

// macScheme is a verifier built from a macPreset and a configuration.
type macScheme struct {
	p         macPreset
	keys      macKeys
	size      int    // MAC length in bytes
	described string // "hex SHA-256", for messages
	tolerance time.Duration
	parts     []SignedPart
	literals  [][]byte // literals[i] is parts[i].Text as bytes, for SignedLiteral parts
	read      []string // every header the scheme reads, canonical
	// idUnsigned: the event id comes from a header the signature does not
	// cover, so the replay id is built from the signed parts.
	idUnsigned bool
}

// build makes the verifier of a preset from a configuration.
func (p macPreset) build(c Config) (*macScheme, error) {
	if err := requireSecrets("secret", c.Secrets); err != nil {
		return nil, err
	}
	if p.newHash == nil {
		p.newHash, p.hashName = sha256.New, "SHA-256"
	}
	v := &macScheme{p: p, keys: newMACKeys(p.newHash, stringKeys(c.Secrets)), tolerance: c.tolerance()}
	v.size = p.newHash().Size()
	v.described = "hex " + p.hashName
	if p.encoding == base64MAC {
		v.described = "base64 " + p.hashName
	}
	tmpl := p.signed
	if tmpl == "" {
		tmpl = "{body}"
	}
	parts, err := ParseSignedTemplate(tmpl)
	if err != nil {
		return nil, &ConfigError{Option: "signed", Msg: err.Error()}
	}
	hasBody := false
	v.literals = make([][]byte, len(parts))
	var signedHeaders []string
	for i, part := range parts {
		switch part.Kind {
		case SignedBody:
			hasBody = true
		case SignedTimestamp:
			if len(p.timestamp) == 0 && !p.stripe {
				return nil, &ConfigError{Option: "signed", Msg: "{timestamp} needs timestamp_header"}
			}
		case SignedLiteral:
			v.literals[i] = []byte(part.Text)
		case SignedHeader:
			signedHeaders = append(signedHeaders, part.Text)
		}
	}
	if !hasBody {
		// A MAC that does not cover the body would let any body through.
		return nil, &ConfigError{Option: "signed", Msg: "the template must include {body}"}
	}
	v.parts = parts
	v.read = slices.Concat(p.signature, p.timestamp, p.idHeader, p.typeHeader, signedHeaders)
	v.idUnsigned = len(p.idHeader) > 0 && !slices.ContainsFunc(p.idHeader, func(n string) bool {
		return slices.Contains(signedHeaders, n)
	})
	return v, nil
}

// candidates decodes the signatures of the header value: one, or each entry
// of a list (entries without the prefix or not in the encoding are skipped).
// ok is false when there is none.
func (v *macScheme) candidates(value string) (macs [][]byte, ok bool) {
	if !v.p.list {
		mac, ok := decodeMAC(value, v.p.prefix, v.p.encoding, v.size)
		return [][]byte{mac}, ok
	}
	entries := []string{value}
	if !strings.Contains(v.p.prefix, ",") {
		entries = strings.Split(value, ",")
	}
	for _, e := range entries {
		if mac, ok := decodeMAC(strings.TrimSpace(e), v.p.prefix, v.p.encoding, v.size); ok {
			macs = append(macs, mac)
		}
	}
	return macs, len(macs) > 0
}

// message returns the parts of the signed message for this request, or the
// name of a signed header the request lacks.
func (v *macScheme) message(h http.Header, body []byte, ts string) (parts [][]byte, missing string) {
	parts = make([][]byte, len(v.parts))
	for i, p := range v.parts {
		switch p.Kind {
		case SignedLiteral:
			parts[i] = v.literals[i]
		case SignedBody:
			parts[i] = body
		case SignedTimestamp:
			parts[i] = []byte(ts)
		case SignedHeader:
			values := h[p.Text]
			if len(values) == 0 {
				return nil, p.Text
			}
			parts[i] = []byte(values[0])
		}
	}
	return parts, ""
}

func (v *macScheme) Verify(h http.Header, body []byte, now time.Time) (Event, error) {
	if err := refuseRepeated(h, v.read...); err != nil {
		return Event{}, err
	}
	p := &v.p
	sig, err := oneHeader(h, p.signature...)
	if err != nil {
		return Event{}, err
	}
	var ts string
	if len(p.timestamp) > 0 {
		if ts, err = oneHeader(h, p.timestamp...); err != nil {
			return Event{}, err
		}
	}
	if sig == "" {
		if p.probe != nil && ts == "" {
			if err := p.probe(h, body); err != nil {
				return Event{}, err
			}
		}
		return Event{}, Invalid("%s header missing", p.signature[0])
	}
	if len(p.timestamp) > 0 && ts == "" {
		return Event{}, Invalid("%s header missing", p.timestamp[0])
	}
	var macs [][]byte
	if p.stripe {
		var ok bool
		if ts, macs, ok = ParseStripeSignature(sig); !ok {
			return Event{}, Invalid("%s is not a t=<unix>,v1=<hex> list", p.signature[0])
		}
	}
	var when time.Time
	if ts != "" {
		if when, err = checkTimestamp(ts, now, v.tolerance); err != nil {
			return Event{}, err
		}
	}
	switch ok := false; {
	case p.stripe:
		if len(macs) == 0 {
			return Event{}, Invalid("%s has no well-formed v1 signature", p.signature[0])
		}
	case p.list:
		if macs, ok = v.candidates(sig); !ok {
			if p.prefix != "" {
				return Event{}, Invalid("%s has no well-formed %s<%s digest>", p.signature[0], p.prefix, v.described)
			}
			return Event{}, Invalid("%s has no well-formed %s digest", p.signature[0], v.described)
		}
	default:
		if macs, ok = v.candidates(sig); !ok {
			if p.prefix != "" {
				return Event{}, Invalid("%s is not %s<%s digest>", p.signature[0], p.prefix, v.described)
			}
			return Event{}, Invalid("%s is not a %s digest", p.signature[0], v.described)
		}
	}
	parts, missing := v.message(h, body, ts)
	if missing != "" {
		return Event{}, Invalid("%s header missing (it is signed)", missing)
	}
	if !v.keys.match(macs, parts...) {
		return Event{}, Invalid("signature does not match any of %s", secretCount(len(v.keys.keys)))
	}

	var id, typ string
	if p.fields != nil {
		id, typ = p.fields(body)
	}
	if len(p.idHeader) > 0 {
		if id, err = oneHeader(h, p.idHeader...); err != nil {
			return Event{}, err
		}
	}
	if len(p.typeHeader) > 0 {
		if typ, err = oneHeader(h, p.typeHeader...); err != nil {
			return Event{}, err
		}
	}
	ev := Event{ID: orDigest(id, body), Type: typ, Timestamp: when}
	ev.ReplayID = ev.ID
	if v.idUnsigned {
		ev.ReplayID = SignedReplayID(parts...)
	}
	return ev, nil
}

// Sign sets the timestamp header (when the scheme has one) and, when id is
// not empty and the scheme sends a delivery id header, that header. It fails
// when the template signs another header, whose value it cannot know.
func (v *macScheme) Sign(body []byte, id string, ts time.Time) (http.Header, error) {
	p := &v.p
	h := http.Header{}
	var t string
	if len(p.timestamp) > 0 || p.stripe {
		t = strconv.FormatInt(unixOrNow(ts).Unix(), 10)
	}
	if len(p.timestamp) > 0 {
		h.Set(p.timestamp[0], t)
	}
	if len(p.idHeader) > 0 && id != "" {
		h.Set(p.idHeader[0], id)
	}
	parts, missing := v.message(h, body, t)
	if missing != "" {
		return nil, &ConfigError{Option: "signed", Msg: "cannot sign: no value for {header." + missing + "}"}
	}
	mac := v.keys.sum(0, parts...)
	var enc string
	if p.encoding == base64MAC {
		enc = base64.StdEncoding.EncodeToString(mac)
	} else {
		enc = hex.EncodeToString(mac)
	}
	if p.stripe {
		h.Set(p.signature[0], "t="+t+",v1="+enc)
	} else {
		h.Set(p.signature[0], p.prefix+enc)
	}
	return h, nil
}
