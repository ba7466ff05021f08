// Package console is the guard's web console: the Caddy HTTP handler
// webhook_guard_console, which an operator mounts in a site of their own,
// behind Caddy's basic_auth or forward_auth, to see in a browser what the
// guard's handlers of the same Caddy refused, what their spools hold and
// what died, and (when the actions option allows it) to retry, discard,
// pause and resume.
//
// The pages are rendered on the server (html/template: every value from a
// request is text), read without JavaScript, and use one embedded stylesheet
// and one embedded script, which only performs actions. Every answer carries
// a strict Content-Security-Policy. Actions are POSTs with a JSON body and a
// custom header, behind http.CrossOriginProtection, and are logged with who
// made them. A request whose Host is not a name the site is addressed by
// (DNS rebinding) is refused.
package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// The actions an operator can allow with the actions option.
const (
	// ActionRetry allows Retry (one event) and Retry all (the dead or
	// discarded events of a scope, or of every scope).
	ActionRetry = "retry"
	// ActionDiscard allows Discard.
	ActionDiscard = "discard"
	// ActionPause allows Pause and Resume of a scope's deliveries.
	ActionPause = "pause"
)

// knownActions lists the actions, in the order the docs name them.
var knownActions = []string{ActionRetry, ActionDiscard, ActionPause}

// Handler is the console, `webhook_guard_console { actions ...; recent <n> }`:
// a terminal handler serving the console's pages and actions.
type Handler struct {
	// Actions lists what the console may change: retry, discard, pause.
	// None by default: the console is read-only, and an action it was not
	// given is refused with 403.
	Actions []string `json:"actions,omitempty"`
	// Recent is how many of the guard handlers' latest outcomes are kept
	// in memory for the console; default 1000, at most 100000.
	Recent int `json:"recent,omitempty"`

	allowed map[string]bool
	logger  *zap.Logger
	release func()
	cop     *http.CrossOriginProtection
	srv     *caddyhttp.Server

	// facts is the console's site, learnt once (see checkSite).
	facts *siteFacts

	// now, guard and recorder are the clock, the guard and the outcomes;
	// time.Now, theGuard and the process's recorder unless a test sets
	// them.
	now      func() time.Time
	guard    func() Guard
	recorder func() *recorder
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.webhook_guard_console",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision checks the options, starts keeping the guard's outcomes, and
// arranges for the site's check once the configuration runs.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.checkOptions(); err != nil {
		return err
	}
	h.allowed = map[string]bool{}
	for _, a := range h.Actions {
		h.allowed[a] = true
	}
	if h.Recent == 0 {
		h.Recent = DefaultRecent
	}
	h.cop = http.NewCrossOriginProtection()
	h.release = acquire(h.Recent)
	h.facts = new(siteFacts)
	h.srv, _ = ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if h.srv != nil {
		// The routes around the console are provisioned once the whole
		// configuration is: look at them when it starts.
		if app, err := ctx.AppIfConfigured("events"); err == nil {
			if events, ok := app.(*caddyevents.App); ok {
				_ = events.On("started", startedHook{h})
			}
		}
	}
	return nil
}

// checkOptions checks actions and recent.
func (h *Handler) checkOptions() error {
	for i, a := range h.Actions {
		if !slices.Contains(knownActions, a) {
			return fmt.Errorf("actions: unknown action %q: want %s", a, strings.Join(knownActions, ", "))
		}
		if slices.Contains(h.Actions[:i], a) {
			return fmt.Errorf("actions: %q given twice", a)
		}
	}
	if h.Recent < 0 || h.Recent > MaxRecent {
		return fmt.Errorf("recent: want 1 to %d outcomes, got %d", MaxRecent, h.Recent)
	}
	return nil
}

// Cleanup stops keeping outcomes for this console (the recorder lives on
// while another console is loaded).
func (h *Handler) Cleanup() error {
	if h.release != nil {
		h.release()
	}
	return nil
}

// startedHook looks at the console's site once the configuration runs.
type startedHook struct{ h *Handler }

// Handle implements caddyevents.Handler.
func (s startedHook) Handle(context.Context, caddy.Event) error {
	s.h.checkSite()
	return nil
}

// siteFacts is the console's site, learnt once.
type siteFacts struct {
	once sync.Once
	site site
}

// checkSite learns the console's site, once, when the configuration starts
// or at the first request, and warns when it is open: listening beyond
// loopback with no authentication before the console.
func (h *Handler) checkSite() site {
	if h.facts == nil { // not provisioned
		return findSite(h.srv, h)
	}
	f := h.facts
	f.once.Do(func() {
		f.site = findSite(h.srv, h)
		if h.srv == nil {
			return
		}
		var hosts []string
		for _, m := range f.site.hosts {
			hosts = append(hosts, m...)
		}
		h.log().Info("console serving",
			zap.Bool("found_in_routes", f.site.found), zap.Strings("listen", h.srv.Listen), zap.Strings("hosts", hosts),
			zap.Bool("authentication_before", f.site.authBefore), zap.Strings("actions", h.Actions))
		if !f.site.found {
			return
		}
		if len(f.site.beyondLoopback) > 0 && !f.site.authBefore {
			h.log().Warn("the console's site listens beyond loopback and no authentication handler comes before the console: "+
				"anyone who reaches it can read the spooled events and the recent refusals"+h.actionsWarning()+
				"; put basic_auth or forward_auth before it, or bind the site to 127.0.0.1",
				zap.Strings("listen", f.site.beyondLoopback), zap.Strings("actions", h.Actions))
		}
	})
	return f.site
}

