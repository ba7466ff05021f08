package console

import (
	"net"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// site is what the console learns of the site that serves it, from the
// server's provisioned routes: the host matchers on the way to it (the names
// the site is addressed by), whether an authentication handler runs before
// it, and the listeners that reach beyond loopback.
type site struct {
	// found: the console is among the server's routes (not, say, only in a
	// named route).
	found bool
	// hosts are the host matchers of the routes that lead to the console;
	// none: a catch-all site.
	hosts []caddyhttp.MatchHost
	// authBefore: a handler that authenticates (basic_auth, forward_auth,
	// another module whose name says auth) comes before the console.
	authBefore bool
	// beyondLoopback lists the listener addresses that are not loopback
	// (all interfaces, a public or private address).
	beyondLoopback []string
}

// findSite walks srv's routes to the console h.
func findSite(srv *caddyhttp.Server, h *Handler) site {
	var s site
	if srv == nil {
		return s
	}
	for _, addr := range srv.Listen {
		if !loopbackListener(addr) {
			s.beyondLoopback = append(s.beyondLoopback, addr)
		}
	}
	w := walker{target: h}
	if w.routes(srv.Routes) {
		s.found, s.hosts, s.authBefore = true, w.hosts, w.auth
		return s
	}
	if srv.Errors != nil {
		w = walker{target: h}
		if w.routes(srv.Errors.Routes) {
			s.found, s.hosts, s.authBefore = true, w.hosts, w.auth
		}
	}
	return s
}

// walker looks for target in routes, depth first in the order the handlers
// run, noting the authentication handlers met before it and the host
// matchers of the routes that contain it.
type walker struct {
	target caddyhttp.MiddlewareHandler
	hosts  []caddyhttp.MatchHost
	auth   bool
}

// routes says whether target is in routes; on the way it sets w.auth when a
// handler before target authenticates, and w.hosts to the host matchers of
// the routes holding it.
func (w *walker) routes(routes caddyhttp.RouteList) bool {
	for _, r := range routes {
		outer := len(w.hosts)
		for _, set := range r.MatcherSets {
			for _, m := range set {
				switch hm := m.(type) {
				case caddyhttp.MatchHost:
					w.hosts = append(w.hosts, hm)
				case *caddyhttp.MatchHost:
					w.hosts = append(w.hosts, *hm)
				}
			}
		}
		for _, handler := range r.Handlers {
			if handler == w.target {
				return true
			}
			if sub, ok := handler.(*caddyhttp.Subroute); ok {
				if w.routes(sub.Routes) {
					return true
				}
				continue
			}
			if authenticates(handler) {
				w.auth = true
			}
		}
		w.hosts = w.hosts[:outer]
	}
	return false
}

// authenticates says whether a handler authenticates requests (best
// effort): Caddy's authentication handler (basic_auth), forward_auth (a
// reverse_proxy that rewrites the request and handles the answer), or a
// third-party module whose name says auth.
func authenticates(h caddyhttp.MiddlewareHandler) bool {
	if rp, ok := h.(*reverseproxy.Handler); ok {
		return rp.Rewrite != nil && len(rp.HandleResponse) > 0
	}
	m, ok := h.(caddy.Module)
	if !ok {
		return false
	}
	id := m.CaddyModule().ID
	return id == "http.handlers.authentication" || strings.Contains(strings.ToLower(id.Name()), "auth")
}

// loopbackListener says whether a listener address reaches only this
// machine: a loopback address or name, or a unix socket.
func loopbackListener(addr string) bool {
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil {
		return false
	}
	if na.IsUnixNetwork() || na.IsFdNetwork() {
		return true
	}
	return loopbackName(na.Host)
}

// loopbackName says whether host (without port) names this machine's
// loopback: localhost, a name under .localhost, or a loopback address.
func loopbackName(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// hostAllowed says whether r's Host is one the site was addressed by: one of
// the host matchers that lead to the console, or, on a catch-all site, a
// loopback name or an IP address (a browser sends a name it resolved, and a
// rebinding attacker's is never an address or a loopback name).
func (s site) hostAllowed(r *http.Request) bool {
	if len(s.hosts) > 0 {
		for _, m := range s.hosts {
			if ok, err := m.MatchWithError(r); ok && err == nil {
				return true
			}
		}
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		return false
	}
	return loopbackName(host) || net.ParseIP(host) != nil
}
