package webhookguard

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/internal/spoolapi"
	"github.com/hookguard/caddy-webhook-guard/spool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// adminTestSecret is in every credential of the test records, so that a leak
// into an answer, an output or a log is easy to find.
const adminTestSecret = "adm1n-s3cr3t-value"

// fakeStore is a spool.Store over a map, recording the operator calls
// made (not the reads of the paused scopes every answer makes).
type fakeStore struct {
	mu     sync.Mutex
	recs   map[uint64]spool.Record
	paused map[string]bool
	calls  []string
	err    error // returned by every call when set
}

// fakeSpool is a spool over a fakeStore, not started, with a target for
// each scope of its records (and of scopes), so that pause knows them.
type fakeSpool struct {
	*spool.Spool
	*fakeStore
}

func newFakeSpool(recs ...spool.Record) *fakeSpool {
	return newNamedFakeSpool(fmt.Sprintf("ledger /fake/%d.db", fakeSpools.Add(1)), recs...)
}

// newNamedFakeSpool is newFakeSpool with the spool's name (spool.Options).
func newNamedFakeSpool(name string, recs ...spool.Record) *fakeSpool {
	f := &fakeStore{recs: map[uint64]spool.Record{}, paused: map[string]bool{}}
	sp := spool.New(f, spool.Options{Name: name})
	for _, r := range recs {
		f.recs[r.ID] = r
		if !sp.HasScope(r.Scope) {
			sp.Register(&spool.Target{Key: r.Target, Scope: r.Scope})
		}
	}
	return &fakeSpool{sp, f}
}

// fakeSpools counts the fake spools made, to name each after a ledger of
// its own.
var fakeSpools atomic.Int64

// withScopes registers a target for each scope.
func (f *fakeSpool) withScopes(scopes ...string) *fakeSpool {
	for _, scope := range scopes {
		f.Register(&spool.Target{Key: scope + "/t", Scope: scope})
	}
	return f
}

func (f *fakeStore) call(format string, args ...any) error {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return f.err
}

func (f *fakeStore) Ingest(context.Context, string, *spool.Record, time.Duration) (bool, error) {
	return false, errors.New("not in the admin tests")
}

func (f *fakeStore) Get(_ context.Context, id uint64) (spool.Record, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Get(%d)", id); err != nil {
		return spool.Record{}, false, err
	}
	r, ok := f.recs[id]
	return r, ok, nil
}

func (f *fakeStore) List(_ context.Context, flt spool.Filter, p spool.Page) ([]spool.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("List(%q, %q, %q, %d, %d)", flt.State, flt.Scope, flt.EventID, p.Limit, p.After); err != nil {
		return nil, err
	}
	var out []spool.Record
	for _, id := range slices.Backward(slices.Sorted(maps.Keys(f.recs))) {
		r := f.recs[id]
		if flt.Match(&r) && (p.After == 0 || id < p.After) && len(out) < p.Size() {
			r.Header, r.Body, r.History = nil, nil, nil
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeStore) IDs(_ context.Context, state spool.State, scope string) ([]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("IDs(%q, %q)", state, scope); err != nil {
		return nil, err
	}
	var out []uint64
	for _, id := range slices.Sorted(maps.Keys(f.recs)) {
		if r := f.recs[id]; r.State == state && (scope == "" || r.Scope == scope) {
			out = append(out, id)
		}
	}
	return out, nil
}

func (f *fakeStore) Lease(context.Context, time.Time, []spool.Opening, func(spool.Due) spool.Verdict) (time.Time, error) {
	return time.Time{}, nil
}
func (f *fakeStore) Extend(context.Context, uint64) error { return nil }
func (f *fakeStore) Abandon(context.Context, uint64)      {}
func (f *fakeStore) Delivered(context.Context, uint64, time.Duration) error {
	return errors.New("not in the admin tests")
}
func (f *fakeStore) Failed(context.Context, *spool.Record) error {
	return errors.New("not in the admin tests")
}
func (f *fakeStore) Die(context.Context, *spool.Record) (spool.Record, error) {
	return spool.Record{}, errors.New("not in the admin tests")
}

func (f *fakeStore) Retry(_ context.Context, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Retry(%d)", id); err != nil {
		return err
	}
	r, ok := f.recs[id]
	if !ok {
		return spool.ErrNotFound
	}
	r.State, r.NextAt = spool.Pending, adminTestNow
	f.recs[id] = r
	return nil
}

func (f *fakeStore) Discard(_ context.Context, id uint64, by string) (spool.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Discard(%d, %q)", id, by); err != nil {
		return spool.Record{}, err
	}
	r, ok := f.recs[id]
	if !ok {
		return spool.Record{}, spool.ErrNotFound
	}
	r.State, r.DiscardedAt, r.DiscardedBy, r.NextAt = spool.Discarded, adminTestNow, by, time.Time{}
	f.recs[id] = r
	r.Body = nil
	return r, nil
}

func (f *fakeStore) Forget(_ context.Context, key string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return false, f.call("Forget(%q)", key)
}

func (f *fakeStore) SetPaused(_ context.Context, scope string, paused bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("SetPaused(%q, %v)", scope, paused); err != nil {
		return err
	}
	if paused {
		f.paused[scope] = true
	} else {
		delete(f.paused, scope)
	}
	return nil
}

func (f *fakeStore) Paused(context.Context) (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return maps.Clone(f.paused), nil
}

func (f *fakeStore) Counts(context.Context) (map[string]spool.Counts, error) { return nil, nil }

// callLog returns the calls made so far and forgets them.
func (f *fakeStore) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeStore) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeStore) isPaused(scope string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.paused[scope]
}

func (f *fakeStore) record(id uint64) spool.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recs[id]
}

var adminTestNow = time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC)

