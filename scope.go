package webhookguard

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// keySpace is the part of the replay store a handler's event ids live in:
// its scope and provider, and the digests of the secrets and keys that prove
// a sender. Two handlers of one config in the same key space must share one
// of those: otherwise a sender who can sign for one route could block (or be
// blocked from) event ids on the other.
type keySpace struct {
	scope, provider string
	credentials     map[[sha256.Size]byte]struct{}
	describe        string // how the config names the handler, without secrets
}

// keySpaces are the key spaces taken by the handlers of each config being
// loaded or running, by the config's metrics registry: a fresh registry is
// made for every config load, so handlers of one config share it and a
// reload's new handlers never meet the outgoing config's (replacing every
// secret of a route at reload is a rotation, not a conflict).
var keySpaces = struct {
	sync.Mutex
	byConfig map[*prometheus.Registry][]*keySpace
}{byConfig: map[*prometheus.Registry][]*keySpace{}}

// claimKeySpace records the handler's key space in its config, and fails
// when another handler of the config has the same scope and provider but no
// secret or key in common.
func (h *Handler) claimKeySpace(ctx caddy.Context, cfg verify.Config) error {
	ks := &keySpace{scope: h.scope, provider: h.Provider, credentials: map[[sha256.Size]byte]struct{}{}}
	for _, list := range [][]string{cfg.Secrets, cfg.APIKeys, cfg.PublicKeys} {
		for _, c := range list {
			ks.credentials[sha256.Sum256([]byte(c))] = struct{}{}
		}
	}
	ks.describe = h.describe()
	reg := ctx.GetMetricsRegistry()
	keySpaces.Lock()
	defer keySpaces.Unlock()
	for _, other := range keySpaces.byConfig[reg] {
		if other.scope != ks.scope || other.provider != ks.provider || other.shares(ks) {
			continue
		}
		return selfNamedError{fmt.Errorf("scope: %s and %s remember events under the same scope %q but share no secret or key: "+
			"one could block the other's event ids; give each a `scope` of its own", other.describe, ks.describe, ks.scope)}
	}
	keySpaces.byConfig[reg] = append(keySpaces.byConfig[reg], ks)
	h.keySpace, h.registry = ks, reg
	return nil
}

// releaseKeySpace forgets the handler's key space, at cleanup.
func (h *Handler) releaseKeySpace() {
	if h.keySpace == nil {
		return
	}
	keySpaces.Lock()
	defer keySpaces.Unlock()
	list := keySpaces.byConfig[h.registry]
	for i, ks := range list {
		if ks == h.keySpace {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(keySpaces.byConfig, h.registry)
	} else {
		keySpaces.byConfig[h.registry] = list
	}
	h.keySpace = nil
}

// shares reports whether two key spaces have a secret or key in common.
func (ks *keySpace) shares(other *keySpace) bool {
	for c := range other.credentials {
		if _, ok := ks.credentials[c]; ok {
			return true
		}
	}
	return false
}

// describe names the handler for a configuration error: its provider, where
// it was declared, its route, and where its first secret or key comes from
// (a placeholder's name, never a literal value).
func (h *Handler) describe() string {
	for _, list := range []struct {
		option string
		values []string
	}{{"secret", h.Secrets}, {"api_key", h.APIKeys}, {"public_key", h.PublicKeys}} {
		if len(list.values) > 0 {
			return h.name(list.option + " " + credentialSource(list.values[0]))
		}
	}
	return h.name("")
}

// credentialSource is a secret's placeholder name, or "#<n chars, literal>"
// for a literal value, which is never printed.
func credentialSource(v string) string {
	if name := placeholderName(v); name != "its placeholder" {
		return name
	}
	return "given literally, " + strconv.Itoa(len(v)) + " characters"
}

// maxNameLen bounds a scope's or a spool's name.
const maxNameLen = 128

// checkName checks a scope or a spool name: 1 to 128 of A-Z a-z 0-9 . _ : -
// — what a person types, what a metric label and a URL carry as they are.
func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("want 1 to %d characters, got %d", maxNameLen, len(name))
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return fmt.Errorf("%q: only letters, digits, '.', '_', ':' and '-'", name)
		}
	}
	return nil
}
