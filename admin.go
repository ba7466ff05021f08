package webhookguard

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/internal/spoolapi"
	"github.com/hookguard/caddy-webhook-guard/spool"
	"github.com/hookguard/caddy-webhook-guard/verify"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(adminSpool{})
}

// adminSpoolPrefix is the admin API path of the spool's routes.
const adminSpoolPrefix = "/webhook_guard/spool"

// redactedValue replaces the value of a credential header or query
// parameter in the admin API's answers.
const redactedValue = "[REDACTED]"

// spoolRegistry holds the spools of the loaded configurations, one per store
// (ledger file). Ids are unique within a store, not across stores: the admin
// API finds an id in the one spool that has it, and asks for ?scope= when
// two have it. A spool is registered when its store opens and unregistered
// before the store closes; a call already in flight then may still reach it
// and fails with an error rather than block.
var spoolRegistry struct {
	mu    sync.Mutex
	spool []*registeredSpool
}

// registeredSpool is one registration, compared by pointer so that a spool
// registered twice is unregistered once per registration.
type registeredSpool struct{ sp *spool.Spool }

// registerSpool makes sp reachable through the admin API until unregister
// is called (more calls of unregister do nothing).
func registerSpool(sp *spool.Spool) (unregister func()) {
	entry := &registeredSpool{sp: sp}
	spoolRegistry.mu.Lock()
	spoolRegistry.spool = append(spoolRegistry.spool, entry)
	spoolRegistry.mu.Unlock()
	return sync.OnceFunc(func() {
		spoolRegistry.mu.Lock()
		defer spoolRegistry.mu.Unlock()
		spoolRegistry.spool = slices.DeleteFunc(spoolRegistry.spool, func(e *registeredSpool) bool { return e == entry })
	})
}

// registeredSpools returns the spools registered now.
func registeredSpools() []*spool.Spool {
	spoolRegistry.mu.Lock()
	defer spoolRegistry.mu.Unlock()
	out := make([]*spool.Spool, len(spoolRegistry.spool))
	for i, e := range spoolRegistry.spool {
		out[i] = e.sp
	}
	return out
}

// adminSpool is the admin API module admin.api.webhook_guard: the routes
// under /webhook_guard/spool through which operators list, show, retry,
// discard, pause and resume spooled events, as reverse_proxy serves
// /reverse_proxy/upstreams.
type adminSpool struct {
	logger *zap.Logger
	// spools returns the spools to act on; registeredSpools unless a test
	// sets it.
	spools func() []*spool.Spool
}

// CaddyModule returns the Caddy module information.
func (adminSpool) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.webhook_guard",
		New: func() caddy.Module { return new(adminSpool) },
	}
}

// Provision sets up the module's logger. Caddy provisions admin routers
// outside any module's context, where ctx.Logger is Caddy's unnamed default
// logger: the module names it itself.
func (a *adminSpool) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if ctx.Module() == nil {
		a.logger = a.logger.Named("admin.api.webhook_guard")
	}
	return nil
}

// Routes returns the route of /webhook_guard/.
func (a *adminSpool) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/webhook_guard/",
		Handler: caddy.AdminHandlerFunc(a.serveSpool),
	}}
}