// adminTestRecords are two events of ivpay and one of stripe, with every
// kind of credential header a provider or a careless client sends.
func adminTestRecords() []spool.Record {
	loc := time.FixedZone("UTC+2", 2*3600) // shown in UTC
	return []spool.Record{
		{
			ID: 1, Target: "ivpay/ivpay/a", Scope: "ivpay", Provider: "ivpay", EventID: "pay_aaa", EventType: "PAID", State: spool.Pending,
			Attempts: 2, ReceivedAt: adminTestNow.Add(-10 * time.Minute).In(loc), NextAt: adminTestNow.Add(30 * time.Second),
			LastError: "502 Bad Gateway", Method: "POST", Path: "/hooks/ivpay", Query: "token=" + adminTestSecret + "&shop=1",
			ClientIP: "203.0.113.7",
			Header: map[string][]string{
				"Content-Type":          {"application/json"},
				"X-Api-Key":             {adminTestSecret},
				"Authorization":         {"Bearer " + adminTestSecret},
				"Proxy-Authorization":   {"Basic " + adminTestSecret},
				"Cookie":                {"session=" + adminTestSecret},
				"Stripe-Signature":      {"t=1,v1=" + adminTestSecret},
				"X-Hub-Signature-256":   {"sha256=" + adminTestSecret},
				"X-Shopify-Hmac-Sha256": {adminTestSecret},
				"X-Webhook-Secret":      {adminTestSecret},
				"X-Auth-Token":          {adminTestSecret, adminTestSecret},
				"User-Agent":            {"IVPAY/1.0"},
			},
			Body: []byte(`{"payment_id":"pay_aaa","status":"PAID","note":"é"}`),
		},
		{
			ID: 2, Target: "ivpay/ivpay/a", Scope: "ivpay", Provider: "ivpay", EventID: "pay_bbb", EventType: "PAID", State: spool.Dead,
			Attempts: 25, ReceivedAt: adminTestNow.Add(-72 * time.Hour), LastError: "500 Internal Server Error",
			Method: "POST", Path: "/hooks/ivpay", ClientIP: "203.0.113.8",
			Header: map[string][]string{"Content-Type": {"application/octet-stream"}},
			Body:   []byte{0xff, 0xfe, 0x00, 'x'},
		},
		{
			ID: 3, Target: "stripe/shop/b", Scope: "shop", Provider: "stripe", EventID: "evt_ccc", EventType: "charge.succeeded", State: spool.Dead,
			Attempts: 25, ReceivedAt: adminTestNow.Add(-5 * time.Hour), LastError: "dial tcp 127.0.0.1:9: connection refused",
			Method: "POST", Path: "/hooks/stripe", ClientIP: "198.51.100.1",
			Header: map[string][]string{"Stripe-Signature": {"t=1,v1=" + adminTestSecret}},
			Body:   []byte(`{"id":"evt_ccc"}`),
		},
	}
}

// serveAdminRoutes serves routes as Caddy's admin endpoint does: a
// ServeMux of the patterns, and an error returned by a handler written as
// {"error": "..."} with the APIError's status (admin.go, handleError).
func serveAdminRoutes(routes []caddy.AdminRoute) http.Handler {
	mux := http.NewServeMux()
	for _, route := range routes {
		mux.Handle(route.Pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			err := route.Handler.ServeHTTP(w, r)
			if err == nil {
				return
			}
			apiErr, ok := err.(caddy.APIError)
			if !ok {
				apiErr = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
			}
			if apiErr.HTTPStatus == 0 {
				apiErr.HTTPStatus = http.StatusInternalServerError
			}
			if apiErr.Message == "" && apiErr.Err != nil {
				apiErr.Message = apiErr.Err.Error()
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(apiErr.HTTPStatus)
			json.NewEncoder(w).Encode(apiErr)
		}))
	}
	return mux
}

// adminTest is the admin module over fake spools, served by httptest, with
// its log captured and every answer's body kept for the leak check.
type adminTest struct {
	t      *testing.T
	module *adminSpool
	mu     sync.Mutex // guards spools, read by the server's goroutines
	spools []*fakeSpool
	logs   *observer.ObservedLogs
	srv    *httptest.Server
	bodies []string
}

func newAdminTest(t *testing.T, spools ...*fakeSpool) *adminTest {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	a := &adminTest{t: t, spools: spools, logs: logs}
	a.module = &adminSpool{logger: zap.New(core), spools: func() []*spool.Spool {
		a.mu.Lock()
		defer a.mu.Unlock()
		ops := make([]*spool.Spool, len(a.spools))
		for i, s := range a.spools {
			ops[i] = s.Spool
		}
		return ops
	}}
	a.srv = httptest.NewServer(serveAdminRoutes(a.module.Routes()))
	t.Cleanup(a.srv.Close)
	t.Cleanup(func() {
		for _, b := range a.bodies {
			if strings.Contains(b, adminTestSecret) {
				t.Errorf("an answer contains a secret:\n%s", b)
			}
		}
		for _, e := range logs.All() {
			if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, adminTestSecret) {
				t.Errorf("a log line contains a secret: %s", line)
			}
		}
	})
	return a
}

// setSpools replaces the spools the module sees.
func (a *adminTest) setSpools(spools ...*fakeSpool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.spools = spools
}

// do sends method uri and returns the answer's status and body.
func (a *adminTest) do(method, uri string) (int, string) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+uri, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	a.bodies = append(a.bodies, string(b))
	if resp.StatusCode < 400 && resp.Header.Get("Content-Type") != "application/json" {
		a.t.Errorf("%s %s: Content-Type %q", method, uri, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, string(b)
}

// want checks that method uri is answered status, and decodes its JSON into v
// (when v is not nil).
func (a *adminTest) want(method, uri string, status int, v any) string {
	a.t.Helper()
	code, body := a.do(method, uri)
	if code != status {
		a.t.Fatalf("%s %s: status %d, want %d\n%s", method, uri, code, status, body)
	}
	if v != nil {
		reflect.ValueOf(v).Elem().SetZero() // fields an answer leaves out are zero
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			a.t.Fatalf("%s %s: decoding %s: %v", method, uri, body, err)
		}
	}
	return body
}

// wantError checks an error answer: its status and that its message
// contains part.
func (a *adminTest) wantError(method, uri string, status int, part string) {
	a.t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	a.want(method, uri, status, &e)
	if !strings.Contains(e.Error, part) {
		a.t.Errorf("%s %s: error %q, want it to contain %q", method, uri, e.Error, part)
	}
}

