// Package webhookguard is a Caddy HTTP handler that stands in front of the
// endpoints receiving payment providers' webhooks. It verifies each event's
// signature or API key, refuses sources outside the provider's IP
// allow-list, drops replays and duplicate deliveries, and passes only
// authenticated, first-seen events to the next handler (normally
// reverse_proxy), remembering an event as delivered only once the upstream
// answered 2xx.
package webhookguard

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/verify"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the handler's options.
const (
	DefaultMaxBody      = 1 << 20
	DefaultReplayWindow = 24 * time.Hour
	// clockSkew is added to the tolerance when deciding how long a
	// timestamped event must be remembered.
	clockSkew = time.Minute
	// retryAfter is the Retry-After (seconds) of 409 and 503 answers.
	retryAfter = "5"
	// defaultCommitWait bounds the wait for the commit of a delivered
	// event: a stalled store answers 503 (the claim kept) rather than
	// holding the sender and every request behind it.
	defaultCommitWait = 10 * time.Second
)

// Handler guards a webhook endpoint: `webhook_guard <provider> { ... }`.
type Handler struct {
	// Provider is the signing scheme: ivy, ivpay, standard, stripe, github,
	// shopify, slack or hmac.
	Provider string `json:"provider"`
	// Secrets are the signing secrets, all tried (rotation). Placeholders
	// {env.NAME} and {file./path} are resolved once at provisioning.
	Secrets []string `json:"secrets,omitempty"`
	// APIKeys are the accepted static API keys (ivpay); placeholders as for
	// Secrets.
	APIKeys []string `json:"api_keys,omitempty"`
	// PublicKeys are Ed25519 public keys (whpk_<base64>) for Standard
	// Webhooks v1a signatures.
	PublicKeys []string `json:"public_keys,omitempty"`
	// AllowIPs are the accepted client addresses: IPs, CIDRs, the preset
	// "ivy" (Ivy's published addresses), or "any" to turn the check off. When
	// empty, the provider's published list applies (ivy), else any source.
	// The client IP is Caddy's, so the server's trusted_proxies applies.
	AllowIPs []string `json:"allow_ips,omitempty"`
	// MaxBody is the largest accepted body in bytes; default 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`
	// Tolerance bounds the age (or future skew) of a signed timestamp;
	// default 5m.
	Tolerance caddy.Duration `json:"tolerance,omitempty"`
	// ReplayWindow is how long a delivered event id is remembered; default
	// 24h. When it is not set, events with a signed timestamp (standard,
	// stripe, slack, hmac with timestamp_header) are remembered only as long
	// as their timestamp stays within tolerance, plus a minute of skew: long
	// enough to refuse every replay. Set it to also drop a provider's late
	// retries, which come re-signed with a new timestamp.
	ReplayWindow caddy.Duration `json:"replay_window,omitempty"`
	// DedupeOff turns replay and duplicate dropping off.
	DedupeOff bool `json:"dedupe_off,omitempty"`
	// Events, when set, lists the event types forwarded; other types are
	// answered 200 and not forwarded.
	Events []string `json:"events,omitempty"`
	// HMAC configures the generic hmac provider.
	HMAC *verify.HMACOptions `json:"hmac,omitempty"`
	// Scope is part of every replay key; default the provider name. Two
	// handlers of one config that remember events under the same scope and
	// provider must share a secret or key (they are one sender); otherwise
	// the config fails to load and asks for a scope each.
	Scope string `json:"scope,omitempty"`
	// StoreRaw is the replay store, a module in the namespace
	// http.handlers.webhook_guard.stores: file (the default: a ledger in
	// Caddy's data directory that survives restarts), memory or redis.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=http.handlers.webhook_guard.stores inline_key=type"`
	// ForwardCredentials keeps a verified static credential (ivpay's
	// X-API-KEY) in the request forwarded upstream, for an upstream that
	// checks it too. By default it is removed once verified.
	ForwardCredentials bool `json:"forward_credentials,omitempty"`
	// SignUpstream, when set, makes the guard sign each event it forwards
	// with Standard Webhooks headers (webhook-id, webhook-timestamp,
	// webhook-signature: a v1 HMAC per secret, whsec_<base64>), replacing any
	// the provider sent, so the backend verifies every provider's events
	// with one Standard Webhooks library. Placeholders as for Secrets.
	SignUpstream []string `json:"sign_upstream,omitempty"`
	// Spool, when set, makes the guard acknowledge each verified, first-seen
	// event once it is on disk (200, Webhook-Guard-Outcome: spooled) and
	// deliver it itself, with retries, to the backend: the handler is then
	// the last of its route. It needs the file store (one Caddy) or the
	// redis store (a spool shared by every instance on that Redis).
	Spool *SpoolConfig `json:"spool,omitempty"`
	// DeclaredAt is where the handler was declared, "<file>:<line>", filled
	// in by the Caddyfile adapter. It names the handler, with its route, in
	// load errors and warnings; it changes nothing else.
	DeclaredAt string `json:"declared_at,omitempty"`

	verifier  verify.Verifier
	scheme    verify.Scheme
	allow     allowList
	store     dedupe.Store
	lease     time.Duration
	window    time.Duration
	tolerance time.Duration
	scope     string
	events    map[string]struct{}
	ignored   *seenTypes // types dropped as ignored_type, warned once (events.go)
	logger    *zap.Logger
	metrics   *handlerMetrics
	secrets   []string // resolved secrets and keys, to keep out of errors
	keySpace  *keySpace
	registry  *prometheus.Registry // the config's, which keys keySpaces
	// lastUsageWarning is when the store's nearly-full warning was last
	// logged (unix seconds).
	lastUsageWarning *atomic.Int64

	errChain    *errChainCache // the server's error routes (credentials.go)
	proxyWarned *proxyWarning  // loose trusted_proxies warned (proxies.go)

	spool *spoolTarget // the provisioned spool block (spool.go)

	// commitWait bounds a commit's wait (defaultCommitWait; tests lower it).
	commitWait     time.Duration
	upstreamSigner *verify.UpstreamSigner // sign_upstream (upstream.go)
	placement      placement              // where the handler is in its config (placement.go)
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.webhook_guard",
		New: func() caddy.Module { return new(Handler) },
	}
}

