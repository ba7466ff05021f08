package webhookguard

import (
	"github.com/hookguard/caddy-webhook-guard/internal/spoolapi"

	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
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
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(adminSpool{})
}

// The states of a spooled event, as the admin API shows and filters them.
const (
	// spoolPending is an event waiting for its next delivery attempt.
	spoolPending = "pending"
	// spoolDead is an event that ran out of attempts or age: kept until an
	// operator retries or discards it.
	spoolDead = "dead"
)

// adminSpoolPrefix is the admin API path of the spool's routes.
const adminSpoolPrefix = "/webhook_guard/spool"

// redactedValue replaces the value of a credential header or query
// parameter in the admin API's answers.
const redactedValue = "[REDACTED]"

// SpoolRecord is one spooled event as the admin API shows it.
type SpoolRecord struct {
	// ID is the event's number in its ledger, unique per ledger file.
	ID uint64
	// Scope is the handler's replay scope, Provider its signing scheme.
	Scope, Provider string
	// EventID and EventType are what the verifier read from the event.
	EventID, EventType string
	// State is spoolPending or spoolDead.
	State string
	// Attempts counts the delivery attempts made so far.
	Attempts int
	// ReceivedAt is when the event was acknowledged; NextAttemptAt when it
	// is due (zero for a dead event).
	ReceivedAt, NextAttemptAt time.Time
	// LastError is why the last attempt failed, "" before the first.
	LastError string
	// Method, Path, Query and ClientIP are the original request's.
	Method, Path, Query, ClientIP string
	// Header is the stored request header (hop-by-hop and credential
	// headers already left out at ingest); the admin API redacts it again.
	Header http.Header
	// Body is the exact body received.
	Body []byte
}

// spoolOperator is a spool the admin API can list and steer (one per ledger
// file). The spool registers it with registerSpool when its ledger opens and
// unregisters it before closing the ledger; a call already in flight then
// may still reach it and must fail with an error rather than block. Its
// methods are called concurrently, from the admin endpoint's goroutines, and
// their errors are shown to the operator: they must not carry a secret.
type spoolOperator interface {
	// List returns the events in state ("" for every state) and scope (""
	// for every scope), without Header and Body.
	List(state, scope string) ([]SpoolRecord, error)
	// Get returns the event with the id, and false when there is none.
	Get(id uint64) (SpoolRecord, bool, error)
	// Retry makes the event due now (a dead one pending again); false: no
	// such id.
	Retry(id uint64) (bool, error)
	// RetryAll does Retry for every event in state ("" for every state) and
	// scope ("" for every scope) and returns how many it made due.
	RetryAll(state, scope string) (int, error)
	// Discard deletes the event and returns it; false: no such id.
	Discard(id uint64) (SpoolRecord, bool, error)
	// Pause holds the deliveries of scope (ingest goes on) until Resume.
	Pause(scope string) error
	// Resume releases the deliveries Pause held.
	Resume(scope string) error
}

// spoolRegistry holds the spools of the loaded configurations, one per open
// ledger file. Ids are unique within a ledger, not across ledgers: the admin
// API finds an id in the one spool that has it, and asks for ?scope= when
// two ledgers have it.
var spoolRegistry struct {
	mu    sync.Mutex
	spool []*registeredSpool
}

// registeredSpool is one registration, compared by pointer so that an
// operator registered twice is unregistered once per registration.
type registeredSpool struct{ op spoolOperator }