func TestAdminSpoolList(t *testing.T) {
	recs := adminTestRecords()
	other := spool.Record{ID: 1, Target: "github/github/x", Scope: "github", Provider: "github", EventID: "d-1", EventType: "push", State: spool.Pending,
		ReceivedAt: adminTestNow.Add(-time.Hour), NextAt: adminTestNow.Add(time.Minute)}
	s1, s2 := newFakeSpool(recs...), newFakeSpool(other)
	s1.paused["shop"] = true
	a := newAdminTest(t, s1, s2)

	body := a.want("GET", "/webhook_guard/spool", 200, nil)
	want := `{"events":[` +
		`{"id":1,"scope":"ivpay","provider":"ivpay","event_id":"pay_aaa","event_type":"PAID","state":"pending","attempts":2,"received_at":"2026-11-30T21:50:00Z","next_attempt_at":"2026-11-30T22:00:30Z","last_error":"502 Bad Gateway"},` +
		`{"id":1,"scope":"github","provider":"github","event_id":"d-1","event_type":"push","state":"pending","attempts":0,"received_at":"2026-11-30T21:00:00Z","next_attempt_at":"2026-11-30T22:01:00Z","last_error":""},` +
		`{"id":3,"scope":"shop","provider":"stripe","event_id":"evt_ccc","event_type":"charge.succeeded","state":"dead","attempts":25,"received_at":"2026-11-30T17:00:00Z","next_attempt_at":null,"last_error":"dial tcp 127.0.0.1:9: connection refused","paused":true},` +
		`{"id":2,"scope":"ivpay","provider":"ivpay","event_id":"pay_bbb","event_type":"PAID","state":"dead","attempts":25,"received_at":"2026-11-27T22:00:00Z","next_attempt_at":null,"last_error":"500 Internal Server Error"}` +
		`],"paused":["shop"]}` + "\n"
	if body != want {
		t.Errorf("list, newest first, merged over both ledgers:\n%s\nwant:\n%s", body, want)
	}
	for _, s := range []*fakeSpool{s1, s2} {
		if c := s.callLog(); !slices.Equal(c, []string{`List("", "", "", 101, 0)`}) {
			t.Errorf("calls %q", c)
		}
	}

	var list spoolapi.List
	a.want("GET", "/webhook_guard/spool?state=dead&scope=ivpay&event_id=pay_bbb&limit=5", 200, &list)
	if len(list.Events) != 1 || list.Events[0].ID != 2 || list.Next != "" {
		t.Errorf("state=dead&scope=ivpay: %+v", list)
	}
	if c := s1.callLog(); !slices.Equal(c, []string{`List("dead", "ivpay", "pay_bbb", 6, 0)`}) {
		t.Errorf("filters not passed on: %q", c)
	}
	a.want("GET", "/webhook_guard/spool/?state=pending", 200, &list)
	if len(list.Events) != 2 || list.Events[0].ID != 1 || list.Events[0].Scope != "ivpay" || list.Events[1].Scope != "github" {
		t.Errorf("state=pending: %+v", list)
	}
	for _, uri := range []string{"/webhook_guard/spool?limit=0", "/webhook_guard/spool?limit=1001", "/webhook_guard/spool?limit=x"} {
		a.wantError("GET", uri, 400, "bad limit")
	}
	a.wantError("GET", "/webhook_guard/spool?after=x", 400, "bad after")
	a.wantError("GET", "/webhook_guard/spool?scope=a%0Db", 400, "bad scope")

	// One spool: pages, each naming the next by the last id, as before.
	a.setSpools(s1)
	a.want("GET", "/webhook_guard/spool?state=dead&scope=ivpay&event_id=pay_bbb&limit=5&after=9", 200, &list)
	if len(list.Events) != 1 || list.Events[0].ID != 2 {
		t.Errorf("state=dead&scope=ivpay&after=9: %+v", list)
	}
	if c := s1.callLog(); len(c) == 0 || c[len(c)-1] != `List("dead", "ivpay", "pay_bbb", 6, 9)` {
		t.Errorf("filters not passed on: %q", c)
	}
	a.want("GET", "/webhook_guard/spool?limit=2", 200, &list)
	if len(list.Events) != 2 || list.Events[0].ID != 3 || list.Events[1].ID != 2 || !strings.HasSuffix(list.Next, ".2") {
		t.Errorf("first page: %+v", list)
	}
	a.want("GET", "/webhook_guard/spool?limit=2&after="+list.Next, 200, &list)
	if len(list.Events) != 1 || list.Events[0].ID != 1 || list.Next != "" {
		t.Errorf("second page: %+v", list)
	}

	// Nothing spooled, or no spool at all, is an empty array, not null.
	for _, spools := range [][]*fakeSpool{{newFakeSpool()}, nil} {
		a.setSpools(spools...)
		if body := a.want("GET", "/webhook_guard/spool", 200, nil); body != `{"events":[],"paused":[]}`+"\n" {
			t.Errorf("empty list: %q", body)
		}
	}
}

// pagedSpool is a fake spool of scope, on ledger /fake/<scope>.db, with one dead event per id, received
// at the given minute after adminTestNow; its event ids are scope/id.
func pagedSpool(scope string, ids []uint64, minutes []int) *fakeSpool {
	var recs []spool.Record
	for i, id := range ids {
		recs = append(recs, spool.Record{ID: id, Target: scope + "/t", Scope: scope, Provider: "ivpay", EventID: fmt.Sprintf("%s/%d", scope, id),
			State: spool.Dead, ReceivedAt: adminTestNow.Add(time.Duration(minutes[i]) * time.Minute)})
	}
	return newNamedFakeSpool("ledger /fake/"+scope+".db", recs...)
}

// walkList lists every page of uri at limit, following next, and returns
// the events' ids (scope/id) in the order shown.
func (a *adminTest) walkList(uri string, limit int) []string {
	a.t.Helper()
	var got []string
	after := ""
	for page := 0; ; page++ {
		if page > 50 {
			a.t.Fatalf("limit %d: more than 50 pages", limit)
		}
		var list spoolapi.List
		sep := "?"
		if strings.Contains(uri, "?") {
			sep = "&"
		}
		a.want("GET", fmt.Sprintf("%s%slimit=%d&after=%s", uri, sep, limit, url.QueryEscape(after)), 200, &list)
		if len(list.Events) > limit {
			a.t.Fatalf("limit %d, page %d: %d events", limit, page, len(list.Events))
		}
		for _, e := range list.Events {
			got = append(got, e.EventID)
		}
		if list.Next == "" {
			return got
		}
		after = list.Next
	}
}