// provision resolves secrets, builds the verifier and the allow-list, and
// opens (or reuses across reloads) the replay store; Provision names the
// handler in its errors (placement.go).
func (h *Handler) provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.commitWait = defaultCommitWait
	h.lastUsageWarning = new(atomic.Int64)
	h.errChain = new(errChainCache)
	h.proxyWarned = new(proxyWarning)
	h.metrics = registerMetrics(ctx.GetMetricsRegistry(), h.logger, h.Provider)

	scheme, ok := verify.Lookup(h.Provider)
	if !ok {
		return fmt.Errorf("provider: unknown provider %q (known: %v)", h.Provider, verify.Names())
	}
	h.scheme = scheme

	cfg, err := h.schemeConfig()
	if err != nil {
		return err
	}
	if h.verifier, err = scheme.New(cfg); err != nil {
		return h.scrub(h.withPlaceholders(err))
	}
	h.tolerance = cfg.Tolerance
	if err := h.provisionSignUpstream(); err != nil {
		return err
	}

	if h.allow, err = parseAllowList(h.AllowIPs, scheme.DefaultAllowIPs); err != nil {
		return err
	}
	if h.MaxBody == 0 {
		h.MaxBody = DefaultMaxBody
	}
	if h.MaxBody < 0 {
		return fmt.Errorf("max_body: must be positive")
	}
	h.window = time.Duration(h.ReplayWindow)
	if h.window < 0 || (h.window > 0 && h.window < minDuration) {
		return fmt.Errorf("replay_window: must be at least %v", minDuration)
	}
	if err := h.checkReplayWindow(cfg.Tolerance); err != nil {
		return err
	}
	if h.window == 0 {
		h.window = DefaultReplayWindow
		if h.timestamped() { // never shorter than the timestamp check lets a replay through
			h.window = max(h.window, 2*cfg.Tolerance+clockSkew)
		}
	}
	if err := h.provisionEvents(); err != nil {
		return err
	}
	if h.Spool != nil && h.DedupeOff {
		return errSpoolStore("dedupe off")
	}
	if t := storeType(h.StoreRaw); h.Spool != nil && !spoolStoreTypes[t] {
		return errSpoolStore("store " + t)
	}
	if h.Spool != nil && h.ForwardCredentials {
		return errors.New("forward_credentials: the spool never stores a credential, so it cannot forward one")
	}
	if h.DedupeOff {
		if h.StoreRaw != nil {
			return errors.New("store: given with dedupe off")
		}
		return nil
	}
	h.scope = h.Scope
	if h.scope == "" {
		h.scope = h.Provider
	}
	if err := checkName(h.scope); err != nil {
		return fmt.Errorf("scope: %v", err)
	}
	if err := h.claimKeySpace(ctx, cfg); err != nil {
		return err
	}
	return h.loadStore(ctx)
}

