package webhookguard

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/internal/spoolapi"
	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
	"github.com/hookguard/caddy-webhook-guard/spool"
	"github.com/hookguard/caddy-webhook-guard/verify"
)

// spoolDelivery is one request the backend of a unit test received.
type spoolDelivery struct {
	method, path, query string
	header              http.Header
	body                string
}

// recordingBackend answers 200 and hands each request to the channel.
func recordingBackend(got chan<- spoolDelivery) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- spoolDelivery{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)}
		w.WriteHeader(http.StatusOK)
	})
}

func waitDelivery(t *testing.T, got <-chan spoolDelivery) spoolDelivery {
	t.Helper()
	select {
	case d := <-got:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
		return spoolDelivery{}
	}
}

// spoolGuard provisions an ivy handler with a spool to `to` on a ledger of
// its own in dir.
func spoolGuardIn(t *testing.T, dir string, spool *SpoolConfig) *Handler {
	t.Helper()
	store, _ := json.Marshal(map[string]any{"type": "file", "path": filepath.Join(dir, "ledger.db")})
	h, _ := guard(t, &Handler{
		Provider: "ivy",
		Secrets:  []string{testIvySecret},
		AllowIPs: []string{"any"},
		StoreRaw: store,
		Spool:    spool,
	})
	return h
}

// The spool refuses a store that is neither the ledger nor Redis, and a
// missing or bad `to`, at provisioning (JSON configs), naming why.
func TestSpoolProvisionErrors(t *testing.T) {
	to := "http://127.0.0.1:9"
	for _, c := range []struct {
		h    Handler
		want string
	}{
		{Handler{Provider: "ivy", Secrets: []string{"s"}, StoreRaw: memoryStore(7), Spool: &SpoolConfig{To: to}}, "spool needs the file store (the default ledger) or store redis (a spool shared by several Caddy instances), not store memory"},
		{Handler{Provider: "ivy", Secrets: []string{"s"}, DedupeOff: true, Spool: &SpoolConfig{To: to}}, "not dedupe off"},
		{Handler{Provider: "ivpay", APIKeys: []string{"k"}, ForwardCredentials: true, Spool: &SpoolConfig{To: to}}, "forward_credentials: the spool never stores a credential"},
		{Handler{Provider: "ivy", Secrets: []string{"s"}, StoreRaw: json.RawMessage(`{"type":"file","path":"` + filepath.Join(t.TempDir(), "l.db") + `"}`), Spool: &SpoolConfig{}}, "spool: to is required"},
		{Handler{Provider: "ivy", Secrets: []string{"s"}, StoreRaw: json.RawMessage(`{"type":"file","path":"` + filepath.Join(t.TempDir(), "l.db") + `"}`), Spool: &SpoolConfig{To: "unix/relative.sock"}}, "want unix//absolute/path.sock"},
	} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		h := c.h
		err := h.Provision(ctx)
		h.Cleanup()
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.h, err, c.want)
		}
	}
}

// Stored headers leave out hop-by-hop headers (those named by Connection
// too) and credentials: Authorization, Cookie, the provider's static key.
func TestSpoolHeaderDropsCredentials(t *testing.T) {
	scheme, _ := verify.Lookup("ivpay")
	h := &Handler{Provider: "ivpay", scheme: scheme}
	r := httptest.NewRequest(http.MethodPost, "/hooks", nil)
	for name, v := range map[string]string{
		"X-Api-Key": "key", "Authorization": "Bearer t", "Proxy-Authorization": "Basic x", "Cookie": "s=1",
		"Connection": "close, X-Hop", "X-Hop": "1", "Keep-Alive": "timeout=5", "Te": "trailers",
		"Transfer-Encoding": "chunked", "Upgrade": "h2c", "Expect": "100-continue",
		"Content-Type": "application/json", "X-Request-Id": "abc", "User-Agent": "ivpay/1.0",
	} {
		r.Header.Set(name, v)
	}
	got := h.spoolHeader(r)
	want := map[string]bool{"Content-Type": true, "X-Request-Id": true, "User-Agent": true}
	for name := range got {
		if !want[name] {
			t.Errorf("stored header %s", name)
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("header %s not stored", name)
		}
	}
}

