package verify

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
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
	// allow_ips is not configured, and the allow_ips preset named after the
	// scheme (`allow_ips ivy`). Empty means any source and no preset.
	DefaultAllowIPs []string
	// KeyOption is the Caddyfile option, and the Config list, that holds the
	// scheme's keys: "secret" (Config.Secrets) or "api_key" (Config.APIKeys).
	// (standard also verifies with public_key, Config.PublicKeys, alone or
	// besides its secrets.)
	KeyOption string
	// DeliveryIDHeader names the header that carries the provider's delivery
	// id, which Sign sets from its id argument; "" when the id is in the body
	// (or, for hmac, configured: see HMACOptions.EventID).
	DeliveryIDHeader string
	// NewDeliveryID returns a fresh delivery id in the provider's form, for
	// the CLI; nil when the scheme sends none.
	NewDeliveryID func() string
	// TestEvent returns a fresh body for the CLI's generated test event.
	TestEvent func() []byte
	// CredentialHeaders name the request headers that carry a static
	// credential — the configured key itself, not a signature derived from
	// it (ivpay's X-Api-Key). Whoever reads one can send events, so the guard
	// removes it before forwarding, never stores it and keeps it out of
	// Caddy's error log.
	CredentialHeaders []string
	// EventTypes lists the event types the provider publishes (stripe,
	// github, shopify), sorted; empty when it publishes none or the types
	// are the sender's own. An `events` entry outside it is warned about at
	// load, never refused: a list goes stale as the provider adds types.
	EventTypes []string
	// Handshake, when set, recognises a verified request that is not an
	// event but a handshake whose answer the provider reads in the body
	// (Slack's url_verification, whose challenge must be echoed), and
	// returns that answer and its content type. The guard answers it itself
	// where no backend would (on a spool route, or when `events` drops its
	// type); ok is false for anything else.
	Handshake func(ev Event, body []byte) (contentType string, answer []byte, ok bool)
	// ReplayID, when set, maps an event id as the guard logs and lists it
	// (Event.ID) to the id the replay store keys on (Event.ReplayID), for an
	// operator who makes the guard forget an event; ok is false when the
	// replay id cannot be had from the event id alone (it is a digest of
	// what is signed). Nil: the two are the same.
	ReplayID func(eventID string) (replayID string, ok bool)
}

// ReplayIDOf is the replay id of the event whose id is eventID (see
// Scheme.ReplayID).
func (s Scheme) ReplayIDOf(eventID string) (string, bool) {
	if s.ReplayID == nil {
		return eventID, true
	}
	return s.ReplayID(eventID)
}

// unsignedDeliveryID is the ReplayID of schemes whose delivery id header
// is not signed (github, shopify): their replay id is a digest of the
// signed parts (SignedReplayID), which the delivery id does not give.
func unsignedDeliveryID(string) (string, bool) { return "", false }

// PublishesEventType reports whether t is one of the scheme's published
// event types; true when the scheme publishes no list.
func (s Scheme) PublishesEventType(t string) bool {
	if len(s.EventTypes) == 0 {
		return true
	}
	_, found := slices.BinarySearch(s.EventTypes, t)
	return found
}

// KeyOptionSecret and KeyOptionAPIKey are the values of Scheme.KeyOption.
const (
	KeyOptionSecret = "secret"
	KeyOptionAPIKey = "api_key"
)

// IPPreset returns the published source addresses behind the allow_ips
// preset name (a scheme's name), if there is one.
func IPPreset(name string) ([]string, bool) {
	s, ok := schemes[name]
	if !ok || len(s.DefaultAllowIPs) == 0 {
		return nil, false
	}
	return s.DefaultAllowIPs, true
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails, as of Go 1.24
	return hex.EncodeToString(b)
}

// randomUUID is a random (version 4) UUID, as GitHub and Shopify give their
// deliveries.
func randomUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// msgID is a Standard Webhooks style delivery id: msg_<random>.
func msgID() string { return "msg_" + randomHex(12) }

// idTypeTestEvent is the test event of schemes that read the body's id and
// type: {"id":"evt_<random>","type":"test.event"}.
func idTypeTestEvent() []byte {
	return []byte(`{"id":"evt_` + randomHex(12) + `","type":"test.event"}`)
}

var schemes = map[string]Scheme{}

// Register adds a scheme to the registry; it panics on a duplicate name.
// Each scheme file calls it from init.
func Register(s Scheme) {
	if _, dup := schemes[s.Name]; dup {
		panic("verify: scheme registered twice: " + s.Name)
	}
	if s.KeyOption == "" {
		s.KeyOption = KeyOptionSecret
	}
	if s.TestEvent == nil {
		s.TestEvent = idTypeTestEvent
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
