package webhookguard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// Defaults of the spool block.
const (
	DefaultSpoolMaxAttempts = 25
	DefaultSpoolMaxAge      = 72 * time.Hour
	DefaultSpoolConcurrency = 4
	DefaultSpoolTimeout     = 30 * time.Second
)

// Headers the spool adds to each delivery.
const (
	// eventIDHeader carries the provider's event id, the same at every
	// attempt: a backend drops a redelivery by it (delivery is at least
	// once).
	eventIDHeader = "Webhook-Guard-Event-Id"
	// attemptHeader is the attempt's number, from 1.
	attemptHeader = "Webhook-Guard-Attempt"
)

// transportNamespace is the namespace of reverse_proxy's transports, which
// the spool delivers through.
const transportNamespace = "http.reverse_proxy.transport"

// SpoolConfig is the spool block: the guard acknowledges an event once it is
// on disk (200, Webhook-Guard-Outcome: spooled) and delivers it itself, with
// retries, to To. The handler is then the last of its route.
type SpoolConfig struct {
	// To is the backend: http://host:port[/path], https://host[:port][/path]
	// or unix//path/to.sock. Without a path, the event's original path and
	// query are used.
	To string `json:"to"`
	// MaxAttempts is how many delivery attempts an event gets before it is
	// dead (kept, listed, counted); default 25.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxAge is how long after it was received (or last retried by an
	// operator) an undelivered event is dead; default 72h.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
	// Concurrency bounds this handler's deliveries in flight; default 4.
	Concurrency int `json:"concurrency,omitempty"`
	// Timeout bounds one delivery attempt; default 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// TransportRaw is the HTTP transport of the deliveries, a module in the
	// namespace http.reverse_proxy.transport (`transport http { ... }` as in
	// reverse_proxy: TLS, timeouts, dial options). Default: the http
	// transport with its defaults (TLS for an https:// To).
	TransportRaw json.RawMessage `json:"transport,omitempty" caddy:"namespace=http.reverse_proxy.transport inline_key=protocol"`
}

// spoolTarget is a provisioned spool block.
type spoolTarget struct {
	to        *url.URL // scheme and host (http/https), or nil for unix
	socket    string   // unix socket path
	transport http.RoundTripper
	target    *dedupe.SpoolTarget
	worker    *dedupe.SpoolWorker
	ledger    *dedupe.File
	unreg     func()
	maxAge    time.Duration
}

// parseSpoolTo checks a spool's `to`.
func parseSpoolTo(to string) (u *url.URL, socket string, err error) {
	if to == "" {
		return nil, "", errors.New("to is required: http://host:port[/path], https://... or unix//path/to.sock")
	}
	if path, ok := strings.CutPrefix(to, "unix/"); ok {
		if !strings.HasPrefix(path, "/") {
			return nil, "", fmt.Errorf("to %q: want unix//absolute/path.sock", to)
		}
		return nil, path, nil
	}
	u, err = url.Parse(to)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, "", fmt.Errorf("to %q: want http://host:port[/path], https://host[:port][/path] or unix//path/to.sock", to)
	}
	return u, "", nil
}

// unmarshalSpool parses the spool block.
func (h *Handler) unmarshalSpool(d *caddyfile.Dispenser) error {
	if h.Spool != nil {
		return d.Err("spool: given twice")
	}
	if d.NextArg() {
		return d.Errf("spool: takes a block, not '%s'", d.Val())
	}
	sc := new(SpoolConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "to":
			if err := oneArgInto1(d, &sc.To); err != nil {
				return err
			}
			if _, _, err := parseSpoolTo(sc.To); err != nil {
				return d.Errf("spool: %v", err)
			}
		case "max_attempts":
			if err := positiveArg(d, &sc.MaxAttempts); err != nil {
				return err
			}
		case "concurrency":
			if err := positiveArg(d, &sc.Concurrency); err != nil {
				return err
			}
		case "max_age":
			if err := durationArg(d, "max_age", &sc.MaxAge); err != nil {
				return err
			}
		case "timeout":
			if err := durationArg(d, "timeout", &sc.Timeout); err != nil {
				return err
			}
		case "transport":
			if sc.TransportRaw != nil {
				return d.Err("spool: transport given twice")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			mod, err := caddyfile.UnmarshalModule(d, transportNamespace+"."+name)
			if err != nil {
				return err
			}
			if _, ok := mod.(http.RoundTripper); !ok {
				return d.Errf("spool: transport %s is not an HTTP transport", name)
			}
			sc.TransportRaw = caddyconfig.JSONModuleObject(mod, "protocol", name, nil)
		default:
			return d.Errf("unrecognized spool subdirective '%s'", d.Val())
		}
	}
	if sc.To == "" {
		return d.Err("spool: to is required: http://host:port[/path], https://... or unix//path/to.sock")
	}
	h.Spool = sc
	return nil
}

