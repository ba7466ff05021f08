package webhookguard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/verify"
)

// Outcomes of a delivery: the `outcome` label of the events metric and the
// `outcome` field of the log line.
const (
	outcomeForwarded        = "forwarded"
	outcomeDuplicate        = "duplicate"
	outcomeInFlight         = "in_flight"
	outcomeIgnoredType      = "ignored_type"
	outcomeProbe            = verify.ReasonProbe
	outcomeInvalidSignature = verify.ReasonSignature
	outcomeStaleTimestamp   = verify.ReasonTimestamp
	outcomeIPDenied         = "ip_denied"
	outcomeTooLarge         = "too_large"
	outcomeBadMethod        = "bad_method"
	outcomeBadRequest       = "bad_request"
	outcomeEarlyData        = "early_data"
	outcomeUpstreamFailed   = "upstream_failed"
	outcomeNoUpstream       = "no_upstream"
	outcomeStoreUnavailable = "store_unavailable"
	outcomeStoreFull        = "store_full"
	outcomeSpooled          = "spooled"
	outcomeUnrecorded       = "unrecorded"
	outcomeHandshake        = "handshake"
)

// outcomeFacts is what an outcome means to the sender and to the operator.
type outcomeFacts struct {
	// status answers the sender; 0 when it is the upstream's.
	status int
	// level of the log line: what may be an attack or an outage is a
	// warning or an error, the ordinary life of webhooks info or debug.
	level zapcore.Level
	// message of the log line.
	message string
	// retry: the sender should come back later (Retry-After).
	retry bool
}

// outcomes holds every outcome's facts, in one place.
var outcomes = map[string]outcomeFacts{
	outcomeForwarded:        {0, zapcore.DebugLevel, "webhook forwarded", false},
	outcomeDuplicate:        {http.StatusOK, zapcore.InfoLevel, "webhook dropped", false},
	outcomeIgnoredType:      {http.StatusOK, zapcore.InfoLevel, "webhook dropped", false},
	outcomeProbe:            {http.StatusOK, zapcore.InfoLevel, "webhook dropped", false},
	outcomeInFlight:         {http.StatusConflict, zapcore.InfoLevel, "webhook refused", true},
	outcomeInvalidSignature: {http.StatusUnauthorized, zapcore.WarnLevel, "webhook refused", false},
	outcomeStaleTimestamp:   {http.StatusUnauthorized, zapcore.WarnLevel, "webhook refused", false},
	outcomeIPDenied:         {http.StatusForbidden, zapcore.WarnLevel, "webhook refused", false},
	outcomeTooLarge:         {http.StatusRequestEntityTooLarge, zapcore.WarnLevel, "webhook refused", false},
	outcomeBadMethod:        {http.StatusMethodNotAllowed, zapcore.InfoLevel, "webhook refused", false},
	outcomeBadRequest:       {http.StatusBadRequest, zapcore.InfoLevel, "webhook refused", false},
	outcomeEarlyData:        {http.StatusTooEarly, zapcore.InfoLevel, "webhook refused", false},
	outcomeUpstreamFailed:   {0, zapcore.WarnLevel, "webhook not accepted by upstream", false},
	outcomeNoUpstream:       {http.StatusBadGateway, zapcore.ErrorLevel, "webhook not delivered: nothing after webhook_guard answered", false},
	outcomeStoreUnavailable: {http.StatusServiceUnavailable, zapcore.ErrorLevel, "webhook refused", true},
	outcomeStoreFull:        {http.StatusServiceUnavailable, zapcore.ErrorLevel, "webhook refused", true},
	outcomeSpooled:          {http.StatusOK, zapcore.InfoLevel, "webhook spooled", false},
	// The upstream took the event but the store did not record it: the
	// claim is held and the commit retried until it lands (copies are
	// answered 409, then duplicate). The provider gets the upstream's 2xx
	// when the commit failed (the upstream has the event), 503 when it did
	// not answer within commitWait (logged with the status sent).
	outcomeUnrecorded: {http.StatusServiceUnavailable, zapcore.ErrorLevel, "webhook delivered but not remembered", true},
	outcomeHandshake:  {http.StatusOK, zapcore.InfoLevel, "webhook handshake answered", false},
}

