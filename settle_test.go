package webhookguard

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zapcore"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// stallingStore wraps a store whose first Commit fails, as a Redis or a
// disk that stalls would: at once, or (stall set) when the commit's context
// ends; later commits wait for hold (when set) and their outcome is sent on
// landed.
type stallingStore struct {
	dedupe.Store
	mu      sync.Mutex
	commits int
	renewed int
	stall   chan struct{}
	hold    chan struct{}
	landed  chan error
}

func (s *stallingStore) Commit(ctx context.Context, c dedupe.Claim, window time.Duration) error {
	s.mu.Lock()
	s.commits++
	first := s.commits == 1
	s.mu.Unlock()
	if first {
		if s.stall != nil {
			select {
			case <-ctx.Done():
				return errors.Join(dedupe.ErrUnavailable, ctx.Err())
			case <-s.stall:
			}
		}
		return errors.Join(dedupe.ErrUnavailable, errors.New("i/o timeout"))
	}
	if s.hold != nil {
		<-s.hold
	}
	err := s.Store.Commit(ctx, c, window)
	s.landed <- err
	return err
}

func (s *stallingStore) Renew(ctx context.Context, c dedupe.Claim, lease time.Duration) error {
	s.mu.Lock()
	s.renewed++
	s.mu.Unlock()
	return s.Store.Renew(ctx, c, lease)
}

// A commit that fails after the upstream took the event: the sender gets
// the upstream's 200 (the upstream has the event), logged at ERROR as
// unrecorded; the claim is kept, so a copy is answered 409 and not
// forwarded; the commit is retried in the background until it lands, and a
// copy is then a duplicate.
func TestFailedCommitKeepsClaim(t *testing.T) {
	h, logs := ivyGuard(t)
	st := &stallingStore{Store: h.store, landed: make(chan error, 1), hold: make(chan struct{})}
	h.store = st
	up := &upstreamStub{}
	body := `{"id":"evt_stall","type":"order_paid"}`
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK || up.count() != 1 {
		t.Fatalf("delivery: %d, %d forwarded; want the upstream's 200, 1", got, up.count())
	}
	assertLog(t, logs, zapcore.ErrorLevel, outcomeUnrecorded, "could not record")
	if n := logs.FilterMessageSnippet("event delivered but not remembered").Len(); n != 1 {
		t.Fatalf("%d 'not remembered' lines, want 1", n)
	}
	// The claim is held while the commit is retried: a copy is refused.
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusConflict || up.count() != 1 {
		t.Fatalf("copy while the commit is retried: %d, %d forwarded; want 409, 1", got, up.count())
	}
	close(st.hold)
	if err := <-st.landed; err != nil {
		t.Fatalf("the retried commit failed: %v", err)
	}
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK || w.Header().Get(outcomeHeader) != outcomeDuplicate || up.count() != 1 {
		t.Fatalf("copy after the retry: %d %q, %d forwarded; want 200 duplicate, 1", got, w.Header().Get(outcomeHeader), up.count())
	}
}

// A 2xx answer larger than the hold is committed before its first byte is
// sent; when that commit stalls past the bound nothing of it is sent: 503.
func TestStalledEarlyCommitSendsNothing(t *testing.T) {
	h, _ := ivyGuard(t)
	h.commitWait = 50 * time.Millisecond // the store stalls far longer
	st := &stallingStore{Store: h.store, landed: make(chan error, 1), stall: make(chan struct{}), hold: make(chan struct{})}
	defer close(st.hold)
	h.store = st
	big := strings.Repeat("x", maxHeldBody+1)
	up := handlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusOK)
		_, err := io.WriteString(w, big)
		return err
	})
	body := `{"id":"evt_big","type":"order_paid"}`
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", got)
	}
	if w.Body.Len() != 0 || w.Header().Get("Content-Type") != "" {
		t.Fatalf("the upstream's answer was sent: %d bytes, Content-Type %q", w.Body.Len(), w.Header().Get("Content-Type"))
	}
}

