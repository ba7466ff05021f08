package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// The providers of the HMAC family, each a macPreset: where it puts the
// signature, what it signs, where its event id and type are. The header names
// are canonical.

// IvySourceIPs are Ivy's published production webhook source addresses.
var IvySourceIPs = []string{"18.159.27.193", "3.120.50.145", "3.66.64.118"}

// Ivy signs the raw body with HMAC-SHA256 keyed by the secret string and
// sends the lowercase hex digest in X-Ivy-Signature. The event id and type
// are the body's "id" and "type".
var ivyPreset = macPreset{
	signature: []string{"X-Ivy-Signature"},
	encoding:  hexMAC,
	fields:    jsonIDAndType,
}

// GitHub signs the raw body with HMAC-SHA256 keyed by the secret string and
// sends "X-Hub-Signature-256: sha256=<hex>". The legacy SHA-1
// X-Hub-Signature is not accepted: it would let a forger pick the weaker
// MAC. The event id is X-GitHub-Delivery (the same on a redelivery), which
// the signature does not cover; the type X-GitHub-Event. GitHub's event type
// is not in the body, so Sign leaves X-GitHub-Event unset.
var githubPreset = macPreset{
	signature:  []string{"X-Hub-Signature-256"},
	prefix:     "sha256=",
	encoding:   hexMAC,
	idHeader:   []string{"X-Github-Delivery"},
	typeHeader: []string{"X-Github-Event"},
}

// Shopify signs the raw body with HMAC-SHA256 keyed by the app's client
// secret string and sends the base64 digest in X-Shopify-Hmac-Sha256. The
// event id is X-Shopify-Webhook-Id (kept on retries, not signed), the type
// X-Shopify-Topic ("orders/create"). Shopify's current libraries send the
// same headers without "X-" (shopify-hmac-sha256, shopify-webhook-id,
// shopify-topic): either name is accepted, and both with different values
// are refused.
var shopifyPreset = macPreset{
	signature:  []string{"X-Shopify-Hmac-Sha256", "Shopify-Hmac-Sha256"},
	encoding:   base64MAC,
	idHeader:   []string{"X-Shopify-Webhook-Id", "Shopify-Webhook-Id"},
	typeHeader: []string{"X-Shopify-Topic", "Shopify-Topic"},
}

// Slack signs "v0:{timestamp}:{body}" with HMAC-SHA256 keyed by the app's
// signing secret string and sends "X-Slack-Signature: v0=<hex>" with the
// unix time in X-Slack-Request-Timestamp, checked against the tolerance.
//
// Slack sends no delivery id. Events API bodies carry an "event_id" that a
// retry keeps (a retry is signed again with a new timestamp), so it is the
// event id when present. Other bodies (slash commands, interactivity) fall
// back to the body's digest, not digest plus timestamp: a retry or replay of
// the same bytes is then a duplicate whatever its timestamp, and two distinct
// requests never share a body because Slack puts a fresh trigger_id in each.
// The type is the inner event's type ("app_mention") for an event_callback,
// else the body's "type" ("url_verification"), else "".
//
// Slack also checks a slash command's URL with an unsigned form POST,
// "ssl_check=1&token=...": that exact body, without the signature headers,
// is a probe (ReasonProbe), answered without forwarding.
var slackPreset = macPreset{
	signature: []string{"X-Slack-Signature"},
	prefix:    "v0=",
	encoding:  hexMAC,
	timestamp: []string{"X-Slack-Request-Timestamp"},
	signed:    "v0:{timestamp}:{body}",
	fields:    slackFields,
	probe:     slackProbe,
}

// Stripe signs "{t}.{body}" with HMAC-SHA256 keyed by the whole endpoint
// secret string (whsec_ prefix included, not base64-decoded) and sends
// "Stripe-Signature: t=<unix>,v1=<hex>", with one v1 per active secret while
// a secret is being rolled and a v0 (legacy test-mode scheme, ignored). Every
// v1 is tried. The event id and type are the body's "id" and "type".
var stripePreset = macPreset{
	signature: []string{"Stripe-Signature"},
	encoding:  hexMAC,
	stripe:    true,
	signed:    "{timestamp}.{body}",
	fields:    jsonIDAndType,
}