// utc is t in UTC, nil when zero.
func utc(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// spoolEventSummary is rec as GET /webhook_guard/spool lists it; sp is its
// spool and paused its paused scopes, to say why it waits.
func spoolEventSummary(sp *spool.Spool, rec spool.Record, paused map[string]bool) spoolapi.Event {
	e := spoolapi.Event{
		ID:            rec.ID,
		Scope:         rec.Scope,
		Provider:      rec.Provider,
		EventID:       rec.EventID,
		EventType:     rec.EventType,
		State:         string(rec.State),
		Attempts:      rec.Attempts,
		ReceivedAt:    utc(rec.ReceivedAt),
		NextAttemptAt: utc(rec.NextAt),
		LastError:     rec.LastError,
		Paused:        paused[rec.Scope],
		DiscardedAt:   utc(rec.DiscardedAt),
		DiscardedBy:   rec.DiscardedBy,
	}
	if rec.State == spool.Pending {
		switch {
		case e.Paused:
			e.Waiting = "scope paused: delivered after a resume"
		case sp != nil && sp.Orphan(rec.Target, rec.Scope):
			e.Waiting = "no handler delivers it (its spool block was removed or changed): it waits for one; retry or discard it"
		}
	}
	return e
}

// spoolEventDetail is rec as GET /webhook_guard/spool/<id> shows it, its
// credentials redacted.
func spoolEventDetail(sp *spool.Spool, rec spool.Record, paused map[string]bool) spoolapi.EventDetail {
	d := spoolapi.EventDetail{
		Event:    spoolEventSummary(sp, rec, paused),
		Method:   rec.Method,
		Path:     rec.Path,
		Query:    redactQuery(rec.Query),
		ClientIP: rec.ClientIP,
		Headers:  redactHeader(rec.Header),
	}
	if utf8.Valid(rec.Body) {
		s := string(rec.Body)
		d.Body = &s
	} else {
		s := base64.StdEncoding.EncodeToString(rec.Body)
		d.BodyBase64 = &s
	}
	for _, a := range rec.History {
		d.History = append(d.History, spoolapi.Attempt{At: a.At.UTC(), DurationMS: a.Duration.Milliseconds(), Status: a.Status, Error: a.Error})
	}
	return d
}

// credentialWords are the parts of a header or query parameter name that
// make its value a credential in the admin API's eyes (compared in lower
// case). They cover Authorization, Proxy-Authorization, X-Api-Key, Cookie,
// Set-Cookie, the providers' signature headers (X-Shopify-Hmac-Sha256
// included) and the usual names of an hmac scheme's header (X-Sig,
// X-Hash, X-Digest). Redacting a harmless header is the cheaper mistake.
var credentialWords = []string{
	"signature", "sig", "secret", "token", "key", "auth", "cookie", "session",
	"pass", "credential", "mac", "hash", "digest",
}

// credentialName reports whether the value of a header or query parameter
// called name is to be redacted.
func credentialName(name string) bool {
	lower := strings.ToLower(name)
	for _, w := range credentialWords {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// credentialValue reports whether a header value is a credential whatever
// the header's name: an HTTP authentication scheme and its token.
func credentialValue(v string) bool {
	scheme, _, ok := strings.Cut(strings.TrimSpace(v), " ")
	return ok && slices.Contains([]string{"basic", "bearer", "digest", "token"}, strings.ToLower(scheme))
}

// redactHeader returns a copy of h with the values of credential headers,
// and credential values of any header, replaced by redactedValue; never nil.
func redactHeader(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for name, values := range h {
		if credentialName(name) {
			out[name] = slices.Repeat([]string{redactedValue}, max(len(values), 1))
			continue
		}
		kept := make([]string, len(values))
		for i, v := range values {
			if credentialValue(v) {
				v = redactedValue
			}
			kept[i] = v
		}
		out[name] = kept
	}
	return out
}

// redactQuery returns the raw query with the values of credential
// parameters (?token=...) replaced by redactedValue, the rest as it was.
// Parameters are separated by & and, as some servers still read them, ;.
func redactQuery(raw string) string {
	var b strings.Builder
	for raw != "" {
		part, sep := raw, ""
		if i := strings.IndexAny(raw, "&;"); i >= 0 {
			part, sep = raw[:i], raw[i:i+1]
		}
		raw = raw[len(part)+len(sep):]
		rawName, _, _ := strings.Cut(part, "=")
		name := rawName
		if n, err := url.QueryUnescape(rawName); err == nil {
			name = n
		}
		if credentialName(name) || credentialName(rawName) {
			part = rawName + "=" + redactedValue
		}
		b.WriteString(part + sep)
	}
	return b.String()
}

// serveSpool routes a request under /webhook_guard/.
func (a *adminSpool) serveSpool(w http.ResponseWriter, r *http.Request) error {
	rest, ok := strings.CutPrefix(r.URL.Path, adminSpoolPrefix)
	if !ok || rest != "" && rest[0] != '/' {
		return adminError(http.StatusNotFound, "no such admin route %s: the spool's routes are under %s", r.URL.Path, adminSpoolPrefix)
	}
	rest = strings.Trim(rest, "/")
	switch rest {
	case "":
		return a.serveList(w, r)
	case "retry":
		return a.serveRetryAll(w, r)
	case "pause", "resume":
		return a.servePause(w, r, rest == "pause")
	case "forget":
		return a.serveForget(w, r)
	}
	idText, action, _ := strings.Cut(rest, "/")
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil {
		return adminError(http.StatusBadRequest, "bad event id %q: want the decimal id the list shows", idText)
	}
	switch action {
	case "":
		switch r.Method {
		case http.MethodGet:
			return a.serveShow(w, r, id)
		case http.MethodDelete:
			return a.serveDiscard(w, r, id)
		}
		return methodNotAllowed(w, r, http.MethodGet, http.MethodDelete)
	case "retry":
		return a.serveRetry(w, r, id)
	}
	return adminError(http.StatusNotFound, "no such admin route %s", r.URL.Path)
}

// adminTimeout bounds an admin API call's store access.
const adminTimeout = 30 * time.Second

// operatorHeader names the person behind an admin API call (the CLI sends
// the user's name), kept with a discarded event and logged.
const operatorHeader = "Webhook-Guard-Operator"

// operator is who made an admin API call, for the log and a discard.
func operator(r *http.Request) string {
	who := strings.ToValidUTF8(r.Header.Get(operatorHeader), "?")
	if len(who) > maxNameLen {
		who = who[:maxNameLen]
	}
	if who == "" {
		return "admin API (" + r.RemoteAddr + ")"
	}
	return who + " (admin API)"
}

// serveList is GET /webhook_guard/spool?state=&scope=&event_id=&limit=&after=:
// one page of at most limit events, newest first, merged across the spools
// (ledger files, Redis), and the paused scopes. Pages follow one another by
// ?after=<next>, a cursor of each spool's place (spool.ListAcross), refused
// once a reload changed the spools or with other filters; an event id as
// after lists the events below it.
func (a *adminSpool) serveList(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return methodNotAllowed(w, r, http.MethodGet)
	}
	q, err := spoolQuery(r, "state", "scope", "event_id", "limit", "after")
	if err != nil {
		return err
	}
	f, err := filterOf(q)
	if err != nil {
		return err
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > spool.MaxLimit {
			return adminError(http.StatusBadRequest, "bad limit %q: want 1 to %d", v, spool.MaxLimit)
		}
		limit = n
	}
	after := q.Get("after")
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	spools := a.registered()
	listing, err := spool.ListAcross(ctx, spools, f, limit, after)
	switch {
	case errors.Is(err, spool.ErrSpoolsChanged):
		return adminError(http.StatusBadRequest, "bad after: %v", err)
	case errors.Is(err, spool.ErrBadCursor) && len(after) > maxShownCursor:
		return adminError(http.StatusBadRequest, "bad after (%d bytes): %v", len(after), err)
	case errors.Is(err, spool.ErrBadCursor):
		return adminError(http.StatusBadRequest, "bad after %q: %v", after, err)
	case err != nil:
		return spoolFailed(err)
	case len(listing.Failed) > 0:
		return spoolFailed(listing.Failed[0])
	}
	out := spoolapi.List{Events: []spoolapi.Event{}, Next: listing.Next, Paused: []string{}}
	pausedOf := make(map[*spool.Spool]map[string]bool, len(spools))
	for _, sp := range spools {
		paused, err := sp.Paused(ctx)
		if err != nil {
			return spoolFailed(err)
		}
		pausedOf[sp] = paused
		for scope := range paused {
			if !slices.Contains(out.Paused, scope) {
				out.Paused = append(out.Paused, scope)
			}
		}
	}
	slices.Sort(out.Paused)
	for _, e := range listing.Events {
		out.Events = append(out.Events, spoolEventSummary(e.Spool, e.Record, pausedOf[e.Spool]))
	}
	return writeAdminJSON(w, out)
}

// maxShownCursor bounds the bad ?after= an error quotes.
const maxShownCursor = 64

// filterOf reads the state, scope and event_id parameters.
func filterOf(q url.Values) (spool.Filter, error) {
	f := spool.Filter{State: spool.State(q.Get("state")), Scope: q.Get("scope"), EventID: q.Get("event_id")}
	if f.State != "" && !f.State.Valid() {
		return f, adminError(http.StatusBadRequest, "bad state %q: want %s, %s or %s", f.State, spool.Pending, spool.Dead, spool.Discarded)
	}
	if f.Scope != "" {
		if err := checkName(f.Scope); err != nil {
			return f, adminError(http.StatusBadRequest, "bad scope: %v", err)
		}
	}
	return f, nil
}

// serveShow is GET /webhook_guard/spool/<id>[?scope=].
func (a *adminSpool) serveShow(w http.ResponseWriter, r *http.Request, id uint64) error {
	sp, rec, err := a.locateIn(r, id)
	if err != nil {
		return err
	}
	paused, err := sp.Paused(r.Context())
	if err != nil {
		return spoolFailed(err)
	}
	return writeAdminJSON(w, spoolEventDetail(sp, rec, paused))
}

// locateIn finds the event id of a request whose only parameter is scope.
func (a *adminSpool) locateIn(r *http.Request, id uint64) (*spool.Spool, spool.Record, error) {
	q, err := spoolQuery(r, "scope")
	if err != nil {
		return nil, spool.Record{}, err
	}
	return a.locate(r.Context(), id, q.Get("scope"))
}

// serveDiscard is DELETE /webhook_guard/spool/<id>[?scope=]: the event is
// kept, discarded, retryable, until its id is forgotten.
func (a *adminSpool) serveDiscard(w http.ResponseWriter, r *http.Request, id uint64) error {
	sp, _, err := a.locateIn(r, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	who := operator(r)
	rec, err := sp.Discard(ctx, id, who)
	switch {
	case errors.Is(err, spool.ErrNotFound): // delivered since locate found it
		return noSuchEvent(id)
	case errors.Is(err, spool.ErrInFlight):
		return adminError(http.StatusConflict, "event %d: a delivery attempt is in flight and may succeed; discard it after the attempt ends", id)
	case err != nil:
		return spoolFailed(err)
	}
	a.log().Warn("spooled event discarded through the admin API",
		zap.Uint64("id", rec.ID),
		zap.String("scope", rec.Scope),
		zap.String("provider", rec.Provider),
		zap.String("event_id", rec.EventID),
		zap.String("event_type", rec.EventType),
		zap.Int("attempts", rec.Attempts),
		zap.String("by", who))
	return writeAdminJSON(w, map[string]spoolapi.Event{"discarded": spoolEventSummary(sp, rec, nil)})
}

// serveRetry is POST /webhook_guard/spool/<id>/retry[?scope=].
func (a *adminSpool) serveRetry(w http.ResponseWriter, r *http.Request, id uint64) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, r, http.MethodPost)
	}
	sp, rec, err := a.locateIn(r, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	switch err := sp.Retry(ctx, id); {
	case errors.Is(err, spool.ErrNotFound):
		return noSuchEvent(id)
	case errors.Is(err, spool.ErrInFlight):
		return adminError(http.StatusConflict, "event %d: a delivery attempt is in flight", id)
	case err != nil:
		return spoolFailed(err)
	}
	paused, err := sp.Paused(ctx)
	if err != nil {
		return spoolFailed(err)
	}
	a.log().Info("spooled event retried through the admin API",
		zap.Uint64("id", id), zap.String("scope", rec.Scope), zap.String("event_id", rec.EventID), zap.String("by", operator(r)))
	out := map[string]any{"retried": 1}
	if paused[rec.Scope] {
		out["paused"] = []string{rec.Scope}
	}
	return writeAdminJSON(w, out)
}

// serveRetryAll is POST /webhook_guard/spool/retry?state=&scope=: state is
// required, so a retry never widens to every event by a missing parameter.
func (a *adminSpool) serveRetryAll(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, r, http.MethodPost)
	}
	q, err := spoolQuery(r, "state", "scope")
	if err != nil {
		return err
	}
	f, err := filterOf(q)
	if err != nil {
		return err
	}
	if f.State == "" {
		return adminError(http.StatusBadRequest, "state is required: %s, %s or %s", spool.Dead, spool.Discarded, spool.Pending)
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	total := 0
	var paused []string
	for _, sp := range a.registered() {
		n, err := sp.RetryAll(ctx, f.State, f.Scope)
		total += n
		if err != nil {
			return spoolFailed(fmt.Errorf("%w (%d events retried before it)", err, total))
		}
		p, err := sp.Paused(ctx)
		if err != nil {
			return spoolFailed(err)
		}
		for scope := range p {
			if f.Scope == "" || scope == f.Scope {
				paused = append(paused, scope)
			}
		}
	}
	a.log().Info("spooled events retried through the admin API",
		zap.String("state", string(f.State)), zap.String("scope", f.Scope), zap.Int("retried", total), zap.String("by", operator(r)))
	out := map[string]any{"retried": total}
	if len(paused) > 0 {
		slices.Sort(paused)
		out["paused"] = slices.Compact(paused)
	}
	return writeAdminJSON(w, out)
}