// handlerFunc is a caddyhttp.Handler from a function.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (f handlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) error { return f(w, r) }

// The wait for a commit is bounded: a store that stalls gets the sender a
// 503 (outcome unrecorded) instead of holding it, the claim is kept (a copy
// is answered 409), and the commit retried lands later.
func TestCommitWaitBounded(t *testing.T) {
	h, logs := ivyGuard(t)
	h.commitWait = 50 * time.Millisecond // the store stalls far longer
	st := &stallingStore{Store: h.store, landed: make(chan error, 1), stall: make(chan struct{}), hold: make(chan struct{})}
	h.store = st
	up := &upstreamStub{}
	body := `{"id":"evt_slow_disk","type":"order_paid"}`
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusServiceUnavailable || up.count() != 1 {
		t.Fatalf("delivery: %d, %d forwarded; want 503, 1", got, up.count())
	}
	assertLog(t, logs, zapcore.ErrorLevel, outcomeUnrecorded, "deadline exceeded")
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusConflict || up.count() != 1 {
		t.Fatalf("copy while the commit stalls: %d, %d forwarded; want 409, 1", got, up.count())
	}
	close(st.hold)
	if err := <-st.landed; err != nil {
		t.Fatal(err)
	}
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK || w.Header().Get(outcomeHeader) != outcomeDuplicate {
		t.Fatalf("copy after the commit landed: %d %q; want 200 duplicate", got, w.Header().Get(outcomeHeader))
	}
}

// renewalDuringCommit is a store whose leases expire (as Redis'), whose
// Commit waits to see the lease renewed after it began: the guard must keep
// renewing until the commit returns.
type renewalDuringCommit struct {
	dedupe.Store
	committing atomic.Bool
	renewed    chan struct{}
}

func (s *renewalDuringCommit) Renew(ctx context.Context, c dedupe.Claim, lease time.Duration) error {
	if s.committing.Load() {
		select {
		case s.renewed <- struct{}{}:
		default:
		}
	}
	return s.Store.Renew(ctx, c, lease)
}

func (s *renewalDuringCommit) Commit(ctx context.Context, c dedupe.Claim, window time.Duration) error {
	s.committing.Store(true)
	select {
	case <-s.renewed:
	case <-ctx.Done():
		return errors.Join(dedupe.ErrUnavailable, errors.New("test: no renewal while the commit ran"))
	case <-time.After(5 * time.Second): // a bound on a hang, not a timing check: renewals come every 333 ms
		return errors.Join(dedupe.ErrUnavailable, errors.New("test: no renewal while the commit ran"))
	}
	return s.Store.Commit(ctx, c, window)
}

// The lease is renewed until the commit returns, not only while the
// upstream call runs: a slow commit must not let the lease lapse.
func TestRenewalUntilCommitReturns(t *testing.T) {
	h, _ := ivyGuard(t)
	h.lease = time.Second // renewed every third of a second
	st := &renewalDuringCommit{Store: h.store, renewed: make(chan struct{}, 1)}
	h.store = st
	up := &upstreamStub{}
	body := `{"id":"evt_slow_commit","type":"order_paid"}`
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK {
		t.Fatalf("status %d, want 200 (the lease renewed while the commit ran)", got)
	}
}

