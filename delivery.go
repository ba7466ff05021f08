package webhookguard

import (
	"context"
	"errors"
	"fmt"
	"net/http"

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
	outcomeUpstreamFailed   = "upstream_failed"
	outcomeStoreUnavailable = "store_unavailable"
)

// delivery is one inbound webhook request on its way through the pipeline.
type delivery struct {
	h        *Handler
	r        *http.Request
	clientIP string
	event    verify.Event
}

// levels says how loudly each refusal is logged: what may be an attack or an
// outage is a warning, the ordinary life of webhooks is info.
var levels = map[string]zapcore.Level{
	outcomeInvalidSignature: zapcore.WarnLevel,
	outcomeStaleTimestamp:   zapcore.WarnLevel,
	outcomeIPDenied:         zapcore.WarnLevel,
	outcomeTooLarge:         zapcore.WarnLevel,
	outcomeUpstreamFailed:   zapcore.WarnLevel,
	outcomeStoreUnavailable: zapcore.ErrorLevel,
	outcomeForwarded:        zapcore.DebugLevel,
}

// log writes the delivery's one log line and counts it.
func (d *delivery) log(outcome, reason string, status int) {
	d.h.metrics.countEvent(outcome)
	level, ok := levels[outcome]
	if !ok {
		level = zapcore.InfoLevel
	}
	msg := "webhook refused"
	switch outcome {
	case outcomeForwarded:
		msg = "webhook forwarded"
	case outcomeDuplicate, outcomeIgnoredType, outcomeProbe:
		msg = "webhook dropped"
	case outcomeUpstreamFailed:
		msg = "webhook not accepted by upstream"
	}
	ce := d.h.logger.Check(level, msg)
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

// refuse logs and counts a refusal and returns it as a Caddy handler error,
// so handle_errors can shape the answer.
func (d *delivery) refuse(outcome string, status int, format string, args ...any) error {
	reason := d.h.redact(fmt.Sprintf(format, args...))
	d.log(outcome, reason, status)
	return caddyhttp.Error(status, errors.New("webhook_guard: "+reason))
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

// forward passes the verified event to the next handler and then commits
// the claim if the upstream answered 2xx, or releases it on anything else:
// a non-2xx status, an error (reverse_proxy returns 502 when the upstream is
// down) or a panic. With claim nil (dedupe off) it only forwards.
func (d *delivery) forward(w http.ResponseWriter, next caddyhttp.Handler, claim *dedupe.Claim) (err error) {
	rec := &statusRecorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	defer func() {
		p := recover()
		accepted := p == nil && err == nil && rec.status >= 200 && rec.status < 300
		d.settle(claim, accepted)
		switch {
		case p != nil:
			d.log(outcomeUpstreamFailed, fmt.Sprintf("panic downstream: %v", p), http.StatusInternalServerError)
			panic(p)
		case accepted:
			d.log(outcomeForwarded, "upstream accepted", rec.status)
		case err != nil:
			d.log(outcomeUpstreamFailed, "upstream error: "+err.Error(), statusOf(err, rec.status))
		default:
			d.log(outcomeUpstreamFailed, fmt.Sprintf("upstream answered %d", rec.status), rec.status)
		}
	}()
	return next.ServeHTTP(rec, d.r)
}

// settle ends the claim: Commit after an accepted delivery, Release after
// anything else, so a provider's retry goes through.
func (d *delivery) settle(claim *dedupe.Claim, accepted bool) {
	if claim == nil {
		return
	}
	// Not cancelled with the request: the client may be gone while the
	// upstream already took the event. Every store bounds its own calls
	// (the Redis store by its read timeout).
	ctx := context.WithoutCancel(d.r.Context())
	if accepted {
		if err := d.h.store.Commit(ctx, *claim, d.h.rememberFor(d.event)); err != nil {
			d.h.logger.Error("replay store: event delivered but not remembered; a duplicate may pass",
				zap.String("provider", d.h.Provider), zap.String("event_id", d.event.ID), zap.Error(err))
		}
		return
	}
	if err := d.h.store.Release(ctx, *claim); err != nil {
		d.h.logger.Error("replay store: could not release a failed delivery; retries are refused until its lease expires",
			zap.String("provider", d.h.Provider), zap.String("event_id", d.event.ID), zap.Error(err))
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

// statusRecorder learns the final status the next handler answered with.
type statusRecorder struct {
	*caddyhttp.ResponseWriterWrapper
	status int
}

// WriteHeader records the final (non-1xx) status.
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		s.status = code
	}
	s.ResponseWriterWrapper.WriteHeader(code)
}

// Write implies a 200 when no status was written.
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriterWrapper.Write(b)
}