// servePause is POST /webhook_guard/spool/pause?scope= (pause) and
// .../resume?scope= (!pause). A scope no handler's spool has is 404.
func (a *adminSpool) servePause(w http.ResponseWriter, r *http.Request, pause bool) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, r, http.MethodPost)
	}
	q, err := spoolQuery(r, "scope")
	if err != nil {
		return err
	}
	scope := q.Get("scope")
	if scope == "" {
		return adminError(http.StatusBadRequest, "scope is required: the scope whose deliveries to hold or release")
	}
	if err := checkName(scope); err != nil {
		return adminError(http.StatusBadRequest, "bad scope: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	done := 0
	for _, sp := range a.registered() {
		paused, err := sp.Paused(ctx)
		if err != nil {
			return spoolFailed(err)
		}
		if !sp.HasScope(scope) && !paused[scope] {
			continue
		}
		if err := sp.Pause(ctx, scope, pause); err != nil {
			return spoolFailed(err)
		}
		done++
	}
	if done == 0 {
		return adminError(http.StatusNotFound, "no spool delivers scope %q: no webhook_guard handler with a spool block has that scope", scope)
	}
	verb := "resumed"
	if pause {
		verb = "paused"
	}
	a.log().Warn("spool deliveries "+verb+" through the admin API", zap.String("scope", scope), zap.String("by", operator(r)))
	return writeAdminJSON(w, map[string]any{"scope": scope, "paused": pause})
}

// serveForget is POST /webhook_guard/spool/forget?scope=&provider=&event_id=:
// the guard forgets the event id (and a discarded event of it), so that a
// provider's manual resend of it is new.
func (a *adminSpool) serveForget(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, r, http.MethodPost)
	}
	q, err := spoolQuery(r, "scope", "provider", "event_id")
	if err != nil {
		return err
	}
	scope, provider, eventID := q.Get("scope"), q.Get("provider"), q.Get("event_id")
	if provider == "" || eventID == "" {
		return adminError(http.StatusBadRequest, "provider and event_id are required (scope defaults to the provider)")
	}
	scheme, ok := verify.Lookup(provider)
	if !ok {
		return adminError(http.StatusBadRequest, "unknown provider %q", provider)
	}
	replayID, ok := scheme.ReplayIDOf(eventID)
	if !ok {
		return adminError(http.StatusBadRequest, "%s events are remembered by a digest of what is signed, not by their delivery id (the id header is not signed): an id cannot be forgotten by its delivery id; a resend with a new signature or body is new anyway", provider)
	}
	scope = cmp.Or(scope, provider)
	if err := checkName(scope); err != nil {
		return adminError(http.StatusBadRequest, "bad scope: %v", err)
	}
	if len(eventID) > maxEventIDLen {
		return adminError(http.StatusBadRequest, "event_id longer than %d bytes", maxEventIDLen)
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	key := dedupe.Key(scope, provider, replayID)
	forgot := false
	spools := a.registered()
	if len(spools) == 0 {
		return adminError(http.StatusNotFound, "no spool is loaded: no webhook_guard handler has a spool block")
	}
	for _, sp := range spools {
		ok, err := sp.Forget(ctx, key)
		if err != nil {
			return adminError(http.StatusConflict, "%v", err)
		}
		forgot = forgot || ok
	}
	fields := []zap.Field{zap.String("scope", scope), zap.String("provider", provider), zap.String("event_id", eventID),
		zap.Bool("was_remembered", forgot), zap.String("by", operator(r))}
	if forgot {
		a.log().Warn("event id forgotten through the admin API: a resend of it will be delivered", fields...)
	} else {
		a.log().Warn("forget through the admin API: nothing was remembered under this event id (check the scope; an hmac handler whose event id header is not signed remembers a digest of what is signed instead)", fields...)
	}
	return writeAdminJSON(w, map[string]any{"forgotten": forgot})
}