// An event spooled by the handler is answered 200 spooled and delivered
// through a unix socket (reverse_proxy's dial info), with the exact body,
// the original method, path, query and headers (credentials left out),
// and the spool's headers; a copy is a duplicate.
func TestSpoolDeliversToUnixSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "backend.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan spoolDelivery, 10)
	srv := &http.Server{Handler: recordingBackend(got)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	h := spoolGuardIn(t, dir, &SpoolConfig{To: "unix/" + sock})
	body := `{"id":"evt_unix","type":"payment.succeeded"}`
	hdr := ivyHeaders(body)
	hdr.Set("Authorization", "Bearer secret-token")
	hdr.Set("Content-Type", "application/json")
	w, err := send(t, h, nil, http.MethodPost, "192.0.2.1:1234", hdr, body)
	if err != nil || w.Code != http.StatusOK || w.Header().Get(outcomeHeader) != outcomeSpooled {
		t.Fatalf("ingest: %d %v %v", w.Code, w.Header(), err)
	}
	d := waitDelivery(t, got)
	if d.method != http.MethodPost || d.path != "/hooks" || d.body != body {
		t.Fatalf("delivery %+v", d)
	}
	if d.header.Get(spoolapi.EventIDHeader) != "evt_unix" || d.header.Get(spoolapi.AttemptHeader) != "1" ||
		d.header.Get("Content-Type") != "application/json" || d.header.Get("X-Ivy-Signature") != hdr.Get("X-Ivy-Signature") {
		t.Fatalf("delivery headers %v", d.header)
	}
	if d.header.Get("Authorization") != "" {
		t.Fatal("the Authorization header was stored and delivered")
	}
	w, err = send(t, h, nil, http.MethodPost, "192.0.2.1:1234", hdr, body)
	if err != nil || w.Code != http.StatusOK || w.Header().Get(outcomeHeader) != outcomeDuplicate {
		t.Fatalf("copy: %d %v %v", w.Code, w.Header(), err)
	}
}

// Over https, with the transport given as in reverse_proxy, to a `to`
// with a path: that path and query are used.
func TestSpoolDeliversOverHTTPS(t *testing.T) {
	got := make(chan spoolDelivery, 10)
	srv := httptest.NewTLSServer(recordingBackend(got))
	t.Cleanup(srv.Close)
	h := spoolGuardIn(t, t.TempDir(), &SpoolConfig{
		To:           srv.URL + "/in?src=guard",
		TransportRaw: json.RawMessage(`{"protocol":"http","tls":{"insecure_skip_verify":true}}`),
	})
	body := `{"id":"evt_tls","type":"payment.succeeded"}`
	w, err := send(t, h, nil, http.MethodPost, "192.0.2.1:1234", ivyHeaders(body), body)
	if err != nil || w.Header().Get(outcomeHeader) != outcomeSpooled {
		t.Fatalf("ingest: %d %v", w.Code, err)
	}
	d := waitDelivery(t, got)
	if d.path != "/in" || d.query != "src=guard" || d.body != body {
		t.Fatalf("delivery %+v", d)
	}
}

// A reload provisions the new handler before cleaning up the old: the
// old one's cleanup leaves the new target in place, and events keep
// flowing through the same worker.
func TestSpoolTargetSurvivesReload(t *testing.T) {
	dir := t.TempDir()
	got := make(chan spoolDelivery, 10)
	srv := httptest.NewServer(recordingBackend(got))
	t.Cleanup(srv.Close)
	old := spoolGuardIn(t, dir, &SpoolConfig{To: srv.URL})
	h := spoolGuardIn(t, dir, &SpoolConfig{To: srv.URL + "/new"})
	if old.spool.sp != h.spool.sp {
		t.Fatal("two spools for one ledger")
	}
	old.Cleanup()
	body := `{"id":"evt_reload","type":"payment.succeeded"}`
	if w, err := send(t, h, nil, http.MethodPost, "192.0.2.1:1234", ivyHeaders(body), body); err != nil || w.Header().Get(outcomeHeader) != outcomeSpooled {
		t.Fatalf("ingest: %d %v", w.Code, err)
	}
	if d := waitDelivery(t, got); d.path != "/new" || d.body != body {
		t.Fatalf("delivery %+v, want it through the new handler's target", d)
	}
}

// clockOffset swaps the package clock for real time plus an offset the test
// moves, for the rest of the test.
func clockOffset(t *testing.T) *atomic.Int64 {
	t.Helper()
	offset := new(atomic.Int64)
	was := now
	now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	t.Cleanup(func() { now = was })
	return offset
}

