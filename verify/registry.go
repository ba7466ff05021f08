package verify

import (
	"sort"
	"strconv"
	"time"
)

// Scheme describes one provider's way of signing webhooks.
type Scheme struct {
	// Name is the provider name used in the Caddyfile (`webhook_guard ivy`).
	Name string
	// New builds a verifier from the configuration, or returns a
	// *ConfigError naming the option at fault. A verifier that can also sign
	// (with its first secret or key) implements Signer.
	New func(Config) (Verifier, error)
	// Timestamped is true when the scheme signs a timestamp checked against
	// the tolerance; such events only need remembering for the tolerance.
	Timestamped bool
	// DefaultAllowIPs is the provider's published source list, enforced when
	// allow_ips is not configured. Empty means any source.
	DefaultAllowIPs []string
}

var schemes = map[string]Scheme{}

// Register adds a scheme to the registry; it panics on a duplicate name.
// Each scheme file calls it from init.
func Register(s Scheme) {
	if _, dup := schemes[s.Name]; dup {
		panic("verify: scheme registered twice: " + s.Name)
	}
	schemes[s.Name] = s
}

// Lookup returns the scheme called name.
func Lookup(name string) (Scheme, bool) {
	s, ok := schemes[name]
	return s, ok
}

// Names lists the registered scheme names, sorted.
func Names() []string {
	names := make([]string, 0, len(schemes))
	for n := range schemes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// DefaultTolerance is the tolerance of timestamped schemes when none is set.
const DefaultTolerance = 5 * time.Minute

// NewSigner builds the signer of the named scheme from cfg.
func NewSigner(name string, cfg Config) (Signer, error) {
	s, ok := Lookup(name)
	if !ok {
		return nil, &ConfigError{Option: "provider", Msg: "unknown provider " + strconv.Quote(name)}
	}
	v, err := s.New(cfg)
	if err != nil {
		return nil, err
	}
	signer, ok := v.(Signer)
	if !ok {
		return nil, &ConfigError{Option: "provider", Msg: name + " cannot sign with this configuration"}
	}
	return signer, nil
}
