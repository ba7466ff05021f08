package console

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hookguard/caddy-webhook-guard/ledger"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// fixture is a provisioned console in front of one spool kept in a ledger
// file, with its own clock, recorder and log.
type fixture struct {
	t     testing.TB
	mu    sync.Mutex
	now   time.Time
	store *ledger.Ledger
	sp    *spool.Spool
	h     *Handler
	rec   *recorder
	logs  *observer.ObservedLogs
	// user is the authenticated user of the requests ({http.auth.user.id}).
	user string
	seq  int
}

// testStart is the fixture's time at start.
var testStart = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// newFixture provisions a console allowed actions, with a spool that a
// handler of scope "shop" delivers (its worker is not started: events stay
// as the test puts them).
func newFixture(t testing.TB, actions ...string) *fixture {
	t.Helper()
	f := &fixture{t: t, now: testStart, rec: newRecorder(100)}
	path := filepath.Join(t.TempDir(), "ledger.db")
	store, err := ledger.Open(ledger.Config{Path: path, Now: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	f.store = store
	f.sp = spool.New(store, spool.Options{Now: f.clock, Name: "ledger " + path})
	t.Cleanup(f.sp.Stop)
	f.sp.Register(&spool.Target{Key: "ivpay/shop/backend", Scope: "shop", Deliver: func(context.Context, *spool.Record, int) spool.Attempt {
		return spool.Attempt{}
	}})
	f.h = &Handler{Actions: actions, Recent: 100}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := f.h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.h.Cleanup() })
	core, logs := observer.New(zap.DebugLevel)
	f.h.logger, f.logs = zap.New(core).Named("http.handlers.webhook_guard_console"), logs
	f.h.now = f.clock
	f.h.recorder = func() *recorder { return f.rec }
	f.h.guard = func() Guard {
		return Guard{
			Spools:       func() []*spool.Spool { return []*spool.Spool{f.sp} },
			RedactHeader: testRedactHeader,
			RedactQuery:  func(q string) string { return strings.ReplaceAll(q, "token=abc", "token="+redacted) },
		}
	}
	return f
}

// testRedactHeader redacts X-Signature, as the guard's rules do.
func testRedactHeader(h http.Header) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	if _, ok := out["X-Signature"]; ok {
		out["X-Signature"] = []string{redacted}
	}
	return out
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// advance moves the clock.
func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// spoolEvent spools an event of scope with eventID, headers and body, and
// returns its id.
func (f *fixture) spoolEvent(scope, eventID string, header map[string][]string, body string) uint64 {
	f.t.Helper()
	f.seq++
	rec := &spool.Record{
		Target: "ivpay/" + scope + "/backend", Scope: scope, Provider: "ivpay", EventID: eventID, EventType: "paid",
		ReceivedAt: f.clock(), Method: http.MethodPost, Path: "/hooks/ivpay", Query: "token=abc&x=1", ClientIP: "192.0.2.7",
		Host: "hooks.example", Proto: "https", Header: header, Body: []byte(body),
	}
	dup, err := f.sp.Ingest(context.Background(), fmt.Sprintf("%s/%s/%d", scope, eventID, f.seq), rec, time.Hour)
	if err != nil || dup {
		f.t.Fatalf("ingest: dup %v, err %v", dup, err)
	}
	return rec.ID
}

// kill makes the event dead after attempts failed attempts.
func (f *fixture) kill(id uint64, attempts int) {
	f.t.Helper()
	rec, ok, err := f.sp.Get(context.Background(), id)
	if err != nil || !ok {
		f.t.Fatalf("get %d: %v %v", id, ok, err)
	}
	rec.Attempts, rec.LastError = attempts, "status 503"
	for i := range attempts {
		rec.History = append(rec.History, spool.AttemptLog{At: f.clock().Add(time.Duration(i) * time.Second), Duration: 120 * time.Millisecond, Status: 503, Error: "status 503"})
	}
	if _, err := f.store.Die(context.Background(), &rec); err != nil {
		f.t.Fatal(err)
	}
}

