package webhookguard

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap/zapcore"
)

// cutAnswer is an upstream whose answer breaks after its status line, as
// reverse_proxy behaves when the upstream's body fails mid-way: it writes
// status and part of a body, then panics with http.ErrAbortHandler.
func cutAnswer(status int, count *int) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		*count++
		w.WriteHeader(status)
		_, _ = w.Write([]byte("partial"))
		panic(http.ErrAbortHandler)
	})
}

// serveRecovering runs one request as send does and returns the answer and
// what the handler panicked with.
func serveRecovering(t *testing.T, h *Handler, next caddyhttp.Handler, body string) (w *httptest.ResponseRecorder, p any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "http://shop.example/hooks", strings.NewReader(body))
	req.RemoteAddr = "203.0.113.9:1"
	req.Header = ivyHeaders(body)
	w = httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, &caddyhttp.Server{})
	defer func() { p = recover() }()
	_ = h.ServeHTTP(w, req, next)
	return w, nil
}

// A 2xx whose body breaks commits the event: the provider's retry is a
// duplicate, the delivery is logged and counted as forwarded with the answer
// cut, the sender gets the status and what was held, and the panic goes on
// to Caddy's server. A non-2xx answer that breaks still releases the claim.
func TestCutAnswerAfter2xxCommits(t *testing.T) {
	h, logs := ivyGuard(t)
	body := `{"id":"evt_cut","type":"order_paid"}`
	forwarded := counterValue(t, eventsTotal.WithLabelValues("ivy", outcomeForwarded))
	failed := counterValue(t, eventsTotal.WithLabelValues("ivy", outcomeUpstreamFailed))
	calls := 0
	w, p := serveRecovering(t, h, cutAnswer(http.StatusOK, &calls), body)
	if p != http.ErrAbortHandler {
		t.Fatalf("panic %v, want http.ErrAbortHandler passed on", p)
	}
	if w.Code != http.StatusOK || w.Body.String() != "partial" {
		t.Fatalf("the sender got %d %q, want the held 200 and its partial body", w.Code, w.Body.String())
	}
	assertLog(t, logs, zapcore.DebugLevel, outcomeForwarded, "upstream accepted (status 200); its answer was cut")
	if got := counterValue(t, eventsTotal.WithLabelValues("ivy", outcomeForwarded)); got != forwarded+1 {
		t.Fatalf("forwarded counted %v times, want 1", got-forwarded)
	}
	if got := counterValue(t, eventsTotal.WithLabelValues("ivy", outcomeUpstreamFailed)); got != failed {
		t.Fatalf("upstream_failed counted %v times, want 0", got-failed)
	}
	up := &upstreamStub{}
	w2, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w2, err); got != http.StatusOK || w2.Header().Get(outcomeHeader) != outcomeDuplicate || up.count() != 0 {
		t.Fatalf("the retry: %d %q, %d forwarded; want 200 duplicate, 0", got, w2.Header().Get(outcomeHeader), up.count())
	}

	body = `{"id":"evt_cut_500","type":"order_paid"}`
	if _, p := serveRecovering(t, h, cutAnswer(http.StatusInternalServerError, &calls), body); p != http.ErrAbortHandler {
		t.Fatalf("panic %v, want http.ErrAbortHandler passed on", p)
	}
	assertLog(t, logs, zapcore.WarnLevel, outcomeUpstreamFailed, "panic downstream")
	w2, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w2, err); got != http.StatusOK || up.count() != 1 {
		t.Fatalf("the retry after a cut 500: %d, %d forwarded; want 200, 1", got, up.count())
	}
	if calls != 2 {
		t.Fatalf("the cutting upstream was called %d times, want 2", calls)
	}
}

// An error returned after a 2xx status (the answer failed once under way)
// commits too: the status decides.
func TestErrorAfter2xxCommits(t *testing.T) {
	h, logs := ivyGuard(t)
	body := `{"id":"evt_err_after_2xx","type":"order_paid"}`
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusAccepted)
		return caddyhttp.Error(http.StatusBadGateway, errBroken)
	})
	send(t, h, next, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	assertLog(t, logs, zapcore.DebugLevel, outcomeForwarded, "its answer was cut")
	up := &upstreamStub{}
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK || w.Header().Get(outcomeHeader) != outcomeDuplicate || up.count() != 0 {
		t.Fatalf("the retry: %d %q, %d forwarded; want 200 duplicate, 0", got, w.Header().Get(outcomeHeader), up.count())
	}
}