// TestAdminSpoolListPages: with two or three spools, whose ids collide and
// whose events interleave in time, the pages hold at most limit events in
// all, and following next lists every event once, newest first, to a last
// page without next.
func TestAdminSpoolListPages(t *testing.T) {
	a := pagedSpool("a", []uint64{1, 2, 3, 4, 5, 6}, []int{-60, -50, -50, -30, -20, -5})
	b := pagedSpool("b", []uint64{1, 2, 3, 7}, []int{-55, -50, -25, -20})
	c := pagedSpool("c", []uint64{1, 2, 3, 4, 5}, []int{-70, -45, -40, -20, -1})
	for _, tc := range []struct {
		spools []*fakeSpool
		want   []string
	}{
		{[]*fakeSpool{a, b}, []string{"a/6", "b/7", "a/5", "b/3", "a/4", "a/3", "a/2", "b/2", "b/1", "a/1"}},
		{[]*fakeSpool{c, a, b}, []string{"c/5", "a/6", "b/7", "a/5", "c/4", "b/3", "a/4", "c/3", "c/2", "a/3", "a/2", "b/2", "b/1", "a/1", "c/1"}},
	} {
		at := newAdminTest(t, tc.spools...)
		// b/7, a/5 and c/4 are received at once, as are a/3, a/2 and b/2:
		// the higher id first, then the spools by name (their ledgers'
		// paths), whatever their order in the registry.
		for _, limit := range []int{1, 2, 3, 4, 100} {
			if got := at.walkList("/webhook_guard/spool", limit); !slices.Equal(got, tc.want) {
				t.Errorf("%d spools, limit %d:\n got %q\nwant %q", len(tc.spools), limit, got, tc.want)
			}
		}
		// /spool/ is /spool.
		if got := at.walkList("/webhook_guard/spool/", 2); !slices.Equal(got, tc.want) {
			t.Errorf("%d spools, through /spool/:\n got %q\nwant %q", len(tc.spools), got, tc.want)
		}
		// The filter applies to every page: one scope (one spool's events).
		var wantA []string
		for _, id := range tc.want {
			if strings.HasPrefix(id, "a/") {
				wantA = append(wantA, id)
			}
		}
		for _, limit := range []int{1, 2, 4} {
			if got := at.walkList("/webhook_guard/spool?scope=a", limit); !slices.Equal(got, wantA) {
				t.Errorf("%d spools, scope=a, limit %d:\n got %q\nwant %q", len(tc.spools), limit, got, wantA)
			}
		}
	}
}

// TestAdminSpoolListCursor: a next applies only to the spools it was made
// with: after a reload that added, removed or replaced one, it is refused
// with what to do, as is anything that is not a next; never a wrong page.
func TestAdminSpoolListCursor(t *testing.T) {
	a := pagedSpool("a", []uint64{1, 2, 3}, []int{-3, -2, -1})
	b := pagedSpool("b", []uint64{1, 2, 3}, []int{-6, -5, -4})
	c := pagedSpool("c", []uint64{1}, []int{-7})
	at := newAdminTest(t, a, b)
	var list spoolapi.List
	at.want("GET", "/webhook_guard/spool?limit=2", 200, &list)
	if len(list.Events) != 2 || list.Next == "" || list.Next == "2" {
		t.Fatalf("first page: %+v", list)
	}
	cursor := list.Next
	next := "/webhook_guard/spool?limit=2&after=" + url.QueryEscape(cursor)
	changed := "bad after: " + spool.ErrSpoolsChanged.Error()
	for _, spools := range [][]*fakeSpool{{a, b, c}, {a, c}, {a}, {b, a, c}} {
		at.setSpools(spools...)
		at.wantError("GET", next, 400, changed)
	}
	at.setSpools(b, a) // the same spools in another order
	at.want("GET", next, 200, &list)
	if len(list.Events) != 2 || list.Events[0].EventID != "a/1" || list.Events[1].EventID != "b/3" {
		t.Errorf("second page: %+v", list)
	}
	// Another filter than the first page's.
	at.wantError("GET", next+"&state=dead", 400, changed)
	// A plain id lists the events below it in every spool.
	at.want("GET", "/webhook_guard/spool?after=3", 200, &list)
	if len(list.Events) != 4 || list.Events[0].EventID != "a/2" || list.Events[3].EventID != "b/1" {
		t.Errorf("two spools, after=3: %+v", list)
	}
	at.setSpools(a)
	at.wantError("GET", next, 400, changed)
	at.want("GET", "/webhook_guard/spool?after=3", 200, &list)
	if len(list.Events) != 2 || list.Events[0].EventID != "a/2" {
		t.Errorf("one spool, after=3: %+v", list)
	}
	for _, spools := range [][]*fakeSpool{nil, {a}, {a, b}} {
		at.setSpools(spools...)
		for _, bad := range []string{"x", "-1", "c1.", "c1.zz.1.2", strings.Replace(cursor, "c1.", "c2.", 1), cursor + ".1", cursor[:len(cursor)-1], "c1.0123456789abcdef.1..2",
			"c1.0123456789abcdef.01.x", "%00", "c1.0123456789abcdef" + strings.Repeat(".1", spool.MaxCursorSpools+1)} {
			at.wantError("GET", "/webhook_guard/spool?after="+url.QueryEscape(bad), 400, "bad after")
		}
	}
	at.wantError("GET", "/webhook_guard/spool?after="+strings.Repeat("9", spool.MaxCursorLen+1), 400, fmt.Sprintf("bad after (%d bytes)", spool.MaxCursorLen+1))
}

// A pending event says why it waits: its scope is paused, or no handler
// delivers its target any more.
func TestAdminSpoolWaiting(t *testing.T) {
	recs := adminTestRecords()
	orphan := spool.Record{ID: 4, Target: "ivpay/ivpay/gone", Scope: "ivpay", Provider: "ivpay", EventID: "pay_ddd", State: spool.Pending, ReceivedAt: adminTestNow}
	s := newFakeSpool(append(recs, orphan)...)
	a := newAdminTest(t, s)
	var d spoolapi.EventDetail
	a.want("GET", "/webhook_guard/spool/4", 200, &d)
	if !strings.Contains(d.Waiting, "no handler delivers it") || d.Paused {
		t.Errorf("orphan: %+v", d.Event)
	}
	a.want("GET", "/webhook_guard/spool/1", 200, &d)
	if d.Waiting != "" {
		t.Errorf("an event of a registered target waits: %q", d.Waiting)
	}
	a.want("POST", "/webhook_guard/spool/pause?scope=ivpay", 200, nil)
	a.want("GET", "/webhook_guard/spool/1", 200, &d)
	if !d.Paused || !strings.Contains(d.Waiting, "scope paused") {
		t.Errorf("paused: %+v", d.Event)
	}
}