// state is the event's state now ("" when gone).
func (f *fixture) state(id uint64) spool.State {
	f.t.Helper()
	rec, ok, err := f.sp.Get(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return rec.State
}

// answer is a console answer.
type answer struct {
	status int
	header http.Header
	body   string
}

// do sends a request to the console at http://127.0.0.1:9180<target>;
// hdr are name, value pairs.
func (f *fixture) do(method, target, body string, hdr ...string) answer {
	f.t.Helper()
	req := httptest.NewRequest(method, "http://127.0.0.1:9180"+target, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	repl := caddy.NewReplacer()
	if f.user != "" {
		repl.Set("http.auth.user.id", f.user)
	}
	w := httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, repl, w, &caddyhttp.Server{})
	if err := f.h.ServeHTTP(w, req, nil); err != nil {
		f.t.Fatalf("%s %s: ServeHTTP returned %v", method, target, err)
	}
	return answer{w.Code, w.Result().Header, w.Body.String()}
}

// get is GET target, which must answer 200.
func (f *fixture) get(target string) string {
	f.t.Helper()
	a := f.do(http.MethodGet, target, "")
	if a.status != http.StatusOK {
		f.t.Fatalf("GET %s: %d %s", target, a.status, a.body)
	}
	return a.body
}

// action POSTs an action as the console's script does.
func (f *fixture) action(name, body string, hdr ...string) answer {
	f.t.Helper()
	base := []string{"Content-Type", "application/json", ActionHeader, "1", "Sec-Fetch-Site", "same-origin", "Origin", "http://127.0.0.1:9180"}
	return f.do(http.MethodPost, "/actions/"+name, body, append(base, hdr...)...)
}

// actionLogs returns the action log lines.
func (f *fixture) actionLogs(msg string) []observer.LoggedEntry {
	return f.logs.FilterMessage(msg).All()
}

// expectSecurityHeaders fails the test unless a carries the console's
// headers.
func expectSecurityHeaders(t testing.TB, what string, a answer) {
	t.Helper()
	for name, want := range map[string]string{
		"Content-Security-Policy": contentSecurityPolicy,
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
		"X-Frame-Options":         "DENY",
	} {
		if got := a.header.Get(name); got != want {
			t.Errorf("%s: %s %q, want %q", what, name, got, want)
		}
	}
	csp := a.header.Get("Content-Security-Policy")
	for _, must := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, must) {
			t.Errorf("%s: CSP without %s", what, must)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("%s: CSP allows inline or eval: %s", what, csp)
	}
}