// A spooled event delivered ten minutes after it arrived carries a fresh
// sign_upstream signature, made at the attempt: the official
// standardwebhooks library accepts it as of the delivery time, while the
// provider's own Stripe signature, made at the start, is stale by then and
// refused by the stripe library. Webhook-Guard-Event-Id is header-safe.
func TestSpoolSignsUpstreamAtDelivery(t *testing.T) {
	offset := clockOffset(t)
	var (
		mu      sync.Mutex
		answer  = http.StatusServiceUnavailable
		arrived = make(chan spoolDelivery, 10)
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		status := answer // read before the test hears of the arrival
		mu.Unlock()
		arrived <- spoolDelivery{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	stripeSecret := "whsec_" + strings.Repeat("k", 24)
	store, _ := json.Marshal(map[string]any{"type": "file", "path": filepath.Join(t.TempDir(), "ledger.db")})
	h, _ := guard(t, &Handler{
		Provider: "stripe", Secrets: []string{stripeSecret}, AllowIPs: []string{"any"}, StoreRaw: store,
		SignUpstream: []string{upstreamSecret},
		Spool:        &SpoolConfig{To: srv.URL, Backoff: []caddy.Duration{caddy.Duration(time.Second)}},
	})
	id := "evt_late\x01"
	body := `{"id":"evt_late\u0001","object":"event","type":"payment_intent.succeeded"}`
	start := time.Now()
	hdr := testkit.NodeSign(t, testkit.LibStripe, stripeSecret, []byte(body), id, start.Unix())
	if w, err := send(t, h, nil, http.MethodPost, "192.0.2.1:1234", hdr, body); err != nil || w.Header().Get(spoolapi.OutcomeHeader) != outcomeSpooled {
		t.Fatalf("ingest: %d %v", w.Code, err)
	}
	first := waitDelivery(t, arrived) // refused: 503
	if first.header.Get(spoolapi.EventIDHeader) != verify.HeaderEventID(id) || first.header.Get(spoolapi.EventIDHeader) == id {
		t.Fatalf("Webhook-Guard-Event-Id %q, want the header-safe form %q", first.header.Get(spoolapi.EventIDHeader), verify.HeaderEventID(id))
	}
	mu.Lock()
	answer = http.StatusOK
	mu.Unlock()
	offset.Store(int64(10 * time.Minute))
	h.spool.sp.Wake()
	late := waitDelivery(t, arrived)
	at := start.Add(10 * time.Minute).Unix()
	if ts, _ := strconv.ParseInt(late.header.Get("Webhook-Timestamp"), 10, 64); ts < at {
		t.Fatalf("webhook-timestamp %d, want the delivery time, at least %d", ts, at)
	}
	if err := testkit.NodeVerify(t, testkit.LibStandardWebhooks, upstreamSecret, late.header, []byte(late.body), at); err != nil {
		t.Errorf("the standardwebhooks library refuses the late delivery: %v", err)
	}
	if err := testkit.NodeVerify(t, testkit.LibStripe, stripeSecret, late.header, []byte(late.body), at); err == nil {
		t.Error("the stripe library accepts the provider's 10-minute-old signature: the test shows nothing")
	}
	if late.body != body || late.header.Get(spoolapi.AttemptHeader) != "2" {
		t.Errorf("late delivery: attempt %s, body %q", late.header.Get(spoolapi.AttemptHeader), late.body)
	}
}

// The spool sends the client IP Caddy verified, and the original host and
// scheme, as reverse_proxy does; what the sender claimed of its path
// (X-Forwarded-*, Forwarded, X-Real-Ip) is neither stored nor sent.
func TestSpoolForwardingHeaders(t *testing.T) {
	got := make(chan spoolDelivery, 10)
	srv := httptest.NewServer(recordingBackend(got))
	t.Cleanup(srv.Close)
	h := spoolGuardIn(t, t.TempDir(), &SpoolConfig{To: srv.URL})
	body := `{"id":"evt_fwd","type":"payment.succeeded"}`
	hdr := ivyHeaders(body)
	for name, v := range map[string]string{
		"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "gopher",
		"Forwarded": "for=6.6.6.6", "X-Real-Ip": "6.6.6.6",
	} {
		hdr.Set(name, v)
	}
	if w, err := send(t, h, nil, http.MethodPost, "192.0.2.1:1234", hdr, body); err != nil || w.Header().Get(spoolapi.OutcomeHeader) != outcomeSpooled {
		t.Fatalf("ingest: %d %v", w.Code, err)
	}
	d := waitDelivery(t, got)
	if v := d.header.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "192.0.2.1" {
		t.Errorf("X-Forwarded-For %q, want the verified client IP alone", v)
	}
	if d.header.Get("X-Forwarded-Host") != "shop.example" || d.header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-Host %q, -Proto %q, want the original request's", d.header.Get("X-Forwarded-Host"), d.header.Get("X-Forwarded-Proto"))
	}
	if d.header.Get("Forwarded") != "" || d.header.Get("X-Real-Ip") != "" {
		t.Errorf("the sender's Forwarded %q / X-Real-Ip %q reached the backend", d.header.Get("Forwarded"), d.header.Get("X-Real-Ip"))
	}
}

// A backend that is itself a guard (a `to` pointing back at a guard)
// answers a redelivery 200 duplicate: that is a failed attempt, not a
// delivery, and the error says why.
func TestSpoolGuardAnswerIsNotADelivery(t *testing.T) {
	got := make(chan spoolDelivery, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- spoolDelivery{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)}
		w.Header().Set(spoolapi.OutcomeHeader, "duplicate")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	h := spoolGuardIn(t, t.TempDir(), &SpoolConfig{To: srv.URL, Backoff: []caddy.Duration{caddy.Duration(time.Hour)}})
	body := `{"id":"evt_loop","type":"payment.succeeded"}`
	if w, err := send(t, h, nil, http.MethodPost, "192.0.2.1:1234", ivyHeaders(body), body); err != nil || w.Header().Get(spoolapi.OutcomeHeader) != outcomeSpooled {
		t.Fatalf("ingest: %d %v", w.Code, err)
	}
	waitDelivery(t, got)
	var rec spool.Record
	waitFor(t, "the attempt recorded", func() bool {
		recs, err := h.spool.sp.List(context.Background(), spool.Filter{}, spool.Page{})
		if err != nil || len(recs) != 1 {
			return false
		}
		rec = recs[0]
		return rec.Attempts == 1
	})
	if rec.State != spool.Pending || !strings.Contains(rec.LastError, "answered 200 duplicate") {
		t.Fatalf("after a guard's duplicate answer: %+v, want pending with the reason", rec)
	}
}

// waitFor polls cond until it holds, for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A spool in store redis needs a Redis that keeps every acknowledged
// event: settings that would lose one fail the load, naming the setting
// and the fix; a Redis that cannot be reached now does not (events are
// refused until it answers).
func TestSpoolRedisStoreChecks(t *testing.T) {
	for _, c := range []struct {
		name string
		o    *testkit.RedisOptions
		want string
	}{
		{"appendonly no", &testkit.RedisOptions{}, "cannot hold a spool: appendonly is no: a Redis restart would lose every spooled event not yet delivered; set appendonly yes"},
		{"everysec on 7.0", &testkit.RedisOptions{AppendFsync: "everysec"}, "appendfsync is everysec on a Redis without WAITAOF (before 7.2)"},
		{"allkeys-lru", &testkit.RedisOptions{AppendFsync: "always", Args: []string{"--maxmemory-policy", "allkeys-lru"}}, "maxmemory-policy is allkeys-lru"},
		{"always on 7.0", &testkit.RedisOptions{AppendFsync: "always"}, ""},
		{"unreachable", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			url := "redis://127.0.0.1:1/0"
			if c.o != nil {
				url = testkit.StartRedisWith(t, *c.o).URL()
			}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			h := Handler{Provider: "ivy", Secrets: []string{"s"}, StoreRaw: json.RawMessage(`{"type":"redis","url":"` + url + `","prefix":"` + c.name + `:"}`),
				Spool: &SpoolConfig{To: "http://127.0.0.1:9"}}
			err := h.Provision(ctx)
			defer h.Cleanup()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Provision: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Provision: %v, want %q", err, c.want)
			}
		})
	}
}