var errBroken = errors.New("upstream body: connection reset by peer")

// hijackable is a writer whose connection could be taken, as Caddy's is.
type hijackable struct {
	*httptest.ResponseRecorder
	hijacked bool
}

func (h *hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.hijacked = true
	return nil, nil, errors.New("hijacked")
}

// The held response never hands the sender's connection over, although
// http.ResponseController finds the sender's writer through Unwrap.
func TestHeldResponseRefusesHijack(t *testing.T) {
	w := &hijackable{ResponseRecorder: httptest.NewRecorder()}
	held := newHeldResponse(w, nil)
	if _, _, err := http.NewResponseController(held).Hijack(); !errors.Is(err, errNoHijack) {
		t.Fatalf("Hijack through the held response: %v, want errNoHijack", err)
	}
	if w.hijacked {
		t.Fatal("the sender's connection was hijacked")
	}
}

// A verified request asking for a protocol upgrade is forwarded as a plain
// POST: without Connection, Upgrade and the headers Connection lists.
func TestUpgradeHeadersNotForwarded(t *testing.T) {
	h, _ := ivyGuard(t)
	body := `{"id":"evt_upgrade","type":"order_paid"}`
	var got http.Header
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		got = r.Header.Clone()
		w.WriteHeader(http.StatusOK)
		return nil
	})
	hdr := ivyHeaders(body)
	hdr["Connection"] = []string{"Upgrade, X-Hop-One", "x-hop-two"}
	hdr.Set("Upgrade", "websocket")
	hdr.Set("X-Hop-One", "1")
	hdr.Set("X-Hop-Two", "2")
	hdr.Set("X-Kept", "3")
	w, err := send(t, h, next, http.MethodPost, "203.0.113.9:1", hdr, body)
	if status := statusOfResult(w, err); status != http.StatusOK {
		t.Fatalf("status %d, want 200", status)
	}
	for _, name := range []string{"Connection", "Upgrade", "X-Hop-One", "X-Hop-Two"} {
		if v := got.Values(name); len(v) > 0 {
			t.Errorf("forwarded %s: %q", name, v)
		}
	}
	if got.Get("X-Kept") != "3" {
		t.Errorf("X-Kept was dropped: %v", got)
	}
}

// When reverse_proxy had an upstream answer but passed nothing on (a 101
// Switching Protocols, which it does not relay without an upgrade), the
// sender gets 502, the delivery is upstream_failed (not no_upstream), and
// the claim is released.
func TestUpstreamAnswerNotPassedOnReleases(t *testing.T) {
	h, logs := ivyGuard(t)
	body := `{"id":"evt_101","type":"order_paid"}`
	switched := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		repl.Set("http.reverse_proxy.upstream.latency", time.Millisecond)
		w.WriteHeader(http.StatusSwitchingProtocols) // not passed on: 1xx
		return nil
	})
	w, err := send(t, h, switched, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", got)
	}
	assertLog(t, logs, zapcore.WarnLevel, outcomeUpstreamFailed, "101 Switching Protocols")
	up := &upstreamStub{}
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK || up.count() != 1 {
		t.Fatalf("the retry: %d, %d forwarded; want 200, 1", got, up.count())
	}
}

// An upstream's trailers (declared, or set after the status as
// reverse_proxy copies them) never reach the sender, as headers or trailers.
func TestUpstreamTrailersDropped(t *testing.T) {
	for _, size := range []int{10, maxHeldBody + 10} { // held, and streamed past the hold
		h, _ := ivyGuard(t)
		body := fmt.Sprintf(`{"id":"evt_trailer_%d","type":"order_paid"}`, size)
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Trailer", "X-Upstream-Sum")
			w.Header().Set("X-Upstream-Head", "kept")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(strings.Repeat("a", size)))
			w.Header().Set("X-Upstream-Sum", "abc")
			w.Header().Set(http.TrailerPrefix+"X-Upstream-Late", "def")
			return nil
		})
		w, err := send(t, h, next, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
		if got := statusOfResult(w, err); got != http.StatusOK || w.Body.Len() != size {
			t.Fatalf("%d bytes: status %d with %d bytes, want 200 with all", size, got, w.Body.Len())
		}
		res := w.Result()
		if res.Header.Get("X-Upstream-Head") != "kept" {
			t.Errorf("%d bytes: a header set before the status was lost: %v", size, res.Header)
		}
		for _, name := range []string{"Trailer", "X-Upstream-Sum", "X-Upstream-Late", http.TrailerPrefix + "X-Upstream-Late"} {
			if v := res.Header.Values(name); len(v) > 0 {
				t.Errorf("%d bytes: the sender got header %s: %q", size, name, v)
			}
		}
		if len(res.Trailer) > 0 {
			t.Errorf("%d bytes: the sender got trailers %v", size, res.Trailer)
		}
	}
}

