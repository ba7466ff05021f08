package webhookguard

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// allowList is the set of accepted client addresses; nil accepts any.
type allowList []netip.Prefix

// parseAllowList builds the list from allow_ips entries, or from the
// provider's defaults when there are none. "any" turns the check off.
func parseAllowList(entries, defaults []string) (allowList, error) {
	if len(entries) == 0 {
		entries = defaults
	}
	var list allowList
	for _, e := range entries {
		if e == "any" {
			if len(entries) > 1 {
				return nil, fmt.Errorf("allow_ips: 'any' cannot be combined with other entries")
			}
			return nil, nil
		}
		if preset, ok := verify.IPPreset(e); ok {
			for _, ip := range preset {
				list = append(list, netip.PrefixFrom(netip.MustParseAddr(ip), 32))
			}
			continue
		}
		p, err := caddyhttp.CIDRExpressionToPrefix(e)
		if err != nil {
			return nil, fmt.Errorf("allow_ips: %v (want an IP, a CIDR, 'ivy' or 'any')", err)
		}
		list = append(list, p.Masked())
	}
	return list, nil
}

// allows reports whether ip (Caddy's client IP, possibly with a zone) is
// accepted. An unparsable address is refused: fail closed.
func (l allowList) allows(ip string) bool {
	if l == nil {
		return true
	}
	ip, _, _ = strings.Cut(ip, "%")
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range l {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