// Two handlers of one configuration that share a spool target (one
// provider, scope and `to`, no `name`) but not its options fail the load
// naming the conflict: otherwise the last one provisioned would deliver the
// events of both with its own max_attempts, timeout, sign_upstream, ...
// The same options, or a name each, load; so does a new configuration (a
// reload) with other options.
func TestSpoolTargetOneSetOfOptions(t *testing.T) {
	dir := t.TempDir()
	store, _ := json.Marshal(map[string]any{"type": "file", "path": filepath.Join(dir, "ledger.db")})
	handler := func(sc SpoolConfig) *Handler {
		return &Handler{Provider: "ivy", Secrets: []string{testIvySecret}, AllowIPs: []string{"any"}, StoreRaw: store, Spool: &sc}
	}
	to := "http://127.0.0.1:9/orders"
	provisionBoth := func(a, b SpoolConfig) error {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		first, second := handler(a), handler(b)
		if err := first.Provision(ctx); err != nil {
			t.Fatalf("the first handler: %v", err)
		}
		defer first.Cleanup()
		err := second.Provision(ctx)
		if err == nil {
			second.Cleanup()
		}
		return err
	}
	err := provisionBoth(SpoolConfig{To: to, MaxAttempts: 3}, SpoolConfig{To: to, MaxAttempts: 10})
	if err == nil || !strings.Contains(err.Error(), "also spools to "+to) || !strings.Contains(err.Error(), "`name`") {
		t.Fatalf("two option sets for one target: %v, want the load refused naming the target and `name`", err)
	}
	for what, pair := range map[string][2]SpoolConfig{
		"the same options": {{To: to, MaxAttempts: 3}, {To: to, MaxAttempts: 3}},
		"a name each":      {{To: to, Name: "a", MaxAttempts: 3}, {To: to, Name: "b", MaxAttempts: 10}},
		"another to":       {{To: to, MaxAttempts: 3}, {To: to + "/2", MaxAttempts: 10}},
	} {
		if err := provisionBoth(pair[0], pair[1]); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	// A reload is a new configuration: other options than the running one's load.
	old := spoolGuardIn(t, dir, &SpoolConfig{To: to, MaxAttempts: 3})
	h := spoolGuardIn(t, dir, &SpoolConfig{To: to, MaxAttempts: 10})
	old.Cleanup()
	if h.spool == nil {
		t.Fatal("the reloaded handler has no spool")
	}
}

// A second copy of an event still pending in the spool is a duplicate
// "already accepted" (not "already delivered": the backend may not have it
// yet). And a spool block without max_attempts is bounded by max_age alone
// (72h), not by a count of attempts.
func TestSpoolDuplicateAlreadyAccepted(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable) // the event stays pending
	}))
	t.Cleanup(backend.Close)
	store, _ := json.Marshal(map[string]any{"type": "file", "path": filepath.Join(t.TempDir(), "ledger.db")})
	h, logs := guard(t, &Handler{Provider: "ivy", Secrets: []string{testIvySecret}, AllowIPs: []string{"any"}, StoreRaw: store,
		Spool: &SpoolConfig{To: backend.URL}})
	if got := h.spool.target; got.MaxAttempts != 0 || got.MaxAge != DefaultSpoolMaxAge {
		t.Fatalf("default bounds: max_attempts %d, max_age %v; want unbounded attempts and %v", got.MaxAttempts, got.MaxAge, DefaultSpoolMaxAge)
	}
	body := `{"id":"evt_accepted_twice","type":"payment.succeeded"}`
	for i, want := range []string{outcomeSpooled, outcomeDuplicate} {
		w, err := send(t, h, nil, http.MethodPost, "192.0.2.1:1234", ivyHeaders(body), body)
		if err != nil || w.Code != http.StatusOK || w.Header().Get(outcomeHeader) != want {
			t.Fatalf("copy %d: %d %q %v, want 200 %s", i+1, w.Code, w.Header().Get(outcomeHeader), err, want)
		}
	}
	assertLog(t, logs, zapcore.InfoLevel, outcomeDuplicate, "already accepted")
}

