package webhookguard

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hookguard/caddy-webhook-guard/verify"
)

// readBody reads the whole body, at most max bytes: an announced
// Content-Length over max is refused before reading, and the read itself is
// bounded by http.MaxBytesReader.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, &http.MaxBytesError{Limit: max}
	}
	size := int64(bytes.MinRead)
	if r.ContentLength > 0 {
		size += r.ContentLength
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max))
	return buf.Bytes(), err
}

// restoreBody puts the exact bytes back for the next handler, with their
// Content-Length (a chunked request is forwarded with a length), and
// nothing that came with them unverified:
//   - no trailers: a chunked request's trailers arrive after the body, are
//     not covered by any signature, and a non-nil r.Trailer would make the
//     forwarded body chunked again (Go's transport sends trailers after a
//     chunked body); the Trailer declaration goes with them;
//   - no Expect: Caddy's server answered the client's Expect: 100-continue
//     when the guard read the body; passed on, the upstream would send a
//     second 100 Continue, which reverse_proxy relays to the client;
//   - no protocol upgrade: Connection, Upgrade and every header Connection
//     lists are hop-by-hop. reverse_proxy removes them too, but keeps an
//     upgrade (Connection: Upgrade, Upgrade: websocket) and, when the
//     upstream answers 101, joins the sender's connection to the upstream's:
//     bytes nobody signed would reach the upstream after the event. A
//     webhook is one POST.
func restoreBody(r *http.Request, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Trailer = nil
	r.Header.Del("Trailer")
	r.Header.Del("Expect")
	dropHopHeaders(r.Header)
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
}

// dropHopHeaders removes Connection, the headers it lists, and Upgrade.
func dropHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	h.Del("Connection")
	h.Del("Upgrade")
}

// setPlaceholders makes the verified event usable in header_up and log
// formats: {http.webhook_guard.provider}, {http.webhook_guard.event_id},
// {http.webhook_guard.event_type}, and the same under the deprecated
// {http.webhook.*} names. The id and the type are in their header-safe form
// (verify.HeaderEventID): an id with a control character, or of 20 KB, in a
// header_up would otherwise fail every copy of the event (502, 431). The
// module's log lines keep them raw.
func setPlaceholders(r *http.Request, provider string, ev verify.Event) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	// One provider, read only when a placeholder asks: six Set calls cost
	// a dozen allocations per event whether a header_up uses them or not.
	// Providers answer in the order they were added: where two guards
	// verify one request (both must pass, so it is the same event), the
	// first one's values are the ones read.
	id, typ := ev.ID, ev.Type
	repl.Map(func(key string) (any, bool) {
		name, ok := strings.CutPrefix(key, "http.webhook_guard.")
		if !ok {
			if name, ok = strings.CutPrefix(key, "http.webhook."); !ok {
				return nil, false
			}
		}
		switch name {
		case "provider":
			return provider, true
		case "event_id":
			return verify.HeaderEventID(id), true
		case "event_type":
			return verify.HeaderEventID(typ), true
		}
		return nil, false
	})
}

// clientIP is Caddy's client IP, which honours the server's trusted_proxies.
func clientIP(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	return ip
}
