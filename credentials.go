package webhookguard

import (
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// carriesCredential reports whether r carries one of the provider's static
// credential headers (valid or not: a refused request may carry a real key).
func (h *Handler) carriesCredential(r *http.Request) bool {
	for _, name := range h.scheme.CredentialHeaders {
		if len(r.Header[name]) > 0 {
			return true
		}
	}
	return false
}

// dropCredentials removes the static credential headers from the request
// that is forwarded, once the guard has verified them, unless
// forward_credentials keeps them for an upstream that checks them too: the
// upstream, and every log of the forwarded request (reverse_proxy's DEBUG
// "upstream roundtrip" line prints its headers), never sees the key.
func (h *Handler) dropCredentials(r *http.Request) {
	if h.ForwardCredentials {
		return
	}
	for _, name := range h.scheme.CredentialHeaders {
		r.Header.Del(name)
	}
}

// answerError answers a request that carried a static credential and ended
// in err (a refusal of the guard or a failure downstream: reverse_proxy's
// 502 or 504), and returns nil: the handler answers the error itself instead
// of returning it to Caddy's server.
//
// Why: Caddy's server (caddyhttp.Server.ServeHTTP) clones the request before
// any handler runs, headers included (r.Clone: a new Header map), and hands
// that clone to the error logger `http.log.error`. When a handler returns an
// error, the server logs it with that clone: at ERROR when the status is 5xx
// and there are no error routes, else at DEBUG. Its header marshaler redacts
// only Authorization, Proxy-Authorization, Cookie and Set-Cookie (unless
// log_credentials); an X-API-KEY is printed in clear, with Caddy's default
// logging and no `log` directive. A handler cannot reach that clone (its own
// map), and with default logging the server has no log configuration
// (Server.Logs is nil), so the `access_logger_names` variable cannot route
// the line elsewhere either. The only way to keep the key out of that line
// is for no error to reach the server: then it logs nothing.
//
// What the server would have done is done here instead, so the client and
// handle_errors see the same thing: without error routes, the status is
// written with an empty body; with error routes (handle_errors), they run
// with the error in the request's context and the {http.error.*}
// placeholders set, on the request restored to its original method, URI and
// remote address, as the server does. The guard's own log line (one per
// delivery, redacted) says what happened. Caddy's behaviour for requests
// without a credential header, and for every other header, is unchanged.
//
// Limit: error routes of an enclosing JSON subroute (`"errors"` of a
// subroute handler, not produced by the Caddyfile) are not run; the
// server's error routes are.
func (h *Handler) answerError(w http.ResponseWriter, r *http.Request, err error) error {
	if err == nil {
		return nil
	}
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok {
		return err // not under Caddy's server (unit tests)
	}
	status := http.StatusInternalServerError
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		status = he.StatusCode
	}
	if srv.Errors == nil || len(srv.Errors.Routes) == 0 {
		w.WriteHeader(status)
		return nil
	}
	r = srv.Errors.WithError(r, err) // a shallow copy: the fields below are its own
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		r.Method = orig.Method
		r.RemoteAddr = orig.RemoteAddr
		r.RequestURI = orig.RequestURI
		if orig.URL != nil {
			u := *orig.URL
			r.URL = &u
		}
	}
	if err2 := h.errorRoutes(srv).ServeHTTP(w, r); err2 != nil {
		h.logger.Error("error handling handler error",
			zap.String("provider", h.Provider), zap.Int("status", status),
			zap.String("error", h.redact(err2.Error())))
		w.WriteHeader(status)
	}
	return nil
}

// compiledErrorRoutes is a server's error routes, compiled once.
type compiledErrorRoutes struct {
	srv   *caddyhttp.Server
	chain caddyhttp.Handler
}

// errorRoutes returns srv's error routes compiled as the server compiles
// them, ending in a handler that writes the error's status. They are
// compiled at the first error and kept: a handler belongs to one server.
func (h *Handler) errorRoutes(srv *caddyhttp.Server) caddyhttp.Handler {
	if h.errChain == nil { // not provisioned (unit tests)
		return srv.Errors.Routes.Compile(writeErrorStatus)
	}
	if c := h.errChain.Load(); c != nil && c.srv == srv {
		return c.chain
	}
	c := &compiledErrorRoutes{srv: srv, chain: srv.Errors.Routes.Compile(writeErrorStatus)}
	h.errChain.Store(c)
	return c.chain
}

// writeErrorStatus ends the error routes as Caddy's own empty error handler
// does: it writes the error's status.
var writeErrorStatus caddyhttp.Handler = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	status := http.StatusInternalServerError
	if he, ok := r.Context().Value(caddyhttp.ErrorCtxKey).(caddyhttp.HandlerError); ok {
		status = he.StatusCode
	}
	w.WriteHeader(status)
	return nil
})

// errChainCache is the handler's cache of compiled error routes, allocated
// at provisioning (a pointer: Handler is copied by value in CaddyModule).
type errChainCache = atomic.Pointer[compiledErrorRoutes]
