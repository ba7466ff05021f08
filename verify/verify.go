// Package verify authenticates webhook deliveries: the providers of the HMAC
// family (ivy, github, shopify, slack, stripe, and the configurable hmac) as
// presets of one verifier, Standard Webhooks and ivpay on their own, a small
// registry holding each provider's facts (its Scheme), and no dependency on
// Caddy, so a scheme can be tested on its own.
package verify

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Event is what a verifier learned from an authenticated delivery.
type Event struct {
	// ID is the provider's id of the event, for logs and placeholders.
	// Never empty for a verified event: schemes without an id of their own
	// fall back to BodyDigestID.
	ID string
	// ReplayID is the id the replay store keys on. Never empty for a
	// verified event. It equals ID when the signature covers the event id
	// (an id in the signed body, a signed id header); when it does not
	// (github's X-GitHub-Delivery, shopify's X-Shopify-Webhook-Id, hmac's
	// event_id header outside the signed template) it is SignedReplayID of
	// the signed parts, so a replay with a new id header is still a replay.
	ReplayID string
	// Type is the provider's event type ("payment.succeeded"), or "" when the
	// scheme carries none.
	Type string
	// Timestamp is the signed timestamp, zero for schemes without one.
	Timestamp time.Time
}

// Verifier authenticates one delivery: the request headers and the exact
// bytes of its body. It must use constant-time comparisons, try every
// configured secret and every signature the delivery carries, and never put a
// secret or a signature value into the error it returns.
type Verifier interface {
	Verify(h http.Header, body []byte, now time.Time) (Event, error)
}

// Signer produces the headers a provider would send with body: the inverse of
// its Verifier, used by the `caddy webhook-guard sign` command and by tests.
// id and ts are used by schemes that sign them (a zero ts means now).
type Signer interface {
	Sign(body []byte, id string, ts time.Time) (http.Header, error)
}

// Config is what a scheme is built from. Each scheme reads the fields it
// needs and reports the ones it requires but lacks with a *ConfigError.
type Config struct {
	// Secrets are the shared signing secrets, all tried in order (rotation).
	Secrets []string
	// APIKeys are static keys compared in constant time (ivpay).
	APIKeys []string
	// PublicKeys are Ed25519 public keys (whpk_<base64>) for asymmetric
	// Standard Webhooks signatures.
	PublicKeys []string
	// Tolerance bounds how far a signed timestamp may be from now, either way.
	Tolerance time.Duration
	// HMAC configures the generic hmac scheme.
	HMAC HMACOptions
}

// HMACOptions configures the generic `hmac` scheme.
type HMACOptions struct {
	// Header is the request header that carries the signature. Required.
	Header string `json:"header,omitempty"`
	// Algorithm is sha1, sha256 (default) or sha512.
	Algorithm string `json:"algorithm,omitempty"`
	// Encoding of the signature: hex (default) or base64.
	Encoding string `json:"encoding,omitempty"`
	// Prefix is stripped from the header value before decoding, e.g. "sha256=".
	Prefix string `json:"prefix,omitempty"`
	// TimestampHeader, when set, names the header with the unix timestamp;
	// it enables the tolerance check and the {timestamp} template variable.
	TimestampHeader string `json:"timestamp_header,omitempty"`
	// Signed is the template of the signed message: {body} (default),
	// {timestamp}, {header.NAME} and literal text.
	Signed string `json:"signed,omitempty"`
	// EventID says where the event id is: "header:<Name>" or
	// "json:<dotted.path>"; default the SHA-256 of the body.
	EventID string `json:"event_id,omitempty"`
}

// ConfigError is a configuration mistake in a scheme's settings. Option names
// the Caddyfile option at fault; the message never contains a secret's value.
type ConfigError struct {
	Option string
	Msg    string
	// Entry is the 1-based entry of a repeatable option at fault, 0 when
	// the error is not about one entry.
	Entry int
}

func (e *ConfigError) Error() string { return e.Option + ": " + e.Msg }

// Failure reasons, for metrics and logs.
const (
	// ReasonSignature: the signature or key is missing, malformed or matches
	// no configured secret.
	ReasonSignature = "invalid_signature"
	// ReasonTimestamp: the signed timestamp is outside the tolerance.
	ReasonTimestamp = "stale_timestamp"
	// ReasonProbe: not an event but a provider's unsigned reachability
	// probe (Slack's ssl_check=1), to be answered 200 without forwarding.
	ReasonProbe = "probe"
)

// Error is a delivery that failed verification. Reason is one of the Reason*
// constants; Detail is a human explanation safe to log (no secret, no
// signature value).
type Error struct {
	Reason string
	Detail string
}

func (e *Error) Error() string { return e.Detail }

// Invalid returns a signature failure with a formatted, log-safe detail.
func Invalid(format string, args ...any) error {
	return &Error{Reason: ReasonSignature, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the failure reason of err, ReasonSignature by default.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonSignature
}