// maxEventIDLen bounds an event id given to forget.
const maxEventIDLen = 4096

// locate finds the spool holding event id, among those with events of scope
// when scope is not "". Ids are unique per store only: when two stores have
// the id, the caller must name the scope.
func (a *adminSpool) locate(ctx context.Context, id uint64, scope string) (*spool.Spool, spool.Record, error) {
	if scope != "" {
		if err := checkName(scope); err != nil {
			return nil, spool.Record{}, adminError(http.StatusBadRequest, "bad scope: %v", err)
		}
	}
	var (
		found   *spool.Spool
		rec     spool.Record
		matches int
	)
	for _, sp := range a.registered() {
		got, ok, err := sp.Get(ctx, id)
		if err != nil {
			return nil, spool.Record{}, spoolFailed(err)
		}
		if !ok || scope != "" && got.Scope != scope {
			continue
		}
		found, rec = sp, got
		matches++
	}
	switch {
	case matches == 0:
		return nil, spool.Record{}, noSuchEvent(id)
	case matches > 1:
		return nil, spool.Record{}, adminError(http.StatusConflict, "event id %d is in more than one ledger: add ?scope=<scope> to choose", id)
	}
	return found, rec, nil
}

// registered returns the spools to act on.
func (a *adminSpool) registered() []*spool.Spool {
	if a.spools != nil {
		return a.spools()
	}
	return registeredSpools()
}