// positiveArg parses a positive integer option.
func positiveArg(d *caddyfile.Dispenser, field *int) error {
	option := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return d.Errf("%s: want a positive number, got '%s'", option, v)
	}
	*field = n
	return nil
}

// errSpoolStore explains why the spool needs the file store.
func errSpoolStore(store string) error {
	return fmt.Errorf("spool needs the file store (the default ledger), not %s: it stores the event and marks its id accepted in one ledger transaction; a spool shared by several Caddy instances is not supported yet", store)
}

// storeType is the type of the store module in raw ("" when not set).
func storeType(raw json.RawMessage) string {
	if raw == nil {
		return ""
	}
	var v struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(raw, &v)
	return v.Type
}

// provisionSpool loads the transport, registers the scope's target with
// the ledger's worker (starting it) and keeps it for Cleanup.
func (h *Handler) provisionSpool(ctx caddy.Context, storeMod any) error {
	sc := h.Spool
	fs, ok := storeMod.(*FileStore)
	if !ok {
		return errSpoolStore("store " + storeType(h.StoreRaw))
	}
	u, socket, err := parseSpoolTo(sc.To)
	if err != nil {
		return fmt.Errorf("spool: %v", err)
	}
	if sc.MaxAttempts < 0 || sc.Concurrency < 0 || sc.MaxAge < 0 || sc.Timeout < 0 {
		return errors.New("spool: max_attempts, concurrency, max_age and timeout must be positive")
	}
	t := &spoolTarget{to: u, socket: socket}
	var mod any
	if sc.TransportRaw != nil {
		mod, err = ctx.LoadModule(sc, "TransportRaw")
	} else {
		cfg := json.RawMessage(`{}`)
		if u != nil && u.Scheme == "https" {
			cfg = json.RawMessage(`{"tls":{}}`)
		}
		mod, err = ctx.LoadModuleByID(transportNamespace+".http", cfg)
	}
	if err != nil {
		return fmt.Errorf("spool: transport: %v", err)
	}
	if t.transport, ok = mod.(http.RoundTripper); !ok {
		return fmt.Errorf("spool: transport module %T is not an HTTP transport", mod)
	}
	maxAttempts := cmpPositive(sc.MaxAttempts, DefaultSpoolMaxAttempts)
	t.maxAge = time.Duration(cmpPositive(sc.MaxAge, caddy.Duration(DefaultSpoolMaxAge)))
	timeout := time.Duration(cmpPositive(sc.Timeout, caddy.Duration(DefaultSpoolTimeout)))
	scope, logger := h.scope, h.logger
	t.target = &dedupe.SpoolTarget{
		Deliver:     t.deliver,
		MaxAttempts: maxAttempts,
		MaxAge:      t.maxAge,
		Timeout:     timeout,
		Concurrency: cmpPositive(sc.Concurrency, DefaultSpoolConcurrency),
		Window:      h.window,
		OnAttempt: func(rec *dedupe.SpoolRecord, a dedupe.Attempt) {
			result := deliveryDelivered
			switch {
			case a.Err != nil:
				result = deliveryError
			case !a.Delivered():
				result = deliveryRefused
			}
			deliveryAttempts.WithLabelValues(scope, result).Inc()
			if a.Delivered() {
				logger.Info("spooled webhook delivered",
					zap.String("scope", scope), zap.Uint64("id", rec.Seq), zap.String("provider", rec.Provider),
					zap.String("event_id", rec.EventID), zap.String("event_type", rec.EventType),
					zap.Int("attempt", rec.Attempts), zap.Int("status", a.Status))
				return
			}
			logger.Warn("spooled webhook delivery failed",
				zap.String("scope", scope), zap.Uint64("id", rec.Seq), zap.String("provider", rec.Provider),
				zap.String("event_id", rec.EventID), zap.String("event_type", rec.EventType),
				zap.Int("attempt", rec.Attempts), zap.String("result", result), zap.Int("status", a.Status),
				zap.String("error", errText(a.Err)), zap.Time("next_attempt_at", rec.NextAt),
				zap.Bool("dead", rec.NextAt.IsZero()))
		},
		OnDead: func(rec dedupe.SpoolRecord) {
			spoolDeadTotal.WithLabelValues(scope).Inc()
			logger.Error("spooled webhook is dead",
				zap.String("scope", scope), zap.Uint64("id", rec.Seq), zap.String("provider", rec.Provider),
				zap.String("event_id", rec.EventID), zap.String("event_type", rec.EventType),
				zap.Int("attempts", rec.Attempts), zap.String("last_error", rec.LastError),
				zap.String("hint", "out of attempts or max_age; kept until retried or discarded: caddy webhook-guard spool list --state dead"))
		},
		OnError: func(rec *dedupe.SpoolRecord, err error) {
			logger.Error("spool: the result of a delivery attempt could not be written to the ledger; the event stays due",
				zap.String("scope", scope), zap.Uint64("id", rec.Seq), zap.String("event_id", rec.EventID), zap.Error(err))
		},
	}
	w, err := fs.spoolWorker()
	if err != nil {
		return fmt.Errorf("spool: %v", err)
	}
	t.worker, t.ledger = w, w.File()
	t.unreg = w.Register(scope, t.target)
	h.spool = t
	return nil
}

