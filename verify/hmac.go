package verify

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func init() {
	// Scheme.Timestamped is one value for the scheme, but hmac checks a
	// timestamp only when timestamp_header is configured. It is false, so
	// hmac events are remembered for the whole replay window: always safe,
	// at the cost of memory when a timestamp would have allowed less.
	Register(Scheme{Name: "hmac", New: newHMAC})
}

// SignedPartKind says what one part of a signed-message template stands for.
type SignedPartKind int

const (
	// SignedLiteral is literal text, in SignedPart.Text.
	SignedLiteral SignedPartKind = iota
	// SignedBody is the exact bytes of the request body: {body}.
	SignedBody
	// SignedTimestamp is the value of the timestamp header: {timestamp}.
	SignedTimestamp
	// SignedHeader is the value of the request header whose canonical name
	// is in SignedPart.Text: {header.NAME}.
	SignedHeader
)

// SignedPart is one part of a parsed signed-message template.
type SignedPart struct {
	// Kind says what the part stands for.
	Kind SignedPartKind
	// Text is the literal text of a SignedLiteral, or the canonical header
	// name of a SignedHeader; empty otherwise.
	Text string
}

// ParseSignedTemplate parses a signed-message template ("{timestamp}.{body}")
// into its parts, in order; adjacent literal text forms one part. The
// placeholders are {body}, {timestamp} and {header.NAME}; any other, an
// unclosed "{" or an empty template is an error. A "}" outside a placeholder
// is literal text.
func ParseSignedTemplate(tmpl string) ([]SignedPart, error) {
	if tmpl == "" {
		return nil, errors.New("template is empty")
	}
	var parts []SignedPart
	for tmpl != "" {
		open := strings.IndexByte(tmpl, '{')
		if open < 0 {
			parts = append(parts, SignedPart{Kind: SignedLiteral, Text: tmpl})
			break
		}
		if open > 0 {
			parts = append(parts, SignedPart{Kind: SignedLiteral, Text: tmpl[:open]})
		}
		name, rest, closed := strings.Cut(tmpl[open+1:], "}")
		if !closed {
			return nil, errors.New("unclosed { in template")
		}
		switch {
		case name == "body":
			parts = append(parts, SignedPart{Kind: SignedBody})
		case name == "timestamp":
			parts = append(parts, SignedPart{Kind: SignedTimestamp})
		case strings.HasPrefix(name, "header.") && isToken(name[len("header."):]):
			parts = append(parts, SignedPart{Kind: SignedHeader, Text: http.CanonicalHeaderKey(name[len("header."):])})
		default:
			return nil, errors.New("unknown placeholder {" + name + "}: use {body}, {timestamp} or {header.NAME}")
		}
		tmpl = rest
	}
	return parts, nil
}

// isToken reports whether s is a non-empty HTTP token, as header names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// hmacScheme is the generic hmac scheme. It covers the providers that sign a message built
// from the body (and optionally a timestamp and other headers) with a plain
// HMAC, configured by HMACOptions: Coinbase Commerce, Coinify and the like.
// The signature header holds one MAC or, as HTTP lists allow, several
// separated by commas or repeated header lines; each must carry the
// configured prefix, and every one is tried with every secret (the key is
// the secret string's bytes). The event id is where EventID says, else the
// body's digest; the type is the body's top-level "type", if any.
type hmacScheme struct {
	header    string // canonical signature header name
	prefix    string
	encoding  macEncoding
	keys      macKeys
	size      int    // MAC length in bytes
	described string // "hex SHA-256", for messages
	tsHeader  string // canonical, "" when the scheme has no timestamp
	tolerance time.Duration
	signed    []SignedPart
	literals  [][]byte // literals[i] is signed[i].Text as bytes, for SignedLiteral parts
	idHeader  string   // event id header, canonical
	idPath    []string // event id JSON path
}