// TestPages: every page renders from the store, with the security headers,
// and links relative to the console's root.
func TestPages(t *testing.T) {
	f := newFixture(t, ActionRetry, ActionDiscard, ActionPause)
	first := f.spoolEvent("shop", "pay_1/paid", map[string][]string{"Content-Type": {"application/json"}, "X-Signature": {"sig-value-1"}}, `{"payment_id":"pay_1","status":"paid"}`)
	f.advance(time.Minute)
	second := f.spoolEvent("shop", "pay_2/paid", nil, "plain text body")
	f.kill(second, 3)
	f.advance(90 * time.Second)
	f.rec.add(Outcome{At: f.clock(), Scope: "shop", Provider: "ivpay", Outcome: "invalid_signature", Reason: "API key does not match", Status: 401, ClientIP: "192.0.2.9"})
	f.rec.add(Outcome{At: f.clock(), Scope: "shop", Provider: "ivpay", Outcome: "spooled", Reason: "event stored", Status: 200, EventID: "pay_1/paid", EventType: "paid", ClientIP: "192.0.2.7"})

	overview := f.get("/")
	for _, want := range []string{
		`<a href="./events?scope=shop">shop</a>`,
		`<a href="./events?state=pending&amp;scope=shop">1</a>`,
		`<a href="./events?state=dead&amp;scope=shop" class="alert">1</a>`,
		"2m 30s", // the oldest pending's age
		`<span class="badge running">Running</span>`,
		`data-action="pause" data-url="./actions/pause" data-scope="shop"`,
		"2 outcomes in the last hour: spooled 1, invalid_signature 1.",
		"API key does not match",
		`<rect class="o-invalid-signature"`,
	} {
		if !strings.Contains(overview, want) {
			t.Errorf("overview lacks %q", want)
		}
	}

	list := f.get("/events")
	idx1, idx2 := strings.Index(list, "pay_1/paid"), strings.Index(list, "pay_2/paid")
	if idx1 < 0 || idx2 < 0 || idx2 > idx1 {
		t.Errorf("list: not both events, newest first (%d, %d)", idx2, idx1)
	}
	if !strings.Contains(list, `href="./events/`+strconv.FormatUint(first, 10)+`?scope=shop"`) {
		t.Errorf("list: no relative link to event %d", first)
	}
	dead := f.get("/events?state=dead")
	if strings.Contains(dead, "pay_1/paid") || !strings.Contains(dead, "pay_2/paid") {
		t.Error("state=dead lists the wrong events")
	}
	if !strings.Contains(dead, `data-action="retry-all"`) || !strings.Contains(dead, "Retry all (1)") || !strings.Contains(dead, "Retry all 1 dead event?") {
		t.Error("state=dead: no Retry all button with its count and confirmation")
	}
	if found := f.get("/events?q=PAY_2"); !strings.Contains(found, "pay_2/paid") || strings.Contains(found, "pay_1/paid") {
		t.Error("q=PAY_2 does not find exactly pay_2")
	}
	if found := f.get("/events?q=" + strconv.FormatUint(first, 10)); !strings.Contains(found, "pay_1/paid") || strings.Contains(found, "pay_2/paid") {
		t.Error("q=<id> does not find exactly that event")
	}
	if found := f.get("/events?q=pay&state=dead"); strings.Contains(found, "Retry all") {
		t.Error("Retry all offered on a search: it would retry more than is listed")
	}

	detail := f.get("/events/" + strconv.FormatUint(second, 10))
	for _, want := range []string{
		"status 503", "120ms", "plain text body", "shown as text",
		`data-action="retry" data-url="../actions/retry" data-id="` + strconv.FormatUint(second, 10) + `" data-scope="shop"`,
		`data-action="discard"`, "POST /hooks/ivpay?token=[REDACTED]&amp;x=1",
	} {
		if !strings.Contains(detail, want) {
			t.Errorf("event page lacks %q", want)
		}
	}
	if n := strings.Count(detail, "status 503</td>"); n != 3 {
		t.Errorf("event page shows %d attempts, want 3", n)
	}
	detail1 := f.get("/events/" + strconv.FormatUint(first, 10) + "?scope=shop")
	if !strings.Contains(detail1, "{\n  &#34;payment_id&#34;: &#34;pay_1&#34;,") {
		t.Errorf("a JSON body is not pretty-printed:\n%s", detail1)
	}
	if strings.Contains(detail1, "sig-value-1") || !strings.Contains(detail1, "<th scope=\"row\">X-Signature</th><td class=\"id\">[REDACTED]</td>") {
		t.Error("a credential header is not redacted")
	}
	recent := f.get("/recent?outcome=invalid_signature")
	if !strings.Contains(recent, "API key does not match") || strings.Contains(recent, "event stored") {
		t.Error("recent?outcome= does not filter")
	}

	for _, target := range []string{"/", "/events", "/events/" + strconv.FormatUint(first, 10), "/recent", "/assets/console.css", "/assets/console.js", "/nope", "/events/999", "/events?state=bogus", "/actions/retry"} {
		expectSecurityHeaders(t, target, f.do(http.MethodGet, target, ""))
	}
	for target, status := range map[string]int{
		"/nope": 404, "/events/999": 404, "/events/0": 404, "/events?state=bogus": 400, "/events?bogus=1": 400,
		"/events?scope=a&scope=b": 400, "/events?scope=%3Cx%3E": 400, "/events?after=x": 400, "/?x=1": 400,
		"/events/1?x=1": 400,
	} {
		if a := f.do(http.MethodGet, target, ""); a.status != status {
			t.Errorf("GET %s: %d, want %d", target, a.status, status)
		}
	}
	if a := f.do(http.MethodPost, "/events", ""); a.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /events: %d", a.status)
	}
	css := f.do(http.MethodGet, "/assets/console.css", "")
	if css.status != 200 || css.header.Get("Content-Type") != "text/css; charset=utf-8" || !strings.Contains(css.body, ".o-forwarded") {
		t.Errorf("stylesheet: %d %q", css.status, css.header.Get("Content-Type"))
	}
	if js := f.do(http.MethodGet, "/assets/console.js", ""); js.header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("script type %q", js.header.Get("Content-Type"))
	}
}

// TestMountedUnderAPath: the console works under handle /ops/console/*:
// pages are read from the end of the path and links stay relative.
func TestMountedUnderAPath(t *testing.T) {
	f := newFixture(t)
	id := f.spoolEvent("shop", "pay_1/paid", nil, "{}")
	if page := f.get("/ops/console/"); !strings.Contains(page, `href="./events"`) || !strings.Contains(page, `href="./assets/console.css"`) {
		t.Error("overview under a path: links not relative")
	}
	if page := f.get("/ops/console/events/" + strconv.FormatUint(id, 10)); !strings.Contains(page, `href="../assets/console.css"`) || !strings.Contains(page, `href="../events?state=dead"`) {
		t.Error("event page under a path: links not relative to the root")
	}
	if a := f.do(http.MethodGet, "/ops/console", ""); a.status != http.StatusNotFound {
		t.Errorf("GET /ops/console: %d", a.status)
	}
}

