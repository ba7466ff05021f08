package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file reads the fields of an event (its top-level "id" and "type",
// ivpay's payment_id and status, Slack's event_id and event.type, the
// `json:` path of hmac's event_id) in one pass over the body, without
// encoding/json's reflection and per-byte state machine: on the hot path of
// every delivery it is several times cheaper than json.Unmarshal, and it
// answers exactly as the encoding/json code it replaced did (the tests
// compare the two on corpora, on generated bodies and by fuzzing). See
// jsonQuery for the two ways keys match. For the top-level "id" and "type":
//
//   - a body that is not valid JSON, or nests deeper than encoding/json's
//     limit of 10000, yields "", "";
//   - a top-level value that is not an object yields "", "";
//   - keys match case-insensitively, as struct fields do, and the last of
//     several matching keys wins;
//   - a "type" that is neither a string nor null yields "", "" (a type
//     error), a null "type" leaves the previous value;
//   - string values are unescaped, invalid UTF-8 becoming U+FFFD; an "id"
//     that is a number is kept as written, any other kind of "id" is "".

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

// idAndType reads an event's top-level "id" (any kind) and "type" (a
// string field).
var idAndType = newJSONQuery(false, "id", "type").textFields(1)

// jsonIDAndType reads the top-level "id" and "type" of a JSON body. A
// numeric id is kept as written; a body that is not JSON yields "", "".
func jsonIDAndType(body []byte) (id, typ string) {
	var out [2][]byte
	idAndType.scan(body, out[:])
	return rawScalar(out[0]), jsonString(out[1])
}

// foldRune is encoding/json's folding of a key's rune: the smallest rune of
// its simple case-folding orbit.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// jsonString is the text of a JSON string (with its quotes), unescaped as
// encoding/json does; "" for nil.
func jsonString(raw []byte) string {
	if len(raw) < 2 {
		return ""
	}
	inner := raw[1 : len(raw)-1]
	plain, ascii := true, true
	for _, c := range inner {
		if c == '\\' {
			plain = false
			break
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if plain && (ascii || utf8.Valid(inner)) {
		return string(inner)
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// jsonScanner validates JSON values as encoding/json's scanner does.
type jsonScanner struct {
	data  []byte
	pos   int
	depth int
}

// peek returns the byte at pos, or 0 at the end.
func (s *jsonScanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *jsonScanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// scanValue moves past one value starting at pos, and reports whether it is
// valid JSON.
func (s *jsonScanner) scanValue() bool {
	switch c := s.peek(); {
	case c == '"':
		_, ok := s.scanString()
		return ok
	case c == '{':
		return s.scanObject()
	case c == '[':
		return s.scanArray()
	case c == '-' || (c >= '0' && c <= '9'):
		return s.scanNumber()
	case c == 't':
		return s.scanLiteral("true")
	case c == 'f':
		return s.scanLiteral("false")
	case c == 'n':
		return s.scanLiteral("null")
	}
	return false
}

func (s *jsonScanner) scanLiteral(lit string) bool {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return false
	}
	s.pos += len(lit)
	return true
}

// open enters the object or array at s.pos, which ends with close: empty
// when it is {} or [] (then already left), !ok when it nests too deep.
func (s *jsonScanner) open(close byte) (empty, ok bool) {
	if s.depth++; s.depth > maxJSONDepth {
		return false, false
	}
	s.pos++ // { or [
	s.skipSpace()
	if s.peek() == close {
		s.pos++
		s.depth--
		return true, true
	}
	return false, true
}

func (s *jsonScanner) scanObject() bool {
	if empty, ok := s.open('}'); empty || !ok {
		return ok
	}
	for {
		if s.peek() != '"' {
			return false
		}
		if _, ok := s.scanString(); !ok {
			return false
		}
		s.skipSpace()
		if s.peek() != ':' {
			return false
		}
		s.pos++
		s.skipSpace()
		if !s.scanValue() {
			return false
		}
		s.skipSpace()
		c := s.peek()
		s.pos++
		if c == '}' {
			s.depth--
			return true
		}
		if c != ',' {
			return false
		}
		s.skipSpace()
	}
}

func (s *jsonScanner) scanArray() bool {
	if empty, ok := s.open(']'); empty || !ok {
		return ok
	}
	for {
		if !s.scanValue() {
			return false
		}
		s.skipSpace()
		c := s.peek()
		s.pos++
		if c == ']' {
			s.depth--
			return true
		}
		if c != ',' {
			return false
		}
		s.skipSpace()
	}
}

func (s *jsonScanner) digits() int {
	n := 0
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}

// scanNumber accepts -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (s *jsonScanner) scanNumber() bool {
	if s.peek() == '-' {
		s.pos++
	}
	switch c := s.peek(); {
	case c == '0':
		s.pos++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return false
	}
	if s.peek() == '.' {
		s.pos++
		if s.digits() == 0 {
			return false
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

// SWAR constants: a byte repeated in every byte of a word.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plainWord reports whether none of the 8 bytes of x is a control character
// (< 0x20), a quote or a backslash: the bytes a string scan can skip.
func plainWord(x uint64) bool {
	control := (x - 0x20*ones) &^ x
	quote := x ^ '"'*ones
	backslash := x ^ '\\'*ones
	return (control|((quote-ones)&^quote)|((backslash-ones)&^backslash))&highs == 0
}

// hasControl reports whether b holds a control character (< 0x20), 32 then
// 8 bytes at a time.
func hasControl(b []byte) bool {
	for len(b) >= 32 {
		x0 := binary.LittleEndian.Uint64(b)
		x1 := binary.LittleEndian.Uint64(b[8:])
		x2 := binary.LittleEndian.Uint64(b[16:])
		x3 := binary.LittleEndian.Uint64(b[24:])
		if ((x0-0x20*ones)&^x0|(x1-0x20*ones)&^x1|(x2-0x20*ones)&^x2|(x3-0x20*ones)&^x3)&highs != 0 {
			return true
		}
		b = b[32:]
	}
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b)
		if (x-0x20*ones)&^x&highs != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// shortRun is how many plain bytes a string scan checks eight at a time
// before it treats the string as long text.
const shortRun = 32

// scanString moves past a string starting at pos (on its opening quote) and
// reports whether it holds an escape and whether it is valid: no control
// character, only JSON's escapes. Other bytes, invalid UTF-8 included, are
// accepted, as encoding/json's scanner accepts them.
//
// Short strings (keys, ids, types) are checked eight bytes at a time. In
// long text it jumps to the next quote and the next backslash before it
// with bytes.IndexByte (vectorised), and checks the bytes in between for
// control characters; both positions are remembered until passed, so every
// byte is searched once and the scan stays linear however many escapes the
// text holds.
func (s *jsonScanner) scanString() (escaped, ok bool) {
	data := s.data
	i := s.pos + 1
	quote, slash := -1, -1 // the next '"' at or after i; the next '\\' before it, or quote
	for {
		for run := 0; run < shortRun && i+8 <= len(data) && plainWord(binary.LittleEndian.Uint64(data[i:])); run += 8 {
			i += 8
		}
		if i+8 <= len(data) && plainWord(binary.LittleEndian.Uint64(data[i:])) {
			if quote < i {
				q := bytes.IndexByte(data[i:], '"')
				if q < 0 {
					return escaped, false
				}
				quote = i + q
			}
			if slash < i {
				slash = quote
				if b := bytes.IndexByte(data[i:quote], '\\'); b >= 0 {
					slash = i + b
				}
			}
			if hasControl(data[i:slash]) {
				return escaped, false
			}
			i = slash
		}
		if i >= len(data) {
			return escaped, false
		}
		switch c := data[i]; {
		case c == '"':
			s.pos = i + 1
			return escaped, true
		case c == '\\':
			escaped = true
			i++
			if i >= len(data) {
				return escaped, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if len(data)-i < 5 {
					return escaped, false
				}
				for _, h := range data[i+1 : i+5] {
					if !isHex(h) {
						return escaped, false
					}
				}
				i += 5
			default:
				return escaped, false
			}
		case c < 0x20:
			return escaped, false
		default:
			i++
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// jsonField is one value a verifier reads from a JSON body, by its path of
// object keys (and, in exact mode, array indexes) from the top.
type jsonField struct {
	// path is the keys from the outermost in. In fold mode each is stored
	// folded (see foldKey); in exact mode as written.
	path []string
	// index[i] is path[i] as an array index (exact mode), or -1.
	index []int
	// text is true for a field read as a string (a struct's string field):
	// null leaves it as it was and any other kind is a type error. Otherwise
	// the field takes whatever value comes last, null included.
	text bool
}

// jsonQuery reads several fields of a JSON body in one pass, validating the
// whole body as it goes. It has two modes, each matching what
// encoding/json answered for the code it replaces:
//
//   - fold (exact false), as json.Unmarshal into a struct: keys match
//     case-insensitively (Unicode simple folding); an object met twice is
//     merged, each field keeping its last value; a value of the wrong kind
//     (an array for a nested object, a number for a string field) is a type
//     error that voids the whole result;
//   - exact, as walking map[string]json.RawMessage and []json.RawMessage
//     level by level: keys match exactly after unescaping, the last of
//     duplicate keys wins wholly, a numeric segment indexes an array, and a
//     path through a value of another kind leads nowhere.
//
// A body that is not valid JSON, nests deeper than encoding/json allows, or
// whose top-level value cannot hold the fields yields no field.
type jsonQuery struct {
	fields []jsonField
	exact  bool
}

// newJSONQuery builds a query for dotted paths ("data.object.id"), at most
// 64 of them: the fields still in play are a bit mask.
func newJSONQuery(exact bool, paths ...string) jsonQuery {
	q := jsonQuery{exact: exact}
	for _, p := range paths {
		f := jsonField{}
		for seg := range strings.SplitSeq(p, ".") {
			n, err := strconv.Atoi(seg)
			if err != nil || n < 0 || !exact {
				n = -1
			}
			if !exact {
				seg = foldKey(seg)
			}
			f.path = append(f.path, seg)
			f.index = append(f.index, n)
		}
		q.fields = append(q.fields, f)
	}
	return q
}

// textFields marks the fields at positions i as string fields.
func (q jsonQuery) textFields(i ...int) jsonQuery {
	fields := slices.Clone(q.fields)
	for _, j := range i {
		fields[j].text = true
	}
	q.fields = fields
	return q
}

// scan reads the fields of body into out (len(out) == len(q.fields)): the
// raw JSON text of each, or nil when absent. It reports false, with every
// out nil, when the body yields no field (see jsonQuery).
func (q jsonQuery) scan(body []byte, out [][]byte) bool {
	clear(out)
	s := jsonScanner{data: body}
	s.skipSpace()
	all := uint64(1)<<len(q.fields) - 1
	var ok bool
	switch c := s.peek(); {
	case c == '{':
		ok = q.object(&s, 0, all, out)
	case c == '[' && q.exact:
		ok = q.array(&s, 0, all, out)
	default:
		// Not a container: nothing to find. A struct's decoding fails (a
		// type or syntax error) or, for null, sets nothing; a map walk
		// finds nothing.
		clear(out)
		return false
	}
	if ok {
		s.skipSpace()
		ok = s.pos == len(s.data)
	}
	if !ok {
		clear(out)
	}
	return ok
}

// value reads the value at s.pos for the fields in live, all of which
// matched their path up to depth d-1 (so path[d-1] named this value).
func (q jsonQuery) value(s *jsonScanner, d int, live uint64, out [][]byte) bool {
	start := s.pos
	c := s.peek()
	var leaves, inner uint64
	for i := range q.fields {
		if live&(1<<i) == 0 {
			continue
		}
		if len(q.fields[i].path) == d {
			leaves |= 1 << i
		} else {
			inner |= 1 << i
			if q.exact {
				out[i] = nil // the last of duplicate keys wins wholly
			}
		}
	}
	switch {
	case inner != 0 && c == '{':
		if !q.object(s, d, inner, out) {
			return false
		}
	case inner != 0 && c == '[' && q.exact:
		if !q.array(s, d, inner, out) {
			return false
		}
	default:
		if !s.scanValue() {
			return false
		}
		if inner != 0 && !q.exact && c != 'n' {
			return false // a type error: not an object
		}
	}
	for i := range q.fields {
		if leaves&(1<<i) == 0 {
			continue
		}
		if q.fields[i].text && !q.exact {
			switch c {
			case '"':
			case 'n':
				continue // null leaves a string field as it was
			default:
				return false // a type error
			}
		}
		out[i] = s.data[start:s.pos]
	}
	return true
}

// object reads an object at s.pos whose members are at depth d.
func (q jsonQuery) object(s *jsonScanner, d int, live uint64, out [][]byte) bool {
	if empty, ok := s.open('}'); empty || !ok {
		return ok
	}
	for {
		if s.peek() != '"' {
			return false
		}
		keyStart := s.pos
		escaped, ok := s.scanString()
		if !ok {
			return false
		}
		matched := q.matchKey(s.data[keyStart:s.pos], escaped, d, live)
		s.skipSpace()
		if s.peek() != ':' {
			return false
		}
		s.pos++
		s.skipSpace()
		if done, ok := q.member(s, d, matched, out, '}'); done || !ok {
			return ok
		}
	}
}

// array reads an array at s.pos whose elements are at depth d (exact mode).
func (q jsonQuery) array(s *jsonScanner, d int, live uint64, out [][]byte) bool {
	if empty, ok := s.open(']'); empty || !ok {
		return ok
	}
	for n := 0; ; n++ {
		var matched uint64
		for i := range q.fields {
			if live&(1<<i) != 0 && q.fields[i].index[d] == n {
				matched |= 1 << i
			}
		}
		if done, ok := q.member(s, d, matched, out, ']'); done || !ok {
			return ok
		}
	}
}

// member reads the value at s.pos of an object member or array element at
// depth d — recording it for the matched fields, else only checking it — and
// the separator after it: done at the container's close, more after a comma.
func (q jsonQuery) member(s *jsonScanner, d int, matched uint64, out [][]byte, close byte) (done, ok bool) {
	if matched != 0 {
		ok = q.value(s, d+1, matched, out)
	} else {
		ok = s.scanValue()
	}
	if !ok {
		return false, false
	}
	s.skipSpace()
	c := s.peek()
	s.pos++
	if c == close {
		s.depth--
		return true, true
	}
	if c != ',' {
		return false, false
	}
	s.skipSpace()
	return false, true
}

// matchKey returns the fields of live whose key at depth d is the quoted key.
func (q jsonQuery) matchKey(quoted []byte, escaped bool, d int, live uint64) uint64 {
	key := quoted[1 : len(quoted)-1]
	plain := !escaped
	for _, c := range key {
		if c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	var name string
	if !plain {
		name = jsonString(quoted) // unescaped as encoding/json does
		if !q.exact {
			name = foldKey(name)
		}
	}
	var matched uint64
	for i := range q.fields {
		if live&(1<<i) == 0 {
			continue
		}
		want := q.fields[i].path[d]
		var eq bool
		switch {
		case !plain:
			eq = name == want
		case q.exact:
			eq = string(key) == want
		default:
			eq = foldedASCIIEqual(key, want)
		}
		if eq {
			matched |= 1 << i
		}
	}
	return matched
}

// foldedASCIIEqual reports whether the ASCII key folds to want, a folded
// key: ASCII small letters compare as capitals.
func foldedASCIIEqual(key []byte, want string) bool {
	if len(key) != len(want) {
		return false
	}
	for i, c := range key {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return true
}

// foldKey folds a key as encoding/json does to match struct fields: ASCII
// small letters to capitals, other runes to the smallest of their simple
// folding orbit.
func foldKey(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r < utf8.RuneSelf {
			c := byte(r)
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			b = append(b, c)
			continue
		}
		b = utf8.AppendRune(b, foldRune(r))
	}
	return string(b)
}

// rawScalar turns a JSON string or number into its text; anything else is "".
func rawScalar(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	if raw[0] == '"' {
		return jsonString(raw)
	}
	if raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9') {
		return string(raw)
	}
	return ""
}