// An IVPAY event delivered from the spool, then forgotten through the admin
// API by its id as the logs show it ("<payment_id>/<status>"), is new again:
// the provider's manual resend is spooled and delivered a second time. Before
// the forget the resend is a duplicate.
func TestSpoolForgetThenResend(t *testing.T) {
	got := make(chan spoolDelivery, 10)
	backend := httptest.NewServer(recordingBackend(got))
	t.Cleanup(backend.Close)
	store, _ := json.Marshal(map[string]any{"type": "file", "path": filepath.Join(t.TempDir(), "ledger.db")})
	h, _ := guard(t, &Handler{Provider: "ivpay", APIKeys: []string{testIVPAYKey}, AllowIPs: []string{"any"}, StoreRaw: store,
		Spool: &SpoolConfig{To: backend.URL}})
	body := `{"payment_id":"pay_forget_1","status":"PAID"}`
	resend := func(want string) {
		t.Helper()
		w, err := send(t, h, nil, http.MethodPost, "192.0.2.1:1234", http.Header{"X-Api-Key": {testIVPAYKey}}, body)
		if err != nil || w.Code != http.StatusOK || w.Header().Get(outcomeHeader) != want {
			t.Fatalf("%d %q %v, want 200 %s", w.Code, w.Header().Get(outcomeHeader), err, want)
		}
	}
	resend(outcomeSpooled)
	if d := waitDelivery(t, got); d.body != body || d.header.Get(spoolapi.EventIDHeader) != "pay_forget_1/PAID" {
		t.Fatalf("first delivery %+v", d)
	}
	waitFor(t, "the delivery recorded", func() bool {
		c, err := h.spool.sp.Counts(context.Background())
		return err == nil && c["ivpay"].Pending == 0
	})
	resend(outcomeDuplicate)

	core, _ := observer.New(zapcore.DebugLevel)
	admin := &adminSpool{logger: zap.New(core), spools: func() []*spool.Spool { return []*spool.Spool{h.spool.sp} }}
	srv := httptest.NewServer(serveAdminRoutes(admin.Routes()))
	t.Cleanup(srv.Close)
	resp, err := http.Post(srv.URL+"/webhook_guard/spool/forget?provider=ivpay&event_id="+url.QueryEscape("pay_forget_1/PAID"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(answer), `"forgotten":true`) {
		t.Fatalf("forget: %d %s", resp.StatusCode, answer)
	}
	resend(outcomeSpooled)
	if d := waitDelivery(t, got); d.body != body {
		t.Fatalf("second delivery %+v", d)
	}
	select {
	case d := <-got:
		t.Fatalf("a third delivery: %+v", d)
	default:
	}
}

// A refused attempt keeps the first 512 bytes of the backend's real answer
// (read from the connection, not more) in the event's last_error.
func TestSpoolKeepsTheStartOfTheAnswer(t *testing.T) {
	answer := strings.Repeat("A", spool.MaxAnswer) + "NOT KEPT"
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		io.WriteString(w, answer)
	}))
	t.Cleanup(backend.Close)
	h := spoolGuardIn(t, t.TempDir(), &SpoolConfig{To: backend.URL, MaxAttempts: 1})
	body := `{"id":"evt_answer","type":"payment.succeeded"}`
	if w, err := send(t, h, nil, http.MethodPost, "192.0.2.1:1234", ivyHeaders(body), body); err != nil || w.Header().Get(outcomeHeader) != outcomeSpooled {
		t.Fatalf("ingest: %d %v", w.Code, err)
	}
	var rec spool.Record
	waitFor(t, "the event dead after its one attempt", func() bool {
		got, ok, err := h.spool.sp.Get(context.Background(), 1)
		rec = got
		return err == nil && ok && got.State == spool.Dead
	})
	if want := "status 422: " + answer[:spool.MaxAnswer]; rec.LastError != want {
		t.Fatalf("last_error %q (%d bytes), want the status and the first %d bytes of the answer", rec.LastError, len(rec.LastError), spool.MaxAnswer)
	}
}