// TestPagesPaging: the list shows 100 events a page, newest first, and
// links to the next page by a cursor ending in the last id.
func TestPagesPaging(t *testing.T) {
	f := newFixture(t)
	var ids []uint64
	for i := range 130 {
		ids = append(ids, f.spoolEvent("shop", fmt.Sprintf("evt_%03d", i), nil, "{}"))
	}
	page1 := f.get("/events")
	if n := strings.Count(page1, `data-label="Event id"><a`); n != pageSize {
		t.Fatalf("first page: %d events, want %d", n, pageSize)
	}
	older := regexp.MustCompile(`href="\./(events\?after=c1\.[0-9a-f]+\.(\d+))" rel="next"`).FindStringSubmatch(page1)
	if older == nil || older[2] != strconv.FormatUint(ids[30], 10) {
		t.Fatalf("first page: Older link %v, want after=%d", older, ids[30])
	}
	page2 := f.get("/" + older[1])
	if n := strings.Count(page2, `data-label="Event id"><a`); n != 30 || !strings.Contains(page2, "evt_000") || strings.Contains(page2, "evt_030") {
		t.Errorf("second page: %d events", n)
	}
	if strings.Contains(page2, `rel="next"`) || !strings.Contains(page2, `>Newest</a>`) {
		t.Error("last page: an Older link, or no Newest")
	}
}

// TestHostileEventIsText: markup in an event id, a header, a body and a
// reason is shown as text, escaped, on every page.
func TestHostileEventIsText(t *testing.T) {
	f := newFixture(t, ActionRetry, ActionDiscard)
	hostile := `<script>alert(1)</script><img src=x onerror=alert(2)>"'`
	id := f.spoolEvent("shop", hostile, map[string][]string{"X-Note": {hostile}, hostile: {"v"}}, `{"note":"`+strings.ReplaceAll(hostile, `"`, `\"`)+`"}`)
	f.kill(id, 1)
	f.rec.add(Outcome{At: f.clock(), Scope: "shop", Provider: "ivpay", Outcome: "invalid_signature", Reason: hostile, Status: 401, ClientIP: "192.0.2.1"})
	for _, target := range []string{"/", "/events", "/events?q=" + "%3Cscript%3E", "/events/" + strconv.FormatUint(id, 10), "/recent"} {
		page := f.get(target)
		for _, raw := range []string{"<script>alert", "<img"} {
			if strings.Contains(page, raw) {
				t.Errorf("%s contains %q unescaped", target, raw)
			}
		}
		if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s does not show the markup as text", target)
		}
		if n := strings.Count(page, "<script"); n != 1 {
			t.Errorf("%s has %d script elements, want the console's one", target, n)
		}
	}
}

// TestActionsRefused: a console without actions refuses every action with
// 403 and changes nothing; so does an allowed action without the header,
// cross-site, or not a JSON POST.
func TestActionsRefused(t *testing.T) {
	f := newFixture(t)
	id := f.spoolEvent("shop", "pay_1/paid", nil, "{}")
	f.kill(id, 1)
	body := `{"id":"` + strconv.FormatUint(id, 10) + `"}`
	for name, b := range map[string]string{
		"retry": body, "discard": body, "retry-all": `{"state":"dead"}`, "pause": `{"scope":"shop"}`, "resume": `{"scope":"shop"}`,
	} {
		a := f.action(name, b)
		if a.status != http.StatusForbidden || !strings.Contains(a.body, "does not name") {
			t.Errorf("read-only %s: %d %s", name, a.status, a.body)
		}
	}
	if f.state(id) != spool.Dead {
		t.Fatalf("state after refused actions: %s", f.state(id))
	}
	if paused, _ := f.sp.Paused(context.Background()); paused["shop"] {
		t.Fatal("a refused pause paused")
	}
	if n := len(f.actionLogs("console action refused")); n != 5 {
		t.Errorf("%d refusals logged, want 5", n)
	}

	f = newFixture(t, ActionRetry, ActionDiscard, ActionPause)
	f.user = "mallory"
	id = f.spoolEvent("shop", "pay_1/paid", nil, "{}")
	f.kill(id, 1)
	body = `{"id":"` + strconv.FormatUint(id, 10) + `"}`
	for _, tc := range []struct {
		what   string
		method string
		hdr    []string
		body   string
		status int
	}{
		{"GET", http.MethodGet, []string{ActionHeader, "1"}, "", http.StatusMethodNotAllowed},
		{"cross-site", http.MethodPost, []string{"Content-Type", "application/json", ActionHeader, "1", "Sec-Fetch-Site", "cross-site"}, body, http.StatusForbidden},
		{"other origin", http.MethodPost, []string{"Content-Type", "application/json", ActionHeader, "1", "Origin", "http://evil.example"}, body, http.StatusForbidden},
		{"no header", http.MethodPost, []string{"Content-Type", "application/json", "Sec-Fetch-Site", "same-origin"}, body, http.StatusForbidden},
		{"header not 1", http.MethodPost, []string{"Content-Type", "application/json", ActionHeader, "yes"}, body, http.StatusForbidden},
		{"form", http.MethodPost, []string{"Content-Type", "application/x-www-form-urlencoded", ActionHeader, "1"}, "id=1", http.StatusUnsupportedMediaType},
		{"unknown field", http.MethodPost, []string{"Content-Type", "application/json", ActionHeader, "1"}, `{"id":"1","all":true}`, http.StatusBadRequest},
		{"two values", http.MethodPost, []string{"Content-Type", "application/json", ActionHeader, "1"}, body + body, http.StatusBadRequest},
		{"bad id", http.MethodPost, []string{"Content-Type", "application/json", ActionHeader, "1"}, `{"id":"-1"}`, http.StatusBadRequest},
		{"huge", http.MethodPost, []string{"Content-Type", "application/json", ActionHeader, "1"}, `{"scope":"` + strings.Repeat("a", 5000) + `"}`, http.StatusBadRequest},
	} {
		a := f.do(tc.method, "/actions/retry", tc.body, tc.hdr...)
		if a.status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.what, a.status, a.body, tc.status)
		}
		expectSecurityHeaders(t, tc.what, a)
	}
	if f.state(id) != spool.Dead {
		t.Fatalf("state after refused requests: %s", f.state(id))
	}
	if a := f.action("launch", "{}"); a.status != http.StatusNotFound {
		t.Errorf("unknown action: %d", a.status)
	}
	if a := f.action("retry", body, "Host", "evil.example"); a.status != http.StatusForbidden || f.state(id) != spool.Dead {
		t.Errorf("rebinding host: %d, state %s", a.status, f.state(id))
	}
}

