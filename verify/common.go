package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BodyDigestID is the event id of a delivery whose scheme carries none: the
// SHA-256 of the body, so identical deliveries are recognised as duplicates.
func BodyDigestID(body []byte) string {
	sum := sha256.Sum256(body)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// orDigest returns id, or the body's digest when id is empty.
func orDigest(id string, body []byte) string {
	if id == "" {
		return BodyDigestID(body)
	}
	return id
}

// requireSecrets reports a missing, empty or whitespace-only secret as a
// configuration error: a blank secret would verify with a key anyone can
// guess.
func requireSecrets(option string, values []string) error {
	if len(values) == 0 {
		return &ConfigError{Option: option, Msg: "at least one is required"}
	}
	for i, v := range values {
		if strings.TrimSpace(v) == "" {
			return &ConfigError{Option: option, Msg: fmt.Sprintf("value #%d is empty or only whitespace", i+1)}
		}
	}
	return nil
}

// macKeys holds the keys of an HMAC scheme, one per configured secret. Build
// it with newMACKeys: each key has a pool of HMACs, which Reset to the key's
// precomputed state, so a delivery does not pay for hmac.New (two hash
// allocations and the key's pad blocks) on every key it tries.
type macKeys struct {
	newHash func() hash.Hash
	keys    [][]byte
	pools   []*sync.Pool // pools[i] holds HMACs under keys[i]
}

func newMACKeys(newHash func() hash.Hash, keys [][]byte) macKeys {
	m := macKeys{newHash: newHash, keys: keys, pools: make([]*sync.Pool, len(keys))}
	for i, key := range keys {
		m.pools[i] = &sync.Pool{New: func() any { return hmac.New(newHash, key) }}
	}
	return m
}

// sum computes the MAC of the concatenated parts under key i.
func (m macKeys) sum(i int, parts ...[]byte) []byte {
	if i >= len(m.pools) { // not built by newMACKeys
		mac := hmac.New(m.newHash, m.keys[i])
		for _, p := range parts {
			mac.Write(p)
		}
		return mac.Sum(nil)
	}
	mac := m.pools[i].Get().(hash.Hash)
	mac.Reset()
	for _, p := range parts {
		mac.Write(p)
	}
	sum := mac.Sum(nil)
	m.pools[i].Put(mac)
	return sum
}

// match reports whether any of the candidate signatures equals the MAC of
// parts under any key, in constant time per comparison. Every key is tried
// against every candidate.
func (m macKeys) match(candidates [][]byte, parts ...[]byte) bool {
	ok := 0
	for i := range m.keys {
		want := m.sum(i, parts...)
		for _, c := range candidates {
			ok |= subtle.ConstantTimeCompare(want, c)
		}
	}
	return ok == 1
}

// stringKeys turns secrets into HMAC keys as their raw bytes.
func stringKeys(secrets []string) [][]byte {
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		keys[i] = []byte(s)
	}
	return keys
}

// secretCount says how many secrets a mismatch was checked against.
func secretCount(n int) string { return countOf(n, "secret") }

// countOf writes "1 secret", "2 secrets": n and the noun, plural when needed.
func countOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// macEncoding is how a scheme writes a MAC into a header.
type macEncoding int

const (
	// hexMAC is hexadecimal, either case.
	hexMAC macEncoding = iota
	// base64MAC is base64, standard or URL alphabet, padded or not.
	base64MAC
)

// decodeMAC strips prefix from a signature header value ("sha256=", "v0=",
// or "" for none) and decodes the rest as a MAC of size bytes. ok is false
// when the prefix is missing, the rest is not in the encoding or its length
// is not size.
func decodeMAC(value, prefix string, enc macEncoding, size int) (mac []byte, ok bool) {
	rest, found := strings.CutPrefix(value, prefix)
	if !found {
		return nil, false
	}
	var err error
	switch enc {
	case base64MAC:
		rest = strings.TrimRight(rest, "=")
		b64 := base64.RawStdEncoding
		if strings.ContainsAny(rest, "-_") {
			b64 = base64.RawURLEncoding
		}
		mac, err = b64.DecodeString(rest)
	default:
		mac, err = hex.DecodeString(rest)
	}
	if err != nil || len(mac) != size {
		return nil, false
	}
	return mac, true
}