func newHMAC(c Config) (Verifier, error) {
	o := c.HMAC
	if err := requireSecrets("secret", c.Secrets); err != nil {
		return nil, err
	}
	if o.Header == "" {
		return nil, &ConfigError{Option: "header", Msg: "the signature header name is required"}
	}
	if !isToken(o.Header) {
		return nil, &ConfigError{Option: "header", Msg: "is not a header name"}
	}
	v := &hmacScheme{header: http.CanonicalHeaderKey(o.Header), prefix: o.Prefix, tolerance: c.tolerance()}

	var newHash func() hash.Hash
	var hashName string
	switch strings.ToLower(o.Algorithm) {
	case "sha1":
		newHash, hashName = sha1.New, "SHA-1"
	case "", "sha256":
		newHash, hashName = sha256.New, "SHA-256"
	case "sha512":
		newHash, hashName = sha512.New, "SHA-512"
	default:
		return nil, &ConfigError{Option: "algorithm", Msg: "must be sha1, sha256 or sha512, not " + strconv.Quote(o.Algorithm)}
	}
	v.keys = newMACKeys(newHash, stringKeys(c.Secrets))
	v.size = newHash().Size()

	switch strings.ToLower(o.Encoding) {
	case "", "hex":
		v.encoding, v.described = hexMAC, "hex "+hashName
	case "base64":
		v.encoding, v.described = base64MAC, "base64 "+hashName
	default:
		return nil, &ConfigError{Option: "encoding", Msg: "must be hex or base64, not " + strconv.Quote(o.Encoding)}
	}

	if o.TimestampHeader != "" {
		if !isToken(o.TimestampHeader) {
			return nil, &ConfigError{Option: "timestamp_header", Msg: "is not a header name"}
		}
		v.tsHeader = http.CanonicalHeaderKey(o.TimestampHeader)
	}

	tmpl := o.Signed
	if tmpl == "" {
		tmpl = "{body}"
	}
	parts, err := ParseSignedTemplate(tmpl)
	if err != nil {
		return nil, &ConfigError{Option: "signed", Msg: err.Error()}
	}
	hasBody := false
	v.literals = make([][]byte, len(parts))
	for i, p := range parts {
		switch p.Kind {
		case SignedBody:
			hasBody = true
		case SignedTimestamp:
			if v.tsHeader == "" {
				return nil, &ConfigError{Option: "signed", Msg: "{timestamp} needs timestamp_header"}
			}
		case SignedLiteral:
			v.literals[i] = []byte(p.Text)
		}
	}
	if !hasBody {
		// A MAC that does not cover the body would let any body through.
		return nil, &ConfigError{Option: "signed", Msg: "the template must include {body}"}
	}
	v.signed = parts

	if o.EventID != "" {
		where, what, _ := strings.Cut(o.EventID, ":")
		switch {
		case where == "header" && isToken(what):
			v.idHeader = http.CanonicalHeaderKey(what)
		case where == "json" && validPath(what):
			v.idPath = strings.Split(what, ".")
		default:
			return nil, &ConfigError{Option: "event_id", Msg: `must be "header:<Name>" or "json:<dotted.path>"`}
		}
	}
	return v, nil
}

// validPath reports whether p is a dotted path without empty segments.
func validPath(p string) bool {
	if p == "" {
		return false
	}
	for seg := range strings.SplitSeq(p, ".") {
		if seg == "" {
			return false
		}
	}
	return true
}

// candidates decodes every signature in the header's values: each value is a
// comma-separated list unless the prefix itself contains a comma. Entries
// without the prefix or not in the encoding are skipped.
func (v *hmacScheme) candidates(values []string) [][]byte {
	var out [][]byte
	for _, value := range values {
		entries := []string{value}
		if !strings.Contains(v.prefix, ",") {
			entries = strings.Split(value, ",")
		}
		for _, e := range entries {
			if mac, ok := decodeMAC(strings.TrimSpace(e), v.prefix, v.encoding, v.size); ok {
				out = append(out, mac)
			}
		}
	}
	return out
}