// cmpPositive is v, or def when v is not positive.
func cmpPositive[T int | caddy.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// cleanupSpool unregisters the handler's target, if it is still the scope's.
func (h *Handler) cleanupSpool() {
	if h.spool != nil && h.spool.unreg != nil {
		h.spool.unreg()
		h.spool.unreg = nil
	}
}

// dialInfoCtxKey is reverse_proxy's context key of the address to dial
// (reverseproxy.GetDialInfo reads it): the http transport dials it instead
// of the request's host, which is how it reaches a unix socket.
const dialInfoCtxKey caddy.CtxKey = "reverse_proxy.dial_info"

// maxBackendAnswer bounds what is read of the backend's answer (to reuse
// the connection).
const maxBackendAnswer = 64 << 10

// deliver makes one delivery attempt of rec to the backend.
func (t *spoolTarget) deliver(ctx context.Context, rec *dedupe.SpoolRecord, attempt int) dedupe.Attempt {
	u := &url.URL{Scheme: "http", Host: "localhost", Path: rec.Path, RawQuery: rec.Query}
	if t.to != nil {
		u.Scheme, u.Host = t.to.Scheme, t.to.Host
		if t.to.Path != "" {
			u.Path, u.RawPath, u.RawQuery = t.to.Path, t.to.RawPath, t.to.RawQuery
		}
	}
	// The transport expects what reverse_proxy's requests carry: a
	// replacer and the vars, and for a unix socket the dial info.
	ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, caddy.NewReplacer())
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	if t.socket != "" {
		ctx = context.WithValue(ctx, dialInfoCtxKey, reverseproxy.DialInfo{Network: "unix", Address: t.socket})
	}
	method := rec.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(rec.Body))
	if err != nil {
		return dedupe.Attempt{Err: err}
	}
	for name, values := range rec.Header {
		req.Header[name] = append([]string(nil), values...)
	}
	req.Header.Set(eventIDHeader, rec.EventID)
	req.Header.Set(attemptHeader, strconv.Itoa(attempt))
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", "") // not Go's default
	}
	req.ContentLength = int64(len(rec.Body))
	resp, err := t.transport.RoundTrip(req)
	if err != nil {
		return dedupe.Attempt{Err: err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBackendAnswer))
	_ = resp.Body.Close()
	a := dedupe.Attempt{Status: resp.StatusCode}
	if d, ok := dedupe.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		a.RetryAfter = max(d, dedupe.MinRetryAfter)
	}
	return a
}