func init() {
	for _, s := range []struct {
		Scheme
		preset macPreset
	}{
		{Scheme{Name: "ivy", DefaultAllowIPs: IvySourceIPs}, ivyPreset},
		{Scheme{Name: "github", DeliveryIDHeader: "X-GitHub-Delivery", NewDeliveryID: randomUUID, EventTypes: githubEventTypes, ReplayID: unsignedDeliveryID}, githubPreset},
		{Scheme{Name: "shopify", DeliveryIDHeader: "X-Shopify-Webhook-Id", NewDeliveryID: randomUUID, EventTypes: shopifyEventTypes, ReplayID: unsignedDeliveryID}, shopifyPreset},
		{Scheme{Name: "slack", Timestamped: true, Handshake: slackHandshake}, slackPreset},
		{Scheme{Name: "stripe", Timestamped: true, EventTypes: stripeEventTypes}, stripePreset},
	} {
		preset := s.preset
		s.New = func(c Config) (Verifier, error) { return preset.build(c) }
		Register(s.Scheme)
	}
}

// ParseStripeSignature splits a Stripe-Signature header into its timestamp,
// as written, and its decoded v1 signatures. v1 values that are not hex
// SHA-256 digests are skipped, as are entries of other schemes (v0). ok is
// false unless the header is a comma-separated list of key=value pairs with
// exactly one non-empty t. It never panics.
func ParseStripeSignature(header string) (ts string, v1 [][]byte, ok bool) {
	seenT := false
	for item := range strings.SplitSeq(header, ",") {
		key, val, found := strings.Cut(strings.TrimSpace(item), "=")
		if !found {
			return "", nil, false
		}
		switch key {
		case "t":
			if seenT {
				return "", nil, false
			}
			seenT, ts = true, val
		case "v1":
			if sig, err := hex.DecodeString(val); err == nil && len(sig) == sha256.Size {
				v1 = append(v1, sig)
			}
		}
	}
	if ts == "" {
		return "", nil, false
	}
	return ts, v1, true
}

// slackQuery reads the Events API fields that identify an event, as
// json.Unmarshal into a struct of three string fields did.
var slackQuery = newJSONQuery(false, "event_id", "type", "event.type").textFields(0, 1, 2)

// slackFields returns a Slack body's event id and type.
func slackFields(body []byte) (id, typ string) {
	var out [3][]byte
	if !slackQuery.scan(body, out[:]) {
		return "", "" // a form body, or fields of the wrong JSON type
	}
	id, typ = jsonString(out[0]), jsonString(out[1])
	if inner := jsonString(out[2]); typ == "event_callback" && inner != "" {
		typ = inner
	}
	return id, typ
}

// maxSlackProbe bounds the body read as a probe: Slack's is about 40 bytes.
const maxSlackProbe = 1024

// slackProbe says whether an unsigned delivery is Slack's ssl_check probe: a
// form POST whose body has exactly ssl_check=1 and one token.
func slackProbe(h http.Header, body []byte) error {
	if len(body) > maxSlackProbe || len(h["Content-Type"]) != 1 {
		return nil
	}
	media, _, err := mime.ParseMediaType(headerValue(h, "Content-Type"))
	if err != nil || media != "application/x-www-form-urlencoded" {
		return nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || len(form) != 2 || len(form["ssl_check"]) != 1 || form.Get("ssl_check") != "1" || len(form["token"]) != 1 {
		return nil
	}
	return &Error{Reason: ReasonProbe, Detail: "Slack ssl_check probe (unsigned): answered 200, not forwarded"}
}

// maxSlackChallenge bounds the challenge echoed: Slack's are about 50 bytes.
const maxSlackChallenge = 1024

// slackChallengeQuery reads a url_verification body's type and challenge as
// written at its top level.
var slackChallengeQuery = newJSONQuery(true, "type", "challenge")

// slackHandshake answers Slack's url_verification, sent (signed) when an
// Events API request URL is set: {"type":"url_verification","challenge":
// "..."} is answered 200 with the challenge as text/plain, as Slack asks.
func slackHandshake(ev Event, body []byte) (contentType string, answer []byte, ok bool) {
	if ev.Type != "url_verification" {
		return "", nil, false
	}
	var out [2][]byte
	slackChallengeQuery.scan(body, out[:])
	if jsonString(out[0]) != "url_verification" || len(out[1]) < 3 || out[1][0] != '"' {
		return "", nil, false
	}
	challenge := jsonString(out[1])
	if challenge == "" || len(challenge) > maxSlackChallenge {
		return "", nil, false
	}
	return "text/plain; charset=utf-8", []byte(challenge), true
}