// delivery is one inbound webhook request on its way through the pipeline.
type delivery struct {
	h        *Handler
	r        *http.Request
	clientIP string
	event    verify.Event

	// renewal renews the claim's lease (nil: not renewing); settling
	// says its commit or release has begun.
	renewal  *renewal
	settling atomic.Bool
	// commitErr is why the commit of an accepted delivery failed: the
	// claim is kept and the commit retried; commitStalled says it did not
	// answer within commitWait (the sender then gets 503).
	commitErr     error
	commitStalled bool
}

// log writes the delivery's one log line and counts it. status is the
// answer's, for outcomes whose status is the upstream's.
func (d *delivery) log(outcome, reason string, status int) {
	d.logAt(outcomes[outcome].level, outcome, reason, status)
}

// logAt is log at the given level rather than the outcome's.
func (d *delivery) logAt(level zapcore.Level, outcome, reason string, status int) {
	d.h.metrics.countEvent(outcome)
	d.noteOutcome(outcome, reason, status) // the console's recent outcomes
	facts := outcomes[outcome]
	ce := d.h.logger.Check(level, facts.message)
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("provider", d.h.Provider),
		zap.String("outcome", outcome),
		zap.String("client_ip", d.clientIP),
		zap.String("reason", d.h.redact(reason)),
		zap.Int("status", status),
	}
	if d.event.ID != "" {
		fields = append(fields, zap.String("event_id", d.event.ID))
	}
	if d.event.Type != "" {
		fields = append(fields, zap.String("event_type", d.event.Type))
	}
	ce.Write(fields...)
}

// spoolIDHeader is the header a spool adds to each delivery (the spool's
// eventIDHeader): a guard that receives it is the `to` of a spool.
const spoolIDHeader = "Webhook-Guard-Event-Id"

// warnLoop logs an ERROR when a verified request carries the spool's
// Webhook-Guard-Event-Id: a spool's `to` points back at a guard (this one or
// another), which would answer it as an event of its own (a duplicate, most
// likely), so the spool would mark it delivered while no backend got it.
// The request is handled as usual. Only verified requests are looked at, so
// that nobody without a provider's secret can write ERROR lines.
func (d *delivery) warnLoop() {
	if len(d.r.Header.Values(spoolIDHeader)) == 0 {
		return
	}
	d.h.logger.Error("webhook_guard received a request carrying "+spoolIDHeader+": a spool delivers to a guard, not to its backend; point the spool's to at the backend",
		zap.String("provider", d.h.Provider),
		zap.String("client_ip", d.clientIP),
		zap.String("event_id", d.event.ID))
}

// refuse logs and counts a refusal and returns it as a Caddy handler error,
// so handle_errors can shape the answer.
func (d *delivery) refuse(w http.ResponseWriter, outcome string, format string, args ...any) error {
	facts := outcomes[outcome]
	switch {
	case facts.retry:
		w.Header().Set("Retry-After", retryAfter)
	case outcome == outcomeBadMethod:
		w.Header().Set("Allow", http.MethodPost)
	}
	reason := d.h.redact(fmt.Sprintf(format, args...))
	d.log(outcome, reason, facts.status)
	return caddyhttp.Error(facts.status, errors.New("webhook_guard: "+reason))
}

// outcomeHeader tells whoever sent an event that was acknowledged without
// being forwarded why (duplicate or ignored_type); it carries nothing secret.
const outcomeHeader = "Webhook-Guard-Outcome"

// drop logs and counts an event acknowledged without forwarding, and answers
// 200 so the provider stops retrying.
func (d *delivery) drop(w http.ResponseWriter, outcome string, format string, args ...any) {
	d.log(outcome, fmt.Sprintf(format, args...), http.StatusOK)
	w.Header().Set(outcomeHeader, outcome)
	w.WriteHeader(http.StatusOK)
}