// TestActions: retry, discard, retry all, pause and resume do what they
// say, and each is logged with who, what, which events and how many.
func TestActions(t *testing.T) {
	f := newFixture(t, ActionRetry, ActionDiscard, ActionPause)
	f.user = "alice"
	ctx := context.Background()
	a1 := f.spoolEvent("shop", "pay_1/paid", nil, "{}")
	a2 := f.spoolEvent("shop", "pay_2/paid", nil, "{}")
	a3 := f.spoolEvent("shop", "pay_3/paid", nil, "{}")
	for _, id := range []uint64{a1, a2, a3} {
		f.kill(id, 2)
	}

	if a := f.action("retry", `{"id":"`+strconv.FormatUint(a1, 10)+`","scope":"shop"}`); a.status != 200 || !strings.Contains(a.body, "retried") {
		t.Fatalf("retry: %d %s", a.status, a.body)
	}
	if f.state(a1) != spool.Pending {
		t.Errorf("retried event is %s", f.state(a1))
	}
	if a := f.action("retry", `{"id":"`+strconv.FormatUint(a1, 10)+`","scope":"other"}`); a.status != http.StatusNotFound {
		t.Errorf("retry in another scope: %d", a.status)
	}
	if a := f.action("discard", `{"id":"`+strconv.FormatUint(a2, 10)+`"}`); a.status != 200 {
		t.Fatalf("discard: %d %s", a.status, a.body)
	}
	rec, _, _ := f.sp.Get(ctx, a2)
	if rec.State != spool.Discarded || rec.DiscardedBy != "alice (console)" {
		t.Errorf("discarded: %s by %q", rec.State, rec.DiscardedBy)
	}
	page := f.get("/events/" + strconv.FormatUint(a2, 10))
	if !strings.Contains(page, "by alice (console)") || strings.Contains(page, `data-action="discard"`) {
		t.Error("a discarded event's page: no discarder, or a Discard button")
	}
	if a := f.action("retry-all", `{"state":"dead","scope":"shop"}`); a.status != 200 || !strings.Contains(a.body, `"count":1`) {
		t.Fatalf("retry all: %d %s", a.status, a.body)
	}
	if f.state(a3) != spool.Pending || f.state(a2) != spool.Discarded {
		t.Errorf("after retry all: %s %s", f.state(a3), f.state(a2))
	}
	if a := f.action("retry-all", `{"state":"pending"}`); a.status != http.StatusBadRequest {
		t.Errorf("retry all pending: %d", a.status)
	}
	if a := f.action("pause", `{"scope":"shop"}`); a.status != 200 {
		t.Fatalf("pause: %d %s", a.status, a.body)
	}
	if paused, _ := f.sp.Paused(ctx); !paused["shop"] {
		t.Fatal("not paused")
	}
	if page := f.get("/"); !strings.Contains(page, `<span class="badge paused">Paused</span>`) || !strings.Contains(page, `data-action="resume"`) {
		t.Error("overview: paused scope without a Resume button")
	}
	if list := f.get("/events?state=pending"); !strings.Contains(list, "scope paused: delivered after a resume") {
		t.Error("list: a paused scope's pending event does not say why it waits")
	}
	if a := f.action("pause", `{"scope":"nobody"}`); a.status != http.StatusNotFound {
		t.Errorf("pause of an unknown scope: %d", a.status)
	}
	if a := f.action("resume", `{"scope":"shop"}`); a.status != 200 {
		t.Fatalf("resume: %d %s", a.status, a.body)
	}
	if paused, _ := f.sp.Paused(ctx); paused["shop"] {
		t.Fatal("still paused")
	}

	logged := f.actionLogs("console action")
	var got []string
	for _, e := range logged {
		m := e.ContextMap()
		if m["user"] != "alice" || e.LoggerName != "http.handlers.webhook_guard_console" {
			t.Errorf("action line without the user or logger: %v %s", m, e.LoggerName)
		}
		line := fmt.Sprint(m["action"])
		if ids, ok := m["ids"]; ok {
			line += fmt.Sprint(" ", ids)
		}
		if c, ok := m["count"]; ok {
			line += fmt.Sprint(" count=", c)
		}
		got = append(got, line)
	}
	want := []string{
		fmt.Sprintf("retry [%d] count=1", a1),
		fmt.Sprintf("discard [%d] count=1", a2),
		fmt.Sprintf("retry-all [%d] count=1", a3),
		"pause", "resume",
	}
	if !slices.Equal(got, want) {
		t.Errorf("action lines %q, want %q", got, want)
	}
}

