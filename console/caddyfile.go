package console

import (
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("webhook_guard_console", parseCaddyfile)
	// Among the handlers that answer (after respond and metrics, before
	// reverse_proxy): after basic_auth and forward_auth, which must run
	// first, and after handle and route blocks, so that a plain
	// webhook_guard_console in a site does not shadow them.
	httpcaddyfile.RegisterDirectiveOrder("webhook_guard_console", httpcaddyfile.After, "metrics")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	c := new(Handler)
	err := c.UnmarshalCaddyfile(h.Dispenser)
	return c, err
}

// UnmarshalCaddyfile sets up the console from Caddyfile tokens:
//
//	webhook_guard_console [<matcher>] {
//	    actions retry|discard|pause...   # default: none (read-only)
//	    recent  <n>                      # outcomes kept; default 1000
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.Errf("webhook_guard_console: takes a block, not '%s'", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "actions":
			if h.Actions != nil {
				return d.Err("actions: given twice")
			}
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("actions: want one or more of %s", strings.Join(knownActions, ", "))
			}
			for i, a := range args {
				if !slices.Contains(knownActions, a) {
					return d.Errf("actions: unknown action '%s': want %s", a, strings.Join(knownActions, ", "))
				}
				if slices.Contains(args[:i], a) {
					return d.Errf("actions: '%s' given twice", a)
				}
			}
			h.Actions = args
		case "recent":
			if h.Recent != 0 {
				return d.Err("recent: given twice")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 || n > MaxRecent {
				return d.Errf("recent: want 1 to %d outcomes, got '%s'", MaxRecent, d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Recent = n
		default:
			return d.Errf("unrecognized webhook_guard_console subdirective '%s'", d.Val())
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
