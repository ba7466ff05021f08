package webhookguard

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/verify"
)

const testIvySecret = "ivy-unit-test-secret-0123"

// guard provisions a handler as Caddy would and captures its logs.
func guard(t *testing.T, h *Handler) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Cleanup() })
	core, logs := observer.New(zapcore.DebugLevel)
	h.logger = zap.New(core)
	return h, logs
}

// memoryStore is the JSON of a memory store; a distinct max_events gives a
// test a store of its own.
func memoryStore(maxEvents int64) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"type":"memory","max_events":%d}`, maxEvents))
}

// ivyGuard is an ivy handler accepting any source, with a fresh memory
// store of its own.
func ivyGuard(t *testing.T) (*Handler, *observer.ObservedLogs) {
	return guard(t, &Handler{
		Provider: "ivy",
		Secrets:  []string{testIvySecret},
		AllowIPs: []string{"any"},
		MaxBody:  1024,
		StoreRaw: memoryStore(int64(1000 + len(t.Name()))), // a store of its own
	})
}

func ivySign(body string) string {
	mac := hmac.New(sha256.New, []byte(testIvySecret))
	mac.Write([]byte(body))
	return hex.EncodeToString(mac.Sum(nil))
}

// upstreamStub is the next handler: it records what it received and answers
// with status.
type upstreamStub struct {
	mu     sync.Mutex
	bodies []string
	lens   []int64
	status atomic.Int32
	err    error
	panics bool
	gate   chan struct{} // when set, each call waits for it
	arrive chan struct{}
}

func (u *upstreamStub) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.bodies = append(u.bodies, string(b))
	u.lens = append(u.lens, r.ContentLength)
	u.mu.Unlock()
	if u.arrive != nil {
		u.arrive <- struct{}{}
	}
	if u.gate != nil {
		<-u.gate
	}
	if u.panics {
		panic("upstream handler blew up")
	}
	if u.err != nil {
		return u.err
	}
	status := int(u.status.Load())
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	return nil
}

func (u *upstreamStub) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.bodies)
}

// send runs one request through the handler as Caddy's server would.
func send(t *testing.T, h *Handler, next caddyhttp.Handler, method, remote string, hdr http.Header, body string) (*httptest.ResponseRecorder, error) {
	t.Helper()
	req := httptest.NewRequest(method, "http://shop.example/hooks", strings.NewReader(body))
	req.RemoteAddr = remote
	for k, v := range hdr {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, &caddyhttp.Server{})
	err := h.ServeHTTP(w, req, next)
	return w, err
}

func statusOfResult(w *httptest.ResponseRecorder, err error) int {
	if err != nil {
		var he caddyhttp.HandlerError
		if errors.As(err, &he) {
			return he.StatusCode
		}
		return 500
	}
	return w.Code
}

func ivyHeaders(body string) http.Header {
	return http.Header{"X-Ivy-Signature": {ivySign(body)}}
}

// lastLog returns the last log entry and fails if there is none.
func lastLog(t *testing.T, logs *observer.ObservedLogs) observer.LoggedEntry {
	t.Helper()
	all := logs.All()
	if len(all) == 0 {
		t.Fatal("nothing logged")
	}
	return all[len(all)-1]
}

func assertLog(t *testing.T, logs *observer.ObservedLogs, level zapcore.Level, outcome, reasonPart string) {
	t.Helper()
	e := lastLog(t, logs)
	fields := e.ContextMap()
	if e.Level != level || fields["outcome"] != outcome || !strings.Contains(fields["reason"].(string), reasonPart) {
		t.Fatalf("log = %s %q %v; want level %s, outcome %s, reason containing %q", e.Level, e.Message, fields, level, outcome, reasonPart)
	}
	if fields["provider"] == "" || fields["client_ip"] == nil {
		t.Fatalf("log lacks provider or client_ip: %v", fields)
	}
	for _, entry := range logs.All() {
		for _, v := range entry.ContextMap() {
			if s, ok := v.(string); ok && strings.Contains(s, testIvySecret) {
				t.Fatal("a log field contains the secret")
			}
		}
	}
}

func TestPipelineRefusals(t *testing.T) {
	h, logs := ivyGuard(t)
	up := &upstreamStub{}
	body := `{"id":"evt_ref","type":"order_updated"}`

	w, err := send(t, h, up, http.MethodGet, "203.0.113.9:5555", nil, "")
	if got := statusOfResult(w, err); got != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "POST" {
		t.Fatalf("GET: status %d, Allow %q; want 405, POST", got, w.Header().Get("Allow"))
	}
	assertLog(t, logs, zapcore.InfoLevel, "bad_method", "method GET")

	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:5555", ivyHeaders(body+"x"), body)
	if got := statusOfResult(w, err); got != http.StatusUnauthorized {
		t.Fatalf("forged: status %d, want 401", got)
	}
	assertLog(t, logs, zapcore.WarnLevel, "invalid_signature", "does not match any of 1 secret")
	if strings.Contains(err.Error(), testIvySecret) {
		t.Fatal("error contains the secret")
	}

	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:5555", nil, body)
	if got := statusOfResult(w, err); got != http.StatusUnauthorized {
		t.Fatalf("unsigned: status %d, want 401", got)
	}
	assertLog(t, logs, zapcore.WarnLevel, "invalid_signature", "X-Ivy-Signature header missing")

	big := `{"id":"evt_big","pad":"` + strings.Repeat("a", 2000) + `"}`
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:5555", ivyHeaders(big), big)
	if got := statusOfResult(w, err); got != http.StatusRequestEntityTooLarge {
		t.Fatalf("big: status %d, want 413", got)
	}
	assertLog(t, logs, zapcore.WarnLevel, "too_large", "max_body")

	if up.count() != 0 {
		t.Fatalf("upstream received %d requests, want 0", up.count())
	}
}

// TestBodyOverLimitWithoutLength streams a body with no Content-Length: the
// bounded read refuses it.
func TestBodyOverLimitWithoutLength(t *testing.T) {
	h, logs := ivyGuard(t)
	up := &upstreamStub{}
	big := strings.Repeat("b", 5000)
	req := httptest.NewRequest(http.MethodPost, "http://shop.example/hooks", io.NopCloser(strings.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("X-Ivy-Signature", ivySign(big))
	w := httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, &caddyhttp.Server{})
	err := h.ServeHTTP(w, req, up)
	if got := statusOfResult(w, err); got != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", got)
	}
	assertLog(t, logs, zapcore.WarnLevel, "too_large", "max_body (1024 bytes)")
	if up.count() != 0 {
		t.Fatal("forwarded")
	}
}

func TestAllowList(t *testing.T) {
	h, logs := guard(t, &Handler{Provider: "ivy", Secrets: []string{testIvySecret}, StoreRaw: memoryStore(7)})
	up := &upstreamStub{}
	body := `{"id":"evt_ip","type":"order_updated"}`
	w, err := send(t, h, up, http.MethodPost, "127.0.0.1:4000", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusForbidden {
		t.Fatalf("loopback source against Ivy's list: %d, want 403", got)
	}
	assertLog(t, logs, zapcore.WarnLevel, "ip_denied", "127.0.0.1 is not in allow_ips")
	w, err = send(t, h, up, http.MethodPost, "3.120.50.145:4000", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK || up.count() != 1 {
		t.Fatalf("Ivy address: %d, %d forwarded; want 200, 1", got, up.count())
	}
}

func TestForwardExactBytesAndPlaceholders(t *testing.T) {
	h, _ := ivyGuard(t)
	body := "{\"id\":\"evt_bytes\",\"type\":\"order_updated\",\"note\":\"é€\"}\n"
	var seenID, seenType, seenNew string
	var unknown bool
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		seenID, _ = repl.GetString("http.webhook.event_id")
		seenType, _ = repl.GetString("http.webhook.event_type")
		seenNew = repl.ReplaceAll("{http.webhook_guard.provider} {http.webhook_guard.event_id} {http.webhook_guard.event_type}", "-")
		_, unknown = repl.Get("http.webhook_guard.event")
		b, _ := io.ReadAll(r.Body)
		if string(b) != body || r.ContentLength != int64(len(body)) {
			t.Errorf("next got %q (length %d), want the exact body", b, r.ContentLength)
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	})
	w, err := send(t, h, next, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusAccepted {
		t.Fatalf("status %d, want the upstream's 202", got)
	}
	if seenID != "evt_bytes" || seenType != "order_updated" || seenNew != "ivy evt_bytes order_updated" || unknown {
		t.Fatalf("placeholders: id %q type %q, new names %q, unknown name found %v", seenID, seenType, seenNew, unknown)
	}
}

func TestDuplicateAndRetryAfterFailure(t *testing.T) {
	h, logs := ivyGuard(t)
	up := &upstreamStub{}
	body := `{"id":"evt_retry","type":"order_updated"}`
	post := func() int {
		w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
		return statusOfResult(w, err)
	}
	up.status.Store(500)
	if got := post(); got != 500 {
		t.Fatalf("first copy: %d, want the upstream's 500", got)
	}
	assertLog(t, logs, zapcore.WarnLevel, "upstream_failed", "upstream answered 500")
	up.status.Store(200)
	if got := post(); got != 200 || up.count() != 2 {
		t.Fatalf("retry after a 500: %d with %d forwarded; want 200, 2", got, up.count())
	}
	if got := post(); got != 200 || up.count() != 2 {
		t.Fatalf("duplicate: %d with %d forwarded; want 200, still 2", got, up.count())
	}
	assertLog(t, logs, zapcore.InfoLevel, "duplicate", "already delivered")
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if statusOfResult(w, err) != 200 || w.Header().Get("Webhook-Guard-Outcome") != "duplicate" {
		t.Fatalf("duplicate answer lacks Webhook-Guard-Outcome: %v", w.Header())
	}
	if lastLog(t, logs).ContextMap()["event_id"] != "evt_retry" {
		t.Fatal("duplicate log lacks the event id")
	}
}

func TestReleaseOnErrorAndPanic(t *testing.T) {
	h, _ := ivyGuard(t)
	body := `{"id":"evt_err","type":"order_updated"}`
	down := &upstreamStub{err: caddyhttp.Error(http.StatusBadGateway, errors.New("dial tcp: connection refused"))}
	w, err := send(t, h, down, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusBadGateway {
		t.Fatalf("upstream down: %d, want 502", got)
	}
	boom := &upstreamStub{panics: true}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic swallowed")
			}
		}()
		send(t, h, boom, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	}()
	ok := &upstreamStub{}
	w, err = send(t, h, ok, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != 200 || ok.count() != 1 {
		t.Fatalf("after an error and a panic: %d, %d forwarded; want 200, 1", got, ok.count())
	}
}

func TestInFlightDuplicate(t *testing.T) {
	h, logs := ivyGuard(t)
	up := &upstreamStub{gate: make(chan struct{}), arrive: make(chan struct{}, 1)}
	body := `{"id":"evt_flight","type":"order_updated"}`
	done := make(chan int)
	go func() {
		w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
		done <- statusOfResult(w, err)
	}()
	<-up.arrive
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusConflict || w.Header().Get("Retry-After") == "" {
		t.Fatalf("copy while in flight: %d, Retry-After %q; want 409 with Retry-After", got, w.Header().Get("Retry-After"))
	}
	assertLog(t, logs, zapcore.InfoLevel, "in_flight", "in flight")
	close(up.gate)
	if got := <-done; got != 200 {
		t.Fatalf("first copy: %d", got)
	}
	if up.count() != 1 {
		t.Fatalf("forwarded %d, want 1", up.count())
	}
}

func TestEventsFilter(t *testing.T) {
	h, logs := guard(t, &Handler{Provider: "ivy", Secrets: []string{testIvySecret}, AllowIPs: []string{"any"}, Events: []string{"order_paid"}, StoreRaw: memoryStore(11)})
	up := &upstreamStub{}
	body := `{"id":"evt_type","type":"order_updated"}`
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != 200 || up.count() != 0 {
		t.Fatalf("unwanted type: %d, %d forwarded; want 200, 0", got, up.count())
	}
	// The first of a type since the config was loaded is a warning; later
	// ones of that type are the ordinary life of a filter.
	assertLog(t, logs, zapcore.WarnLevel, "ignored_type", `"order_updated" is not in events (the first of this type`)
	body = `{"id":"evt_type2","type":"order_updated"}`
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != 200 || up.count() != 0 {
		t.Fatalf("unwanted type again: %d, %d forwarded; want 200, 0", got, up.count())
	}
	assertLog(t, logs, zapcore.InfoLevel, "ignored_type", `"order_updated" is not in events`)
	if r := lastLog(t, logs).ContextMap()["reason"].(string); strings.Contains(r, "first") {
		t.Fatalf("second of a type: reason %q", r)
	}
	body = `{"id":"evt_type3","type":"order_refunded"}`
	send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	assertLog(t, logs, zapcore.WarnLevel, "ignored_type", `"order_refunded" is not in events (the first of this type`)
}

// failingStore is a store whose backend is down.
type failingStore struct{}

func (failingStore) Claim(context.Context, string, time.Duration) (dedupe.Claim, error) {
	return dedupe.Claim{}, errors.Join(dedupe.ErrUnavailable, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"))
}
func (failingStore) Commit(context.Context, dedupe.Claim, time.Duration) error { return nil }
func (failingStore) Release(context.Context, dedupe.Claim) error               { return nil }
func (failingStore) Renew(context.Context, dedupe.Claim, time.Duration) error  { return nil }

func TestStoreUnavailableFailsClosed(t *testing.T) {
	h, logs := ivyGuard(t)
	h.store = failingStore{}
	up := &upstreamStub{}
	body := `{"id":"evt_down","type":"order_updated"}`
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("store down: %d, Retry-After %q; want 503 with Retry-After", got, w.Header().Get("Retry-After"))
	}
	assertLog(t, logs, zapcore.ErrorLevel, "store_unavailable", "connection refused")
	if up.count() != 0 {
		t.Fatal("forwarded while the store is down")
	}
}

func TestRememberFor(t *testing.T) {
	h := &Handler{window: 24 * time.Hour, tolerance: 5 * time.Minute}
	if got := h.rememberFor(verify.Event{}); got != 24*time.Hour {
		t.Fatalf("untimestamped: %v", got)
	}
	ts := time.Now().Add(-time.Minute)
	got := h.rememberFor(verify.Event{Timestamp: ts})
	// until ts + tolerance + skew: about 5 minutes from now
	if got < 4*time.Minute || got > 6*time.Minute {
		t.Fatalf("timestamped: %v, want ~5m", got)
	}
	h.ReplayWindow = caddy.Duration(72 * time.Hour)
	h.window = 72 * time.Hour
	if got := h.rememberFor(verify.Event{Timestamp: ts}); got != 72*time.Hour {
		t.Fatalf("timestamped with an explicit replay_window: %v, want 72h", got)
	}
}

func TestProvisionErrorsNameTheOption(t *testing.T) {
	t.Setenv("WEBHOOK_GUARD_UNIT_SECRET", "")
	cases := []struct {
		h    Handler
		want string
	}{
		{Handler{Provider: "nope"}, "provider: unknown provider"},
		{Handler{Provider: "ivy"}, "secret: at least one is required"},
		{Handler{Provider: "ivpay", Secrets: []string{"x"}}, "api_key: at least one is required"},
		{Handler{Provider: "ivy", Secrets: []string{"{env.WEBHOOK_GUARD_UNIT_SECRET}"}}, `secret #1 "{env.WEBHOOK_GUARD_UNIT_SECRET}" resolved to an empty value`},
		{Handler{Provider: "ivy", Secrets: []string{"s3cr3t-value"}, AllowIPs: []string{"10.0.0.300"}}, "allow_ips: invalid IP address"},
		{Handler{Provider: "ivy", Secrets: []string{"s3cr3t-value"}, StoreRaw: json.RawMessage(`{"type":"etcd"}`)}, "unknown module"},
		{Handler{Provider: "ivy", Secrets: []string{"s3cr3t-value"}, StoreRaw: json.RawMessage(`{"type":"file","path":"rel/ledger.db"}`)}, `store file: path "rel/ledger.db" is relative`},
		{Handler{Provider: "ivy", Secrets: []string{"s3cr3t-value"}, Scope: "a b"}, `scope: "a b": only letters, digits`},
	}
	for _, c := range cases {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		h := c.h
		err := h.Provision(ctx)
		h.Cleanup()
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.h, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t-value") {
			t.Errorf("error contains the secret: %v", err)
		}
	}
}
