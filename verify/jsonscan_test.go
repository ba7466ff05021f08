package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// referenceIDAndType is what jsonIDAndType must answer: json.Unmarshal into
// a struct with the two fields, as the verifiers first did.
func referenceIDAndType(body []byte) (id, typ string) {
	var f struct {
		ID   json.RawMessage `json:"id"`
		Type string          `json:"type"`
	}
	if json.Unmarshal(body, &f) != nil {
		return "", ""
	}
	var s string
	switch {
	case len(f.ID) == 0:
	case f.ID[0] == '"':
		if json.Unmarshal(f.ID, &s) == nil {
			id = s
		}
	case f.ID[0] == '-' || (f.ID[0] >= '0' && f.ID[0] <= '9'):
		id = string(f.ID)
	}
	return id, f.Type
}

// jsonCorpus are bodies on the edges of the JSON grammar and of
// encoding/json's struct decoding.
var jsonCorpus = []string{
	``, ` `, `{}`, ` { } `, `{`, `}`, `null`, ` null `, `nul`, `true`, `1`, `"x"`, `[]`, `[{"id":"a"}]`,
	`{"id":"evt_1","type":"payment.succeeded"}`,
	`{"type":"t","id":"i"}`,
	`{"id":"a","id":"b"}`, `{"id":"a","ID":"b"}`, `{"ID":"a"}`, `{"Id":"a","iD":"b"}`,
	`{"TYPE":"x"}`, `{"Type":"x","tYpE":"y"}`,
	`{"id":42}`, `{"id":-0.5e+3}`, `{"id":1E9}`, `{"id":01}`, `{"id":-}`, `{"id":1.}`, `{"id":.5}`, `{"id":1e}`, `{"id":+1}`,
	`{"id":true}`, `{"id":null}`, `{"id":{"x":1}}`, `{"id":[1,2]}`, `{"id":"a","id":null}`, `{"id":"a","id":{}}`,
	`{"type":5}`, `{"type":true}`, `{"type":null}`, `{"type":"a","type":null}`, `{"type":{}}`, `{"type":[]}`,
	`{"type":"a","type":5}`, `{"type":5,"type":"a"}`, `{"id":"x","type":[],"z":1}`,
	`{"id":"a\"b"}`, `{"id":"a\\b"}`, `{"id":"\u00e9"}`, `{"id":"\ud83d\ude00"}`, `{"id":"\ud83d"}`, `{"id":"\u0000"}`,
	`{"id":"\x"}`, `{"id":"\u12"}`, `{"id":"\u12G4"}`, `{"id":"a` + "\x01" + `"}`, `{"id":"a` + "\x7f" + `"}`,
	`{"id":"` + "\xff\xfe" + `"}`, `{"type":"` + "\xed\xa0\x80" + `"}`, `{"id":"é","type":"ü"}`, `{"id":"\/"}`,
	`{"\u0069d":"esc"}`, `{"\u0049D":"esc"}`, `{"i\u0064":"x","typ\u0065":"y"}`, `{"\u0074ype":5}`,
	`{"İd":"dotted"}`, `{"ıd":"dotless"}`, `{"ſ":"x"}`, `{"Kd":"kelvin"}`,
	`{"id":"a"} `, `{"id":"a"}x`, `{"id":"a"}{}`, `{"id":"a",}`, `{"id":"a" "type":"b"}`, `{"id" "a"}`, `{id:"a"}`,
	`{"id":"a"` + "\n\t\r " + `}`, "\t{\n\"id\"\r:\n\"a\"\t}\n", `{"a":[1,2,{"b":[true,false,null]}],"id":"deep"}`,
	`{"a":[1,2,}`, `{"a":[,1]}`, `{"a":[1 2]}`, `{"a":{"b":}}`, `{"a":tru}`, `{"a":nulll}`, `{"a":"x",}`,
	`{"id":"a","data":{"id":"inner","type":"inner"}}`, `{"data":{"id":"inner"}}`,
	`{"id":"a","pad":"` + strings.Repeat("x", 1000) + `"}`,
	`{"id":"a","pad":"` + strings.Repeat("x", 1000) + "\x1f" + `"}`,
	`{"id":"a","pad":"` + strings.Repeat("x", 13) + `\n` + strings.Repeat("y", 20) + `"}`,
	"\xef\xbb\xbf{\"id\":\"bom\"}", `{"id":"a"}` + "\x00",
}

func TestJSONIDAndTypeMatchesEncodingJSON(t *testing.T) {
	for _, body := range jsonCorpus {
		checkJSONIDAndType(t, []byte(body))
	}
}

