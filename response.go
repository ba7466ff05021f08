package webhookguard

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
)

// maxHeldBody bounds the upstream answer the guard holds while the event is
// committed: webhook answers are small. A 2xx answer that outgrows it is
// committed at that point, then streamed.
const maxHeldBody = 64 << 10

// heldResponse holds the upstream's answer (status and a bounded body; the
// headers are the sender's response headers, unsent until the status is)
// until the guard has settled the event, so that a provider never sees a
// 2xx for an event the store has not yet durably remembered — with one
// exception: when the store fails to record an event the upstream accepted
// (a full disk), the upstream has the event, and the provider gets its 2xx;
// the claim is held (copies 409) and the commit retried until it lands. A
// commit that does not answer in time gets the provider 503 and nothing of
// this answer (see docs/replay.md).
//
// Trailers are not part of what it holds: headers set after the status (an
// upstream's trailers, which reverse_proxy copies into the header map after
// the body, or declares with the Trailer header) are dropped, instead of
// reaching the sender as headers when the held status is finally written.
type heldResponse struct {
	w          http.ResponseWriter
	status     int
	body       bytes.Buffer
	released   bool
	discarding bool        // the answer will not be sent (its early commit stalled)
	onOverflow func() bool // commits a 2xx answer that outgrows the hold (false: do not send it); may be nil
	late       http.Header // headers set after the status (trailers): never sent
}

func newHeldResponse(w http.ResponseWriter, onOverflow func() bool) *heldResponse {
	return &heldResponse{w: w, onOverflow: onOverflow}
}

// Header returns the header map of the answer to the sender until the
// status is written; after it, a map that is never sent (trailers).
func (h *heldResponse) Header() http.Header {
	if h.status == 0 {
		return h.w.Header()
	}
	if h.late == nil {
		h.late = http.Header{}
	}
	return h.late
}

// WriteHeader records the final status; 1xx answers are not passed on (the
// guard has read the whole request already). The answer's headers are final
// from here on, without a Trailer declaration.
func (h *heldResponse) WriteHeader(code int) {
	if code < http.StatusOK || h.status != 0 {
		return
	}
	h.w.Header().Del("Trailer")
	h.status = code
	if h.released {
		h.w.WriteHeader(code)
	}
}

// Write holds the body, up to maxHeldBody.
func (h *heldResponse) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.WriteHeader(http.StatusOK)
	}
	if h.discarding {
		return len(b), nil
	}
	if !h.released && h.body.Len()+len(b) > maxHeldBody {
		if h.accepted() && h.onOverflow != nil && !h.onOverflow() {
			h.discarding = true // the sender gets 503, not this answer
			h.body.Reset()
			return len(b), nil
		}
		h.release()
	}
	if h.released {
		return h.w.Write(b)
	}
	return h.body.Write(b)
}

// FlushError flushes only once the answer is released.
func (h *heldResponse) FlushError() error {
	if !h.released {
		return nil
	}
	return http.NewResponseController(h.w).Flush()
}

// Flush is FlushError for callers that want an http.Flusher.
func (h *heldResponse) Flush() { _ = h.FlushError() }

// Unwrap gives http.ResponseController the sender's writer for what the
// hold does not change (deadlines). Hijack is not among them.
func (h *heldResponse) Unwrap() http.ResponseWriter { return h.w }

// errNoHijack refuses the sender's raw connection to what follows the guard.
var errNoHijack = errors.New("webhook_guard: the sender's connection is not handed over (a webhook is one request; no protocol switch)")

// Hijack refuses: through the sender's raw connection, a handler after the
// guard (reverse_proxy on a 101 Switching Protocols) would pass on bytes that
// no signature covers, after an answer the guard never held. Found first by
// http.ResponseController, so Unwrap never leads to the sender's Hijack.
func (h *heldResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errNoHijack
}

// accepted reports a 2xx answer.
func (h *heldResponse) accepted() bool { return h.status >= 200 && h.status < 300 }

// release sends what is held and passes everything after it through. The
// sender may be gone; its errors are not the upstream's.
func (h *heldResponse) release() {
	if h.released || h.discarding {
		return
	}
	h.released = true
	if h.status == 0 {
		return
	}
	h.w.WriteHeader(h.status)
	if h.body.Len() > 0 {
		_, _ = h.w.Write(h.body.Bytes())
	}
}
