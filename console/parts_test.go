package console

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
)

// caddyAuth is basic_auth's handler.
func caddyAuth(testing.TB) caddyhttp.MiddlewareHandler { return &caddyauth.Authentication{} }

// forwardAuth is the reverse_proxy that forward_auth adapts to.
func forwardAuth() caddyhttp.MiddlewareHandler {
	return &reverseproxy.Handler{Rewrite: &rewrite.Rewrite{Method: http.MethodGet}, HandleResponse: []caddyhttp.ResponseHandler{{}}}
}

// TestRecorder: the ring keeps the newest outcomes, newest first, across a
// wrap and a resize; the minutes count per outcome and forget an hour ago.
func TestRecorder(t *testing.T) {
	r := newRecorder(3)
	at := testStart
	for i, o := range []string{"forwarded", "duplicate", "invalid_signature", "spooled"} {
		r.add(Outcome{At: at.Add(time.Duration(i) * time.Minute), Outcome: o})
	}
	names := func(outs []Outcome) []string {
		var s []string
		for _, o := range outs {
			s = append(s, o.Outcome)
		}
		return s
	}
	if got := names(r.newest(0, nil)); !reflect.DeepEqual(got, []string{"spooled", "invalid_signature", "duplicate"}) {
		t.Errorf("newest: %v", got)
	}
	if got := names(r.newest(1, nil)); !reflect.DeepEqual(got, []string{"spooled"}) {
		t.Errorf("newest(1): %v", got)
	}
	if got := names(r.newest(0, func(o *Outcome) bool { return o.Outcome != "spooled" })); !reflect.DeepEqual(got, []string{"invalid_signature", "duplicate"}) {
		t.Errorf("newest filtered: %v", got)
	}
	r.resize(5)
	r.add(Outcome{At: at.Add(4 * time.Minute), Outcome: "ip_denied"})
	if got := names(r.newest(0, nil)); !reflect.DeepEqual(got, []string{"ip_denied", "spooled", "invalid_signature", "duplicate"}) {
		t.Errorf("after growing: %v", got)
	}
	r.resize(2)
	if got := names(r.newest(0, nil)); !reflect.DeepEqual(got, []string{"ip_denied", "spooled"}) {
		t.Errorf("after shrinking: %v", got)
	}

	m := r.perMinute(at.Add(4 * time.Minute))
	if m[chartMinutes-1]["ip_denied"] != 1 || m[chartMinutes-5]["forwarded"] != 1 || m[chartMinutes-2]["spooled"] != 1 {
		t.Errorf("per minute: %v", m[chartMinutes-5:])
	}
	m = r.perMinute(at.Add(63 * time.Minute))
	if m[0]["ip_denied"] != 1 || m[0]["forwarded"] != 0 {
		t.Errorf("an hour later the old minutes are forgotten: %v %v", m[0], m[1])
	}
	r.add(Outcome{At: at.Add(60 * time.Minute), Outcome: "forwarded"}) // the slot of minute 0, reused
	if got := r.perMinute(at.Add(60 * time.Minute))[chartMinutes-1]; got["forwarded"] != 1 || len(got) != 1 {
		t.Errorf("a reused minute keeps the old counts: %v", got)
	}
}

// TestRecorderLifetime: outcomes are kept while a console is loaded, across
// a reload (new console before the old one's cleanup), at the largest size
// asked; not at all once none is.
func TestRecorderLifetime(t *testing.T) {
	if Recording() {
		t.Skip("another test holds a console")
	}
	release1 := acquire(10)
	Record(Outcome{At: testStart, Outcome: "forwarded"})
	release2 := acquire(20)
	release1()
	release1() // twice is once
	if !Recording() || len(active.Load().ring) != 20 {
		t.Fatal("the second console's recorder is gone or too small")
	}
	if got := active.Load().newest(0, nil); len(got) != 1 {
		t.Errorf("the outcome did not survive the reload: %v", got)
	}
	release2()
	if Recording() {
		t.Fatal("still recording with no console")
	}
	Record(Outcome{At: testStart, Outcome: "forwarded"}) // nothing happens
}

// TestChart: bars stack per minute, the axis top is a round number, and the
// summary names each outcome.
func TestChart(t *testing.T) {
	var minutes [chartMinutes]map[string]int
	minutes[chartMinutes-1] = map[string]int{"forwarded": 30, "invalid_signature": 7}
	minutes[0] = map[string]int{"weird": 1}
	c := newChart(minutes)
	if c.Total != 38 || c.Summary != "38 outcomes in the last hour: forwarded 30, invalid_signature 7, weird 1." {
		t.Errorf("total %d, summary %q", c.Total, c.Summary)
	}
	if len(c.Bars) != 3 || c.Bars[0].Class != "o-other" || c.Bars[1].Class != "o-forwarded" || c.Bars[2].Class != "o-invalid-signature" {
		t.Fatalf("bars %+v", c.Bars)
	}
	// 37 of a 50 top: the stack reaches 74 % of the plot's height.
	plotH := float64(c.Bottom - c.Top)
	if c.Bars[1].H != num(30.0/50*plotH) || c.Bars[2].Y != num(float64(c.Bottom)-37.0/50*plotH) {
		t.Errorf("stack: %+v", c.Bars[1:])
	}
	if !strings.Contains(c.Bars[2].Label, "this minute: 7 invalid_signature") || !strings.Contains(c.Bars[0].Label, "59 min ago") {
		t.Errorf("labels %q %q", c.Bars[2].Label, c.Bars[0].Label)
	}
	for v, want := range map[int]int{0: 1, 1: 1, 2: 2, 3: 5, 7: 10, 37: 50, 101: 200, 999: 1000} {
		if got := niceCeil(v); got != want {
			t.Errorf("niceCeil(%d) = %d, want %d", v, got, want)
		}
	}
	if empty := newChart([chartMinutes]map[string]int{}); empty.Total != 0 || len(empty.Bars) != 0 || empty.Summary != "No outcomes in the last hour." {
		t.Errorf("empty chart: %+v", empty)
	}
}

