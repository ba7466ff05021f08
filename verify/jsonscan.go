package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"unicode"
	"unicode/utf8"
)

// This file reads an event's top-level "id" and "type" in one pass over the
// body, without encoding/json's reflection and per-byte state machine: on the
// hot path of every delivery it is several times cheaper than json.Unmarshal
// into a struct, and it answers exactly as that did (the tests compare the
// two on a corpus and by fuzzing):
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

// jsonIDAndType reads the top-level "id" and "type" of a JSON body. A
// numeric id is kept as written; a body that is not JSON yields "", "".
func jsonIDAndType(body []byte) (id, typ string) {
	s := jsonScanner{data: body}
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != '{' {
		// Not an object: a syntax error, or a type error for the struct
		// (null aside, which sets nothing).
		return "", ""
	}
	s.pos++
	s.depth = 1
	var idRaw, typRaw []byte
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
	} else {
		for {
			if s.peek() != '"' {
				return "", ""
			}
			keyStart := s.pos
			escaped, ok := s.scanString()
			if !ok {
				return "", ""
			}
			key := keyOf(s.data[keyStart:s.pos], escaped)
			s.skipSpace()
			if s.peek() != ':' {
				return "", ""
			}
			s.pos++
			s.skipSpace()
			valStart := s.pos
			if !s.scanValue() {
				return "", ""
			}
			switch key {
			case keyID:
				idRaw = s.data[valStart:s.pos]
			case keyType:
				switch s.data[valStart] {
				case '"':
					typRaw = s.data[valStart:s.pos]
				case 'n': // null leaves a string field as it was
				default:
					return "", "" // a type error fails the whole Unmarshal
				}
			}
			s.skipSpace()
			c := s.peek()
			s.pos++
			if c == '}' {
				break
			}
			if c != ',' {
				return "", ""
			}
			s.skipSpace()
		}
	}
	s.skipSpace()
	if s.pos != len(s.data) {
		return "", "" // trailing data
	}
	return rawScalar(idRaw), jsonString(typRaw)
}

// The top-level keys jsonIDAndType looks for.
const (
	keyOther = iota
	keyID
	keyType
)

// keyOf says which field a quoted key names, matching as encoding/json
// matches struct fields: exactly, else under Unicode simple case folding.
func keyOf(quoted []byte, escaped bool) int {
	if escaped {
		return escapedKeyOf(quoted)
	}
	// The letters of "id" and "type" fold only with their ASCII capitals
	// (no rune outside ASCII folds onto them: TestNoNonASCIIRuneFoldsIntoAKey),
	// and c|0x20 maps exactly those onto the small letters.
	key := quoted[1 : len(quoted)-1]
	switch {
	case len(key) == 2 && key[0]|0x20 == 'i' && key[1]|0x20 == 'd':
		return keyID
	case len(key) == 4 && key[0]|0x20 == 't' && key[1]|0x20 == 'y' && key[2]|0x20 == 'p' && key[3]|0x20 == 'e':
		return keyType
	}
	return keyOther
}

// escapedKeyOf is keyOf for a key with escapes: unquoted as encoding/json
// does, then each rune folded to the smallest of its simple-folding orbit,
// as it does.
func escapedKeyOf(quoted []byte) int {
	var name string
	if json.Unmarshal(quoted, &name) != nil {
		return keyOther
	}
	folded := make([]rune, 0, 4)
	for _, r := range name {
		if len(folded) == 4 {
			return keyOther
		}
		folded = append(folded, foldRune(r))
	}
	switch string(folded) {
	case "ID":
		return keyID
	case "TYPE":
		return keyType
	}
	return keyOther
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

func (s *jsonScanner) scanObject() bool {
	if s.depth++; s.depth > maxJSONDepth {
		return false
	}
	s.pos++ // {
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
		s.depth--
		return true
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
	if s.depth++; s.depth > maxJSONDepth {
		return false
	}
	s.pos++ // [
	s.skipSpace()
	if s.peek() == ']' {
		s.pos++
		s.depth--
		return true
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