// log returns the module's logger (a no-op one before Provision).
func (a *adminSpool) log() *zap.Logger {
	if a.logger == nil {
		return zap.NewNop()
	}
	return a.logger
}

// spoolQuery parses the request's query, refusing parameters other than
// allowed and repeated ones: a mistyped filter must not widen a retry.
func spoolQuery(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, adminError(http.StatusBadRequest, "bad query: %v", err)
	}
	for name, values := range q {
		if !slices.Contains(allowed, name) {
			return nil, adminError(http.StatusBadRequest, "unknown query parameter %q: want %s", name, strings.Join(allowed, " or "))
		}
		if len(values) > 1 {
			return nil, adminError(http.StatusBadRequest, "query parameter %q given more than once", name)
		}
	}
	return q, nil
}

// adminError is an admin API error answer.
func adminError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// noSuchEvent is the 404 of an id no spool holds.
func noSuchEvent(id uint64) error {
	return adminError(http.StatusNotFound, "no spooled event %d (delivered, purged, or never spooled)", id)
}

// spoolFailed is the 500 of a spool that could not do what was asked.
func spoolFailed(err error) error {
	return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("spool: %w", err)}
}

// methodNotAllowed is the 405 of a route, with its Allow header.
func methodNotAllowed(w http.ResponseWriter, r *http.Request, allowed ...string) error {
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	return adminError(http.StatusMethodNotAllowed, "method %s not allowed on %s: want %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))
}

// writeAdminJSON writes v as the JSON answer, one line, with & < > as they
// are (queries and bodies read as sent).
func writeAdminJSON(w http.ResponseWriter, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(b.Bytes())
	return err
}

// Interface guards
var (
	_ caddy.AdminRouter = (*adminSpool)(nil)
	_ caddy.Provisioner = (*adminSpool)(nil)
)