// registerSpool makes op reachable through the admin API until unregister
// is called (more calls of unregister do nothing).
func registerSpool(op spoolOperator) (unregister func()) {
	entry := &registeredSpool{op: op}
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
func registeredSpools() []spoolOperator {
	spoolRegistry.mu.Lock()
	defer spoolRegistry.mu.Unlock()
	ops := make([]spoolOperator, len(spoolRegistry.spool))
	for i, e := range spoolRegistry.spool {
		ops[i] = e.op
	}
	return ops
}

// adminSpool is the admin API module admin.api.webhook_guard: the routes
// under /webhook_guard/spool through which operators list, show, retry,
// discard, pause and resume spooled events, as reverse_proxy serves
// /reverse_proxy/upstreams.
type adminSpool struct {
	logger *zap.Logger
	// spools returns the spools to act on; registeredSpools unless a test
	// sets it.
	spools func() []spoolOperator
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

// spoolEventSummary is rec as GET /webhook_guard/spool lists it.
func spoolEventSummary(rec SpoolRecord) spoolapi.Event {
	utc := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	return spoolapi.Event{
		ID:            rec.ID,
		Scope:         rec.Scope,
		Provider:      rec.Provider,
		EventID:       rec.EventID,
		EventType:     rec.EventType,
		State:         rec.State,
		Attempts:      rec.Attempts,
		ReceivedAt:    utc(rec.ReceivedAt),
		NextAttemptAt: utc(rec.NextAttemptAt),
		LastError:     rec.LastError,
	}
}

// spoolEventDetail is rec as GET /webhook_guard/spool/<id> shows it, its
// credentials redacted.
func spoolEventDetail(rec SpoolRecord) spoolapi.EventDetail {
	d := spoolapi.EventDetail{
		Event:    spoolEventSummary(rec),
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

// serveList is GET /webhook_guard/spool?state=&scope=.
func (a *adminSpool) serveList(w http.ResponseWriter, r *http.Request) error {
	state, scope, err := selection(w, r, http.MethodGet)
	if err != nil {
		return err
	}
	var recs []SpoolRecord
	for _, op := range a.registered() {
		got, err := op.List(state, scope)
		if err != nil {
			return spoolFailed(err)
		}
		recs = append(recs, got...)
	}
	slices.SortStableFunc(recs, func(x, y SpoolRecord) int {
		return cmp.Or(x.ReceivedAt.Compare(y.ReceivedAt), cmp.Compare(x.Scope, y.Scope), cmp.Compare(x.ID, y.ID))
	})
	list := make([]spoolapi.Event, len(recs))
	for i, rec := range recs {
		list[i] = spoolEventSummary(rec)
	}
	return writeAdminJSON(w, list)
}

// serveShow is GET /webhook_guard/spool/<id>[?scope=].
func (a *adminSpool) serveShow(w http.ResponseWriter, r *http.Request, id uint64) error {
	q, err := spoolQuery(r, "scope")
	if err != nil {
		return err
	}
	_, rec, err := a.locate(id, q.Get("scope"))
	if err != nil {
		return err
	}
	return writeAdminJSON(w, spoolEventDetail(rec))
}

// serveDiscard is DELETE /webhook_guard/spool/<id>[?scope=].
func (a *adminSpool) serveDiscard(w http.ResponseWriter, r *http.Request, id uint64) error {
	q, err := spoolQuery(r, "scope")
	if err != nil {
		return err
	}
	op, _, err := a.locate(id, q.Get("scope"))
	if err != nil {
		return err
	}
	rec, ok, err := op.Discard(id)
	if err != nil {
		return spoolFailed(err)
	}
	if !ok { // delivered or discarded since locate found it
		return noSuchEvent(id)
	}
	a.log().Warn("spooled event discarded through the admin API",
		zap.Uint64("id", rec.ID),
		zap.String("scope", rec.Scope),
		zap.String("provider", rec.Provider),
		zap.String("event_id", rec.EventID),
		zap.String("event_type", rec.EventType),
		zap.String("state", rec.State),
		zap.Int("attempts", rec.Attempts),
		zap.String("remote_addr", r.RemoteAddr))
	return writeAdminJSON(w, map[string]spoolapi.Event{"discarded": spoolEventSummary(rec)})
}

// serveRetry is POST /webhook_guard/spool/<id>/retry[?scope=].
func (a *adminSpool) serveRetry(w http.ResponseWriter, r *http.Request, id uint64) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, r, http.MethodPost)
	}
	q, err := spoolQuery(r, "scope")
	if err != nil {
		return err
	}
	op, rec, err := a.locate(id, q.Get("scope"))
	if err != nil {
		return err
	}
	ok, err := op.Retry(id)
	if err != nil {
		return spoolFailed(err)
	}
	if !ok {
		return noSuchEvent(id)
	}
	a.log().Info("spooled event retried through the admin API",
		zap.Uint64("id", id), zap.String("scope", rec.Scope), zap.String("event_id", rec.EventID))
	return writeAdminJSON(w, map[string]int{"retried": 1})
}

// serveRetryAll is POST /webhook_guard/spool/retry?state=&scope=.
func (a *adminSpool) serveRetryAll(w http.ResponseWriter, r *http.Request) error {
	state, scope, err := selection(w, r, http.MethodPost)
	if err != nil {
		return err
	}
	total := 0
	for _, op := range a.registered() {
		n, err := op.RetryAll(state, scope)
		total += n
		if err != nil {
			return spoolFailed(fmt.Errorf("%w (%d events retried before it)", err, total))
		}
	}
	a.log().Info("spooled events retried through the admin API",
		zap.String("state", state), zap.String("scope", scope), zap.Int("retried", total))
	return writeAdminJSON(w, map[string]int{"retried": total})
}

// servePause is POST /webhook_guard/spool/pause?scope= (pause) and
// .../resume?scope= (!pause).
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
	ops := a.registered()
	if len(ops) == 0 {
		return adminError(http.StatusNotFound, "no spool is loaded: no webhook_guard handler has a spool block")
	}
	for _, op := range ops {
		act := op.Resume
		if pause {
			act = op.Pause
		}
		if err := act(scope); err != nil {
			return spoolFailed(err)
		}
	}
	verb := "resumed"
	if pause {
		verb = "paused"
	}
	a.log().Info("spool deliveries "+verb+" through the admin API", zap.String("scope", scope))
	return writeAdminJSON(w, map[string]any{"scope": scope, "paused": pause})
}