// loadStore loads the store module, the file ledger when none is
// configured.
func (h *Handler) loadStore(ctx caddy.Context) error {
	var mod any
	var err error
	if h.StoreRaw == nil {
		mod, err = ctx.LoadModuleByID(storeNamespace+".file", nil)
	} else {
		mod, err = ctx.LoadModule(h, "StoreRaw")
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	rs, ok := mod.(ReplayStore)
	if !ok {
		return fmt.Errorf("store: module %T is not a replay store", mod)
	}
	h.store, h.lease = rs.ReplayStore()
	if h.Spool != nil {
		return h.provisionSpool(ctx, mod)
	}
	return nil
}

// schemeConfig resolves the secrets and builds the scheme's configuration.
func (h *Handler) schemeConfig() (verify.Config, error) {
	repl := caddy.NewReplacer()
	var err error
	cfg := verify.Config{Tolerance: time.Duration(h.Tolerance)}
	if cfg.Tolerance < 0 || (cfg.Tolerance > 0 && cfg.Tolerance < minDuration) {
		return cfg, fmt.Errorf("tolerance: must be at least %v", minDuration)
	}
	if cfg.Tolerance == 0 {
		cfg.Tolerance = verify.DefaultTolerance
	}
	if cfg.Secrets, err = resolveSecrets(repl, "secret", h.Secrets); err != nil {
		return cfg, err
	}
	if cfg.APIKeys, err = resolveSecrets(repl, "api_key", h.APIKeys); err != nil {
		return cfg, err
	}
	if cfg.PublicKeys, err = resolveSecrets(repl, "public_key", h.PublicKeys); err != nil {
		return cfg, err
	}
	if h.HMAC != nil {
		cfg.HMAC = *h.HMAC
	}
	h.secrets = slices.Concat(cfg.Secrets, cfg.APIKeys)
	return cfg, nil
}

// Validate checks the provisioned handler.
func (h *Handler) Validate() error {
	if h.verifier == nil {
		return errors.New("provider: not provisioned")
	}
	return nil
}

// Cleanup gives up the handler's key space and its spool's registration;
// Caddy cleans up the store
// module, whose store lives on while a newer config (after a reload) uses it.
func (h *Handler) Cleanup() error {
	h.cleanupSpool()
	h.releaseKeySpace()
	return nil
}

// ServeHTTP guards one request. The refusal or failure of a request that
// carries a static credential is answered here, not returned to Caddy,
// whose error log would print the credential (see answerError).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.carriesCredential(r) {
		return h.answerError(w, r, h.pipeline(w, r, next))
	}
	return h.pipeline(w, r, next)
}