// checkTimestamp parses a unix-seconds timestamp and checks it is within
// tolerance of now, either way, as the providers' own libraries do (Stripe's,
// Standard Webhooks' and Svix's): the signed timestamp, in whole seconds, is
// compared with now at full precision, and refused when it is more than the
// tolerance away. An event exactly the tolerance old passes, one a
// nanosecond older does not. The comparison is made on seconds and
// nanoseconds apart, so no timestamp or clock is far enough to overflow it.
// A timestamp at or before 1970 is refused whatever the tolerance: no
// provider signs one.
func checkTimestamp(raw string, now time.Time, tolerance time.Duration) (time.Time, error) {
	if raw == "" {
		return time.Time{}, Invalid("timestamp header missing")
	}
	secs, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || len(raw) > 12 {
		return time.Time{}, Invalid("timestamp is not a unix time in seconds")
	}
	if secs <= 0 {
		return time.Time{}, &Error{Reason: ReasonTimestamp, Detail: fmt.Sprintf("timestamp %d is not after 1970", secs)}
	}
	ts := time.Unix(secs, 0)
	tolS, tolN := int64(tolerance/time.Second), int64(tolerance%time.Second)
	nowS, nowN := now.Unix(), int64(now.Nanosecond())
	if tolerance < 0 {
		tolS, tolN = -1, 0 // nothing is within a negative tolerance
	}
	// The age is past = nowS - secs seconds plus nowN nanoseconds. secs is
	// positive, so past only overflows downwards: a timestamp that far ahead
	// of the clock (or so far that -past would overflow) is out of any
	// tolerance.
	past := nowS - secs
	if past > nowS || past == math.MinInt64 {
		return ts, &Error{Reason: ReasonTimestamp, Detail: fmt.Sprintf("timestamp %d years in the future, tolerance %s", uint64(secs-(nowS+1))/(365*24*3600), shortDuration(tolerance))}
	}
	switch {
	case past > tolS || past == tolS && nowN > tolN:
		return ts, &Error{Reason: ReasonTimestamp, Detail: fmt.Sprintf("timestamp %s in the past, tolerance %s", offsetText(past, nowN, tolS), shortDuration(tolerance))}
	case past < 0:
		// Ahead by ahead = -past seconds minus nowN nanoseconds.
		ahead := -past
		if ahead > tolS+1 || ahead == tolS+1 && nowN < int64(time.Second)-tolN {
			s, n := ahead, int64(0)
			if nowN > 0 {
				s, n = ahead-1, int64(time.Second)-nowN
			}
			return ts, &Error{Reason: ReasonTimestamp, Detail: fmt.Sprintf("timestamp %s in the future, tolerance %s", offsetText(s, n, tolS), shortDuration(tolerance))}
		}
	}
	return ts, nil
}

// offsetText writes how far a timestamp is from now, secs seconds and nsec
// nanoseconds: in whole seconds (5m1s), or at full precision (5m0.001s) when
// the whole seconds are those of the tolerance (tolSecs), which the offset
// then exceeds by less than a second.
func offsetText(secs, nsec, tolSecs int64) string {
	const maxSecs = int64(1<<63-1) / int64(time.Second)
	if secs == tolSecs && secs < maxSecs {
		return (time.Duration(secs)*time.Second + time.Duration(nsec)).String()
	}
	return secondsText(secs)
}

// secondsText writes a positive number of seconds as a duration (5m1s), or
// in years when it is too long for one.
func secondsText(secs int64) string {
	const maxSecs = int64(1<<63-1) / int64(time.Second)
	if secs < maxSecs {
		return (time.Duration(secs) * time.Second).String()
	}
	return strconv.FormatInt(secs/(365*24*3600), 10) + " years"
}

// shortDuration prints 5m rather than 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// tolerance returns the configured tolerance or the default.
func (c Config) tolerance() time.Duration {
	if c.Tolerance > 0 {
		return c.Tolerance
	}
	return DefaultTolerance
}

// unixOrNow returns ts, or now when ts is zero.
func unixOrNow(ts time.Time) time.Time {
	if ts.IsZero() {
		return time.Now()
	}
	return ts
}

// oneHeader returns the value of a header a scheme reads, under any of its
// names (canonical; the first is the one named in messages), or "" when it
// is absent. A header given more than once, or under two names with
// different values, is refused: the guard would check one value while the
// upstream may read another.
func oneHeader(h http.Header, names ...string) (string, error) {
	value, from := "", ""
	for _, name := range names {
		values := h[name]
		switch {
		case len(values) > 1:
			return "", Invalid("header %s given %d times", name, len(values))
		case len(values) == 0:
			continue
		case from != "" && values[0] != value:
			return "", Invalid("header %s given 2 times (also as %s)", from, name)
		}
		value, from = values[0], name
	}
	return value, nil
}

// refuseRepeated refuses a delivery that gives any of the named headers
// (canonical) more than once.
func refuseRepeated(h http.Header, names ...string) error {
	for _, name := range names {
		if n := len(h[name]); n > 1 {
			return Invalid("header %s given %d times", name, n)
		}
	}
	return nil
}

// SignedReplayID is the replay id of a delivery whose event id is not
// covered by its signature: "sig:" and the hex SHA-256 of the signed parts
// (the signed timestamp, any signed header, the body), each prefixed with its
// length, after a domain-separation tag. A replay with a changed id header
// keeps it; a new signed timestamp or body changes it.
func SignedReplayID(parts ...[]byte) string {
	h := sha256.New()
	h.Write([]byte("webhook-guard replay id\x00"))
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return "sig:" + hex.EncodeToString(h.Sum(nil))
}

// lengthPrefixed joins parts unambiguously: each is preceded by its length
// and a colon ("4:p_12" "4:PAID" -> "4:p_124:PAID").
func lengthPrefixed(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(strconv.Itoa(len(p)))
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}