// TestJSONIDAndTypeLongStrings puts escapes, quotes, control characters and
// the end of the body at every offset of long strings, where the scan
// switches from words to vectorised searches.
func TestJSONIDAndTypeLongStrings(t *testing.T) {
	for _, special := range []string{`\"`, `\\`, `\n`, `\u00e9`, `\u00`, `\x`, "\x01", "\x1f", "\x7f", "\xff", `"`, `\`} {
		for at := 0; at < 90; at++ {
			text := strings.Repeat("a", at) + special + strings.Repeat("b", 90-at)
			for _, body := range []string{
				`{"id":"` + text + `","type":"t"}`,
				`{"type":"t","pad":"` + text + `","id":"x"}`,
				`{"id":"x","pad":"` + text + `"`,
				`{"id":"x","pad":"` + text,
			} {
				checkJSONIDAndType(t, []byte(body))
			}
		}
	}
}

func checkJSONIDAndType(t *testing.T, body []byte) {
	t.Helper()
	id, typ := jsonIDAndType(body)
	wantID, wantTyp := referenceIDAndType(body)
	if id != wantID || typ != wantTyp {
		t.Errorf("jsonIDAndType(%q) = %q, %q; encoding/json says %q, %q", body, id, typ, wantID, wantTyp)
	}
}

// TestJSONIDAndTypeDepth checks encoding/json's nesting limit is kept.
func TestJSONIDAndTypeDepth(t *testing.T) {
	for _, depth := range []int{maxJSONDepth - 1, maxJSONDepth, maxJSONDepth + 1} {
		for _, open := range []string{"[", `{"a":`} {
			closer := "]"
			if open != "[" {
				closer = "}"
			}
			// The top-level object is one level.
			inner := strings.Repeat(open, depth-1) + "1" + strings.Repeat(closer, depth-1)
			checkJSONIDAndType(t, []byte(`{"id":"deep","x":`+inner+`}`))
		}
	}
}

// TestJSONIDAndTypeRandom compares the two on generated events and on
// mutations of them (bytes changed, inserted, removed, truncated).
func TestJSONIDAndTypeRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for range n {
		body := randomEvent(rng, 0)
		checkJSONIDAndType(t, body)
		checkJSONIDAndType(t, mutate(rng, body))
		if t.Failed() {
			return
		}
	}
}

var (
	randomKeys    = []string{"id", "type", "ID", "Type", "data", "x", `\u0069d`, `typ\u0065`, "ſ", "Id"}
	randomStrings = []string{"", "evt_1", "a\\\"b", `\u00e9`, `\ud83d\ude00`, `\ud800`, "é", "\xff", "\\n\\t", "x y", "\\/",
		strings.Repeat("long text ", 9) + `\"` + strings.Repeat("more ", 20), strings.Repeat("z", 77) + `\\` + strings.Repeat("é", 30)}
	randomScalars = []string{"0", "-1", "1.5", "2e10", "-0.0E-1", "true", "false", "null"}
)

// randomEvent writes a random JSON value, mostly objects with id and type
// keys near the top.
func randomEvent(rng *rand.Rand, depth int) []byte {
	var b bytes.Buffer
	var value func(d int)
	value = func(d int) {
		switch k := rng.IntN(10); {
		case d < 3 && k < 3:
			b.WriteByte('{')
			for i := range rng.IntN(5) {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "%q:", randomKeys[rng.IntN(len(randomKeys))])
				value(d + 1)
			}
			b.WriteByte('}')
		case d < 3 && k < 4:
			b.WriteByte('[')
			for i := range rng.IntN(4) {
				if i > 0 {
					b.WriteByte(',')
				}
				value(d + 1)
			}
			b.WriteByte(']')
		case k < 7:
			b.WriteString(`"` + randomStrings[rng.IntN(len(randomStrings))] + `"`)
		default:
			b.WriteString(randomScalars[rng.IntN(len(randomScalars))])
		}
		if rng.IntN(8) == 0 {
			b.WriteString(" \n\t\r"[rng.IntN(4):][:1])
		}
	}
	b.WriteByte('{')
	for i := range rng.IntN(6) {
		if i > 0 {
			b.WriteByte(',')
		}
		// %q would escape some keys differently: write them raw.
		b.WriteString(`"` + strings.ReplaceAll(randomKeys[rng.IntN(len(randomKeys))], `"`, `\"`) + `":`)
		value(depth + 1)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func mutate(rng *rand.Rand, body []byte) []byte {
	b := append([]byte(nil), body...)
	if len(b) == 0 {
		return b
	}
	i := rng.IntN(len(b))
	special := []byte("{}[]\",:\\ 0-eE.tfnu\x00\x1f\x80")
	switch rng.IntN(4) {
	case 0:
		b[i] = special[rng.IntN(len(special))]
	case 1:
		b = append(b[:i], append([]byte{special[rng.IntN(len(special))]}, b[i:]...)...)
	case 2:
		b = append(b[:i], b[i+1:]...)
	default:
		b = b[:i]
	}
	return b
}

func FuzzJSONIDAndType(f *testing.F) {
	for _, body := range jsonCorpus {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkJSONIDAndType(t, body)
	})
}

