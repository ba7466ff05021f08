package webhookguard

import (
	"net/http"
)

// answerHandshake answers, and reports whether it did, a verified request
// that is the provider's handshake rather than an event (Slack's
// url_verification: the challenge echoed in the body), when no backend
// would answer it: on a spool route (whose acknowledgement, 200 spooled,
// lacks the challenge) or when `events` drops its type. Elsewhere it is
// forwarded as any event, and the backend answers it. A handshake is not
// remembered: a copy is answered again.
func (d *delivery) answerHandshake(w http.ResponseWriter, body []byte) bool {
	h := d.h
	if h.scheme.Handshake == nil {
		return false
	}
	if _, wanted := h.events[d.event.Type]; h.spool == nil && (h.events == nil || wanted) {
		return false
	}
	contentType, answer, ok := h.scheme.Handshake(d.event, body)
	if !ok {
		return false
	}
	d.log(outcomeHandshake, d.event.Type+": answered by the guard, not forwarded", http.StatusOK)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set(outcomeHeader, outcomeHandshake)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(answer)
	return true
}
