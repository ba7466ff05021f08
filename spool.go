package webhookguard

import (
	"bytes"
	"cmp"
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
	"github.com/hookguard/caddy-webhook-guard/internal/spoolapi"
	"github.com/hookguard/caddy-webhook-guard/spool"
	"github.com/hookguard/caddy-webhook-guard/verify"
)

// Defaults of the spool block.
const (
	DefaultSpoolMaxAge      = 72 * time.Hour
	DefaultSpoolConcurrency = 4
	DefaultSpoolTimeout     = 30 * time.Second
)

// transportNamespace is the namespace of reverse_proxy's transports, which
// the spool delivers through.
const transportNamespace = "http.reverse_proxy.transport"

// SpoolConfig is the spool block: the guard acknowledges an event once it is
// stored (200, Webhook-Guard-Outcome: spooled) and delivers it itself, with
// retries, to To. The handler is then the last of its route.
type SpoolConfig struct {
	// To is the backend: http://host:port[/path], https://host[:port][/path]
	// or unix//path/to.sock. Without a path, the event's original path and
	// query are used.
	To string `json:"to"`
	// Name names the spool's target: the events this handler accepts are
	// delivered by the handler of the same provider, scope and name, and no
	// other. Default: To. Give a name to keep delivering the events
	// already spooled when To changes.
	Name string `json:"name,omitempty"`
	// MaxAttempts, when set, is how many delivery attempts an event gets
	// before it is dead (kept, listed, counted). By default only MaxAge
	// ends the attempts.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxAge is how long after it was received (or last retried by an
	// operator) an undelivered event is dead; default 72h.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
	// Backoff is the retry schedule: the delay after the first failed
	// attempt, the second, ..., the last repeated. Default 5s 30s 2m 10m
	// 30m 1h 2h. A backend's Retry-After delays an attempt further, never
	// less.
	Backoff []caddy.Duration `json:"backoff,omitempty"`
	// DeadOn lists the backend statuses that make an event dead at once
	// (the backend refuses it for good): a status (410) or a class (4xx).
	// By default every failed attempt is retried.
	DeadOn []string `json:"dead_on,omitempty"`
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
	signer    *verify.UpstreamSigner // sign_upstream, nil when not set
	target    *spool.Target
	sp        *spool.Spool
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
		case "name":
			if err := oneArgInto1(d, &sc.Name); err != nil {
				return err
			}
			if err := checkName(sc.Name); err != nil {
				return d.Errf("spool: name: %v", err)
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
		case "backoff":
			if sc.Backoff != nil {
				return d.Err("spool: backoff given twice")
			}
			for d.NextArg() {
				v, err := caddy.ParseDuration(d.Val())
				if err != nil || v < minDuration {
					return d.Errf("backoff: want delays of at least %v (5s 30s 2m ...), got '%s'", minDuration, d.Val())
				}
				sc.Backoff = append(sc.Backoff, caddy.Duration(v))
			}
			if len(sc.Backoff) == 0 {
				return d.Err("backoff: want one delay or more (5s 30s 2m 10m 30m 1h 2h; the last repeated)")
			}
		case "dead_on":
			if sc.DeadOn != nil {
				return d.Err("spool: dead_on given twice")
			}
			for d.NextArg() {
				if _, err := parseDeadOn([]string{d.Val()}); err != nil {
					return d.Errf("dead_on: %v", err)
				}
				sc.DeadOn = append(sc.DeadOn, d.Val())
			}
			if len(sc.DeadOn) == 0 {
				return d.Err("dead_on: want statuses (410) or classes (4xx)")
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

// parseDeadOn reads dead_on: statuses 400-599 or classes 4xx, 5xx.
func parseDeadOn(values []string) (func(status int) bool, error) {
	statuses, classes := map[int]bool{}, map[int]bool{}
	for _, v := range values {
		if len(v) == 3 && (v[0] == '4' || v[0] == '5') && strings.EqualFold(v[1:], "xx") {
			classes[int(v[0]-'0')] = true
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 400 || n > 599 {
			return nil, fmt.Errorf("want a status from 400 to 599 or a class 4xx or 5xx, got '%s'", v)
		}
		statuses[n] = true
	}
	if len(values) == 0 {
		return nil, nil
	}
	return func(status int) bool { return statuses[status] || classes[status/100] }, nil
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

// errSpoolStore explains why the spool needs the file or the redis store.
func errSpoolStore(store string) error {
	return fmt.Errorf("spool needs the file store (the default ledger) or store redis (a spool shared by several Caddy instances), not %s: it stores the event and marks its id accepted in one write", store)
}

// spoolStoreTypes are the store types that can hold a spool.
var spoolStoreTypes = map[string]bool{"": true, "file": true, "redis": true}

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

// spoolTargets holds, per configuration, how each spool target delivers:
// the events of a target are delivered with one set of options, so two
// handlers that share a target (one provider, scope and `to`, no `name`)
// must give the same.
var spoolTargets = newPerConfig[string]()

// checkOneTarget fails the load when another handler of this configuration
// delivers to the target key with other options (its spool block,
// sign_upstream or replay window): the last one registered would otherwise
// deliver the events of both.
func (h *Handler) checkOneTarget(ctx caddy.Context, key string) error {
	options, err := json.Marshal(struct {
		Spool        *SpoolConfig
		SignUpstream []string
		Window       time.Duration
	}{h.Spool, h.SignUpstream, h.window})
	if err != nil {
		return fmt.Errorf("spool: %v", err)
	}
	if _, clash := spoolTargets.claim(ctx, key, string(options)); clash {
		return fmt.Errorf("spool: another handler of this configuration (provider %s, scope %q) also spools to %s, with other options (max_attempts, max_age, timeout, concurrency, backoff, dead_on, transport, sign_upstream or replay_window): its events would be delivered with one handler's options; give each spool block its own `name`, or the same options", h.Provider, h.scope, h.Spool.To)
	}
	return nil
}

// cacheForgetter is the cache of delivered answers in front of a replay
// store (dedupe.Cached).
type cacheForgetter interface {
	Forget(key string)
	ForgetAll()
}

// spoolStore is implemented by the store modules that can hold a spool.
type spoolStore interface {
	// spoolOf returns the store's spool, started, shared by every handler
	// of the store.
	spoolOf() (*spool.Spool, error)
}

// provisionSpool loads the transport and registers the handler's target
// with the store's spool (starting it), kept for Cleanup.
func (h *Handler) provisionSpool(ctx caddy.Context, storeMod any) error {
	sc := h.Spool
	ss, ok := storeMod.(spoolStore)
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
	if err := checkName(sc.Name); sc.Name != "" && err != nil {
		return fmt.Errorf("spool: name: %v", err)
	}
	schedule := make(spool.Schedule, len(sc.Backoff))
	for i, d := range sc.Backoff {
		schedule[i] = time.Duration(d)
	}
	if len(schedule) == 0 {
		schedule = spool.DefaultSchedule
	}
	if err := schedule.Check(); err != nil {
		return fmt.Errorf("spool: %v", err)
	}
	deadOn, err := parseDeadOn(sc.DeadOn)
	if err != nil {
		return fmt.Errorf("spool: dead_on: %v", err)
	}
	// Before the transport is loaded: LoadModule clears TransportRaw, which
	// the target's options include.
	key := h.Provider + "/" + h.scope + "/" + cmp.Or(sc.Name, sc.To)
	if err := h.checkOneTarget(ctx, key); err != nil {
		return err
	}
	t := &spoolTarget{to: u, socket: socket, signer: h.upstreamSigner}
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
	t.maxAge = time.Duration(cmpPositive(sc.MaxAge, caddy.Duration(DefaultSpoolMaxAge)))
	scope, logger := h.scope, h.logger
	t.target = &spool.Target{
		Key:         key,
		Scope:       scope,
		Deliver:     t.deliver,
		MaxAttempts: sc.MaxAttempts,
		MaxAge:      t.maxAge,
		Timeout:     time.Duration(cmpPositive(sc.Timeout, caddy.Duration(DefaultSpoolTimeout))),
		Concurrency: cmpPositive(sc.Concurrency, DefaultSpoolConcurrency),
		Window:      h.window,
		Schedule:    schedule,
		DeadOn:      deadOn,
		OnAttempt: func(rec *spool.Record, a spool.Attempt) {
			result := deliveryDelivered
			switch {
			case a.Err != nil && a.Status == 0:
				result = deliveryError
			case !a.Delivered():
				result = deliveryRefused
			}
			deliveryAttempts.WithLabelValues(scope, result).Inc()
			if a.Delivered() {
				logger.Info("spooled webhook delivered",
					zap.String("scope", scope), zap.Uint64("id", rec.ID), zap.String("provider", rec.Provider),
					zap.String("event_id", rec.EventID), zap.String("event_type", rec.EventType),
					zap.Int("attempt", rec.Attempts), zap.Int("status", a.Status))
				return
			}
			logger.Warn("spooled webhook delivery failed",
				zap.String("scope", scope), zap.Uint64("id", rec.ID), zap.String("provider", rec.Provider),
				zap.String("event_id", rec.EventID), zap.String("event_type", rec.EventType),
				zap.Int("attempt", rec.Attempts), zap.String("result", result), zap.Int("status", a.Status),
				zap.String("error", rec.LastError), zap.Time("next_attempt_at", rec.NextAt),
				zap.Bool("dead", rec.NextAt.IsZero()))
		},
		OnDead: func(rec spool.Record) {
			spoolDeadTotal.WithLabelValues(scope).Inc()
			logger.Error("spooled webhook is dead",
				zap.String("scope", scope), zap.Uint64("id", rec.ID), zap.String("provider", rec.Provider),
				zap.String("event_id", rec.EventID), zap.String("event_type", rec.EventType),
				zap.Int("attempts", rec.Attempts), zap.String("last_error", rec.LastError),
				zap.String("hint", "out of attempts or max_age, or refused for good (dead_on); kept until retried or discarded: caddy webhook-guard spool list --state dead"))
		},
		OnError: func(rec *spool.Record, err error) {
			logger.Error("spool: the result of a delivery attempt could not be stored; the event stays due",
				zap.String("scope", scope), zap.Uint64("id", rec.ID), zap.String("event_id", rec.EventID), zap.Error(err))
		},
	}
	if t.sp, err = ss.spoolOf(); err != nil {
		return fmt.Errorf("spool: %v", err)
	}
	t.unreg = t.sp.Register(t.target)
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

// cleanupSpool unregisters the handler's target, if it is still the key's.
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
func (t *spoolTarget) deliver(ctx context.Context, rec *spool.Record, attempt int) spool.Attempt {
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
	method := cmp.Or(rec.Method, http.MethodPost)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(rec.Body))
	if err != nil {
		return spool.Attempt{Err: err}
	}
	for name, values := range rec.Header {
		req.Header[name] = append([]string(nil), values...)
	}
	req.Header.Set(spoolapi.EventIDHeader, verify.HeaderEventID(rec.EventID))
	req.Header.Set(spoolapi.AttemptHeader, strconv.Itoa(attempt))
	if t.signer != nil { // signed now: fresh at every attempt, however late
		t.signer.Sign(req.Header, rec.EventID, rec.Body, now())
	}
	// As reverse_proxy does: the verified client, and the original
	// request's host and scheme.
	if rec.ClientIP != "" {
		req.Header.Set("X-Forwarded-For", rec.ClientIP)
	}
	if rec.Host != "" {
		req.Header.Set("X-Forwarded-Host", rec.Host)
	}
	if rec.Proto != "" {
		req.Header.Set("X-Forwarded-Proto", rec.Proto)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", "") // not Go's default
	}
	req.ContentLength = int64(len(rec.Body))
	resp, err := t.transport.RoundTrip(req)
	if err != nil {
		return spool.Attempt{Err: err}
	}
	defer resp.Body.Close()
	a := spool.Attempt{Status: resp.StatusCode}
	answer := make([]byte, spool.MaxAnswer)
	n, _ := io.ReadFull(resp.Body, answer)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBackendAnswer))
	if !a.Delivered() {
		a.Answer = strings.ToValidUTF8(string(answer[:n]), "?")
	}
	if d, ok := spool.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		a.RetryAfter = d
	}
	if a.Delivered() && resp.Header.Get(spoolapi.OutcomeHeader) == outcomeDuplicate {
		// The backend is a guard that already has the event: its 200 does
		// not say the event reached a backend (to points back at a guard).
		a.Err = errors.New("the backend is a webhook guard that answered 200 duplicate: spool `to` must point at the backend, not at a guard")
	}
	return a
}

// hopHeaders are the hop-by-hop headers (RFC 9110 7.6.1), not stored.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Expect"}

// forwardingHeaders are what a client says of the way its request came:
// not stored, since a client could forge them; the spool sends its own, from
// what Caddy verified.
var forwardingHeaders = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip"}

// spoolHeader is the header stored with a spooled event: r's without the
// hop-by-hop and forwarding headers and without credentials (Authorization,
// Cookie and the provider's static credential headers), so that no
// credential lands in the ledger file.
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
	for _, names := range [][]string{hopHeaders, forwardingHeaders, {"Authorization", "Cookie"}} {
		for _, name := range names {
			delete(out, name)
		}
	}
	for _, name := range h.scheme.CredentialHeaders {
		delete(out, textproto.CanonicalMIMEHeaderKey(name))
	}
	return out
}

// spoolWriteTimeout bounds the wait for an event's write.
const spoolWriteTimeout = 30 * time.Second

// spoolEvent stores the verified event, claimed fresh, and answers 200
// spooled; the spool delivers it.
func (d *delivery) spoolEvent(w http.ResponseWriter, body []byte, claim dedupe.Claim) error {
	h, r := d.h, d.r
	stored := false
	defer func() {
		// Once stored, the key is accepted and the store has let the claim
		// go (the ledger) or holds no token any more (Redis): a release
		// would only cost a round trip.
		if !stored {
			_ = h.store.Release(context.WithoutCancel(r.Context()), claim)
		}
	}()
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	rec := &spool.Record{
		Target:     h.spool.target.Key,
		Scope:      h.scope,
		Provider:   h.Provider,
		EventID:    d.event.ID,
		EventType:  d.event.Type,
		ReceivedAt: now(),
		Method:     r.Method,
		Path:       r.URL.Path,
		Query:      r.URL.RawQuery,
		ClientIP:   d.clientIP,
		Host:       r.Host,
		Proto:      proto,
		Header:     h.spoolHeader(r),
		Body:       body,
	}
	// Remembered while it may be delivered, and a window after: a
	// provider's late retry of a pending or dead event is a duplicate.
	// Not cancelled when the sender hangs up (the write is queued), but
	// bounded: a stalled disk answers 503.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), spoolWriteTimeout)
	defer cancel()
	dup, err := h.spool.sp.Ingest(ctx, claim.Key, rec, h.spool.maxAge+h.window)
	switch {
	case errors.Is(err, dedupe.ErrFull):
		return d.refuse(w, outcomeStoreFull, "spool: %v", err)
	case err != nil:
		return d.refuse(w, outcomeStoreUnavailable, "spool: %v", err)
	case dup:
		d.drop(w, outcomeDuplicate, "event already accepted")
		return nil
	}
	stored = true
	d.drop(w, outcomeSpooled, "event stored; id %d", rec.ID)
	return nil
}

// spoolOf returns the ledger's spool, starting it (and registering it with
// the admin API) on the first call. It lives in the pool entry of the
// ledger, so reloads keep it; it stops when the ledger closes.
func (s *storeHandle) spoolOf() (*spool.Spool, error) {
	p := s.pooled
	if p == nil || p.spoolStore == nil && !p.validationOnly {
		return nil, errors.New("the store is not provisioned or holds no spool")
	}
	p.mu.Lock()
	check := p.checkSpool
	p.mu.Unlock()
	if check != nil {
		if err := check(); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spool != nil {
		return p.spool, nil
	}
	if p.validationOnly { // caddy validate: a spool that is never started
		p.spool = spool.New(nil, spool.Options{})
		return p.spool, nil
	}
	var forgotten func(key string)
	if c, ok := p.Store.(cacheForgetter); ok {
		forgotten = c.Forget // a forgotten id must not be answered "duplicate" from the cache
	}
	sp := spool.New(p.spoolStore, spool.Options{
		Name:        p.name,
		OnForgotten: forgotten,
		Now:         func() time.Time { return now() },
		OnCounts:    spoolGauges(),
		OnLeaseError: func(err error) {
			if errors.Is(err, dedupe.ErrDataLost) {
				spoolDataLost.Inc()
				p.logger().Error("spool: Redis lost the spool's data: the events it held are gone (delivered ones are not redelivered, undelivered ones are lost); the spool goes on from what Redis holds now. Check Redis' persistence (appendonly, its volume) and its logs",
					zap.Error(err))
				return
			}
			p.logger().Error("spool: the due events could not be read; retrying in a few seconds", zap.Error(err))
		},
		OnOrphans: func(orphans []spool.Orphans) {
			for _, o := range orphans {
				p.logger().Warn("spooled events wait for a handler that is gone: no handler's spool block delivers their target now (removed, or its to or name changed); restore it, or discard them",
					zap.String("scope", o.Scope), zap.String("target", o.Target), zap.Int("events_pending", o.Pending),
					zap.String("list", "caddy webhook-guard spool list --state pending --scope "+o.Scope))
			}
		},
	})
	sp.Start()
	p.spool = sp
	p.unregisterSpool = registerSpool(sp)
	return sp, nil
}

// spoolGauges returns the function that sets the spool's gauges from the
// counts of one store; a scope that empties is set to 0.
func spoolGauges() func(map[string]spool.Counts, map[string]bool) {
	seen := map[string]bool{}
	return func(counts map[string]spool.Counts, paused map[string]bool) {
		t := time.Now()
		for scope := range seen {
			if _, ok := counts[scope]; !ok {
				for _, state := range []spool.State{spool.Pending, spool.Dead, spool.Discarded} {
					spoolEvents.WithLabelValues(scope, string(state)).Set(0)
				}
				spoolOldestPending.WithLabelValues(scope).Set(0)
			}
			if !paused[scope] {
				spoolPaused.WithLabelValues(scope).Set(0)
			}
		}
		for scope := range paused {
			seen[scope] = true
			spoolPaused.WithLabelValues(scope).Set(1)
		}
		for scope, c := range counts {
			seen[scope] = true
			spoolEvents.WithLabelValues(scope, string(spool.Pending)).Set(float64(c.Pending))
			spoolEvents.WithLabelValues(scope, string(spool.Dead)).Set(float64(c.Dead))
			spoolEvents.WithLabelValues(scope, string(spool.Discarded)).Set(float64(c.Discarded))
			age := 0.0
			if !c.OldestPending.IsZero() {
				age = max(t.Sub(c.OldestPending).Seconds(), 0)
			}
			spoolOldestPending.WithLabelValues(scope).Set(age)
			if !paused[scope] {
				spoolPaused.WithLabelValues(scope).Set(0)
			}
		}
	}
}