// A spool is named after its store, the same across reloads, without any
// secret: a ledger by its path, a Redis by its server, database and prefix.
func TestSpoolName(t *testing.T) {
	dir := t.TempDir()
	h := spoolGuardIn(t, dir, &SpoolConfig{To: "http://127.0.0.1:9"})
	if got, want := h.spool.sp.Name(), "ledger "+filepath.Join(dir, "ledger.db"); got != want {
		t.Errorf("ledger spool named %q, want %q", got, want)
	}
	for _, tc := range []struct {
		cfg    dedupe.RedisConfig
		prefix string
		want   string
	}{
		{dedupe.RedisConfig{URL: "redis://user:" + adminTestSecret + "@127.0.0.1:6399/3?client_name=x"}, "", "redis 127.0.0.1:6399 db 3 prefix webhook_guard:"},
		{dedupe.RedisConfig{URL: "rediss://:" + adminTestSecret + "@/2", MasterName: "main", SentinelAddrs: []string{"10.0.0.1:26379", "10.0.0.2:26379"},
			SentinelPassword: adminTestSecret}, "site_b:", "redis sentinel master main (10.0.0.1:26379, 10.0.0.2:26379) db 2 prefix site_b:"},
		{dedupe.RedisConfig{ClusterAddrs: []string{"10.0.0.1:7000"}}, "x:", "redis cluster (10.0.0.1:7000) db 0 prefix x:"},
	} {
		tc.cfg.Prefix = tc.prefix
		r, err := dedupe.NewRedis(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		if got := redisStoreName(r, tc.cfg.URL, tc.prefix); got != tc.want {
			t.Errorf("redis spool named %q, want %q", got, tc.want)
		}
	}
}