// pipeline runs the guard: cheapest refusal first, nothing forwarded
// unverified.
func (h *Handler) pipeline(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	d := delivery{h: h, r: r, clientIP: clientIP(r)}

	if r.Method != http.MethodPost {
		return d.refuse(w, outcomeBadMethod, "method %s, webhooks are POSTs", r.Method)
	}
	if r.TLS != nil && !r.TLS.HandshakeComplete {
		return d.refuse(w, outcomeEarlyData, "TLS early data: client IP cannot be verified yet")
	}
	h.warnLooseProxies(r)
	if !h.allow.allows(d.clientIP) {
		return d.refuse(w, outcomeIPDenied, "client IP %s is not in allow_ips", d.clientIP)
	}

	body, err := readBody(w, r, h.MaxBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return d.refuse(w, outcomeTooLarge, "body over max_body (%d bytes)", h.MaxBody)
		}
		return d.refuse(w, outcomeBadRequest, "reading body: %v", err)
	}

	start := time.Now()
	ev, err := h.verifier.Verify(r.Header, body, now())
	h.metrics.observeVerify(time.Since(start))
	if verify.ReasonOf(err) == verify.ReasonProbe {
		d.drop(w, outcomeProbe, "%s", err.Error())
		return nil
	}
	if err != nil {
		return d.refuse(w, verify.ReasonOf(err), "%s", err.Error())
	}
	d.event = ev
	d.warnLoop()
	setPlaceholders(r, h.Provider, ev)
	if d.answerHandshake(w, body) {
		return nil
	}

	if h.events != nil {
		if _, wanted := h.events[ev.Type]; !wanted {
			d.ignoreType(w)
			return nil
		}
	}

	restoreBody(r, body)
	h.dropCredentials(r)
	if h.upstreamSigner != nil && h.spool == nil { // the spool signs at each delivery attempt
		h.upstreamSigner.Sign(r.Header, ev.ID, body, now())
	}
	if h.DedupeOff {
		return d.forward(w, next, nil)
	}

	claim, err := h.store.Claim(r.Context(), dedupe.Key(h.scope, h.Provider, ev.ReplayID), h.lease)
	switch {
	case errors.Is(err, dedupe.ErrFull):
		return d.refuse(w, outcomeStoreFull, "replay store: %v", err)
	case err != nil:
		return d.refuse(w, outcomeStoreUnavailable, "replay store: %v", err)
	case claim.State == dedupe.Delivered:
		if h.spool != nil { // the spool's ids are accepted before they are delivered
			d.drop(w, outcomeDuplicate, "event already accepted")
			return nil
		}
		d.drop(w, outcomeDuplicate, "event already delivered")
		return nil
	case claim.State == dedupe.InFlight:
		return d.refuse(w, outcomeInFlight, "another delivery of this event is in flight")
	}
	if refused, err := d.unwritable(w, claim); refused {
		return err
	}
	h.checkUsage()
	if h.spool != nil {
		return d.spoolEvent(w, body, claim)
	}
	return d.forward(w, next, &claim)
}

// rememberFor is how long a delivered event must be remembered. An event
// with a signed timestamp is remembered, by default, only until that
// timestamp falls out of tolerance (plus skew): a replay of it is refused by
// the timestamp check after that. Providers re-sign their retries with a new
// timestamp, so an explicit replay_window is honoured as given, to drop late
// retries of an event the upstream already took. Other events are remembered
// for the replay window.
func (h *Handler) rememberFor(ev verify.Event) time.Duration {
	if ev.Timestamp.IsZero() || h.ReplayWindow > 0 {
		return h.window
	}
	d := ev.Timestamp.Add(h.tolerance + clockSkew).Sub(now())
	return min(max(d, clockSkew), h.window)
}

// now is swapped in tests.
var now = time.Now

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
