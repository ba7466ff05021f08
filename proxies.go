package webhookguard

import (
	"net/http"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// proxyWarning remembers that a handler has warned about its server's loose
// trusted_proxies (a pointer in Handler: Handler is copied by value in
// CaddyModule).
type proxyWarning struct{ done atomic.Bool }

// warnLooseProxies logs, once per handler, a warning when an allow-list is
// enforced on a client IP that Caddy took from a trusted proxy's
// client_ip_headers (X-Forwarded-For) without trusted_proxies_strict.
// Without it, Caddy takes the leftmost address of the header, which the
// client writes: a sender prepends an allowed address and passes
// (X-Forwarded-For: 18.159.27.193, 203.0.113.9 is read as 18.159.27.193).
// With it, Caddy reads the header from the right and takes the first
// address that is not a trusted proxy: the one the proxy saw.
//
// Caddy loads the server's trusted_proxies into an unexported field (its
// JSON is dropped once loaded), so a handler's Provision cannot see them.
// A request can: the server marks it trusted_proxy when its peer is one. So
// the check runs on requests, until it has warned: one atomic load a request.
func (h *Handler) warnLooseProxies(r *http.Request) {
	if h.allow == nil || h.proxyWarned == nil || h.proxyWarned.done.Load() {
		return
	}
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); !trusted {
		return
	}
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok || srv.TrustedProxiesStrict > 0 || !h.proxyWarned.done.CompareAndSwap(false, true) {
		return
	}
	h.logger.Warn("allow_ips is enforced on a client IP read from a trusted proxy's headers without trusted_proxies_strict: "+
		"a client can choose its IP by prepending an allowed one to X-Forwarded-For; "+
		"add trusted_proxies_strict to the global servers options",
		zap.String("provider", h.Provider), zap.String("server", srv.Name()))
}
