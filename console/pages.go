package console

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
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

// pageTimeout bounds a page's reads of the spools.
const pageTimeout = 10 * time.Second

// pageSize is how many events a page of the list shows.
const pageSize = 100

// overviewRecent is how many recent outcomes the overview shows.
const overviewRecent = 50

// maxSearch bounds the q parameter.
const maxSearch = 200

// common is what every page shows: the navigation, what the console may do.
type common struct {
	Title string
	// Nav is the navigation entry of the page.
	Nav string
	// Base is the relative path to the console's root.
	Base string
	// Now is when the page was rendered.
	Now timeText
	// CanRetry, CanDiscard and CanPause say which actions are allowed.
	CanRetry, CanDiscard, CanPause bool
	// Actions lists them, for the footer.
	Actions string
	// Problems are errors met while reading the spools, shown as text.
	Problems []string
}

// common returns the common part of a page.
func (h *Handler) common(rt route, title, nav string) common {
	c := common{
		Title: title, Nav: nav, Base: rt.base, Now: timeOf(h.clock()),
		CanRetry: h.allowed[ActionRetry], CanDiscard: h.allowed[ActionDiscard], CanPause: h.allowed[ActionPause],
	}
	var allowed []string
	for _, a := range knownActions {
		if h.allowed[a] {
			allowed = append(allowed, a)
		}
	}
	c.Actions = strings.Join(allowed, ", ")
	return c
}

// timeText is a time as the pages show it: UTC text, and the machine form
// for <time datetime>.
type timeText struct {
	Text, Machine string
}

// timeOf is t as a page shows it; empty when t is zero.
func timeOf(t time.Time) timeText {
	if t.IsZero() {
		return timeText{}
	}
	t = t.UTC()
	return timeText{Text: t.Format("2006-01-02 15:04:05"), Machine: t.Format(time.RFC3339)}
}

// ageText says how long d is, to the second, in at most two units.
func ageText(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}

// scopeRow is a scope on the overview.
type scopeRow struct {
	Scope                    string
	Pending, Dead, Discarded int
	// OldestPending is the age of the oldest pending event ("" none).
	OldestPending string
	Paused        bool
	// Delivers: a handler of the loaded config delivers the scope.
	Delivers bool
}

// outcomeRow is a recent outcome as the pages show it.
type outcomeRow struct {
	At        timeText
	Scope     string
	Provider  string
	Outcome   string
	Class     string
	Reason    string
	Status    int
	EventID   string
	EventType string
	ClientIP  string
}

// outcomeRows turns outcomes into rows.
func outcomeRows(outs []Outcome) []outcomeRow {
	rows := make([]outcomeRow, len(outs))
	for i, o := range outs {
		rows[i] = outcomeRow{
			At: timeOf(o.At), Scope: o.Scope, Provider: o.Provider, Outcome: o.Outcome, Class: outcomeClass(o.Outcome),
			Reason: o.Reason, Status: o.Status, EventID: o.EventID, EventType: o.EventType, ClientIP: o.ClientIP,
		}
	}
	return rows
}

// overviewData is the overview page.
type overviewData struct {
	common
	// NoSpool: no spool is loaded (no guard handler has a spool block).
	NoSpool bool
	Scopes  []scopeRow
	// Recording: outcomes are kept; Recent are the latest, RecentKept how
	// many are kept at most.
	Recording  bool
	Recent     []outcomeRow
	RecentKept int
	Chart      chart
}