// TestActionsAnonymous: without an authenticated user the discard names the
// remote address.
func TestActionsAnonymous(t *testing.T) {
	f := newFixture(t, ActionDiscard)
	id := f.spoolEvent("shop", "pay_1/paid", nil, "{}")
	if a := f.action("discard", `{"id":"`+strconv.FormatUint(id, 10)+`"}`); a.status != 200 {
		t.Fatalf("discard: %d %s", a.status, a.body)
	}
	rec, _, _ := f.sp.Get(context.Background(), id)
	if !strings.HasPrefix(rec.DiscardedBy, "console (192.0.2.1:") || !strings.Contains(rec.DiscardedBy, "no authenticated user") {
		t.Errorf("discarded by %q", rec.DiscardedBy)
	}
}

// TestHostCheck: on a catch-all site only loopback names and addresses are
// served; under host matchers only their names.
func TestHostCheck(t *testing.T) {
	f := newFixture(t)
	for host, want := range map[string]int{
		"127.0.0.1:9180": 200, "localhost:9180": 200, "LOCALHOST": 200, "ops.localhost:9180": 200, "[::1]:9180": 200,
		"10.1.2.3:9180": 200, "evil.example": 403, "evil.example:9180": 403, "127.0.0.1.nip.io": 403, "": 403,
		"localhost.evil.example": 403,
	} {
		if a := f.do(http.MethodGet, "/", "", "Host", host); a.status != want {
			t.Errorf("catch-all site, Host %q: %d, want %d", host, a.status, want)
		}
	}
	if len(f.logs.FilterMessageSnippet("DNS rebinding").All()) == 0 {
		t.Error("a refused Host is not logged")
	}

	srv := &caddyhttp.Server{Listen: []string{"127.0.0.1:9180"}, Routes: caddyhttp.RouteList{
		{MatcherSets: caddyhttp.MatcherSets{{caddyhttp.MatchHost{"ops.example.com", "*.ops.example"}}}, Handlers: []caddyhttp.MiddlewareHandler{
			&caddyhttp.Subroute{Routes: caddyhttp.RouteList{{Handlers: []caddyhttp.MiddlewareHandler{f.h}}}},
		}},
	}}
	f.h.srv, f.h.facts = srv, new(siteFacts)
	for host, want := range map[string]int{
		"ops.example.com": 200, "OPS.example.com:443": 200, "a.ops.example": 200,
		"127.0.0.1:9180": 403, "localhost": 403, "evil.example": 403,
	} {
		if a := f.do(http.MethodGet, "/", "", "Host", host); a.status != want {
			t.Errorf("named site, Host %q: %d, want %d", host, a.status, want)
		}
	}
}