// A store that says its writes fail (a full disk) gets a new event refused
// 503 store_full before it is forwarded, and its claim released; a
// duplicate is still answered from what the store remembers.
func TestUnwritableStoreRefusesNewEvents(t *testing.T) {
	h, logs := ivyGuard(t)
	ust := &unwritableStore{Store: h.store}
	h.store = ust
	up := &upstreamStub{}
	old := `{"id":"evt_before","type":"order_paid"}`
	if w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(old), old); statusOfResult(w, err) != http.StatusOK {
		t.Fatal("first event not forwarded")
	}
	ust.err.Store(&errFullDisk)
	body := `{"id":"evt_full","type":"order_paid"}`
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusServiceUnavailable || up.count() != 1 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("new event on a full store: %d (Retry-After %q), %d forwarded; want 503 with Retry-After, 1", got, w.Header().Get("Retry-After"), up.count())
	}
	assertLog(t, logs, zapcore.ErrorLevel, outcomeStoreFull, "disk full")
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(old), old)
	if statusOfResult(w, err) != http.StatusOK || w.Header().Get(outcomeHeader) != outcomeDuplicate {
		t.Fatalf("duplicate on a full store: %d %q", statusOfResult(w, err), w.Header().Get(outcomeHeader))
	}
	ust.err.Store(nil)
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK || up.count() != 2 {
		t.Fatalf("the event once the store is writable: %d, %d forwarded; want 200, 2 (its claim was released)", got, up.count())
	}
}

var errFullDisk = error(errors.Join(dedupe.ErrFull, errors.New("test: disk full")))

// unwritableStore is a store whose Writable answers err.
type unwritableStore struct {
	dedupe.Store
	err atomic.Pointer[error]
}

func (s *unwritableStore) Writable() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

// recommit retries until the commit lands, counting it as landed; a store
// that never takes it is given up on when the event's window has passed,
// counted as lost and logged at ERROR.
func TestRecommitCountsLandedAndLost(t *testing.T) {
	h, logs := ivyGuard(t)
	ctx := context.Background()
	claim, err := h.store.Claim(ctx, dedupe.Key(h.scope, "ivy", "evt_recommit"), h.lease)
	if err != nil || claim.State != dedupe.Fresh {
		t.Fatalf("claim: %v %v", claim.State, err)
	}
	st := &stallingStore{Store: h.store, landed: make(chan error, 1), commits: 1} // the first commit already failed
	h.store = st
	landed := counterValue(t, commitRetries.WithLabelValues("landed"))
	h.recommit(claim, time.Hour, "evt_recommit")
	if err := <-st.landed; err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, commitRetries.WithLabelValues("landed")); got != landed+1 {
		t.Fatalf("landed = %v, want %v", got, landed+1)
	}
	if c, _ := h.store.Claim(ctx, dedupe.Key(h.scope, "ivy", "evt_recommit"), h.lease); c.State != dedupe.Delivered {
		t.Fatalf("after the retry the event is %v, want delivered", c.State)
	}

	h.store = failingCommits{st.Store}
	lost := counterValue(t, commitRetries.WithLabelValues("lost"))
	claim2, _ := h.store.Claim(ctx, dedupe.Key(h.scope, "ivy", "evt_never"), h.lease)
	h.recommit(claim2, time.Second, "evt_never") // a window of a second: given up after it
	if got := counterValue(t, commitRetries.WithLabelValues("lost")); got != lost+1 {
		t.Fatalf("lost = %v, want %v", got, lost+1)
	}
	e := lastLog(t, logs)
	if e.Level != zapcore.ErrorLevel || e.ContextMap()["event_id"] != "evt_never" {
		t.Fatalf("last log %s %q %v, want the ERROR of a lost commit", e.Level, e.Message, e.ContextMap())
	}

	// A closed store ends the retries at once.
	h.store = closedCommits{st.Store}
	lost = counterValue(t, commitRetries.WithLabelValues("lost"))
	h.recommit(claim2, time.Hour, "evt_closed")
	if got := counterValue(t, commitRetries.WithLabelValues("lost")); got != lost+1 {
		t.Fatalf("lost = %v after a closed store, want %v", got, lost+1)
	}
}

// closedCommits is a store that was closed.
type closedCommits struct{ dedupe.Store }

func (closedCommits) Commit(context.Context, dedupe.Claim, time.Duration) error {
	return dedupe.ErrClosed
}

// failingCommits is a store whose commits never land.
type failingCommits struct{ dedupe.Store }

func (failingCommits) Commit(context.Context, dedupe.Claim, time.Duration) error {
	return errors.Join(dedupe.ErrUnavailable, errors.New("i/o timeout"))
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