// hopHeaders are the hop-by-hop headers (RFC 9110 7.6.1), not stored.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Expect"}

// spoolHeader is the header stored with a spooled event: r's without the
// hop-by-hop headers and without credentials (Authorization, Cookie and the
// provider's static credential headers), so that no credential lands in the
// ledger file.
func (h *Handler) spoolHeader(r *http.Request) map[string][]string {
	out := make(map[string][]string, len(r.Header))
	for name, values := range r.Header {
		out[name] = append([]string(nil), values...)
	}
	for _, c := range r.Header.Values("Connection") {
		for f := range strings.SplitSeq(c, ",") {
			if f = textproto.TrimString(f); f != "" {
				delete(out, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	for _, name := range hopHeaders {
		delete(out, name)
	}
	for _, name := range []string{"Authorization", "Cookie"} {
		delete(out, name)
	}
	for _, name := range credentialHeaders[h.Provider] {
		delete(out, textproto.CanonicalMIMEHeaderKey(name))
	}
	return out
}

// spoolWriteTimeout bounds the wait for an event's ledger write.
const spoolWriteTimeout = 30 * time.Second

// spoolEvent stores the verified event, claimed fresh, in the ledger and
// answers 200 spooled; the worker delivers it.
func (d *delivery) spoolEvent(w http.ResponseWriter, body []byte, claim dedupe.Claim) error {
	h, r := d.h, d.r
	defer func() { _ = h.store.Release(context.WithoutCancel(r.Context()), claim) }()
	rec := &dedupe.SpoolRecord{
		Scope:      h.scope,
		Provider:   h.Provider,
		EventID:    d.event.ID,
		EventType:  d.event.Type,
		ReceivedAt: now(),
		Method:     r.Method,
		Path:       r.URL.Path,
		Query:      r.URL.RawQuery,
		ClientIP:   d.clientIP,
		Header:     h.spoolHeader(r),
		Body:       body,
	}
	// Remembered while it may be delivered, and a window after: a
	// provider's late retry of a pending or dead event is a duplicate.
	// Not cancelled when the sender hangs up (the write is queued), but
	// bounded: a stalled disk answers 503.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), spoolWriteTimeout)
	defer cancel()
	dup, err := h.spool.ledger.Spool(ctx, claim.Key, rec, h.spool.maxAge+h.window)
	switch {
	case errors.Is(err, dedupe.ErrFull):
		return d.refuse(w, outcomeStoreFull, "spool: %v", err)
	case err != nil:
		return d.refuse(w, outcomeStoreUnavailable, "spool: %v", err)
	case dup:
		d.drop(w, outcomeDuplicate, "event already accepted")
		return nil
	}
	d.drop(w, outcomeSpooled, "event stored; id %d", rec.Seq)
	return nil
}

// spoolWorker returns the worker of the ledger's spool, starting it (and
// registering it with the admin API) on the first call. It lives in the
// pool entry of the ledger, so reloads keep it; it stops when the ledger
// closes.
func (s *FileStore) spoolWorker() (*dedupe.SpoolWorker, error) {
	p := s.pooled
	if p == nil || p.ledger == nil {
		return nil, errors.New("the file store is not provisioned")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.worker != nil {
		return p.worker, nil
	}
	w := dedupe.NewSpoolWorker(p.ledger, spoolGauges())
	if err := w.Start(); err != nil {
		return nil, fmt.Errorf("ledger %s: %v", p.ledger.Path(), err)
	}
	p.worker = w
	p.unregisterSpool = registerSpool(&ledgerSpool{w: w})
	return w, nil
}

// spoolGauges returns the function that sets the spool's gauges from the
// counts of one ledger; a scope that empties is set to 0.
func spoolGauges() func(map[string]dedupe.SpoolCounts) {
	seen := map[string]bool{}
	return func(counts map[string]dedupe.SpoolCounts) {
		t := time.Now()
		for scope := range seen {
			if _, ok := counts[scope]; !ok {
				spoolEvents.WithLabelValues(scope, spoolPending).Set(0)
				spoolEvents.WithLabelValues(scope, spoolDead).Set(0)
				spoolOldestPending.WithLabelValues(scope).Set(0)
			}
		}
		for scope, c := range counts {
			seen[scope] = true
			spoolEvents.WithLabelValues(scope, spoolPending).Set(float64(c.Pending))
			spoolEvents.WithLabelValues(scope, spoolDead).Set(float64(c.Dead))
			age := 0.0
			if !c.OldestPending.IsZero() {
				age = max(t.Sub(c.OldestPending).Seconds(), 0)
			}
			spoolOldestPending.WithLabelValues(scope).Set(age)
		}
	}
}

// ledgerSpool is the spool of one ledger as the admin API sees it.
type ledgerSpool struct {
	w *dedupe.SpoolWorker
}

// adminTimeout bounds an admin API call's ledger write.
const adminTimeout = 30 * time.Second

func adminContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), adminTimeout)
}

// spoolRecord is rec as the admin API shows it.
func spoolRecord(rec dedupe.SpoolRecord) SpoolRecord {
	return SpoolRecord{
		ID: rec.Seq, Scope: rec.Scope, Provider: rec.Provider,
		EventID: rec.EventID, EventType: rec.EventType, State: rec.State,
		Attempts: rec.Attempts, ReceivedAt: rec.ReceivedAt, NextAttemptAt: rec.NextAt,
		LastError: rec.LastError, Method: rec.Method, Path: rec.Path, Query: rec.Query,
		ClientIP: rec.ClientIP, Header: http.Header(rec.Header), Body: rec.Body,
	}
}

// List implements spoolOperator.
func (l *ledgerSpool) List(state, scope string) ([]SpoolRecord, error) {
	recs, err := l.w.File().SpoolList(state, scope)
	if err != nil {
		return nil, err
	}
	out := make([]SpoolRecord, len(recs))
	for i, rec := range recs {
		out[i] = spoolRecord(rec)
		out[i].Header = nil
	}
	return out, nil
}

// Get implements spoolOperator.
func (l *ledgerSpool) Get(id uint64) (SpoolRecord, bool, error) {
	rec, ok, err := l.w.File().SpoolGet(id)
	if err != nil || !ok {
		return SpoolRecord{}, false, err
	}
	return spoolRecord(rec), true, nil
}

// Retry implements spoolOperator.
func (l *ledgerSpool) Retry(id uint64) (bool, error) {
	ctx, cancel := adminContext()
	defer cancel()
	err := l.w.Retry(ctx, id)
	if errors.Is(err, dedupe.ErrNoSpool) {
		return false, nil
	}
	return err == nil, err
}

// RetryAll implements spoolOperator.
func (l *ledgerSpool) RetryAll(state, scope string) (int, error) {
	ctx, cancel := adminContext()
	defer cancel()
	return l.w.RetryAll(ctx, state, scope)
}

// Discard implements spoolOperator.
func (l *ledgerSpool) Discard(id uint64) (SpoolRecord, bool, error) {
	ctx, cancel := adminContext()
	defer cancel()
	rec, err := l.w.Discard(ctx, id)
	if errors.Is(err, dedupe.ErrNoSpool) {
		return SpoolRecord{}, false, nil
	}
	if err != nil {
		return SpoolRecord{}, false, err
	}
	return spoolRecord(rec), true, nil
}

// Pause implements spoolOperator.
func (l *ledgerSpool) Pause(scope string) error {
	ctx, cancel := adminContext()
	defer cancel()
	return l.w.Pause(ctx, scope, true)
}

// Resume implements spoolOperator.
func (l *ledgerSpool) Resume(scope string) error {
	ctx, cancel := adminContext()
	defer cancel()
	return l.w.Pause(ctx, scope, false)
}

// Interface guard
var _ spoolOperator = (*ledgerSpool)(nil)
