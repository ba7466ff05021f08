package webhookguard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
	outcomeHandshake:        {http.StatusOK, zapcore.InfoLevel, "webhook handshake answered", false},
}

// delivery is one inbound webhook request on its way through the pipeline.
type delivery struct {
	h        *Handler
	r        *http.Request
	clientIP string
	event    verify.Event
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
	var stopRenewing func()
	if claim != nil {
		stopRenewing = d.renew(ctx, *claim)
	}
	defer func() {
		if stopRenewing != nil {
			stopRenewing()
		}
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
			d.settle(claim, true)
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
func (d *delivery) commitEarly(claim *dedupe.Claim) func() {
	if claim == nil {
		return nil
	}
	return func() {
		d.settle(claim, true)
	}
}

// renew keeps the claim's lease alive while the upstream call runs; the
// returned function stops it.
func (d *delivery) renew(ctx context.Context, claim dedupe.Claim) (stop func()) {
	every := d.h.lease / 3
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := d.h.store.Renew(ctx, claim, d.h.lease); err != nil {
					d.h.logger.Error("replay store: could not renew the lease of an event in flight; a copy may pass when it ends",
						zap.String("provider", d.h.Provider), zap.String("event_id", d.event.ID), zap.Error(err))
					if errors.Is(err, dedupe.ErrNotHeld) {
						return
					}
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// settle ends the claim once: Commit after an accepted delivery (durable
// before the sender gets the answer), Release after anything else, so a
// provider's retry goes through.
func (d *delivery) settle(claim *dedupe.Claim, accepted bool) {
	if claim == nil || claim.Key == "" {
		return
	}
	c := *claim
	claim.Key = "" // settled
	// Not cancelled with the request: the client may be gone while the
	// upstream already took the event. Every store bounds its own calls.
	ctx := context.WithoutCancel(d.r.Context())
	if accepted {
		window := d.h.rememberFor(d.event)
		if err := d.h.store.Commit(ctx, c, window); err != nil {
			d.h.logger.Error("replay store: event delivered but not yet remembered; retrying until it lands or the lease ends",
				zap.String("provider", d.h.Provider), zap.String("event_id", d.event.ID), zap.Error(err))
			go d.h.recommit(c, window, d.event.ID)
		}
		return
	}
	if err := d.h.store.Release(ctx, c); err != nil {
		d.h.logger.Error("replay store: could not release a failed delivery; retries are refused until its lease expires",
			zap.String("provider", d.h.Provider), zap.String("event_id", d.event.ID), zap.Error(err))
	}
}

// recommit retries a commit that failed (the store stalled) until it lands
// or the claim's lease ends: while the claim is held, copies of the event
// are answered 409 and retried by the provider; once remembered, duplicate.
func (h *Handler) recommit(c dedupe.Claim, window time.Duration, eventID string) {
	deadline := time.Now().Add(h.lease)
	wait := 100 * time.Millisecond
	for time.Now().Before(deadline) {
		time.Sleep(min(wait, time.Until(deadline)))
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		_ = h.store.Renew(ctx, c, h.lease)
		err := h.store.Commit(ctx, c, window)
		cancel()
		if err == nil {
			commitRetries.WithLabelValues("landed").Inc()
			h.logger.Info("replay store: delivered event remembered after a retry",
				zap.String("provider", h.Provider), zap.String("event_id", eventID))
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
	commitRetries.WithLabelValues("lost").Inc()
	h.logger.Error("replay store: delivered event could not be remembered before its lease ended; a duplicate may pass",
		zap.String("provider", h.Provider), zap.String("event_id", eventID))
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