// A verified request carrying the spool's Webhook-Guard-Event-Id (a spool's
// `to` pointing back at a guard) is logged at ERROR, and handled as usual;
// an unverified one writes no ERROR line.
func TestSpoolLoopLogged(t *testing.T) {
	h, logs := ivyGuard(t)
	up := &upstreamStub{}
	body := `{"id":"evt_loop","type":"order_paid"}`
	hdr := ivyHeaders(body)
	hdr.Set("Webhook-Guard-Event-Id", "evt_loop")
	hdr.Set("Webhook-Guard-Attempt", "1")
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", hdr, body)
	if got := statusOfResult(w, err); got != http.StatusOK || up.count() != 1 {
		t.Fatalf("status %d, %d forwarded; want 200, 1 (handled as usual)", got, up.count())
	}
	loops := logs.FilterLevelExact(zapcore.ErrorLevel).FilterMessageSnippet("carrying Webhook-Guard-Event-Id").All()
	if len(loops) != 1 {
		t.Fatalf("%d loop ERROR lines, want 1: %v", len(loops), logs.All())
	}
	if f := loops[0].ContextMap(); f["event_id"] != "evt_loop" || f["provider"] != "ivy" || f["client_ip"] != "203.0.113.9" {
		t.Fatalf("loop line fields %v", f)
	}
	assertLog(t, logs, zapcore.DebugLevel, outcomeForwarded, "upstream accepted")

	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", hdr, body)
	if got := statusOfResult(w, err); got != http.StatusOK || w.Header().Get(outcomeHeader) != outcomeDuplicate {
		t.Fatalf("the copy: %d %q, want 200 duplicate", got, w.Header().Get(outcomeHeader))
	}
	if n := logs.FilterMessageSnippet("carrying Webhook-Guard-Event-Id").Len(); n != 2 {
		t.Fatalf("%d loop lines after the copy, want 2", n)
	}

	forged := http.Header{"X-Ivy-Signature": {ivySign(body + "x")}, "Webhook-Guard-Event-Id": {"evt_loop"}}
	send(t, h, up, http.MethodPost, "203.0.113.9:1", forged, body)
	if n := logs.FilterMessageSnippet("carrying Webhook-Guard-Event-Id").Len(); n != 2 {
		t.Fatalf("an unverified request wrote a loop line (%d in all)", n)
	}
}

// FuzzDropHopHeaders: whatever Connection lists (the sender's text), the
// forwarded headers keep no Connection, no Upgrade and none of the listed
// names, and every other header.
func FuzzDropHopHeaders(f *testing.F) {
	f.Add("Upgrade, X-Hop", "websocket")
	f.Add(" ,,keep-alive ,\tX-A", "h2c")
	f.Add("X-Ivy-Signature", "")
	f.Add("0\v", "0")
	f.Fuzz(func(t *testing.T, connection, upgrade string) {
		h := http.Header{}
		h.Set("Connection", connection)
		h.Set("Upgrade", upgrade)
		h.Set("X-Kept-Header", "kept")
		listed := map[string]bool{}
		for name := range strings.SplitSeq(connection, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Add(name, "listed")
				listed[http.CanonicalHeaderKey(name)] = true
			}
		}
		dropHopHeaders(h)
		for _, name := range []string{"Connection", "Upgrade"} {
			if len(h.Values(name)) > 0 {
				t.Fatalf("%s kept: %v", name, h)
			}
		}
		for name := range listed {
			if len(h.Values(name)) > 0 {
				t.Fatalf("listed %q kept: %v", name, h)
			}
		}
		if !listed["X-Kept-Header"] && h.Get("X-Kept-Header") != "kept" {
			t.Fatalf("an unlisted header was dropped: %v", h)
		}
	})
}