func TestAdminSpoolShow(t *testing.T) {
	a := newAdminTest(t, newFakeSpool(adminTestRecords()...))
	var d spoolapi.EventDetail
	raw := a.want("GET", "/webhook_guard/spool/1", 200, &d)
	if !strings.Contains(raw, `"query":"token=[REDACTED]&shop=1"`) {
		t.Errorf("the query is to read as sent, & unescaped:\n%s", raw)
	}
	if d.ID != 1 || d.Scope != "ivpay" || d.EventID != "pay_aaa" || d.State != "pending" || d.Attempts != 2 ||
		d.Method != "POST" || d.Path != "/hooks/ivpay" || d.ClientIP != "203.0.113.7" || d.LastError != "502 Bad Gateway" {
		t.Errorf("record: %+v", d)
	}
	if d.ReceivedAt == nil || !d.ReceivedAt.Equal(adminTestNow.Add(-10*time.Minute)) || d.ReceivedAt.Location() != time.UTC {
		t.Errorf("received_at %v", d.ReceivedAt)
	}
	if d.Query != "token="+redactedValue+"&shop=1" {
		t.Errorf("query %q: the token parameter is to be redacted, the rest kept", d.Query)
	}
	for _, name := range []string{"X-Api-Key", "Authorization", "Proxy-Authorization", "Cookie", "Stripe-Signature",
		"X-Hub-Signature-256", "X-Shopify-Hmac-Sha256", "X-Webhook-Secret"} {
		if got := d.Headers[name]; !slices.Equal(got, []string{redactedValue}) {
			t.Errorf("%s: %q, want redacted", name, got)
		}
	}
	if got := d.Headers["X-Auth-Token"]; !slices.Equal(got, []string{redactedValue, redactedValue}) {
		t.Errorf("X-Auth-Token: %q, want each value redacted", got)
	}
	if d.Headers.Get("Content-Type") != "application/json" || d.Headers.Get("User-Agent") != "IVPAY/1.0" || len(d.Headers) != 11 {
		t.Errorf("headers other than credentials are to be kept: %v", d.Headers)
	}
	if d.Body == nil || *d.Body != `{"payment_id":"pay_aaa","status":"PAID","note":"é"}` || d.BodyBase64 != nil {
		t.Errorf("body %v, body_base64 %v", d.Body, d.BodyBase64)
	}

	// A body that is not UTF-8 comes as body_base64, and only so.
	body := a.want("GET", "/webhook_guard/spool/2", 200, nil)
	if !strings.Contains(body, `"body_base64":"`+base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe, 0x00, 'x'})+`"`) ||
		strings.Contains(body, `"body":`) || !strings.Contains(body, `"next_attempt_at":null`) || !strings.Contains(body, `"query":""`) {
		t.Errorf("binary body:\n%s", body)
	}
}

func TestAdminSpoolRedaction(t *testing.T) {
	for name, redacted := range map[string]bool{
		"Authorization": true, "authorization": true, "X-Api-Key": true, "Cookie": true, "Set-Cookie": true,
		"Webhook-Signature": true, "X-Slack-Signature": true, "X-Client-Secret": true, "X-Access-Token": true,
		"X-Shopify-Hmac-Sha256": true, "Idempotency-Key": true, "X-Password": true, "X-Sig": true, "X-Hook-Hash": true,
		"Digest": true, "X-Session-Id": true,
		"Content-Type": false, "Content-Length": false, "Webhook-Id": false, "Webhook-Timestamp": false, "X-GitHub-Event": false,
		"X-GitHub-Delivery": false, "X-Shopify-Topic": false, "User-Agent": false, "Accept": false, "X-Request-Id": false,
	} {
		if credentialName(name) != redacted {
			t.Errorf("credentialName(%q) = %v", name, !redacted)
		}
	}
	for raw, want := range map[string]string{
		"":                            "",
		"a=1&b=2":                     "a=1&b=2",
		"access_token=x&a=1":          "access_token=" + redactedValue + "&a=1",
		"a=1&api%5Fkey=x&api%5Fkey=y": "a=1&api%5Fkey=" + redactedValue + "&api%5Fkey=" + redactedValue,
		"signature":                   "signature=" + redactedValue,
		"%zz=1&secret=s":              "%zz=1&secret=" + redactedValue,
		"x=%zz&Token=1;a":             "x=%zz&Token=" + redactedValue + ";a",
		"a=1;token=s;b=2":             "a=1;token=" + redactedValue + ";b=2",
		"tok%65n=s&&x":                "tok%65n=" + redactedValue + "&&x",
		"token%zz=s":                  "token%zz=" + redactedValue,
		"sig=1&mykey=2&keyless=&id=3": "sig=" + redactedValue + "&mykey=" + redactedValue + "&keyless=" + redactedValue + "&id=3",
		"shop=1&":                     "shop=1&",
	} {
		if got := redactQuery(raw); got != want {
			t.Errorf("redactQuery(%q) = %q, want %q", raw, got, want)
		}
	}
	h := redactHeader(http.Header{
		"X-Forwarded-Authz": {"Bearer " + adminTestSecret},
		"X-Upstream":        {"token " + adminTestSecret, "plain"},
		"X-Note":            {"basically fine"},
	})
	if !slices.Equal(h["X-Forwarded-Authz"], []string{redactedValue}) || !slices.Equal(h["X-Upstream"], []string{redactedValue, "plain"}) ||
		!slices.Equal(h["X-Note"], []string{"basically fine"}) {
		t.Errorf("credential values under other names: %v", h)
	}
	if h := redactHeader(nil); h == nil || len(h) != 0 {
		t.Errorf("redactHeader(nil) = %#v, want empty, not nil (JSON {})", h)
	}
	in := http.Header{"X-Api-Key": {}, "Accept": {"*/*"}}
	out := redactHeader(in)
	if !slices.Equal(out["X-Api-Key"], []string{redactedValue}) || in["X-Api-Key"] == nil || len(in["X-Api-Key"]) != 0 {
		t.Errorf("redactHeader: %v (input %v, which must be left as it was)", out, in)
	}
	out["Accept"][0] = "changed"
	if in.Get("Accept") != "*/*" {
		t.Error("redactHeader shares the input's value slices")
	}
}

