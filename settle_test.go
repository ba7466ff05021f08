package webhookguard

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zapcore"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// stallingStore wraps a store whose first Commit fails, as a Redis that
// stalls would; the retry's outcome is sent on landed.
type stallingStore struct {
	dedupe.Store
	mu      sync.Mutex
	commits int
	renewed int
	landed  chan error
}

func (s *stallingStore) Commit(ctx context.Context, c dedupe.Claim, window time.Duration) error {
	s.mu.Lock()
	s.commits++
	first := s.commits == 1
	s.mu.Unlock()
	if first {
		return errors.Join(dedupe.ErrUnavailable, errors.New("i/o timeout"))
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

// A commit that fails after the upstream took the event is retried in the
// background until it lands, and counted; meanwhile the event is still held
// (a copy is answered 409, not forwarded), and once the retry landed a copy
// is a duplicate. The sender got the upstream's 200 all along.
func TestFailedCommitRetriedInBackground(t *testing.T) {
	h, logs := ivyGuard(t)
	st := &stallingStore{Store: h.store, landed: make(chan error, 1)}
	h.store = st
	up := &upstreamStub{}
	body := `{"id":"evt_stall","type":"order_paid"}`
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK || up.count() != 1 {
		t.Fatalf("delivery: %d, %d forwarded; want the upstream's 200, 1", got, up.count())
	}
	if n := logs.FilterMessageSnippet("event delivered but not yet remembered").Len(); n != 1 {
		t.Fatalf("%d 'not yet remembered' lines, want 1", n)
	}
	select {
	case err := <-st.landed:
		if err != nil {
			t.Fatalf("the retried commit failed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failed commit was not retried")
	}
	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if got := statusOfResult(w, err); got != http.StatusOK || w.Header().Get(outcomeHeader) != outcomeDuplicate || up.count() != 1 {
		t.Fatalf("copy after the retry: %d %q, %d forwarded; want 200 duplicate, 1", got, w.Header().Get(outcomeHeader), up.count())
	}
}

// recommit retries until the commit lands, counting it as landed; a store
// that never takes it is given up on when the claim's lease ends, counted as
// lost and logged at ERROR.
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
	h.lease = time.Second // the retry gives up when the lease ends
	lost := counterValue(t, commitRetries.WithLabelValues("lost"))
	claim2, _ := h.store.Claim(ctx, dedupe.Key(h.scope, "ivy", "evt_never"), h.lease)
	h.recommit(claim2, time.Hour, "evt_never")
	if got := counterValue(t, commitRetries.WithLabelValues("lost")); got != lost+1 {
		t.Fatalf("lost = %v, want %v", got, lost+1)
	}
	e := lastLog(t, logs)
	if e.Level != zapcore.ErrorLevel || e.ContextMap()["event_id"] != "evt_never" {
		t.Fatalf("last log %s %q %v, want the ERROR of a lost commit", e.Level, e.Message, e.ContextMap())
	}
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
