package webhookguard

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// A handler names itself in load errors and warnings by where it was
// declared (DeclaredAt, "Caddyfile:12", filled in by the Caddyfile adapter)
// and by its route: the matchers of the routes that lead to it (the site's
// host, a handle block's path, the directive's own matcher), so that two
// handlers of one provider can be told apart.
//
// The route is read while Caddy provisions the config: a handler's
// caddy.Context lists the modules being provisioned around it (the http app,
// then each enclosing subroute handler), and the server being set up is in
// the context under caddyhttp.ServerCtxKey. Caddy provisions a route list in
// order and, once a route's handlers are loaded, empties its HandlersRaw and
// fills its Handlers; so the route being loaded at each level is the first
// whose handlers are still raw, and the routes after it are still raw JSON.
// When the modules around the handler are not that (a handler provisioned
// by another module, a named route), the route is unknown and only
// DeclaredAt names it.

// placement is where a handler sits in the config being provisioned.
type placement struct {
	// route describes the matchers of the routes that lead to the handler,
	// outermost first: "host shop.example, path /hooks/ivy"; "" when there
	// are none or they are unknown.
	route string
	// after names the handlers that run only if this handler passes the
	// request on, in order (the handlers of a subroute by their own names):
	// for a spool guard, which never does, they never run.
	after []string
}

// selfNamedError is a provisioning error that names the handlers it is
// about already (a scope conflict names both).
type selfNamedError struct{ error }

func (e selfNamedError) Unwrap() error { return e.error }

// Provision provisions the handler (see provision) and names it in any
// error: "webhook_guard ivy at Caddyfile:12 (route: path /hooks/ivy): ...".
func (h *Handler) Provision(ctx caddy.Context) error {
	h.placement = placementOf(ctx, h)
	err := h.provision(ctx)
	if err != nil {
		var named selfNamedError
		if errors.As(err, &named) {
			return err
		}
		return fmt.Errorf("%s: %w", h.name(""), err)
	}
	h.warnNeverRuns()
	return nil
}

// name is how errors and warnings name the handler: its provider, where it
// was declared and its route, with extra (such as where its secret comes
// from) inside the parentheses.
func (h *Handler) name(extra string) string {
	s := "webhook_guard " + h.Provider
	if h.DeclaredAt != "" {
		s += " at " + h.DeclaredAt
	}
	var notes []string
	if h.placement.route != "" {
		notes = append(notes, "route: "+h.placement.route)
	}
	if extra != "" {
		notes = append(notes, extra)
	}
	if len(notes) > 0 {
		s += " (" + strings.Join(notes, "; ") + ")"
	}
	return s
}

// warnNeverRuns warns, at load, when the handler spools and handlers follow
// it in its route: the spool answers every request itself and never passes
// one on, so they never run (a reverse_proxy left after a spool guard).
func (h *Handler) warnNeverRuns() {
	if h.Spool == nil || len(h.placement.after) == 0 {
		return
	}
	h.logger.Warn("a spool guard answers every request itself, so what follows it in its route never runs: remove it; the spool delivers to its to",
		zap.String("handler", h.name("")), zap.String("declared_at", h.DeclaredAt), zap.Strings("never_runs", h.placement.after))
}

// placementOf finds where self is in the config being provisioned; a zero
// placement when it cannot tell. It reads self's fields as given, so it runs
// before provisioning changes any.
func placementOf(ctx caddy.Context, self *Handler) placement {
	mods := ctx.Modules()
	if len(mods) < 2 || mods[len(mods)-1] != caddy.Module(self) {
		return placement{}
	}
	app := slices.IndexFunc(mods, func(m caddy.Module) bool { _, ok := m.(*caddyhttp.App); return ok })
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if app < 0 || srv == nil {
		return placement{}
	}
	// The route lists from the server's down to self's: each enclosing
	// module between the app and self must be a subroute.
	var lists [][]caddyhttp.Route
	top := []caddyhttp.Route(srv.Routes)
	if srv.Errors != nil && loading(top) < 0 {
		top = srv.Errors.Routes
	}
	lists = append(lists, top)
	for _, m := range mods[app+1 : len(mods)-1] {
		sr, ok := m.(*caddyhttp.Subroute)
		if !ok {
			return placement{}
		}
		routes := []caddyhttp.Route(sr.Routes)
		if sr.Errors != nil && loading(routes) < 0 {
			routes = sr.Errors.Routes
		}
		lists = append(lists, routes)
	}
	current := make([]int, len(lists))
	var p placement
	var matchers []string
	for k, list := range lists {
		current[k] = loading(list)
		if current[k] < 0 {
			return placement{}
		}
		if m := describeMatchers(list[current[k]]); m != "" {
			matchers = append(matchers, m)
		}
	}
	p.route = strings.Join(matchers, ", ")

	// What runs only if self passes the request on: the handlers after it in
	// its route, the routes after its route when every request that reaches
	// the route list reaches self, and so on up, while each enclosing route
	// holds only the subroute that leads to self.
	n := len(lists) - 1
	own := lists[n][current[n]]
	at := selfIndex(own.HandlersRaw, self)
	if at < 0 {
		return p
	}
	p.after = handlerNames(own.HandlersRaw[at+1:])
	for k := n; k >= 0; k-- {
		list, i := lists[k], current[k]
		if k < n && len(list[i].HandlersRaw) != 1 {
			break
		}
		if !alwaysReached(list, i) {
			break
		}
		for _, r := range list[i+1:] {
			p.after = append(p.after, handlerNames(r.HandlersRaw)...)
		}
	}
	return p
}