// message returns the parts of the signed message for this request, or the
// name of a signed header the request lacks.
func (v *hmacScheme) message(h http.Header, body []byte, ts string) (parts [][]byte, missing string) {
	parts = make([][]byte, len(v.signed))
	for i, p := range v.signed {
		switch p.Kind {
		case SignedLiteral:
			parts[i] = v.literals[i]
		case SignedBody:
			parts[i] = body
		case SignedTimestamp:
			parts[i] = []byte(ts)
		case SignedHeader:
			values := h.Values(p.Text)
			if len(values) == 0 {
				return nil, p.Text
			}
			parts[i] = []byte(values[0])
		}
	}
	return parts, ""
}

func (v *hmacScheme) Verify(h http.Header, body []byte, now time.Time) (Event, error) {
	values := h.Values(v.header)
	if len(values) == 0 {
		return Event{}, Invalid("%s header missing", v.header)
	}
	sigs := v.candidates(values)
	if len(sigs) == 0 {
		if v.prefix != "" {
			return Event{}, Invalid("%s has no well-formed %s<%s digest>", v.header, v.prefix, v.described)
		}
		return Event{}, Invalid("%s has no well-formed %s digest", v.header, v.described)
	}
	var ts string
	var when time.Time
	if v.tsHeader != "" {
		ts = h.Get(v.tsHeader)
		if ts == "" {
			return Event{}, Invalid("%s header missing", v.tsHeader)
		}
		var err error
		if when, err = checkTimestamp(ts, now, v.tolerance); err != nil {
			return Event{}, err
		}
	}
	parts, missing := v.message(h, body, ts)
	if missing != "" {
		return Event{}, Invalid("%s header missing (it is signed)", missing)
	}
	if !v.keys.match(sigs, parts...) {
		return Event{}, Invalid("signature does not match any of %s", secretCount(len(v.keys.keys)))
	}
	var id string
	switch {
	case v.idHeader != "":
		id = h.Get(v.idHeader)
	case v.idPath != nil:
		id = jsonPathValue(body, v.idPath)
	}
	_, typ := jsonIDAndType(body)
	return Event{ID: orDigest(id, body), Type: typ, Timestamp: when}, nil
}

// Sign sets the timestamp header (when configured) and, when id is not
// empty and EventID names a header, that header. It fails when the template
// signs another header, whose value it cannot know.
func (v *hmacScheme) Sign(body []byte, id string, ts time.Time) (http.Header, error) {
	h := http.Header{}
	var t string
	if v.tsHeader != "" {
		t = strconv.FormatInt(unixOrNow(ts).Unix(), 10)
		h.Set(v.tsHeader, t)
	}
	if v.idHeader != "" && id != "" {
		h.Set(v.idHeader, id)
	}
	parts, missing := v.message(h, body, t)
	if missing != "" {
		return nil, &ConfigError{Option: "signed", Msg: "cannot sign: no value for {header." + missing + "}"}
	}
	mac := v.keys.sum(0, parts...)
	if v.encoding == base64MAC {
		h.Set(v.header, v.prefix+base64.StdEncoding.EncodeToString(mac))
	} else {
		h.Set(v.header, v.prefix+hex.EncodeToString(mac))
	}
	return h, nil
}

// jsonPathValue returns the string or number at a dotted path of a JSON
// body ("data.object.id"; a numeric segment indexes an array), or "" when
// the body is not JSON or the path leads nowhere or to another kind of value.
func jsonPathValue(body []byte, path []string) string {
	raw := json.RawMessage(bytes.TrimSpace(body))
	for _, seg := range path {
		if len(raw) == 0 {
			return ""
		}
		switch raw[0] {
		case '{':
			var obj map[string]json.RawMessage
			if json.Unmarshal(raw, &obj) != nil {
				return ""
			}
			raw = obj[seg]
		case '[':
			n, err := strconv.Atoi(seg)
			var arr []json.RawMessage
			if err != nil || n < 0 || json.Unmarshal(raw, &arr) != nil || n >= len(arr) {
				return ""
			}
			raw = arr[n]
		default:
			return ""
		}
	}
	return rawScalar(raw)
}