// TestOpenSiteWarning: a console listening beyond loopback with no
// authentication before it is warned about when the config starts; behind
// basic_auth or forward_auth, or on loopback, it is not.
func TestOpenSiteWarning(t *testing.T) {
	auth := caddyAuth(t)
	forward := forwardAuth()
	for _, tc := range []struct {
		what   string
		listen string
		before caddyhttp.MiddlewareHandler
		warn   bool
	}{
		{"all interfaces, no auth", ":9180", nil, true},
		{"private address, no auth", "10.0.0.5:9180", nil, true},
		{"all interfaces, basic_auth", ":9180", auth, false},
		{"all interfaces, forward_auth", ":9180", forward, false},
		{"loopback, no auth", "127.0.0.1:9180", nil, false},
		{"unix socket, no auth", "unix//run/console.sock", nil, false},
	} {
		t.Run(tc.what, func(t *testing.T) {
			f := newFixture(t, ActionRetry)
			inner := []caddyhttp.MiddlewareHandler{f.h}
			var outer []caddyhttp.MiddlewareHandler
			if tc.before != nil {
				outer = append(outer, tc.before)
			}
			outer = append(outer, &caddyhttp.Subroute{Routes: caddyhttp.RouteList{{Handlers: inner}}})
			f.h.srv = &caddyhttp.Server{Listen: []string{tc.listen}, Routes: caddyhttp.RouteList{
				{Handlers: []caddyhttp.MiddlewareHandler{&caddyhttp.Subroute{Routes: caddyhttp.RouteList{{Handlers: outer}}}}},
			}}
			f.h.facts = new(siteFacts)
			if err := (startedHook{f.h}).Handle(context.Background(), caddy.Event{}); err != nil {
				t.Fatal(err)
			}
			warned := f.logs.FilterMessageSnippet("listens beyond loopback").All()
			if (len(warned) > 0) != tc.warn {
				t.Fatalf("warned %d times, want %v", len(warned), tc.warn)
			}
			if tc.warn && (warned[0].Level != zap.WarnLevel || !strings.Contains(warned[0].Message, "and retry")) {
				t.Errorf("warning: %s %s", warned[0].Level, warned[0].Message)
			}
			f.h.checkSite() // once only
			if n := len(f.logs.FilterMessageSnippet("listens beyond loopback").All()); n != len(warned) {
				t.Errorf("warned again: %d", n)
			}
		})
	}
}

// TestProvisionChecksOptions: unknown or repeated actions and a recent out
// of bounds fail at load, naming the option.
func TestProvisionChecksOptions(t *testing.T) {
	for _, tc := range []struct {
		h    Handler
		want string
	}{
		{Handler{Actions: []string{"retry", "delete"}}, `actions: unknown action "delete"`},
		{Handler{Actions: []string{"pause", "pause"}}, `actions: "pause" given twice`},
		{Handler{Recent: -1}, "recent: want 1 to 100000"},
		{Handler{Recent: MaxRecent + 1}, "recent: want 1 to 100000"},
	} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := tc.h.Provision(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.h, err, tc.want)
		}
	}
}

// TestActionAnswerIsJSON: the script reads {message} or {error}.
func TestActionAnswerIsJSON(t *testing.T) {
	f := newFixture(t, ActionPause)
	a := f.action("pause", `{"scope":"shop"}`)
	var got actionAnswer
	if err := json.Unmarshal([]byte(a.body), &got); err != nil || got.Message == "" || a.header.Get("Content-Type") != "application/json" {
		t.Errorf("answer %q: %v", a.body, err)
	}
}

// TestSeveralSpools: with two ledger files, whose ids overlap, the list
// merges them newest first, an event's page and an action need the scope
// when the id is in both, and the overview adds their counts.
func TestSeveralSpools(t *testing.T) {
	f := newFixture(t, ActionRetry)
	other := newFixture(t) // another ledger file, its own spool
	f.h.guard = func() Guard {
		return Guard{Spools: func() []*spool.Spool { return []*spool.Spool{f.sp, other.sp} }, RedactHeader: testRedactHeader}
	}
	a := f.spoolEvent("shop", "evt_in_first", nil, "{}")
	other.now = f.clock().Add(time.Second)
	b := other.spoolEvent("other", "evt_in_second", nil, "{}")
	if a != b {
		t.Fatalf("ids %d and %d: the test wants the same id in both ledgers", a, b)
	}
	f.kill(a, 1)
	other.kill(b, 1)
	list := f.get("/events")
	if i, j := strings.Index(list, "evt_in_second"), strings.Index(list, "evt_in_first"); i < 0 || j < 0 || i > j {
		t.Errorf("merged list not newest first (%d, %d)", i, j)
	}
	if !strings.Contains(list, "merged from several spools") {
		t.Error("the list does not say it merges ledgers")
	}
	id := strconv.FormatUint(a, 10)
	if got := f.do(http.MethodGet, "/events/"+id, ""); got.status != http.StatusConflict {
		t.Errorf("ambiguous id: %d", got.status)
	}
	if page := f.get("/events/" + id + "?scope=other"); !strings.Contains(page, "evt_in_second") {
		t.Error("?scope= does not choose the ledger")
	}
	if got := f.action("retry", `{"id":"`+id+`"}`); got.status != http.StatusConflict || f.state(a) != spool.Dead {
		t.Errorf("ambiguous retry: %d, state %s", got.status, f.state(a))
	}
	if got := f.action("retry", `{"id":"`+id+`","scope":"other"}`); got.status != http.StatusOK || other.state(b) != spool.Pending || f.state(a) != spool.Dead {
		t.Errorf("retry in scope other: %d; states %s %s", got.status, other.state(b), f.state(a))
	}
	overview := f.get("/")
	if !strings.Contains(overview, `<a href="./events?scope=other">other</a>`) || !strings.Contains(overview, `<a href="./events?state=dead&amp;scope=shop" class="alert">1</a>`) {
		t.Error("the overview does not show both ledgers' scopes")
	}
}