// forward passes the verified event to the next handler and settles the
// claim (nil with dedupe off): the upstream's 2xx is committed to the store
// before the sender sees it, anything else — a non-2xx status, an error
// (reverse_proxy returns 502 when the upstream is down), a panic before a
// 2xx status, or nothing answered at all — releases the claim so the
// provider's retry goes through.
//
// The upstream's 2xx status decides, even when its answer then breaks: when
// the upstream's body fails after a 2xx status line (a reset, a cut proxy),
// reverse_proxy panics with http.ErrAbortHandler; the upstream has the event,
// so it is committed, logged and counted as forwarded with the answer cut,
// what is held is sent, and the panic goes on (Caddy's server then closes the
// sender's connection). The provider's retry is a duplicate.
//
// The upstream call does not end when the sender disconnects: it may already
// have taken the event, and its answer is what tells. It is cut one lease
// after the disconnect. The claim's lease is renewed while the call runs, so
// a slow upstream never lets a second copy through.
func (d *delivery) forward(w http.ResponseWriter, next caddyhttp.Handler, claim *dedupe.Claim) (err error) {
	ctx, cancel := detach(d.r.Context(), d.h.lease)
	defer cancel()
	held := newHeldResponse(w, d.commitEarly(claim))
	if claim != nil {
		d.renewal = d.renew(ctx, *claim)
	}
	defer d.endRenewal() // settle ends it once the claim is settled
	defer func() {
		p := recover()
		switch {
		case p != nil && held.accepted():
			d.settle(claim, true)
			d.log(outcomeForwarded, fmt.Sprintf("upstream accepted (status %d); its answer was cut: %v", held.status, p), held.status)
			held.release()
			_ = held.FlushError() // before the panic closes the connection, as reverse_proxy flushes
			panic(p)
		case p != nil:
			d.settle(claim, false)
			d.log(outcomeUpstreamFailed, fmt.Sprintf("panic downstream: %v", p), http.StatusInternalServerError)
			panic(p)
		case err == nil && held.status == 0 && upstreamAnswered(d.r):
			// reverse_proxy had an answer it did not pass on: a 101
			// Switching Protocols (the guard sends no upgrade, and refuses
			// the sender's connection).
			d.settle(claim, false)
			reason := "the upstream's answer was not passed on (101 Switching Protocols? a webhook is not upgraded)"
			d.log(outcomeUpstreamFailed, reason, http.StatusBadGateway)
			err = caddyhttp.Error(http.StatusBadGateway, errors.New("webhook_guard: "+reason))
		case err == nil && held.status == 0:
			d.settle(claim, false)
			err = d.refuse(w, outcomeNoUpstream, "no handler after webhook_guard answered (add reverse_proxy)")
		case err == nil && held.accepted():
			if !d.settle(claim, true) {
				if d.commitStalled {
					err = d.unrecorded(w)
					return
				}
				d.log(outcomeUnrecorded, fmt.Sprintf("the upstream accepted the event, the replay store could not record it (%v): the claim is held and the commit retried until it lands", d.commitErr), held.status)
				held.release()
				return
			}
			d.log(outcomeForwarded, "upstream accepted", held.status)
			held.release()
		case err != nil && held.accepted():
			d.settle(claim, true)
			d.log(outcomeForwarded, fmt.Sprintf("upstream accepted (status %d); its answer was cut: %v", held.status, err), held.status)
			held.release()
		case err != nil:
			d.settle(claim, false)
			d.log(outcomeUpstreamFailed, "upstream error: "+err.Error(), statusOf(err, held.status))
			held.release()
		default:
			d.settle(claim, false)
			d.log(outcomeUpstreamFailed, fmt.Sprintf("upstream answered %d", held.status), held.status)
			held.release()
		}
	}()
	return next.ServeHTTP(held, d.r.WithContext(ctx))
}