func TestAdminSpoolErrors(t *testing.T) {
	s := newFakeSpool(adminTestRecords()...)
	a := newAdminTest(t, s)

	a.wantError("GET", "/webhook_guard/spool/99", 404, "no spooled event 99")
	a.wantError("POST", "/webhook_guard/spool/99/retry", 404, "no spooled event 99")
	a.wantError("DELETE", "/webhook_guard/spool/99", 404, "no spooled event 99")
	a.wantError("GET", "/webhook_guard/spool/1?scope=shop", 404, "no spooled event 1")
	a.wantError("GET", "/webhook_guard/other", 404, "no such admin route /webhook_guard/other")
	a.wantError("GET", "/webhook_guard/spoolx", 404, "no such admin route")
	a.wantError("GET", "/webhook_guard/spool/1/other", 404, "no such admin route")

	for _, id := range []string{"abc", "-1", "%2B1", "1.5", "0x1", "18446744073709551616"} {
		a.wantError("GET", "/webhook_guard/spool/"+id, 400, "bad event id")
		a.wantError("POST", "/webhook_guard/spool/"+id+"/retry", 400, "bad event id")
	}
	for _, uri := range []string{"/webhook_guard/spool?state=delivered", "/webhook_guard/spool?state=DEAD"} {
		a.wantError("GET", uri, 400, "bad state")
	}
	a.wantError("POST", "/webhook_guard/spool/retry?state=all", 400, "bad state")
	a.wantError("POST", "/webhook_guard/spool/retry", 400, "state is required")
	a.wantError("POST", "/webhook_guard/spool/retry?scope=ivpay", 400, "state is required")
	a.wantError("POST", "/webhook_guard/spool/pause?scope="+strings.Repeat("x", 40<<10), 400, "bad scope")
	a.wantError("POST", "/webhook_guard/spool/pause?scope=a%0D%0Ab", 400, "bad scope")
	a.wantError("POST", "/webhook_guard/spool/pause?scope=nobody", 404, `no spool delivers scope "nobody"`)
	a.wantError("GET", "/webhook_guard/spool?stat=dead", 400, `unknown query parameter "stat"`)
	a.wantError("POST", "/webhook_guard/spool/retry?state=dead&scop=ivpay", 400, `unknown query parameter "scop"`)
	a.wantError("GET", "/webhook_guard/spool?state=dead&state=pending", 400, "given more than once")
	a.wantError("GET", "/webhook_guard/spool?state=%zz", 400, "bad query")
	a.wantError("GET", "/webhook_guard/spool/1?state=dead", 400, "unknown query parameter")
	a.wantError("POST", "/webhook_guard/spool/pause", 400, "scope is required")
	a.wantError("POST", "/webhook_guard/spool/resume?scope=", 400, "scope is required")

	for _, c := range []struct{ method, uri, allow string }{
		{"POST", "/webhook_guard/spool", "GET"},
		{"DELETE", "/webhook_guard/spool", "GET"},
		{"PUT", "/webhook_guard/spool/1", "GET, DELETE"},
		{"POST", "/webhook_guard/spool/1", "GET, DELETE"},
		{"GET", "/webhook_guard/spool/1/retry", "POST"},
		{"GET", "/webhook_guard/spool/retry?state=dead", "POST"},
		{"DELETE", "/webhook_guard/spool/retry", "POST"},
		{"GET", "/webhook_guard/spool/pause?scope=ivpay", "POST"},
		{"GET", "/webhook_guard/spool/resume?scope=ivpay", "POST"},
	} {
		req, _ := http.NewRequest(c.method, a.srv.URL+c.uri, nil)
		resp, err := a.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", c.method, c.uri, resp.StatusCode, resp.Header.Get("Allow"), c.allow)
		}
	}
	// None of these reached a mutating call.
	for _, c := range s.callLog() {
		if !strings.HasPrefix(c, "Get(") && !strings.HasPrefix(c, "List(") {
			t.Errorf("a refused request called %s", c)
		}
	}
	if s.record(1).State != spool.Pending || s.record(2).State != spool.Dead || s.record(3).State != spool.Dead || s.isPaused("ivpay") || s.isPaused("nobody") {
		t.Error("refused requests changed the spool")
	}

	// A spool that fails is a 500 naming the spool's error.
	s.setErr(errors.New("ledger closed"))
	a.wantError("GET", "/webhook_guard/spool", 500, "spool: ledger closed")
	a.wantError("GET", "/webhook_guard/spool/1", 500, "spool: ledger closed")
	a.wantError("POST", "/webhook_guard/spool/retry?state=dead", 500, "spool: ledger closed (0 events retried before it)")
	a.wantError("POST", "/webhook_guard/spool/pause?scope=ivpay", 500, "spool: ledger closed")

	// No spool loaded: ids are unknown, pause has nothing to hold.
	a.setSpools()
	a.wantError("GET", "/webhook_guard/spool/1", 404, "no spooled event 1")
	a.wantError("POST", "/webhook_guard/spool/pause?scope=ivpay", 404, "no spool delivers scope")
	if got := a.want("POST", "/webhook_guard/spool/retry?state=dead", 200, nil); got != `{"retried":0}`+"\n" {
		t.Errorf("retry without a spool: %s", got)
	}
}