// actionsWarning adds the actions to the open-site warning.
func (h *Handler) actionsWarning() string {
	if len(h.Actions) == 0 {
		return ""
	}
	return ", and " + strings.Join(h.Actions, ", ")
}

// log returns the handler's logger (a no-op one before Provision).
func (h *Handler) log() *zap.Logger {
	if h.logger == nil {
		return zap.NewNop()
	}
	return h.logger
}

// clock returns the time now.
func (h *Handler) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}

// theGuard returns the guard the console reads.
func (h *Handler) theGuard() Guard {
	if h.guard != nil {
		return h.guard()
	}
	return theGuard()
}

// spools returns the spools to show.
func (h *Handler) spools() []*spool.Spool {
	if g := h.theGuard(); g.Spools != nil {
		return g.Spools()
	}
	return nil
}

// outcomes returns the recorder of the guard's outcomes (nil: none kept).
func (h *Handler) outcomes() *recorder {
	if h.recorder != nil {
		return h.recorder()
	}
	return active.Load()
}

// contentSecurityPolicy allows the console's own stylesheet and script and
// nothing else: no inline script or style, no frame around it.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"

// securityHeaders sets the headers of every answer of the console.
func securityHeaders(w http.ResponseWriter) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	hdr.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// ServeHTTP serves a page, an asset or an action; the console is the last
// handler of its route and never calls next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	securityHeaders(w)
	if !h.checkSite().hostAllowed(r) {
		h.log().Info("console request refused: its Host is not a name the site is addressed by (DNS rebinding?)",
			zap.String("host", r.Host), zap.String("remote_addr", r.RemoteAddr))
		h.plainError(w, http.StatusForbidden, "Host not allowed: open the console at a name its site is addressed by.")
		return nil
	}
	rt, ok := parseRoute(r.URL.Path)
	if !ok {
		h.errorPage(w, r, route{base: "./"}, http.StatusNotFound, "No such page.")
		return nil
	}
	if rt.page == pageAction {
		h.serveAction(w, r, rt.name)
		return nil
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.plainError(w, http.StatusMethodNotAllowed, "Method not allowed: the console's pages are read with GET.")
		return nil
	}
	switch rt.page {
	case pageAsset:
		serveAsset(w, r, rt.name)
	case pageOverview:
		h.serveOverview(w, r, rt)
	case pageEvents:
		h.serveEvents(w, r, rt)
	case pageEvent:
		h.serveEvent(w, r, rt)
	case pageRecent:
		h.serveRecent(w, r, rt)
	}
	return nil
}

// plainError answers a short text.
func (h *Handler) plainError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

// The pages and resources of the console.
const (
	pageOverview = "overview"
	pageEvents   = "events"
	pageEvent    = "event"
	pageRecent   = "recent"
	pageAsset    = "asset"
	pageAction   = "action"
)

// route is a request's page, read from the end of its path so that the
// console works wherever it is mounted (handle /console/*, handle_path, a
// site's root).
type route struct {
	page string
	// id is the event of pageEvent; name the asset or the action.
	id   uint64
	name string
	// base is the relative path from the page to the console's root
	// ("./" or "../"): every link of a page starts with it.
	base string
}

// parseRoute reads the page of a path: .../ (the overview), .../events,
// .../events/<id>, .../recent, .../assets/<name>, .../actions/<name>.
func parseRoute(p string) (route, bool) {
	segs := strings.Split(p, "/")
	n := len(segs)
	last := segs[n-1]
	switch last {
	case "":
		return route{page: pageOverview, base: "./"}, true
	case "events":
		return route{page: pageEvents, base: "./"}, true
	case "recent":
		return route{page: pageRecent, base: "./"}, true
	}
	if n < 3 {
		return route{}, false
	}
	switch segs[n-2] {
	case "events":
		id, ok := parseID(last)
		return route{page: pageEvent, id: id, base: "../"}, ok
	case "assets":
		_, ok := assetTypes[last]
		return route{page: pageAsset, name: last, base: "../"}, ok
	case "actions":
		return route{page: pageAction, name: last, base: "../"}, true
	}
	return route{}, false
}

// parseID reads an event's id: decimal digits, not 0.
func parseID(s string) (uint64, bool) {
	if s == "" || len(s) > 20 {
		return 0, false
	}
	var id uint64
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if id > (1<<64-1-d)/10 {
			return 0, false
		}
		id = id*10 + d
	}
	return id, id != 0
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyevents.Handler         = startedHook{}
)