// serveOverview is the overview: the spools by scope, the chart, the latest
// outcomes.
func (h *Handler) serveOverview(w http.ResponseWriter, r *http.Request, rt route) {
	if len(r.URL.Query()) > 0 {
		h.errorPage(w, r, rt, http.StatusBadRequest, "The overview takes no query parameters.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	d := overviewData{common: h.common(rt, "Overview", pageOverview), RecentKept: h.Recent}
	spools := h.spools()
	d.NoSpool = len(spools) == 0
	now := h.clock()
	byScope := map[string]*scopeRow{}
	row := func(scope string) *scopeRow {
		if byScope[scope] == nil {
			byScope[scope] = &scopeRow{Scope: scope}
		}
		return byScope[scope]
	}
	oldest := map[string]time.Time{}
	for _, sp := range spools {
		for _, scope := range sp.Targets() {
			row(scope).Delivers = true
		}
		paused, err := sp.Paused(ctx)
		if err != nil {
			d.Problems = append(d.Problems, "Could not read the paused scopes: "+err.Error())
		}
		for scope := range paused {
			row(scope).Paused = true
		}
		counts, err := sp.Counts(ctx)
		if err != nil {
			d.Problems = append(d.Problems, "Could not count the spooled events: "+err.Error())
		}
		for scope, c := range counts {
			s := row(scope)
			s.Pending += c.Pending
			s.Dead += c.Dead
			s.Discarded += c.Discarded
			if !c.OldestPending.IsZero() && (oldest[scope].IsZero() || c.OldestPending.Before(oldest[scope])) {
				oldest[scope] = c.OldestPending
			}
		}
	}
	for scope, t := range oldest {
		byScope[scope].OldestPending = ageText(now.Sub(t))
	}
	for _, s := range byScope {
		d.Scopes = append(d.Scopes, *s)
	}
	slices.SortFunc(d.Scopes, func(a, b scopeRow) int { return cmp.Compare(a.Scope, b.Scope) })
	if rec := h.outcomes(); rec != nil {
		d.Recording = true
		d.Recent = outcomeRows(rec.newest(overviewRecent, nil))
		d.Chart = newChart(rec.perMinute(now))
	}
	h.render(w, r, "overview", http.StatusOK, d)
}

// eventRow is an event in the list.
type eventRow struct {
	ID         uint64
	Link       string
	Scope      string
	Provider   string
	EventID    string
	EventType  string
	State      string
	Attempts   int
	ReceivedAt timeText
	NextAt     timeText
	LastError  string
	// Waiting says why a pending event waits (paused, no handler).
	Waiting string
}

// eventLink is the link to an event's page from the console's root.
func eventLink(id uint64, scope string) string {
	return "events/" + strconv.FormatUint(id, 10) + "?scope=" + url.QueryEscape(scope)
}

// listFilter is the list's query.
type listFilter struct {
	State, Scope, Q string
	// After is the page's cursor (spool.ListAcross), "" on the first.
	After string
}

// eventsData is the list page.
type eventsData struct {
	common
	Filter listFilter
	// States are the states to filter by; Scopes the known scopes.
	States []string
	Scopes []string
	Events []eventRow
	// Older links to the next page ("" at the end); Newest to the first.
	Older, Newest string
	// Several: more than one spool (ledger files, Redis), merged.
	Several bool
	// RetryAll is the Retry all button of ?state=dead (or discarded)
	// without a search: how many events it retries.
	RetryAll *retryAll
	NoSpool  bool
}

// retryAll is the Retry all button.
type retryAll struct {
	State, Scope string
	Count        int
	Confirm      string
}

// readFilter reads the list's query; an unknown or repeated parameter, a
// bad state or scope is an error.
func readFilter(r *http.Request) (listFilter, error) {
	var f listFilter
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return f, errors.New("the query is malformed")
	}
	for name, values := range q {
		if !slices.Contains([]string{"state", "scope", "q", "after"}, name) {
			return f, fmt.Errorf("unknown query parameter %q: want state, scope, q or after", name)
		}
		if len(values) > 1 {
			return f, fmt.Errorf("query parameter %q given more than once", name)
		}
	}
	f.State, f.Scope, f.Q = q.Get("state"), q.Get("scope"), strings.TrimSpace(q.Get("q"))
	if f.State != "" && !spool.State(f.State).Valid() {
		return f, fmt.Errorf("unknown state %q: want pending, dead or discarded", f.State)
	}
	if f.Scope != "" && !validName(f.Scope) {
		return f, errors.New("bad scope: want letters, digits, '.', '_', ':' and '-'")
	}
	if len(f.Q) > maxSearch || !utf8.ValidString(f.Q) {
		return f, fmt.Errorf("the search is longer than %d bytes or not text", maxSearch)
	}
	if v := q.Get("after"); v != "" {
		if len(v) > spool.MaxCursorLen {
			return f, fmt.Errorf("bad after: longer than %d bytes", spool.MaxCursorLen)
		}
		f.After = v // read by spool.ListAcross
	}
	return f, nil
}

// validName says whether s is a scope's name: 1 to 64 of letters, digits,
// '.', '_', ':' and '-' (the guard's rule).
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// query is the list's link with f (after: the page's cursor).
func (f listFilter) query(after string) string {
	v := url.Values{}
	for name, value := range map[string]string{"state": f.State, "scope": f.Scope, "q": f.Q} {
		if value != "" {
			v.Set(name, value)
		}
	}
	if after != "" {
		v.Set("after", after)
	}
	if len(v) == 0 {
		return "events"
	}
	return "events?" + v.Encode()
}

// serveEvents is the list: one page of the events the filter selects,
// newest first, read page by page from the store.
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request, rt route) {
	f, err := readFilter(r)
	if err != nil {
		h.errorPage(w, r, rt, http.StatusBadRequest, "Bad filter: "+err.Error()+".")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	title := "Events"
	if f.State != "" {
		title = strings.ToUpper(f.State[:1]) + f.State[1:] + " events"
	}
	nav := pageEvents
	if f.State == string(spool.Dead) {
		nav = "dead"
	}
	d := eventsData{
		common: h.common(rt, title, nav), Filter: f,
		States: []string{string(spool.Pending), string(spool.Dead), string(spool.Discarded)},
	}
	spools := h.spools()
	d.NoSpool = len(spools) == 0
	d.Several = len(spools) > 1
	filter := spool.Filter{State: spool.State(f.State), Scope: f.Scope, Text: f.Q}
	listing, err := spool.ListAcross(ctx, spools, filter, pageSize, f.After)
	switch {
	case errors.Is(err, spool.ErrSpoolsChanged):
		h.errorPage(w, r, rt, http.StatusBadRequest, "This page's link was made before a config reload changed the spools, or with other filters: start again from the newest events.")
		return
	case errors.Is(err, spool.ErrBadCursor):
		h.errorPage(w, r, rt, http.StatusBadRequest, "Bad filter: bad after: want the link of the Older button.")
		return
	case err != nil:
		d.Problems = append(d.Problems, "Could not list the spooled events: "+err.Error())
	}
	for _, err := range listing.Failed {
		d.Problems = append(d.Problems, "Could not list the spooled events: "+err.Error())
	}
	scopes := map[string]bool{}
	pausedOf := map[*spool.Spool]map[string]bool{}
	for _, sp := range spools {
		for _, scope := range sp.Targets() {
			scopes[scope] = true
		}
		paused, err := sp.Paused(ctx)
		if err != nil {
			d.Problems = append(d.Problems, "Could not read the paused scopes: "+err.Error())
		}
		pausedOf[sp] = paused
		for scope := range paused {
			scopes[scope] = true
		}
	}
	for _, e := range listing.Events {
		rec := e.Record
		row := eventRow{
			ID: rec.ID, Link: eventLink(rec.ID, rec.Scope), Scope: rec.Scope, Provider: rec.Provider, EventID: rec.EventID,
			EventType: rec.EventType, State: string(rec.State), Attempts: rec.Attempts, ReceivedAt: timeOf(rec.ReceivedAt),
			NextAt: timeOf(rec.NextAt), LastError: rec.LastError,
		}
		if rec.State == spool.Pending {
			row.Waiting = waiting(e.Spool, &rec, pausedOf[e.Spool])
		}
		d.Events = append(d.Events, row)
	}
	if listing.Next != "" {
		d.Older = f.query(listing.Next)
	}
	if f.After != "" {
		d.Newest = f.query("")
	}
	if f.Scope != "" {
		scopes[f.Scope] = true
	}
	for scope := range scopes {
		d.Scopes = append(d.Scopes, scope)
	}
	slices.Sort(d.Scopes)
	if d.CanRetry && f.Q == "" && (f.State == string(spool.Dead) || f.State == string(spool.Discarded)) {
		n := 0
		for _, sp := range spools {
			ids, err := sp.Store().IDs(ctx, spool.State(f.State), f.Scope)
			if err != nil {
				d.Problems = append(d.Problems, "Could not count the events to retry: "+err.Error())
			}
			n += len(ids)
		}
		if n > 0 {
			what := fmt.Sprintf("%d %s events", n, f.State)
			if n == 1 {
				what = "1 " + f.State + " event"
			}
			if f.Scope != "" {
				what += " of scope " + f.Scope
			}
			d.RetryAll = &retryAll{State: f.State, Scope: f.Scope, Count: n,
				Confirm: "Retry all " + what + "? Each is delivered again, its attempts counted afresh."}
		}
	}
	h.render(w, r, "events", http.StatusOK, d)
}

// waiting says why a pending event waits, "" when it is simply due later.
func waiting(sp *spool.Spool, rec *spool.Record, paused map[string]bool) string {
	switch {
	case paused[rec.Scope]:
		return "scope paused: delivered after a resume"
	case sp.Orphan(rec.Target, rec.Scope):
		return "no handler delivers it (its spool block was removed or changed)"
	}
	return ""
}

// header is one header line of an event's page.
type header struct {
	Name, Value string
}

// attemptRow is one delivery attempt of an event.
type attemptRow struct {
	N        int
	At       timeText
	Status   int
	Duration string
	Error    string
}

// eventData is an event's page.
type eventData struct {
	common
	Event eventRow
	// Self is the event's link from the root (for actions).
	Self      string
	DiedAt    timeText
	Discarded timeText
	By        string
	RetriedAt timeText
	Method    string
	Target    string // path and query, credentials redacted
	Host      string
	ClientIP  string
	Headers   []header
	// Body is the body as text: pretty-printed JSON, text, or base64
	// (BodyEncoding says which).
	Body         string
	BodyEncoding string
	BodySize     int
	History      []attemptRow
	// Retry and Discard say whether the buttons apply to the event's
	// state (and are allowed).
	Retry, Discard bool
}

// serveEvent is an event's page.
func (h *Handler) serveEvent(w http.ResponseWriter, r *http.Request, rt route) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || len(q) > 1 || len(q["scope"]) > 1 || len(q) == 1 && q["scope"] == nil {
		h.errorPage(w, r, rt, http.StatusBadRequest, "An event's page takes one parameter: scope.")
		return
	}
	scope := q.Get("scope")
	if scope != "" && !validName(scope) {
		h.errorPage(w, r, rt, http.StatusBadRequest, "Bad scope.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	sp, rec, status, msg := h.locate(ctx, rt.id, scope)
	if sp == nil {
		h.errorPage(w, r, rt, status, msg)
		return
	}
	g := h.theGuard()
	paused, err := sp.Paused(ctx)
	d := eventData{common: h.common(rt, "Event "+strconv.FormatUint(rec.ID, 10), pageEvents)}
	if err != nil {
		d.Problems = append(d.Problems, "Could not read the paused scopes: "+err.Error())
	}
	d.Event = eventRow{
		ID: rec.ID, Link: eventLink(rec.ID, rec.Scope), Scope: rec.Scope, Provider: rec.Provider, EventID: rec.EventID,
		EventType: rec.EventType, State: string(rec.State), Attempts: rec.Attempts, ReceivedAt: timeOf(rec.ReceivedAt),
		NextAt: timeOf(rec.NextAt), LastError: rec.LastError,
	}
	if rec.State == spool.Pending {
		d.Event.Waiting = waiting(sp, &rec, paused)
	}
	d.Self = d.Event.Link
	d.DiedAt, d.Discarded, d.By, d.RetriedAt = timeOf(rec.DiedAt), timeOf(rec.DiscardedAt), rec.DiscardedBy, timeOf(rec.RetriedAt)
	d.Method, d.Host, d.ClientIP = rec.Method, rec.Host, rec.ClientIP
	d.Target = rec.Path
	if query := g.redactQuery(rec.Query); query != "" {
		d.Target += "?" + query
	}
	for name, values := range g.redactHeader(rec.Header) {
		for _, v := range values {
			d.Headers = append(d.Headers, header{name, v})
		}
	}
	slices.SortStableFunc(d.Headers, func(a, b header) int { return cmp.Compare(a.Name, b.Name) })
	d.Body, d.BodyEncoding = bodyText(rec.Body)
	d.BodySize = len(rec.Body)
	for i, a := range rec.History {
		d.History = append(d.History, attemptRow{
			N: i + 1, At: timeOf(a.At), Status: a.Status, Duration: a.Duration.Round(time.Millisecond).String(), Error: a.Error,
		})
	}
	d.Retry = d.CanRetry
	d.Discard = d.CanDiscard && rec.State != spool.Discarded
	h.render(w, r, "event", http.StatusOK, d)
}

// bodyText is a body as the event's page shows it: JSON pretty-printed,
// other UTF-8 text as it is, anything else in base64.
func bodyText(body []byte) (text, encoding string) {
	if !utf8.Valid(body) {
		return base64.StdEncoding.EncodeToString(body), "base64 (not UTF-8 text)"
	}
	var out bytes.Buffer
	if json.Valid(body) && json.Indent(&out, body, "", "  ") == nil {
		return out.String(), "JSON, indented"
	}
	return string(body), "text"
}

// locate finds event id in the spools, in the one of scope when scope is
// given. Without it, an id two spools (ledger files) hold is ambiguous.
func (h *Handler) locate(ctx context.Context, id uint64, scope string) (*spool.Spool, spool.Record, int, string) {
	var (
		found   *spool.Spool
		rec     spool.Record
		matches int
	)
	for _, sp := range h.spools() {
		got, ok, err := sp.Get(ctx, id)
		if err != nil {
			return nil, rec, http.StatusInternalServerError, "Could not read the spool: " + err.Error()
		}
		if !ok || scope != "" && got.Scope != scope {
			continue
		}
		found, rec = sp, got
		matches++
	}
	switch {
	case matches == 0:
		return nil, rec, http.StatusNotFound, fmt.Sprintf("No spooled event %d: delivered, purged, or never spooled.", id)
	case matches > 1:
		return nil, rec, http.StatusConflict, fmt.Sprintf("Event %d is in more than one ledger: open it from the list, which names its scope.", id)
	}
	return found, rec, 0, ""
}

// recentData is the recent outcomes page.
type recentData struct {
	common
	Recording bool
	Kept      int
	Outcome   string
	Scope     string
	Outcomes  []string
	Rows      []outcomeRow
}

// serveRecent lists the kept outcomes, newest first, filtered by outcome
// and scope.
func (h *Handler) serveRecent(w http.ResponseWriter, r *http.Request, rt route) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	bad := err != nil
	for name, values := range q {
		bad = bad || len(values) > 1 || name != "outcome" && name != "scope"
	}
	if bad {
		h.errorPage(w, r, rt, http.StatusBadRequest, "The recent outcomes take two parameters: outcome and scope.")
		return
	}
	d := recentData{common: h.common(rt, "Recent outcomes", pageRecent), Kept: h.Recent, Outcome: q.Get("outcome"), Scope: q.Get("scope")}
	if rec := h.outcomes(); rec != nil {
		d.Recording = true
		seen := map[string]bool{}
		all := rec.newest(0, nil)
		for _, o := range all {
			seen[o.Outcome] = true
		}
		var kept []Outcome
		for _, o := range all {
			if (d.Outcome == "" || o.Outcome == d.Outcome) && (d.Scope == "" || o.Scope == d.Scope) {
				kept = append(kept, o)
			}
		}
		d.Rows = outcomeRows(kept)
		for o := range seen {
			d.Outcomes = append(d.Outcomes, o)
		}
		slices.Sort(d.Outcomes)
	}
	h.render(w, r, "recent", http.StatusOK, d)
}

// errorData is an error page.
type errorData struct {
	common
	Status  int
	Message string
}

// errorPage answers status with a page saying msg.
func (h *Handler) errorPage(w http.ResponseWriter, r *http.Request, rt route, status int, msg string) {
	h.render(w, r, "error", status, errorData{common: h.common(rt, http.StatusText(status), ""), Status: status, Message: msg})
}

// render executes a page's template into a buffer and answers it; a
// template that fails is a 500 with a plain text.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, page string, status int, data any) {
	var b bytes.Buffer
	if err := pages[page].ExecuteTemplate(&b, "layout", data); err != nil {
		h.log().Error("console: rendering a page failed", zap.String("page", page), zap.Error(err))
		h.plainError(w, http.StatusInternalServerError, "The page could not be rendered.")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b.Bytes())
	}
}