// TestSeveralSpoolsPaging: with two ledger files, whose ids overlap and
// whose events interleave in time, the list shows 100 events a page in all,
// and its Older link goes on through both to the oldest, each event once;
// a link made before a reload changed the spools is refused, saying so.
func TestSeveralSpoolsPaging(t *testing.T) {
	f := newFixture(t)
	other := newFixture(t)
	spools := []*spool.Spool{f.sp, other.sp}
	f.h.guard = func() Guard {
		return Guard{Spools: func() []*spool.Spool { return spools }, RedactHeader: testRedactHeader}
	}
	var want []string // newest first
	for i := range 130 {
		g := f
		if i%3 == 1 {
			g = other
		}
		g.now = testStart.Add(time.Duration(i) * time.Second)
		id := fmt.Sprintf("evt_%03d", i)
		g.spoolEvent("shop", id, nil, "{}")
		want = append([]string{id}, want...)
	}
	row := regexp.MustCompile(`data-label="Event id"><a href="[^"]*">(evt_\d+)</a>`)
	older := regexp.MustCompile(`href="\./(events\?after=[^"]+)" rel="next"`)
	var got []string
	link, first := "/events", ""
	for page := 1; link != ""; page++ {
		body := f.get(link)
		rows := row.FindAllStringSubmatch(body, -1)
		if page == 1 && len(rows) != pageSize || page == 2 && len(rows) != 30 || page > 2 {
			t.Fatalf("page %d: %d events", page, len(rows))
		}
		for _, m := range rows {
			got = append(got, m[1])
		}
		link = ""
		if m := older.FindStringSubmatch(body); m != nil {
			link = "/" + m[1]
			first = cmp.Or(first, link)
		}
		if page > 1 && !strings.Contains(body, `>Newest</a>`) {
			t.Errorf("page %d: no Newest link", page)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages listed\n%q\nwant\n%q", got, want)
	}
	spools = []*spool.Spool{f.sp, other.sp, newFixture(t).sp}
	if a := f.do(http.MethodGet, first, ""); a.status != http.StatusBadRequest || !strings.Contains(a.body, "a config reload changed the spools, or with other filters: start again from the newest events") {
		t.Errorf("an Older link after the spools changed: %d\n%s", a.status, a.body)
	}
	for _, bad := range []string{"x", "c1.0123456789abcdef.1..2", strings.Repeat("9", spool.MaxCursorLen+1)} {
		if a := f.do(http.MethodGet, "/events?after="+bad, ""); a.status != http.StatusBadRequest || !strings.Contains(a.body, "bad after") {
			t.Errorf("after=%.30s: %d", bad, a.status)
		}
	}
}

// TestRetryAllLogsBoundedIDs: a retry of many events logs their count and
// the first ids, not every id.
func TestRetryAllLogsBoundedIDs(t *testing.T) {
	f := newFixture(t, ActionRetry)
	for i := range maxLoggedIDs + 20 {
		f.kill(f.spoolEvent("shop", fmt.Sprintf("evt_%d", i), nil, "{}"), 1)
	}
	if got := f.action("retry-all", `{"state":"dead"}`); got.status != http.StatusOK || !strings.Contains(got.body, `"count":120`) {
		t.Fatalf("retry all: %d %s", got.status, got.body)
	}
	line := f.actionLogs("console action")[0].ContextMap()
	if line["count"] != int64(120) || line["ids_omitted"] != int64(20) || len(line["ids"].([]any)) != maxLoggedIDs {
		t.Errorf("retry all line: count %v, omitted %v, %d ids", line["count"], line["ids_omitted"], len(line["ids"].([]any)))
	}
}