// locate finds the spool holding event id, among those with events of scope
// when scope is not "". Ids are unique per ledger only: when two ledgers
// have the id, the caller must name the scope.
func (a *adminSpool) locate(id uint64, scope string) (spoolOperator, SpoolRecord, error) {
	var (
		found   spoolOperator
		rec     SpoolRecord
		matches int
	)
	for _, op := range a.registered() {
		got, ok, err := op.Get(id)
		if err != nil {
			return nil, SpoolRecord{}, spoolFailed(err)
		}
		if !ok || scope != "" && got.Scope != scope {
			continue
		}
		found, rec = op, got
		matches++
	}
	switch {
	case matches == 0:
		return nil, SpoolRecord{}, noSuchEvent(id)
	case matches > 1:
		return nil, SpoolRecord{}, adminError(http.StatusConflict, "event id %d is in more than one ledger: add ?scope=<scope> to choose", id)
	}
	return found, rec, nil
}

// registered returns the spools to act on.
func (a *adminSpool) registered() []spoolOperator {
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

// selection checks a request that selects events (list, retry all): its
// method, and its optional state and scope parameters.
func selection(w http.ResponseWriter, r *http.Request, method string) (state, scope string, err error) {
	if r.Method != method {
		return "", "", methodNotAllowed(w, r, method)
	}
	q, err := spoolQuery(r, "state", "scope")
	if err != nil {
		return "", "", err
	}
	if state, err = stateFilter(q); err != nil {
		return "", "", err
	}
	return state, q.Get("scope"), nil
}

// stateFilter returns the state parameter: pending, dead, or "" for both.
func stateFilter(q url.Values) (string, error) {
	switch s := q.Get("state"); s {
	case "", spoolPending, spoolDead:
		return s, nil
	default:
		return "", adminError(http.StatusBadRequest, "bad state %q: want %s or %s", s, spoolPending, spoolDead)
	}
}

// adminError is an admin API error answer.
func adminError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// noSuchEvent is the 404 of an id no spool holds.
func noSuchEvent(id uint64) error {
	return adminError(http.StatusNotFound, "no spooled event %d (delivered, discarded, or never spooled)", id)
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