// loading is the index of the route whose handlers are being loaded: the
// first whose handlers are still raw; -1 when there is none.
func loading(routes []caddyhttp.Route) int {
	return slices.IndexFunc(routes, func(r caddyhttp.Route) bool {
		return len(r.HandlersRaw) > 0 && len(r.Handlers) == 0
	})
}

// alwaysReached reports whether every request that goes through the route
// list and is not answered before routes[i] reaches routes[i]: it has no
// matcher, and no earlier route of its group can match in its place.
func alwaysReached(routes []caddyhttp.Route, i int) bool {
	r := routes[i]
	if len(r.MatcherSetsRaw) > 0 || len(r.MatcherSets) > 0 {
		return false
	}
	if r.Group == "" {
		return true
	}
	return !slices.ContainsFunc(routes[:i], func(o caddyhttp.Route) bool { return o.Group == r.Group })
}

// selfIndex finds self among a route's raw handlers: the first webhook_guard
// whose JSON decodes to self's fields as given.
func selfIndex(raws []json.RawMessage, self *Handler) int {
	want := *self
	return slices.IndexFunc(raws, func(raw json.RawMessage) bool {
		if handlerName(raw) != "webhook_guard" {
			return false
		}
		var got Handler
		return json.Unmarshal(raw, &got) == nil && reflect.DeepEqual(got, want)
	})
}

// handlerName is the "handler" of a raw handler.
func handlerName(raw json.RawMessage) string {
	var m struct {
		Handler string `json:"handler"`
	}
	_ = json.Unmarshal(raw, &m)
	return m.Handler
}

// handlerNames names raw handlers; a subroute by the handlers inside it.
func handlerNames(raws []json.RawMessage) []string {
	var names []string
	for _, raw := range raws {
		name := handlerName(raw)
		if name != "subroute" {
			names = append(names, cmpOr(name, "a handler"))
			continue
		}
		var sr struct {
			Routes []struct {
				Handle []json.RawMessage `json:"handle"`
			} `json:"routes"`
		}
		_ = json.Unmarshal(raw, &sr)
		for _, r := range sr.Routes {
			names = append(names, handlerNames(r.Handle)...)
		}
	}
	return names
}

// cmpOr is s, or alt when s is empty.
func cmpOr(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// describeMatchers describes a route's matcher sets: "path /a /b",
// "host x and path /a"; sets, any of which matches, joined by "or".
func describeMatchers(r caddyhttp.Route) string {
	var sets []string
	if len(r.MatcherSetsRaw) > 0 {
		for _, set := range r.MatcherSetsRaw {
			names := make([]string, 0, len(set))
			for name := range set {
				names = append(names, name)
			}
			slices.Sort(names)
			var parts []string
			for _, name := range names {
				var values []string
				if json.Unmarshal(set[name], &values) == nil && len(values) > 0 {
					parts = append(parts, name+" "+strings.Join(values, " "))
				} else {
					parts = append(parts, name)
				}
			}
			sets = append(sets, strings.Join(parts, " and "))
		}
	} else {
		for _, set := range r.MatcherSets {
			var parts []string
			for _, m := range set {
				parts = append(parts, describeMatcher(m))
			}
			slices.Sort(parts)
			sets = append(sets, strings.Join(parts, " and "))
		}
	}
	return strings.Join(sets, " or ")
}

// describeMatcher describes a provisioned matcher: its values for the path,
// host and method matchers, else its module name.
func describeMatcher(m any) string {
	switch v := m.(type) {
	case *caddyhttp.MatchPath:
		return "path " + strings.Join(*v, " ")
	case *caddyhttp.MatchHost:
		return "host " + strings.Join(*v, " ")
	case *caddyhttp.MatchMethod:
		return "method " + strings.Join(*v, " ")
	case caddy.Module:
		return caddy.GetModuleName(v)
	}
	return "a matcher"
}
