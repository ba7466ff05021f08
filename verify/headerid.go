package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Forms of HeaderEventID.
const (
	// MaxHeaderEventID is the longest event id HeaderEventID passes as it
	// is; no form it returns is longer.
	MaxHeaderEventID = 256
	// HeaderIDBase64Prefix starts the form of an id that is not printable
	// ASCII (or starts with "~"), up to 188 bytes: the prefix and
	// the id's bytes in unpadded base64url (RFC 4648 §5), reversible.
	HeaderIDBase64Prefix = "~b64:"
	// HeaderIDDigestPrefix starts the form of a longer id that cannot pass
	// as it is: the prefix and the lowercase hex SHA-256 of the id's bytes.
	HeaderIDDigestPrefix = "~sha256:"
)

// maxBase64ID is the longest id given in base64: its form then fits in
// MaxHeaderEventID bytes.
const maxBase64ID = (MaxHeaderEventID - len(HeaderIDBase64Prefix)) * 3 / 4

// HeaderEventID returns a form of the event id id that is safe in an HTTP
// header value (for the {http.webhook_guard.event_id} placeholder, the
// spool's Webhook-Guard-Event-Id and sign_upstream's webhook-id):
//
//   - id itself when it is 1 to MaxHeaderEventID bytes of printable ASCII
//     (0x21 to 0x7E: no space, no control character) and does not start
//     with "~" — every id the providers send today;
//   - else, up to 188 bytes, HeaderIDBase64Prefix and the id in unpadded
//     base64url ("~b64:ZXZ0XwEK" for "evt_\x01\n"), which decodes back to
//     the id;
//   - else HeaderIDDigestPrefix and the hex SHA-256 of the id (72 bytes).
//
// Distinct ids give distinct forms: only ids starting with "~" are encoded
// with a "~" prefix, and ids that pass unchanged never do. The form is never
// longer than MaxHeaderEventID, so a backend's header limit never refuses
// it. Logs keep the raw id. An empty id gives "".
func HeaderEventID(id string) string {
	if headerSafe(id) {
		return id
	}
	if len(id) <= maxBase64ID {
		return HeaderIDBase64Prefix + base64.RawURLEncoding.EncodeToString([]byte(id))
	}
	sum := sha256.Sum256([]byte(id))
	return HeaderIDDigestPrefix + hex.EncodeToString(sum[:])
}

// headerSafe reports whether id passes HeaderEventID as it is.
func headerSafe(id string) bool {
	if len(id) > MaxHeaderEventID || strings.HasPrefix(id, "~") {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}