// unrecorded answers an event the upstream accepted whose commit did not
// answer within commitWait (a stalled store): 503 + Retry-After instead of
// the upstream's 2xx, which is not sent. The upstream has the event; the
// claim is held and the commit retried: the provider's retries are
// answered 409, then duplicate once it lands. Only if the process ends
// first is a retry forwarded again (at least once).
func (d *delivery) unrecorded(w http.ResponseWriter) error {
	for name := range w.Header() { // the upstream's, for an answer not sent
		delete(w.Header(), name)
	}
	return d.refuse(w, outcomeUnrecorded, "the upstream accepted the event but the replay store did not confirm its record in time (%v); answered 503 so the provider retries; the claim is held and the commit retried until it lands", d.commitErr)
}

// unwritable refuses a freshly claimed event, and releases its claim, when
// the store says its writes fail now (a full disk, a journal that could not
// sync): the event is not forwarded, since its commit would fail. It
// reports whether it refused.
func (d *delivery) unwritable(w http.ResponseWriter, claim dedupe.Claim) (bool, error) {
	hs, ok := d.h.store.(dedupe.Health)
	if !ok {
		return false, nil
	}
	err := hs.Writable()
	if err == nil {
		return false, nil
	}
	_ = d.h.store.Release(context.WithoutCancel(d.r.Context()), claim)
	if errors.Is(err, dedupe.ErrFull) {
		return true, d.refuse(w, outcomeStoreFull, "replay store: %v", err)
	}
	return true, d.refuse(w, outcomeStoreUnavailable, "replay store: %v", err)
}

// upstreamAnswered reports whether reverse_proxy received an answer from an
// upstream for r (it sets the upstream's latency placeholder then).
func upstreamAnswered(r *http.Request) bool {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return false
	}
	_, answered := repl.Get("http.reverse_proxy.upstream.latency")
	return answered
}

// detach is the context of the upstream call: the request's values, but not
// its cancellation, which only starts a countdown of grace.
func detach(parent context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() { time.AfterFunc(grace, cancel) })
	return ctx, func() { stop(); cancel() }
}

// commitEarly is called by the held response when the upstream's 2xx answer
// outgrows what it holds: the event is committed before any of it is sent.
// If the commit stalls, nothing of the answer is sent (the sender gets 503).
func (d *delivery) commitEarly(claim *dedupe.Claim) func() bool {
	if claim == nil {
		return nil
	}
	return func() bool {
		return d.settle(claim, true) || !d.commitStalled
	}
}

// endRenewal stops renewing the claim's lease, once.
func (d *delivery) endRenewal() {
	if d.renewal != nil {
		d.renewal.stop()
		d.renewal = nil
	}
}

// renew keeps the claim's lease alive while the upstream call runs, until
// its stop. It costs a timer, not a goroutine, per delivery: most end
// before the first renewal.
func (d *delivery) renew(ctx context.Context, claim dedupe.Claim) *renewal {
	rn := &renewal{d: d, ctx: ctx, claim: claim, every: d.h.lease / 3}
	rn.mu.Lock() // a renewal that comes at once finds t set
	defer rn.mu.Unlock()
	rn.t = time.AfterFunc(rn.every, rn.fire)
	return rn
}

// renewal is the lease renewal of one delivery in flight.
type renewal struct {
	d     *delivery
	ctx   context.Context
	claim dedupe.Claim
	every time.Duration

	mu      sync.Mutex // held by a renewal, and by stop
	stopped bool
	t       *time.Timer
}

// fire renews the lease and sets the timer for the next renewal.
func (rn *renewal) fire() {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if rn.stopped || rn.ctx.Err() != nil {
		return
	}
	d := rn.d
	if err := d.h.store.Renew(rn.ctx, rn.claim, d.h.lease); err != nil {
		if d.settling.Load() {
			return // committed or released meanwhile
		}
		d.h.logger.Error("replay store: could not renew the lease of an event in flight; a copy may pass when it ends",
			zap.String("provider", d.h.Provider), zap.String("event_id", d.event.ID), zap.Error(err))
		if errors.Is(err, dedupe.ErrNotHeld) {
			return
		}
	}
	rn.t.Reset(rn.every)
}

// stop ends the renewals; it returns once none runs.
func (rn *renewal) stop() {
	rn.mu.Lock()
	rn.stopped = true
	rn.t.Stop()
	rn.mu.Unlock()
}

