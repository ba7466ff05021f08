package webhookguard

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("webhook_guard", parseCaddyfile)
	// The auth slot: after request_body, before handle/route/reverse_proxy,
	// so requests inside handle and route blocks are guarded too.
	httpcaddyfile.RegisterDirectiveOrder("webhook_guard", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(Handler)
	err := g.UnmarshalCaddyfile(h.Dispenser)
	return g, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	webhook_guard [<matcher>] <provider> {
//	    secret           <value>               # repeatable (rotation)
//	    api_key          <value>               # repeatable; ivpay
//	    public_key       <whpk_...>            # repeatable; standard v1a
//	    allow_ips        <ip|cidr|ivy|any>...  # repeatable
//	    max_body         <size>
//	    tolerance        <duration>
//	    replay_window    <duration>
//	    dedupe           off
//	    events           <type>...
//	    scope            <name>
//	    store            file [<path>] [{ max_events <n>; lease <d> }]
//	    store            memory [{ max_events <n>; lease <d> }]
//	    store            redis <url> [{ prefix <text>; max_events <n>; lease <d> }]
//	    forward_credentials                    # ivpay: keep X-API-KEY upstream
//	    sign_upstream    <whsec_...>           # repeatable: sign what is forwarded
//	    # hmac only:
//	    header <name>; algorithm sha1|sha256|sha512; encoding hex|base64
//	    prefix <text>; timestamp_header <name>; signed <template>
//	    event_id header:<Name>|json:<path>
//	}
//
// Every mistake that can be seen here is reported with the Caddyfile line of
// the option at fault. Secrets given as placeholders ({env.*}, {file.*}) are
// not resolved here but at provisioning (see placeholders.go).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	directive := d.Token()
	// The file's base name: the same JSON whether Caddy read the file or got
	// its text (caddy reload through /load), so an unchanged reload is skipped.
	h.DeclaredAt = fmt.Sprintf("%s:%d", filepath.Base(directive.File), directive.Line)
	if !d.NextArg() {
		return d.Errf("webhook_guard: a provider is required (one of %v)", verify.Names())
	}
	h.Provider = d.Val()
	if _, ok := verify.Lookup(h.Provider); !ok {
		return d.Errf("webhook_guard: unknown provider '%s' (one of %v)", h.Provider, verify.Names())
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	at := map[string][]caddyfile.Token{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option := d.Val()
		at[option] = append(at[option], d.Token())
		if err := h.unmarshalOption(d, option); err != nil {
			return err
		}
	}
	if err := h.checkCaddyfile(directive, at); err != nil {
		return err
	}
	h.warnEnvSubstitution(at)
	return nil
}

// unmarshalOption parses one subdirective.
func (h *Handler) unmarshalOption(d *caddyfile.Dispenser, option string) error {
	hmacOpt := func() *verify.HMACOptions {
		if h.HMAC == nil {
			h.HMAC = new(verify.HMACOptions)
		}
		return h.HMAC
	}
	switch option {
	case "secret":
		return oneArgInto(d, &h.Secrets)
	case "api_key":
		return oneArgInto(d, &h.APIKeys)
	case "public_key":
		return oneArgInto(d, &h.PublicKeys)
	case "sign_upstream":
		return oneArgInto(d, &h.SignUpstream)
	case "allow_ips":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		if _, err := parseAllowList(args, nil); err != nil {
			return d.Errf("%v", err)
		}
		h.AllowIPs = append(h.AllowIPs, args...)
	case "max_body":
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		size, err := humanize.ParseBytes(v)
		if err != nil || size == 0 || size > 1<<40 {
			return d.Errf("max_body: invalid size '%s' (e.g. 64KiB, 1MiB)", v)
		}
		h.MaxBody = int64(size)
	case "tolerance":
		return durationArg(d, option, &h.Tolerance)
	case "replay_window":
		return durationArg(d, option, &h.ReplayWindow)
	case "dedupe":
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		if v != "off" {
			return d.Errf("dedupe: the only value is 'off', got '%s'", v)
		}
		h.DedupeOff = true
	case "events":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		for _, e := range args {
			if err := checkEventType(e); err != nil {
				return d.Errf("events: %v", err)
			}
		}
		h.Events = append(h.Events, args...)
	case "store":
		return h.unmarshalStore(d)
	case "scope":
		if err := oneArgInto1(d, &h.Scope); err != nil {
			return err
		}
		if err := checkName(h.Scope); err != nil {
			return d.Errf("scope: %v", err)
		}
		return nil
	case "spool":
		return h.unmarshalSpool(d)
	case "forward_credentials":
		if d.NextArg() {
			return d.ArgErr()
		}
		if scheme, _ := verify.Lookup(h.Provider); len(scheme.CredentialHeaders) == 0 {
			return d.Errf("forward_credentials: the %s provider sends no static credential to keep", h.Provider)
		}
		h.ForwardCredentials = true
	case "header":
		return oneArgInto1(d, &hmacOpt().Header)
	case "algorithm":
		return oneArgInto1(d, &hmacOpt().Algorithm)
	case "encoding":
		return oneArgInto1(d, &hmacOpt().Encoding)
	case "prefix":
		return oneArgInto1(d, &hmacOpt().Prefix)
	case "timestamp_header":
		return oneArgInto1(d, &hmacOpt().TimestampHeader)
	case "signed":
		return oneArgInto1(d, &hmacOpt().Signed)
	case "event_id":
		return oneArgInto1(d, &hmacOpt().EventID)
	default:
		return d.Errf("unrecognized subdirective '%s'", option)
	}
	return nil
}

// unmarshalStore parses `store <type> ...` with the store module's own
// Caddyfile parser, as reverse_proxy does with its transports.
func (h *Handler) unmarshalStore(d *caddyfile.Dispenser) error {
	if h.StoreRaw != nil {
		return d.Err("store: given twice")
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	name := d.Val()
	mod, err := caddyfile.UnmarshalModule(d, storeNamespace+"."+name)
	if err != nil {
		if _, unknown := caddy.GetModule(storeNamespace + "." + name); unknown != nil {
			return d.Errf("store: unknown type '%s' (file, memory or redis)", name)
		}
		return err
	}
	h.StoreRaw = caddyconfig.JSONModuleObject(mod, "type", name, nil)
	return nil
}

// checkCaddyfile builds the verifier once, as Provision will but without
// resolving placeholders (see adaptConfig), so that a missing, empty or
// blank secret, a malformed literal key or a bad hmac option fails at adapt
// time with the line of the option at fault (or of the directive).
func (h *Handler) checkCaddyfile(directive caddyfile.Token, at map[string][]caddyfile.Token) error {
	errAtEntry := func(option string, index int, err error) error {
		tok := directive
		if toks := at[option]; index < len(toks) {
			tok = toks[index]
		}
		return fmt.Errorf("webhook_guard %s: %w, at %s:%d", h.Provider, err, tok.File, tok.Line)
	}
	errAt := func(option string, err error) error { return errAtEntry(option, 0, err) }
	scheme, _ := verify.Lookup(h.Provider)
	cfg, err := h.adaptConfig()
	if err != nil {
		var ee *entryError
		if errors.As(err, &ee) {
			return errAtEntry(ee.Option, ee.Index, err)
		}
		return errAt("", err)
	}
	if _, err := scheme.New(cfg); err != nil {
		var ce *verify.ConfigError
		if errors.As(err, &ce) {
			return errAt(ce.Option, h.scrub(err))
		}
		return errAt("", h.scrub(err))
	}
	if err := h.checkSignUpstream(); err != nil {
		var ee *entryError
		var ce *verify.ConfigError
		switch {
		case errors.As(err, &ee):
			return errAtEntry(ee.Option, ee.Index, err)
		case errors.As(err, &ce) && ce.Entry > 0:
			return errAtEntry("sign_upstream", ce.Entry-1, h.scrub(err))
		}
		return errAt("sign_upstream", h.scrub(err))
	}
	if h.HMAC != nil && h.Provider != "hmac" {
		for _, o := range []string{"header", "algorithm", "encoding", "prefix", "timestamp_header", "signed", "event_id"} {
			if _, ok := at[o]; ok {
				return errAt(o, fmt.Errorf("%s is an option of the hmac provider only", o))
			}
		}
	}
	if _, err := parseAllowList(h.AllowIPs, nil); err != nil {
		return errAt("allow_ips", err)
	}
	if err := h.checkReplayWindow(cfg.Tolerance); err != nil {
		return errAt("replay_window", err)
	}
	if h.DedupeOff && h.StoreRaw != nil {
		return errAt("store", errors.New("store given with dedupe off"))
	}
	if h.Spool != nil {
		switch t := storeType(h.StoreRaw); {
		case h.DedupeOff:
			return errAt("spool", errSpoolStore("dedupe off"))
		case !spoolStoreTypes[t]:
			return errAt("store", errSpoolStore("store "+t))
		case h.ForwardCredentials:
			return errAt("forward_credentials", errors.New("forward_credentials: the spool never stores a credential, so it cannot forward one"))
		}
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser) (string, error) {
	var v string
	if !d.AllArgs(&v) {
		return "", d.ArgErr()
	}
	return v, nil
}

// oneArgInto appends the option's single argument to list.
func oneArgInto(d *caddyfile.Dispenser, list *[]string) error {
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

// oneArgInto1 sets a single-valued option, refusing it twice.
func oneArgInto1(d *caddyfile.Dispenser, field *string) error {
	option := d.Val()
	if *field != "" {
		return d.Errf("%s: given twice", option)
	}
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	*field = v
	return nil
}

// minDuration is the smallest tolerance, replay_window or lease: under a
// second is a unit mistake (1ns, 500ms), never what a webhook endpoint needs.
const minDuration = time.Second

// durationArg parses a duration option with Caddy's parser (which also
// knows days: 1d): exactly one argument, at least minDuration.
func durationArg(d *caddyfile.Dispenser, option string, field *caddy.Duration) error {
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.Errf("%s: want one duration such as 5m or 24h, got %d arguments '%s'", option, len(args), strings.Join(args, " "))
	}
	v := args[0]
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return d.Errf("%s: invalid duration '%s' (e.g. 5m, 24h)", option, v)
	}
	if dur < minDuration {
		return d.Errf("%s: %s is under one second (e.g. 5m, 24h)", option, v)
	}
	*field = caddy.Duration(dur)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
