package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

// ActionHeader must be on every action request, with the value 1: a form
// or an image of another site cannot send it, and a cross-origin script
// that tries needs a CORS preflight the console never grants.
const ActionHeader = "Webhook-Guard-Console"

// actionTimeout bounds an action's writes.
const actionTimeout = 30 * time.Second

// maxActionBody bounds an action's JSON body.
const maxActionBody = 4 << 10

// maxUserLen bounds the user name kept with a discarded event.
const maxUserLen = 64

// actionPermissions maps each action endpoint to the action of the actions
// option that allows it.
var actionPermissions = map[string]string{
	"retry":     ActionRetry,
	"retry-all": ActionRetry,
	"discard":   ActionDiscard,
	"pause":     ActionPause,
	"resume":    ActionPause,
}

// actionRequest is an action's JSON body.
type actionRequest struct {
	// ID is the event's id (retry, discard), as text: ids are 64-bit.
	ID string `json:"id,omitempty"`
	// Scope is the event's scope (optional for retry and discard), the
	// scope of retry-all (optional: every scope) and of pause and resume.
	Scope string `json:"scope,omitempty"`
	// State is the state retry-all retries: dead or discarded.
	State string `json:"state,omitempty"`
}

// actionAnswer is an action's JSON answer.
type actionAnswer struct {
	// Message says what was done, or Error why not.
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
	// Count is how many events the action changed.
	Count int `json:"count,omitempty"`
}

// serveAction checks and performs an action: a POST with a JSON body and
// ActionHeader, same-origin, that the actions option allows.
func (h *Handler) serveAction(w http.ResponseWriter, r *http.Request, name string) {
	perm, known := actionPermissions[name]
	if !known {
		writeAnswer(w, http.StatusNotFound, actionAnswer{Error: "no such action"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeAnswer(w, http.StatusMethodNotAllowed, actionAnswer{Error: "actions are POSTs"})
		return
	}
	user := userOf(r)
	refuse := func(status int, why string) {
		h.log().Warn("console action refused",
			zap.String("action", name), zap.String("user", user), zap.String("remote_addr", r.RemoteAddr), zap.String("why", why))
		writeAnswer(w, status, actionAnswer{Error: why})
	}
	if err := h.cop.Check(r); err != nil {
		refuse(http.StatusForbidden, "cross-origin request refused")
		return
	}
	if r.Header.Get(ActionHeader) != "1" {
		refuse(http.StatusForbidden, "the "+ActionHeader+" header is missing: actions come from the console's own page")
		return
	}
	if !h.allowed[perm] {
		refuse(http.StatusForbidden, "action not allowed: the console's actions option does not name "+perm)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		refuse(http.StatusUnsupportedMediaType, "an action's body is JSON (Content-Type: application/json)")
		return
	}
	req, err := readAction(w, r)
	if err != nil {
		refuse(http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), actionTimeout)
	defer cancel()
	by := user + " (console)"
	if user == "" {
		by = "console (" + r.RemoteAddr + ", no authenticated user)"
	}
	a := action{h: h, ctx: ctx, name: name, user: user, by: by, remote: r.RemoteAddr}
	var status int
	var answer actionAnswer
	switch name {
	case "retry", "discard":
		status, answer = a.onEvent(req)
	case "retry-all":
		status, answer = a.retryAll(req)
	case "pause", "resume":
		status, answer = a.pause(req, name == "pause")
	}
	writeAnswer(w, status, answer)
}

// readAction reads an action's body: one JSON object of known fields.
func readAction(w http.ResponseWriter, r *http.Request) (actionRequest, error) {
	var req actionRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxActionBody))
	if err != nil {
		return req, fmt.Errorf("the body is over %d bytes or could not be read", maxActionBody)
	}
	// The field names are checked as written (encoding/json matches them
	// in any case), then the object decoded.
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return req, errors.New("the body is not the JSON object of an action")
	}
	if dec.More() {
		return req, errors.New("the body holds more than one JSON value")
	}
	for name := range fields {
		if name != "id" && name != "scope" && name != "state" {
			return req, fmt.Errorf("unknown field %q: want id, scope or state", name)
		}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, errors.New("the body is not the JSON object of an action: " + err.Error())
	}
	if req.Scope != "" && !validName(req.Scope) {
		return req, errors.New("bad scope")
	}
	return req, nil
}

// userOf is the authenticated user ({http.auth.user.id}), "" when none,
// kept short and printable.
func userOf(r *http.Request) string {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return ""
	}
	user, _ := repl.GetString("http.auth.user.id")
	user = strings.ToValidUTF8(user, "?")
	if len(user) > maxUserLen {
		user = strings.ToValidUTF8(user[:maxUserLen], "")
	}
	return user
}