func BenchmarkJSONIDAndType(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		body := benchBody(size)
		b.Run(fmt.Sprintf("scan/%dKiB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				jsonIDAndType(body)
			}
		})
		b.Run(fmt.Sprintf("encoding_json/%dKiB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				referenceIDAndType(body)
			}
		})
	}
}

// referencePathValue is what an exact-mode query must answer: hmac's former
// walk through map[string]json.RawMessage and []json.RawMessage.
func referencePathValue(body []byte, path []string) string {
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

// pathValue is an exact-mode query of one dotted path, as hmac runs it.
func pathValue(body []byte, path string) string {
	var out [1][]byte
	newJSONQuery(true, path).scan(bytes.TrimSpace(body), out[:])
	return rawScalar(out[0])
}

// jsonPaths are the dotted paths the exact-mode tests look up.
var jsonPaths = []string{"id", "type", "data.id", "data.object.id", "a.0", "a.1.b", "a.2.b.0", "0", "0.id", "1", "id.x", "ID", "data", "a.+1", "a.01", "a.-0", "\u00e9"}

func checkPathValue(t *testing.T, body []byte, path string) {
	t.Helper()
	got := pathValue(body, path)
	if want := referencePathValue(body, strings.Split(path, ".")); got != want {
		t.Errorf("path %q of %q = %q; the map walk says %q", path, body, got, want)
	}
}

// pathCorpus adds nested bodies, arrays and duplicates to jsonCorpus.
var pathCorpus = append(slices.Clone(jsonCorpus),
	`{"data":{"object":{"id":"ch_1"}}}`, `{"data":{"object":{"id":"ch_1"}},"data":{"x":1}}`,
	`{"data":{"id":"a"},"data":null}`, `{"data":{"id":"a"},"data":{"id":null}}`, `{"data":{"ID":"a"}}`,
	`{"a":[1,{"b":"x"},{"b":[true,"y"]}]}`, `{"a":[1,{"b":"x"}],"a":[2]}`, `[{"id":"first"},2]`, `["zero",{"id":5}]`,
	`{"a":{"0":"key not index"}}`, `{"a":[0,1,2,3,4,5,6,7,8,9,10,11]}`, `{"\u00e9":"e-acute"}`, `{"é":"raw"}`,
	` {"data" : { "id" : 12.5e3 } } `, `{"data":{"id":"a"}}x`, `{"data":{"id":"a"`, `{"data":{"id":"a"},}`,
	"\f{\"id\":\"formfeed\"}", `{"id":"x"}`+"\u00a0")

func TestJSONPathMatchesMapWalk(t *testing.T) {
	for _, body := range pathCorpus {
		for _, path := range jsonPaths {
			checkPathValue(t, []byte(body), path)
		}
	}
	for _, depth := range []int{maxJSONDepth - 1, maxJSONDepth, maxJSONDepth + 1} {
		inner := strings.Repeat("[", depth-1) + "1" + strings.Repeat("]", depth-1)
		checkPathValue(t, []byte(`{"id":"deep","x":`+inner+`}`), "id")
		checkPathValue(t, []byte(`{"a":`+inner+`}`), "a.0.0")
	}
}

// referenceSlackFields and referenceIVPAY are what slackFields and
// ivpayEvent must answer: json.Unmarshal into the structs they replace.
func referenceSlackFields(body []byte) (id, typ string) {
	var f struct {
		EventID string `json:"event_id"`
		Type    string `json:"type"`
		Event   struct {
			Type string `json:"type"`
		} `json:"event"`
	}
	if json.Unmarshal(body, &f) != nil {
		return "", ""
	}
	if f.Type == "event_callback" && f.Event.Type != "" {
		f.Type = f.Event.Type
	}
	return f.EventID, f.Type
}

func referenceIVPAY(body []byte) (id, typ string) {
	var f struct {
		PaymentID json.RawMessage `json:"payment_id"`
		Status    string          `json:"status"`
	}
	if json.Unmarshal(body, &f) != nil {
		// The former code kept the status decoded before a type error (as
		// json.Unmarshal leaves it); a body with a type error now has none.
		return BodyDigestID(body), ""
	}
	if pid := rawScalar(f.PaymentID); pid != "" {
		return pid + "/" + f.Status, f.Status
	}
	return BodyDigestID(body), f.Status
}

func checkStructFields(t *testing.T, body []byte) {
	t.Helper()
	id, typ := slackFields(body)
	if wantID, wantTyp := referenceSlackFields(body); id != wantID || typ != wantTyp {
		t.Errorf("slackFields(%q) = %q, %q; encoding/json says %q, %q", body, id, typ, wantID, wantTyp)
	}
	ev := ivpayEvent(body)
	if wantID, wantTyp := referenceIVPAY(body); ev.ID != wantID || ev.Type != wantTyp {
		t.Errorf("ivpayEvent(%q) = %q, %q; encoding/json says %q, %q", body, ev.ID, ev.Type, wantID, wantTyp)
	}
}

// structCorpus are bodies on the edges of the nested struct decoding.
var structCorpus = append(slices.Clone(jsonCorpus),
	`{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention"}}`,
	`{"type":"event_callback","event":{"type":"a"},"event":{"x":1}}`, `{"type":"event_callback","event":{"type":"a"},"event":null}`,
	`{"type":"event_callback","event":{"type":"a"},"event":{"type":null}}`, `{"type":"event_callback","event":[]}`,
	`{"type":"event_callback","event":"x"}`, `{"type":"event_callback","event":{"type":5}}`, `{"EVENT_ID":"Ev2","Event":{"TYPE":"m"},"type":"event_callback"}`,
	`{"event_id":5}`, `{"event_id":null,"event_id":"Ev3"}`, `{"ſtatus":"PAID","payment_id":1}`, `{"event_ıd":"x"}`, `{"\u0065vent_id":"esc"}`,
	`{"payment_id":"p1","status":"PAID"}`, `{"payment_id":42,"status":"FAILED"}`, `{"payment_id":"p1","status":7}`,
	`{"payment_id":"p1","payment_id":null,"status":"PAID"}`, `{"payment_id":{"x":1},"status":"PAID"}`, `{"PAYMENT_ID":"P","Status":"s"}`,
	`{"payment_id":"p1","status":"PAID","status":null}`, `{"payment_Kd":"kelvin"}`, `{"event":{"type":"a","deep":{"type":"b"}},"type":"event_callback"}`)

func TestStructFieldsMatchEncodingJSON(t *testing.T) {
	for _, body := range structCorpus {
		checkStructFields(t, []byte(body))
	}
}

// structKeys and pathKeys steer randomEvent towards the fields looked up.
var structKeys = []string{"event_id", "type", "event", "payment_id", "status", "Event", "STATUS", "ſtatus", "data", "id", "a", "0", "object"}

// TestQueriesRandom compares both modes with their references on generated
// bodies and mutations of them.
func TestQueriesRandom(t *testing.T) {
	saved := randomKeys
	randomKeys = append(slices.Clone(randomKeys), structKeys...)
	defer func() { randomKeys = saved }()
	rng := rand.New(rand.NewPCG(3, 4))
	n := 5000
	if testing.Short() {
		n = 500
	}
	for range n {
		body := randomEvent(rng, 0)
		for _, b := range [][]byte{body, mutate(rng, body)} {
			checkStructFields(t, b)
			for _, path := range jsonPaths {
				checkPathValue(t, b, path)
			}
		}
		if t.Failed() {
			return
		}
	}
}

// FuzzJSONQueries checks the dotted-path scanner in both modes against
// encoding/json: exact mode against the map walk for any path, fold mode
// through Slack's and IVPAY's fields against struct decoding.
func FuzzJSONQueries(f *testing.F) {
	for i, body := range pathCorpus {
		f.Add([]byte(body), jsonPaths[i%len(jsonPaths)])
	}
	for _, body := range structCorpus {
		f.Add([]byte(body), "event.type")
	}
	f.Fuzz(func(t *testing.T, body []byte, path string) {
		checkStructFields(t, body)
		if validPath(path) && strings.Count(path, ".") < 64 {
			checkPathValue(t, body, path)
		}
	})
}

// BenchmarkJSONPath compares hmac's `json:` event id lookup with the map
// walk it replaced.
func BenchmarkJSONPath(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		body := benchBody(size)
		q := newJSONQuery(true, "data.id")
		b.Run(fmt.Sprintf("scan/%dKiB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			var out [1][]byte
			for b.Loop() {
				q.scan(body, out[:])
			}
		})
		b.Run(fmt.Sprintf("map_walk/%dKiB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				referencePathValue(body, []string{"data", "id"})
			}
		})
	}
}