// settle ends the claim once: Commit after an accepted delivery (durable
// before the sender gets the answer), Release after anything else, so a
// provider's retry goes through. The lease is renewed until the commit or
// release returns. It reports whether the claim ended as it should: false
// when the commit failed or did not return within commitWait (stalled):
// the claim is then kept and the commit retried in the background until
// it lands.
func (d *delivery) settle(claim *dedupe.Claim, accepted bool) bool {
	if claim == nil {
		return true
	}
	if claim.Key == "" { // settled already (committed early)
		return d.commitErr == nil
	}
	c := *claim
	claim.Key = "" // settled
	d.settling.Store(true)
	defer d.endRenewal()
	// Not cancelled with the request: the client may be gone while the
	// upstream already took the event. Bounded, so a stalled store answers.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.r.Context()), d.h.commitWait)
	defer cancel()
	if accepted {
		window := d.h.rememberFor(d.event)
		if err := d.h.store.Commit(ctx, c, window); err != nil {
			d.commitErr, d.commitStalled = err, ctx.Err() != nil
			d.h.logger.Error("replay store: event delivered but not remembered; the claim is held and the commit retried until it lands",
				zap.String("provider", d.h.Provider), zap.String("event_id", d.event.ID), zap.Error(err))
			go d.h.recommit(c, window, d.event.ID)
			return false
		}
		return true
	}
	if err := d.h.store.Release(ctx, c); err != nil {
		d.h.logger.Error("replay store: could not release a failed delivery; retries are refused until its lease expires",
			zap.String("provider", d.h.Provider), zap.String("event_id", d.event.ID), zap.Error(err))
	}
	return true
}

// recommit retries a commit that failed (the store stalled, its disk was
// full) until it lands, the store is closed, or the event's window has
// passed (remembering it no longer matters). Meanwhile the claim is held:
// for the file store, whose leases do not expire in the process holding
// them, until it lands; for the others it is renewed with each attempt.
// Copies of the event are answered 409 and retried by the provider; once
// remembered, duplicate.
func (h *Handler) recommit(c dedupe.Claim, window time.Duration, eventID string) {
	deadline := time.Now().Add(window)
	wait := 100 * time.Millisecond
	for {
		time.Sleep(min(wait, max(time.Until(deadline), 0)))
		ctx, cancel := context.WithTimeout(context.Background(), h.commitWait)
		_ = h.store.Renew(ctx, c, h.lease)
		err := h.store.Commit(ctx, c, window)
		cancel()
		if err == nil {
			commitRetries.WithLabelValues("landed").Inc()
			h.logger.Info("replay store: delivered event remembered after a retry",
				zap.String("provider", h.Provider), zap.String("event_id", eventID))
			return
		}
		if errors.Is(err, dedupe.ErrClosed) || !time.Now().Before(deadline) {
			commitRetries.WithLabelValues("lost").Inc()
			h.logger.Error("replay store: delivered event could not be remembered (store closed, or its window passed); a copy may pass",
				zap.String("provider", h.Provider), zap.String("event_id", eventID), zap.Error(err))
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// statusOf is the status an error answers with.
func statusOf(err error, fallback int) int {
	if he, ok := err.(caddyhttp.HandlerError); ok && he.StatusCode != 0 {
		return he.StatusCode
	}
	if fallback == 0 {
		return http.StatusInternalServerError
	}
	return fallback
}

// checkUsage warns, at most once a minute per handler, when the store holds
// 80 % of its capacity: at 100 % new events are refused with 503.
func (h *Handler) checkUsage() {
	u, ok := h.store.(dedupe.Usage)
	if !ok {
		return
	}
	n, capacity := u.Usage()
	if capacity <= 0 || n*5 < capacity*4 {
		return
	}
	t := time.Now().Unix()
	last := h.lastUsageWarning.Load()
	if t-last < 60 || !h.lastUsageWarning.CompareAndSwap(last, t) {
		return
	}
	h.logger.Warn("replay store nearly full: at max_events new events are refused with 503; raise max_events or shorten replay_window",
		zap.Int64("remembered", n), zap.Int64("max_events", capacity))
}