func TestAdminSpoolRetry(t *testing.T) {
	s1 := newFakeSpool(adminTestRecords()...)
	s2 := newFakeSpool(spool.Record{ID: 7, Target: "github/gh/x", Scope: "gh", Provider: "github", State: spool.Dead, ReceivedAt: adminTestNow})
	a := newAdminTest(t, s1, s2)

	var n map[string]any
	a.want("POST", "/webhook_guard/spool/2/retry", 200, &n)
	if n["retried"] != 1.0 || s1.record(2).State != spool.Pending || n["paused"] != nil {
		t.Errorf("retry 2: %v, state %s", n, s1.record(2).State)
	}
	if c := s1.callLog(); !slices.Equal(c, []string{"Get(2)", "Retry(2)"}) {
		t.Errorf("calls of the spool holding 2: %q", c)
	}
	if c := s2.callLog(); !slices.Equal(c, []string{"Get(2)"}) {
		t.Errorf("the other spool was retried too: %q", c)
	}
	if e := lastAdminLog(t, a.logs); e.Level != zapcore.InfoLevel || e.ContextMap()["id"] != uint64(2) || e.ContextMap()["event_id"] != "pay_bbb" {
		t.Errorf("retry log: %v %v", e.Message, e.ContextMap())
	}

	a.want("POST", "/webhook_guard/spool/retry?state=dead", 200, &n)
	if n["retried"] != 2.0 { // 3 in the first ledger, 7 in the second
		t.Errorf("retry every dead: %v", n)
	}
	if c1, c2 := s1.callLog(), s2.callLog(); !slices.Equal(c1, []string{`IDs("dead", "")`, "Retry(3)"}) || !slices.Equal(c2, []string{`IDs("dead", "")`, "Retry(7)"}) {
		t.Errorf("calls %q %q", c1, c2)
	}
	a.want("POST", "/webhook_guard/spool/retry?state=pending&scope=ivpay", 200, &n)
	if c1, c2 := s1.callLog(), s2.callLog(); n["retried"] != 2.0 || !slices.Equal(c1, []string{`IDs("pending", "ivpay")`, "Retry(1)", "Retry(2)"}) || !slices.Equal(c2, []string{`IDs("pending", "ivpay")`}) {
		t.Errorf("retry pending of ivpay: %v, calls %q %q", n, c1, c2)
	}

	// A retry in a paused scope says so.
	a.want("POST", "/webhook_guard/spool/pause?scope=shop", 200, nil)
	a.want("POST", "/webhook_guard/spool/3/retry", 200, &n)
	if p, _ := n["paused"].([]any); len(p) != 1 || p[0] != "shop" {
		t.Errorf("retry in a paused scope: %v", n)
	}
	a.want("POST", "/webhook_guard/spool/retry?state=pending&scope=shop", 200, &n)
	if p, _ := n["paused"].([]any); len(p) != 1 || p[0] != "shop" {
		t.Errorf("retry of a paused scope's events: %v", n)
	}
}

func TestAdminSpoolDiscard(t *testing.T) {
	s := newFakeSpool(adminTestRecords()...)
	a := newAdminTest(t, s)
	var got map[string]spoolapi.Event
	req, _ := http.NewRequest("DELETE", a.srv.URL+"/webhook_guard/spool/3", nil)
	req.Header.Set(operatorHeader, "alice")
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode, err)
	}
	resp.Body.Close()
	if d := got["discarded"]; d.ID != 3 || d.EventID != "evt_ccc" || d.Scope != "shop" || d.State != "discarded" || d.DiscardedBy != "alice (admin API)" {
		t.Errorf("answer %+v", got)
	}
	if r := s.record(3); r.State != spool.Discarded || s.record(1).State != spool.Pending || s.record(2).State != spool.Dead {
		t.Error("discard changed the wrong events")
	}
	e := lastAdminLog(t, a.logs)
	f := e.ContextMap()
	if e.Level != zapcore.WarnLevel || e.Message != "spooled event discarded through the admin API" ||
		f["id"] != uint64(3) || f["scope"] != "shop" || f["event_id"] != "evt_ccc" || f["provider"] != "stripe" ||
		f["by"] != "alice (admin API)" || f["attempts"] != int64(25) {
		t.Errorf("discard log: %s %s %v", e.Level, e.Message, f)
	}
	// Listed as discarded; retried, pending again.
	var list spoolapi.List
	a.want("GET", "/webhook_guard/spool?state=discarded", 200, &list)
	if len(list.Events) != 1 || list.Events[0].ID != 3 || list.Events[0].DiscardedAt == nil {
		t.Errorf("discarded list: %+v", list)
	}
	a.want("POST", "/webhook_guard/spool/3/retry", 200, nil)
	if s.record(3).State != spool.Pending {
		t.Errorf("a discarded event retried is %s", s.record(3).State)
	}
	a.wantError("DELETE", "/webhook_guard/spool/9", 404, "no spooled event 9")
}

func TestAdminSpoolPauseResume(t *testing.T) {
	s1, s2, s3 := newFakeSpool().withScopes("ivpay"), newFakeSpool().withScopes("ivpay"), newFakeSpool().withScopes("other")
	a := newAdminTest(t, s1, s2, s3)
	var got map[string]any
	a.want("POST", "/webhook_guard/spool/pause?scope=ivpay", 200, &got)
	if got["scope"] != "ivpay" || got["paused"] != true || !s1.isPaused("ivpay") || !s2.isPaused("ivpay") || s3.isPaused("ivpay") {
		t.Errorf("pause: %v", got)
	}
	if e := lastAdminLog(t, a.logs); e.Level != zapcore.WarnLevel || e.Message != "spool deliveries paused through the admin API" || e.ContextMap()["scope"] != "ivpay" {
		t.Errorf("pause log: %s %v", e.Message, e.ContextMap())
	}
	var list spoolapi.List
	a.want("GET", "/webhook_guard/spool", 200, &list)
	if !slices.Equal(list.Paused, []string{"ivpay"}) {
		t.Errorf("paused scopes listed: %v", list.Paused)
	}
	a.want("POST", "/webhook_guard/spool/resume?scope=ivpay", 200, &got)
	if got["paused"] != false || s1.isPaused("ivpay") || s2.isPaused("ivpay") {
		t.Errorf("resume: %v", got)
	}
	if c := s1.callLog(); !slices.Equal(c, []string{`SetPaused("ivpay", true)`, `List("", "", "", 101, 0)`, `SetPaused("ivpay", false)`}) {
		t.Errorf("calls %q", c)
	}
	if c := s3.callLog(); !slices.Equal(c, []string{`List("", "", "", 101, 0)`}) {
		t.Errorf("a spool without the scope was paused: %q", c)
	}
}