// TestCaddyfile parses the directive and names the option of each mistake.
func TestCaddyfile(t *testing.T) {
	var h Handler
	d := caddyfile.NewTestDispenser("webhook_guard_console {\n actions retry discard pause\n recent 500\n}")
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(h.Actions, []string{"retry", "discard", "pause"}) || h.Recent != 500 {
		t.Errorf("parsed %+v", h)
	}
	var plain Handler
	if err := plain.UnmarshalCaddyfile(caddyfile.NewTestDispenser("webhook_guard_console")); err != nil || plain.Actions != nil || plain.Recent != 0 {
		t.Errorf("plain: %+v %v", plain, err)
	}
	for input, want := range map[string]string{
		"webhook_guard_console x":                                    "takes a block, not 'x'",
		"webhook_guard_console {\n actions\n}":                       "actions: want one or more of retry, discard, pause",
		"webhook_guard_console {\n actions retry delete\n}":          "actions: unknown action 'delete'",
		"webhook_guard_console {\n actions retry retry\n}":           "actions: 'retry' given twice",
		"webhook_guard_console {\n actions retry\n actions pause\n}": "actions: given twice",
		"webhook_guard_console {\n recent 0\n}":                      "recent: want 1 to 100000",
		"webhook_guard_console {\n recent many\n}":                   "recent: want 1 to 100000",
		"webhook_guard_console {\n recent 5 6\n}":                    "wrong argument count",
		"webhook_guard_console {\n recent 5\n recent 6\n}":           "recent: given twice",
		"webhook_guard_console {\n action retry\n}":                  "unrecognized webhook_guard_console subdirective 'action'",
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Testfile:") {
			t.Errorf("%q: %v, want %q with the line", input, err, want)
		}
	}
}

// TestParseRoute reads pages from the end of the path.
func TestParseRoute(t *testing.T) {
	for p, want := range map[string]route{
		"/":                            {page: pageOverview, base: "./"},
		"/console/":                    {page: pageOverview, base: "./"},
		"/events":                      {page: pageEvents, base: "./"},
		"/a/b/events":                  {page: pageEvents, base: "./"},
		"/events/17":                   {page: pageEvent, id: 17, base: "../"},
		"/recent":                      {page: pageRecent, base: "./"},
		"/assets/console.js":           {page: pageAsset, name: "console.js", base: "../"},
		"/actions/retry-all":           {page: pageAction, name: "retry-all", base: "../"},
		"/x/actions/anything":          {page: pageAction, name: "anything", base: "../"},
		"/events/18446744073709551615": {page: pageEvent, id: 1<<64 - 1, base: "../"},
	} {
		got, ok := parseRoute(p)
		if !ok || got != want {
			t.Errorf("%s: %+v %v, want %+v", p, got, ok, want)
		}
	}
	for _, p := range []string{"/x", "/events/0", "/events/abc", "/events/18446744073709551616", "/assets/other.js", "/assets/../console.js", "/console"} {
		if got, ok := parseRoute(p); ok {
			t.Errorf("%s: %+v, want no page", p, got)
		}
	}
}

// FuzzParseRoute: any path is a page or none, never a panic; an event's id
// reads back as it was written.
func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/", "/events/12", "/assets/console.css", "/actions/retry", "//", "/events/99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, ok := parseRoute(p)
		if ok && rt.page == pageEvent && rt.id == 0 {
			t.Fatalf("%q: event 0", p)
		}
		if ok && rt.base != "./" && rt.base != "../" {
			t.Fatalf("%q: base %q", p, rt.base)
		}
	})
}

// FuzzReadAction: an action's body is one JSON object of known fields with
// a valid scope, or an error; never a panic.
func FuzzReadAction(f *testing.F) {
	for _, s := range []string{`{"id":"12"}`, `{"scope":"shop","state":"dead"}`, `{}`, `[]`, `{"id":1}`, `{"scope":"<x>"}`, `{"a":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/actions/retry", bytes.NewReader(body))
		req, err := readAction(httptest.NewRecorder(), r)
		if err != nil {
			return
		}
		if req.Scope != "" && !validName(req.Scope) {
			t.Fatalf("scope %q accepted", req.Scope)
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil {
			t.Fatalf("%q accepted but not an object", body)
		}
		for k := range m {
			if k != "id" && k != "scope" && k != "state" {
				t.Fatalf("unknown field %q accepted", k)
			}
		}
	})
}

// FuzzReadFilter: the list's query is a filter or an error.
func FuzzReadFilter(f *testing.F) {
	for _, s := range []string{"state=dead&scope=shop&q=evt", "after=12", "q=%3Cscript%3E", "state=x", "scope=a&scope=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, query string) {
		r := httptest.NewRequest(http.MethodGet, "/events", nil)
		r.URL.RawQuery = query
		filter, err := readFilter(r)
		if err != nil {
			return
		}
		if filter.Scope != "" && !validName(filter.Scope) || len(filter.Q) > maxSearch {
			t.Fatalf("%q: accepted %+v", query, filter)
		}
	})
}