// writeAnswer writes an action's JSON answer.
func writeAnswer(w http.ResponseWriter, status int, a actionAnswer) {
	b, _ := json.Marshal(a)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// action is one action being performed, for its log line.
type action struct {
	h      *Handler
	ctx    context.Context
	name   string
	user   string
	by     string
	remote string
}

// maxLoggedIDs bounds the ids an action's log line lists (a retry of all
// the dead events may retry many); ids_omitted counts the others.
const maxLoggedIDs = 100

// idFields are the log fields of the ids of an action's events.
func idFields(ids []uint64) []zap.Field {
	if len(ids) <= maxLoggedIDs {
		return []zap.Field{zap.Uint64s("ids", ids)}
	}
	return []zap.Field{zap.Uint64s("ids", ids[:maxLoggedIDs]), zap.Int("ids_omitted", len(ids)-maxLoggedIDs)}
}

// logged logs a done action: who, what, which events, how many.
func (a action) logged(fields ...zap.Field) {
	a.h.log().Warn("console action",
		append([]zap.Field{zap.String("action", a.name), zap.String("user", a.user), zap.String("remote_addr", a.remote)}, fields...)...)
}

// onEvent retries or discards one event.
func (a action) onEvent(req actionRequest) (int, actionAnswer) {
	id, ok := parseID(req.ID)
	if !ok {
		return http.StatusBadRequest, actionAnswer{Error: "id: want the event's id"}
	}
	sp, rec, status, msg := a.h.locate(a.ctx, id, req.Scope)
	if sp == nil {
		return status, actionAnswer{Error: msg}
	}
	var err error
	if a.name == "retry" {
		err = sp.Retry(a.ctx, id)
	} else {
		_, err = sp.Discard(a.ctx, id, a.by)
	}
	switch {
	case errors.Is(err, spool.ErrNotFound):
		return http.StatusNotFound, actionAnswer{Error: fmt.Sprintf("event %d is no longer spooled (delivered meanwhile?)", id)}
	case errors.Is(err, spool.ErrInFlight):
		return http.StatusConflict, actionAnswer{Error: fmt.Sprintf("event %d: a delivery attempt is in flight; try again when it ends", id)}
	case err != nil:
		return http.StatusInternalServerError, actionAnswer{Error: "the spool failed: " + err.Error()}
	}
	a.logged(zap.Uint64s("ids", []uint64{id}), zap.String("scope", rec.Scope), zap.String("event_id", rec.EventID),
		zap.String("state_before", string(rec.State)), zap.Int("count", 1))
	verb := "retried: it is due now"
	if a.name == "discard" {
		verb = "discarded: it will not be delivered (Retry brings it back)"
	}
	return http.StatusOK, actionAnswer{Message: fmt.Sprintf("Event %d %s.", id, verb), Count: 1}
}

// retryAll retries every event of a state, in a scope or all.
func (a action) retryAll(req actionRequest) (int, actionAnswer) {
	state := spool.State(req.State)
	if state != spool.Dead && state != spool.Discarded {
		return http.StatusBadRequest, actionAnswer{Error: "state: want dead or discarded"}
	}
	total := 0
	var ids []uint64
	for _, sp := range a.h.spools() {
		before, err := sp.Store().IDs(a.ctx, state, req.Scope)
		if err != nil {
			return http.StatusInternalServerError, actionAnswer{Error: "the spool failed: " + err.Error()}
		}
		for _, id := range before {
			switch err := sp.Retry(a.ctx, id); {
			case errors.Is(err, spool.ErrNotFound), errors.Is(err, spool.ErrInFlight):
			case err != nil:
				a.logged(append(idFields(ids), zap.String("state", string(state)), zap.String("scope", req.Scope), zap.Int("count", total))...)
				return http.StatusInternalServerError, actionAnswer{Error: fmt.Sprintf("the spool failed after %d events were retried: %v", total, err)}
			default:
				total++
				ids = append(ids, id)
			}
		}
	}
	a.logged(append(idFields(ids), zap.String("state", string(state)), zap.String("scope", req.Scope), zap.Int("count", total))...)
	return http.StatusOK, actionAnswer{Message: fmt.Sprintf("%d %s events retried: they are due now.", total, state), Count: total}
}

// pause pauses or resumes a scope's deliveries.
func (a action) pause(req actionRequest, pause bool) (int, actionAnswer) {
	if req.Scope == "" {
		return http.StatusBadRequest, actionAnswer{Error: "scope is required"}
	}
	done := 0
	for _, sp := range a.h.spools() {
		paused, err := sp.Paused(a.ctx)
		if err != nil {
			return http.StatusInternalServerError, actionAnswer{Error: "the spool failed: " + err.Error()}
		}
		if !sp.HasScope(req.Scope) && !paused[req.Scope] {
			continue
		}
		if err := sp.Pause(a.ctx, req.Scope, pause); err != nil {
			return http.StatusInternalServerError, actionAnswer{Error: "the spool failed: " + err.Error()}
		}
		done++
	}
	if done == 0 {
		return http.StatusNotFound, actionAnswer{Error: "no spool delivers scope " + strconv.Quote(req.Scope)}
	}
	a.logged(zap.String("scope", req.Scope), zap.Bool("paused", pause))
	verb := "resumed: its events are delivered again"
	if pause {
		verb = "paused: its events are kept, not delivered, until Resume"
	}
	return http.StatusOK, actionAnswer{Message: "Scope " + req.Scope + " " + verb + "."}
}
