package verify

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"net/http"
	"strconv"
	"strings"
)

func init() {
	// Scheme.Timestamped is one value for the scheme, but hmac checks a
	// timestamp only when timestamp_header is configured. It is false, so
	// hmac events are remembered for the whole replay window: always safe,
	// at the cost of memory when a timestamp would have allowed less.
	Register(Scheme{Name: "hmac", New: newHMAC, NewDeliveryID: msgID})
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

// newHMAC builds the generic hmac scheme: a macPreset made from
// HMACOptions, for the providers that sign a message built from the body
// (and optionally a timestamp and other headers) with a plain HMAC: Coinbase
// Commerce, Coinify and the like. The signature header holds one MAC or, as
// HTTP lists allow, several separated by commas; each must carry the
// configured prefix, and every one is tried with every secret (the key is
// the secret string's bytes). The event id is where EventID says, else the
// body's digest; the type is the body's top-level "type", if any. An
// event_id header that the template does not sign gets a replay id built
// from the signed parts.
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
	p := macPreset{signature: []string{http.CanonicalHeaderKey(o.Header)}, prefix: o.Prefix, list: true, signed: o.Signed}

	switch strings.ToLower(o.Algorithm) {
	case "sha1":
		p.newHash, p.hashName = sha1.New, "SHA-1"
	case "", "sha256":
		p.newHash, p.hashName = sha256.New, "SHA-256"
	case "sha512":
		p.newHash, p.hashName = sha512.New, "SHA-512"
	default:
		return nil, &ConfigError{Option: "algorithm", Msg: "must be sha1, sha256 or sha512, not " + strconv.Quote(o.Algorithm)}
	}

	switch strings.ToLower(o.Encoding) {
	case "", "hex":
		p.encoding = hexMAC
	case "base64":
		p.encoding = base64MAC
	default:
		return nil, &ConfigError{Option: "encoding", Msg: "must be hex or base64, not " + strconv.Quote(o.Encoding)}
	}

	if o.TimestampHeader != "" {
		if !isToken(o.TimestampHeader) {
			return nil, &ConfigError{Option: "timestamp_header", Msg: "is not a header name"}
		}
		p.timestamp = []string{http.CanonicalHeaderKey(o.TimestampHeader)}
	}

	p.fields = bodyType
	if o.EventID != "" {
		where, what, _ := strings.Cut(o.EventID, ":")
		switch {
		case where == "header" && isToken(what):
			p.idHeader = []string{http.CanonicalHeaderKey(what)}
		case where == "json" && validPath(what):
			q := newJSONQuery(true, what)
			p.fields = func(body []byte) (id, typ string) {
				var out [1][]byte
				q.scan(bytes.TrimSpace(body), out[:])
				_, typ = jsonIDAndType(body)
				return rawScalar(out[0]), typ
			}
		default:
			return nil, &ConfigError{Option: "event_id", Msg: `must be "header:<Name>" or "json:<dotted.path>"`}
		}
	}
	return p.build(c)
}

// bodyType reads only the body's top-level "type": hmac's event id is not
// the body's "id" unless EventID says so.
func bodyType(body []byte) (id, typ string) {
	_, typ = jsonIDAndType(body)
	return "", typ
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