// Forget takes provider, event_id and scope (default the provider), and
// forgets the key in every spool.
func TestAdminSpoolForget(t *testing.T) {
	s := newFakeSpool(adminTestRecords()...)
	a := newAdminTest(t, s)
	var got map[string]any
	a.want("POST", "/webhook_guard/spool/forget?provider=ivpay&event_id=pay_zzz", 200, &got)
	if c := s.callLog(); !slices.Equal(c, []string{fmt.Sprintf("Forget(%q)", dedupe.Key("ivpay", "ivpay", "pay_zzz"))}) {
		t.Errorf("calls %q", c)
	}
	if e := lastAdminLog(t, a.logs); e.Level != zapcore.WarnLevel || e.ContextMap()["event_id"] != "pay_zzz" || e.ContextMap()["scope"] != "ivpay" {
		t.Errorf("forget log: %s %v", e.Message, e.ContextMap())
	}
	// An IVPAY event id "<payment_id>/<status>" is keyed on both parts, as the guard keyed it.
	a.want("POST", "/webhook_guard/spool/forget?provider=ivpay&event_id=pay_1/PAID", 200, &got)
	if c := s.callLog(); !slices.Equal(c, []string{fmt.Sprintf("Forget(%q)", dedupe.Key("ivpay", "ivpay", "5:pay_14:PAID"))}) {
		t.Errorf("calls %q", c)
	}
	a.wantError("POST", "/webhook_guard/spool/forget?provider=github&event_id=0f3b2a1c-1111-4222-8333-944455556666", 400, "not by their delivery id")
	a.wantError("POST", "/webhook_guard/spool/forget?event_id=x", 400, "provider and event_id are required")
	a.wantError("POST", "/webhook_guard/spool/forget?provider=nope&event_id=x", 400, "unknown provider")
	a.wantError("GET", "/webhook_guard/spool/forget?provider=ivpay&event_id=x", 405, "not allowed")
}

// TestAdminSpoolSameIDInTwoLedgers: ids are unique per ledger only; an id two
// ledgers hold is refused unless ?scope= tells which, and is then acted on
// in that ledger alone.
func TestAdminSpoolSameIDInTwoLedgers(t *testing.T) {
	s1 := newFakeSpool(spool.Record{ID: 5, Scope: "a", EventID: "ev-a", State: spool.Dead})
	s2 := newFakeSpool(spool.Record{ID: 5, Scope: "b", EventID: "ev-b", State: spool.Dead})
	a := newAdminTest(t, s1, s2)
	a.wantError("GET", "/webhook_guard/spool/5", 409, "add ?scope=<scope> to choose")
	a.wantError("DELETE", "/webhook_guard/spool/5", 409, "more than one ledger")
	a.wantError("POST", "/webhook_guard/spool/5/retry", 409, "more than one ledger")
	if s1.record(5).State != spool.Dead || s2.record(5).State != spool.Dead {
		t.Fatal("an ambiguous discard discarded an event")
	}
	var d spoolapi.EventDetail
	a.want("GET", "/webhook_guard/spool/5?scope=b", 200, &d)
	if d.EventID != "ev-b" {
		t.Errorf("scope=b shows %q", d.EventID)
	}
	a.want("DELETE", "/webhook_guard/spool/5?scope=b", 200, nil)
	if s1.record(5).State != spool.Dead || s2.record(5).State != spool.Discarded {
		t.Error("discard with scope=b did not act on ledger b alone")
	}
}

func lastAdminLog(t *testing.T, logs *observer.ObservedLogs) observer.LoggedEntry {
	t.Helper()
	all := logs.All()
	if len(all) == 0 {
		t.Fatal("nothing logged")
	}
	return all[len(all)-1]
}

func TestRegisterSpool(t *testing.T) {
	before := len(registeredSpools())
	s1, s2 := newFakeSpool().Spool, newFakeSpool().Spool
	un1 := registerSpool(s1)
	un2 := registerSpool(s2)
	un1again := registerSpool(s1)
	if got := registeredSpools(); len(got) != before+3 {
		t.Fatalf("%d registered, want %d", len(got), before+3)
	}
	un1()
	un1() // a second call does nothing
	got := registeredSpools()
	if len(got) != before+2 || !slices.Contains(got, s1) || !slices.Contains(got, s2) {
		t.Errorf("after one unregister of s1: %v", got)
	}
	un1again()
	un2()
	if got := registeredSpools(); len(got) != before {
		t.Errorf("%d left registered", len(got)-before)
	}

	// Registering and serving at once is safe (run with -race).
	m := &adminSpool{}
	h := serveAdminRoutes(m.Routes())
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 50 {
				registerSpool(newFakeSpool(spool.Record{ID: 1}).Spool)()
			}
		}()
		go func() {
			defer wg.Done()
			for range 50 {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest("GET", "/webhook_guard/spool", nil))
				if w.Code != 200 {
					t.Errorf("list while registering: %d %s", w.Code, w.Body)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestAdminSpoolModule(t *testing.T) {
	info, err := caddy.GetModule("admin.api.webhook_guard")
	if err != nil {
		t.Fatal(err)
	}
	m := info.New()
	router, ok := m.(caddy.AdminRouter)
	if !ok {
		t.Fatalf("%T is not a caddy.AdminRouter", m)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := m.(caddy.Provisioner).Provision(ctx); err != nil {
		t.Fatal(err)
	}
	routes := router.Routes()
	if len(routes) != 1 || routes[0].Pattern != "/webhook_guard/" {
		t.Fatalf("routes %+v", routes)
	}

	// The module serves the registered spools.
	s := newFakeSpool(adminTestRecords()...)
	defer registerSpool(s.Spool)()
	w := httptest.NewRecorder()
	if err := routes[0].Handler.ServeHTTP(w, httptest.NewRequest("GET", "/webhook_guard/spool/3", nil)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(w.Body.Bytes(), []byte(`"event_id":"evt_ccc"`)) {
		t.Errorf("GET 3 through the registry: %s", w.Body)
	}
}

// FuzzRedactQuery: whatever the stored query, every parameter whose name
// (escaped or not) is a credential's comes out with the redacted value, and
// the others come out as they were.
func FuzzRedactQuery(f *testing.F) {
	for _, seed := range []string{"", "a=1&token=s", "a=1;secret=s", "tok%65n=s", "%zz=1&api_key", "&&;=&x=%", "key=a=b&k=v"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out := redactQuery(raw)
		split := func(s string) []string {
			return strings.FieldsFunc(s, func(r rune) bool { return r == '&' || r == ';' })
		}
		in, got := split(raw), split(out)
		if len(in) != len(got) {
			t.Fatalf("%q → %q: %d parameters became %d", raw, out, len(in), len(got))
		}
		for i := range in {
			rawName, _, _ := strings.Cut(in[i], "=")
			name, err := url.QueryUnescape(rawName)
			if err != nil {
				name = rawName
			}
			switch {
			case credentialName(name) || credentialName(rawName):
				if got[i] != rawName+"="+redactedValue {
					t.Fatalf("%q → %q: parameter %q not redacted", raw, out, in[i])
				}
			case got[i] != in[i]:
				t.Fatalf("%q → %q: parameter %q changed", raw, out, in[i])
			}
		}
	})
}
