package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
	"github.com/hookguard/caddy-webhook-guard/verify"
)

// The spool's integration tests: the built Caddy with a `spool` block in front of a real HTTP
// backend (spoolBackend), which can be down (nothing listening on its port), answer a scripted
// status with Retry-After, and come back on the same address.

// spoolWait bounds the waits for deliveries that follow the spool's real schedule (5s, 30s, ...).
const spoolWait = 90 * time.Second

// arrival is one delivery as the backend received it.
type arrival struct {
	at         time.Time
	eventID    string // Webhook-Guard-Event-Id
	attempt    int    // Webhook-Guard-Attempt
	method     string
	path       string
	query      string
	header     http.Header
	body       []byte
	status     int    // what the backend answered
	retryAfter string // the Retry-After it sent
}

// spoolBackend is the spool's backend: an HTTP server on a fixed loopback address that can be
// started, stopped and started again there.
type spoolBackend struct {
	t    testing.TB
	addr string

	mu      sync.Mutex
	answer  func(a arrival) (status int, retryAfter string)
	got     []arrival
	arrived chan arrival
	srv     *http.Server
}

// newSpoolBackend picks the backend's address; nothing listens there until start.
func newSpoolBackend(t testing.TB) *spoolBackend {
	b := &spoolBackend{
		t:       t,
		addr:    "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t)),
		arrived: make(chan arrival, 4096),
		answer:  func(arrival) (int, string) { return http.StatusOK, "" },
	}
	t.Cleanup(b.stop)
	return b
}

// setAnswer sets how the backend answers from now on.
func (b *spoolBackend) setAnswer(f func(a arrival) (int, string)) {
	b.mu.Lock()
	b.answer = f
	b.mu.Unlock()
}

// start listens on the backend's address (bounded retries: the port was free when picked).
func (b *spoolBackend) start() {
	b.t.Helper()
	var l net.Listener
	var err error
	for range 50 {
		if l, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("backend: listen on %s: %v", b.addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// stop closes the backend (its port refuses connections again).
func (b *spoolBackend) stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (b *spoolBackend) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a := arrival{
		at: time.Now(), eventID: headerEventID(b.t, r.Header.Get("Webhook-Guard-Event-Id")), method: r.Method,
		path: r.URL.Path, query: r.URL.RawQuery, header: r.Header.Clone(), body: body,
	}
	a.attempt, _ = strconv.Atoi(r.Header.Get("Webhook-Guard-Attempt"))
	b.mu.Lock()
	a.status, a.retryAfter = b.answer(a)
	b.got = append(b.got, a)
	b.mu.Unlock()
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.WriteHeader(a.status)
	b.arrived <- a
}

// arrivals returns every delivery received so far.
func (b *spoolBackend) arrivals() []arrival {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]arrival(nil), b.got...)
}

// of returns the deliveries of one event.
func (b *spoolBackend) of(eventID string) []arrival {
	var out []arrival
	for _, a := range b.arrivals() {
		if a.eventID == eventID {
			out = append(out, a)
		}
	}
	return out
}

// waitAccepted waits (bounded by spoolWait) until the backend has answered 2xx to every event
// of ids.
func (b *spoolBackend) waitAccepted(ids ...string) {
	b.t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for _, a := range b.arrivals() {
		if a.status < 300 {
			delete(want, a.eventID)
		}
	}
	deadline := time.NewTimer(spoolWait)
	defer deadline.Stop()
	for len(want) > 0 {
		select {
		case a := <-b.arrived:
			if a.status < 300 {
				delete(want, a.eventID)
			}
		case <-deadline.C:
			b.t.Fatalf("backend: %d events not delivered within %v: %v", len(want), spoolWait, want)
		}
	}
}

// waitArrival waits (bounded) for the next delivery of eventID.
func (b *spoolBackend) waitArrival(eventID string) arrival {
	b.t.Helper()
	deadline := time.NewTimer(spoolWait)
	defer deadline.Stop()
	for {
		select {
		case a := <-b.arrived:
			if a.eventID == eventID {
				return a
			}
		case <-deadline.C:
			b.t.Fatalf("backend: no delivery of %s within %v", eventID, spoolWait)
		}
	}
}

// spoolGuard is an ivpay guard with a spool to backend, under scope, with extra spool lines.
func spoolGuard(scope, backend string, extra ...string) string {
	return "ivpay {\n api_key {env.IVPAY_KEY}\n allow_ips 127.0.0.1\n scope " + scope + "\n" +
		" spool {\n  to http://" + backend + "\n" + strings.Join(extra, "\n") + "\n }\n}"
}

// spoolRoute is a route whose guard spools (it is the last handler).
func spoolRoute(path, guard string) string {
	return "handle " + path + " {\nwebhook_guard " + guard + "\n}\n"
}

// ivpayHeaders are the headers of an IVPAY callback with key, plus credentials the guard must
// never store.
func ivpayHeaders(key string) http.Header {
	return headers("X-Api-Key", key, "Content-Type", "application/json",
		"Authorization", "Bearer spool-test-bearer-token", "Cookie", "session=spool-test-cookie")
}

// ivpayID is the event id the guard reads from ivpayEvent(id).
func ivpayID(payment string) string { return payment + "/paid" }

// sendLikeIVPAY sends one event as IVPAY does: up to three tries, five seconds apart, stopping
// at the first 2xx. It returns the statuses of the tries (0: no answer).
func sendLikeIVPAY(g *guard, path string, h http.Header, body []byte) []int {
	var statuses []int
	for try := range 3 {
		if try > 0 {
			time.Sleep(5 * time.Second) // IVPAY's spacing, modelled: not a synchronisation
		}
		resp, err := g.send(nil, http.MethodPost, path, h, body)
		status := 0
		if err == nil {
			status = resp.Status
		}
		statuses = append(statuses, status)
		if status >= 200 && status < 300 {
			break
		}
	}
	return statuses
}

// spoolEntry is an event in the admin API's list.
type spoolEntry struct {
	ID        uint64 `json:"id"`
	Scope     string `json:"scope"`
	EventID   string `json:"event_id"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error"`
}

// spoolList is GET /webhook_guard/spool with query (one page: the tests
// here list fewer events than a page holds).
func spoolList(t testing.TB, g *guard, query string) []spoolEntry {
	t.Helper()
	status, body := g.AdminGet(t, "/webhook_guard/spool"+query)
	if status != http.StatusOK {
		t.Fatalf("admin list: status %d: %s", status, body)
	}
	g.record(testkit.Response{Status: status, Body: body})
	var list struct {
		Events []spoolEntry `json:"events"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("admin list: %v: %s", err, body)
	}
	return list.Events
}

// findEntry returns the entry of eventID in list.
func findEntry(list []spoolEntry, eventID string) (spoolEntry, bool) {
	for _, e := range list {
		if e.EventID == eventID {
			return e, true
		}
	}
	return spoolEntry{}, false
}

// adminDo sends method path to Caddy's admin endpoint and returns the status and body.
func adminDo(t testing.TB, g *guard, method, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.AdminURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: testkit.AdminTimeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	g.record(testkit.Response{Status: resp.StatusCode, Header: resp.Header, Body: body})
	return resp.StatusCode, body
}

// spoolCLI runs `caddy webhook-guard spool <args> --address <admin>` with the built binary and
// returns its output; a failure fails the test.
func spoolCLI(t testing.TB, g *guard, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.CommandTimeout)
	defer cancel()
	args = append(append([]string{"webhook-guard", "spool"}, args...), "--address", g.AdminAddr())
	cmd := exec.CommandContext(ctx, testkit.CaddyBinary(t), args...)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(t.TempDir(), "data"), "XDG_CONFIG_HOME="+filepath.Join(t.TempDir(), "config"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("caddy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	g.record(testkit.Response{Body: out})
	return string(out)
}

// expectDelivered checks a delivery: the exact body, the original method, path and query, the
// event id header, and no credential.
func expectDelivered(t testing.TB, a arrival, eventID, path string, body []byte) {
	t.Helper()
	if a.eventID != eventID || a.method != http.MethodPost || a.path != path || !bytes.Equal(a.body, body) {
		t.Errorf("delivery of %s: event id %q, %s %s, body %q; want %s POST %s %q", eventID, a.eventID, a.method, a.path, a.body, eventID, path, body)
	}
	if a.header.Get("Content-Type") != "application/json" {
		t.Errorf("delivery of %s: Content-Type %q", eventID, a.header.Get("Content-Type"))
	}
	for _, name := range []string{"X-Api-Key", "Authorization", "Cookie"} {
		if v := a.header.Get(name); v != "" {
			t.Errorf("delivery of %s carries %s", eventID, name)
		}
	}
	if a.attempt < 1 {
		t.Errorf("delivery of %s: Webhook-Guard-Attempt %d", eventID, a.attempt)
	}
}

// expectNoCredentialIn fails the test if data (named what) contains a credential.
func expectNoCredentialIn(t testing.TB, what string, data []byte, key string) {
	t.Helper()
	for _, c := range []string{key, "spool-test-bearer-token", "spool-test-cookie"} {
		if bytes.Contains(data, []byte(c)) {
			t.Errorf("%s contains a credential (%d bytes checked)", what, len(data))
		}
	}
}

// spoolSecrets registers the credentials the sender adds, so checkNoSecrets looks for them too.
func spoolSecrets(g *guard) {
	g.addSecret("spool-test-bearer-token", "spool-test-cookie")
}

// TestSpoolKeepsEventsWhileBackendDown: the backend is down while a sender behaves like IVPAY
// (three tries, five seconds apart). Through the spool every event is answered 200 spooled at
// once and reaches the backend exactly once after it comes back; through reverse_proxy (no
// spool) every try fails and the events are lost. The backend stays down for the senders' ten
// seconds of tries and comes back after their last try (a longer outage changes nothing but the
// wall time: the provider has given up either way); the spooled events then arrive at their
// next attempt, on the spool's schedule (`backoff 1s` here: a test does not wait on the
// default 5s, 30s, ...).
func TestSpoolKeepsEventsWhileBackendDown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	key := newSecret(t, "ivpay_spool_")
	backend := newSpoolBackend(t)
	g := startGuard(t, globalOptions()+site(
		spoolRoute("/ivpay/spooled", spoolGuard("spooled", backend.addr, "backoff 1s")),
		guardRoute("/ivpay/direct", "ivpay {\n api_key {env.IVPAY_KEY}\n allow_ips 127.0.0.1\n scope direct\n}", backend.addr, ""),
	), map[string]string{"IVPAY_KEY": key})
	spoolSecrets(g)
	mark := g.LogMark()

	const n = 5
	type sent struct {
		id       string
		body     []byte
		statuses []int
	}
	spooled, direct := make([]sent, n), make([]sent, n)
	var wg sync.WaitGroup
	for i := range n {
		spooled[i].id, direct[i].id = newID(t, "pay_sp"), newID(t, "pay_dir")
		spooled[i].body, direct[i].body = ivpayEvent(spooled[i].id), ivpayEvent(direct[i].id)
		wg.Go(func() { spooled[i].statuses = sendLikeIVPAY(g, "/ivpay/spooled", ivpayHeaders(key), spooled[i].body) })
		wg.Go(func() { direct[i].statuses = sendLikeIVPAY(g, "/ivpay/direct", ivpayHeaders(key), direct[i].body) })
	}
	wg.Wait()
	for i := range n {
		if s := spooled[i].statuses; len(s) != 1 || s[0] != http.StatusOK {
			t.Errorf("spooled event %d: tries answered %v, want [200]", i, s)
		}
		if s := direct[i].statuses; len(s) != 3 || s[0] != http.StatusBadGateway || s[2] != http.StatusBadGateway {
			t.Errorf("direct event %d: tries answered %v, want three 502s (the provider gives up)", i, s)
		}
	}
	g.expectLogs(mark, logWant{Outcome: "spooled", Status: 200}, n)

	backend.start() // after the senders' last try
	ids := make([]string, n)
	for i := range n {
		ids[i] = ivpayID(spooled[i].id)
	}
	backend.waitAccepted(ids...)
	delivered := g.expectLogs(mark, logWant{Msg: "spooled webhook delivered"}, n)
	if len(delivered) != n {
		t.Fatalf("%d delivered lines, want %d", len(delivered), n)
	}
	// Every result is recorded: nothing is left to deliver again.
	if list := spoolList(t, g, ""); len(list) != 0 {
		t.Fatalf("spool after delivery: %+v, want empty", list)
	}
	for i := range n {
		got := backend.of(ids[i])
		if len(got) != 1 {
			t.Fatalf("event %s reached the backend %d times, want exactly once", ids[i], len(got))
		}
		expectDelivered(t, got[0], ids[i], "/ivpay/spooled", spooled[i].body)
		if got[0].attempt < 2 {
			t.Errorf("event %s delivered at attempt %d, want a retry (the backend was down at the first)", ids[i], got[0].attempt)
		}
		if lost := backend.of(ivpayID(direct[i].id)); len(lost) != 0 {
			t.Errorf("direct event %d reached the backend", i)
		}
	}
	// A provider's late retry of a delivered event is a duplicate.
	expectDropped(t, "late retry", g.post("/ivpay/spooled", ivpayHeaders(key), spooled[0].body), "duplicate")
	t.Logf("without the spool: %d of %d events lost (the provider gave up after 3 tries); with it: 0 of %d", n, n, n)
}

// TestSpoolDeliversAfterRestartAndKill: events pending while the backend is down survive a
// graceful restart and a SIGKILL (one right after their 200s); once the backend is back, a
// Caddy started on the same data directory delivers every event answered 200, with no new
// inbound traffic.
func TestSpoolDeliversAfterRestartAndKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	key := newSecret(t, "ivpay_restart_")
	backend := newSpoolBackend(t)
	dir := t.TempDir()
	cfg := globalOptions() + site(spoolRoute("/ivpay", spoolGuard("ivpay", backend.addr, "backoff 1s")))
	env := map[string]string{"IVPAY_KEY": key}
	send := func(g *guard, count int) map[string][]byte {
		events := map[string][]byte{}
		for range count {
			id := newID(t, "pay_rs")
			body := ivpayEvent(id)
			resp := g.post("/ivpay", ivpayHeaders(key), body)
			expectDropped(t, "event "+id, resp, "spooled")
			events[ivpayID(id)] = body
		}
		return events
	}

	g1 := startGuardIn(t, dir, cfg, env)
	spoolSecrets(g1)
	mark := g1.LogMark()
	events := send(g1, 5)
	g1.expectLogs(mark, logWant{Msg: "spooled webhook delivery failed"}, 5) // backend down
	g1.Stop()

	g2 := startGuardIn(t, dir, cfg, env)
	if list := spoolList(t, g2, "?state=pending"); len(list) != 5 {
		t.Fatalf("after a graceful restart: %d pending, want 5", len(list))
	}
	for id, body := range send(g2, 3) {
		events[id] = body
	}
	g2.Kill() // SIGKILL right after the last 200

	backend.start()
	g3 := startGuardIn(t, dir, cfg, env)
	ids := make([]string, 0, len(events))
	for id := range events {
		ids = append(ids, id)
	}
	backend.waitAccepted(ids...)
	g3.expectLogs(0, logWant{Msg: "spooled webhook delivered"}, len(events))
	for id, body := range events {
		got := backend.of(id)
		if len(got) != 1 {
			t.Errorf("event %s reached the backend %d times, want once", id, len(got))
			continue
		}
		expectDelivered(t, got[0], id, "/ivpay", body)
	}
	if list := spoolList(t, g3, ""); len(list) != 0 {
		t.Fatalf("spool after delivery: %+v", list)
	}
	g3.Stop()
	ledger, err := os.ReadFile(filepath.Join(g3.DataDir(), "webhook_guard", "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	expectNoCredentialIn(t, "the ledger file", ledger, key)
}

// TestSpoolDeadRetryPauseDiscard: a backend answering 500 (with Retry-After: 1) until
// max_attempts makes the event dead; the admin API and the CLI list it; a retry delivers it once
// the backend is fixed. Pause holds deliveries (ingest goes on), resume releases them, discard
// removes one for good. No credential appears in the ledger, the admin API, the CLI or the logs.
func TestSpoolDeadRetryPauseDiscard(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	key := newSecret(t, "ivpay_dead_")
	backend := newSpoolBackend(t)
	backend.setAnswer(func(arrival) (int, string) { return http.StatusInternalServerError, "1" })
	backend.start()
	g := startGuard(t, globalOptions()+site(
		spoolRoute("/ivpay/held", spoolGuard("held", backend.addr, "max_attempts 2", "backoff 1s")),
		spoolRoute("/ivpay/other", spoolGuard("other", backend.addr, "backoff 1s")),
	), map[string]string{"IVPAY_KEY": key})
	spoolSecrets(g)
	mark := g.LogMark()

	// Dead after two attempts, the second no sooner than the Retry-After of the first.
	pay := newID(t, "pay_dead")
	body, id := ivpayEvent(pay), ivpayID(pay)
	expectDropped(t, "event", g.post("/ivpay/held", ivpayHeaders(key), body), "spooled")
	deadLine := g.expectLog(mark, logWant{Msg: "spooled webhook is dead", EventID: id})
	if deadLine.Level != "error" || deadLine.Field("attempts") != "2" || deadLine.Field("last_error") != "status 500" {
		t.Errorf("dead line: %s", deadLine.Raw)
	}
	tries := backend.of(id)
	if len(tries) != 2 || tries[0].attempt != 1 || tries[1].attempt != 2 {
		t.Fatalf("attempts %+v, want 1 and 2", tries)
	}
	if gap := tries[1].at.Sub(tries[0].at); gap < time.Second {
		t.Errorf("second attempt %v after the first, before its Retry-After: 1", gap)
	}
	dead := spoolList(t, g, "?state=dead")
	entry, ok := findEntry(dead, id)
	if !ok || entry.Attempts != 2 || entry.LastError != "status 500" || entry.State != "dead" || entry.Scope != "held" {
		t.Fatalf("admin list of dead events: %+v", dead)
	}
	if l := spoolList(t, g, "?state=pending"); len(l) != 0 {
		t.Fatalf("pending: %+v", l)
	}
	// The metrics: the gauges follow within about a second of a change.
	waitMetrics(t, g,
		`caddy_webhook_guard_spool_dead_total{scope="held"} 1`,
		`caddy_webhook_guard_delivery_attempts_total{result="refused",scope="held"} 2`,
		`caddy_webhook_guard_spool_events{scope="held",state="dead"} 1`,
		`caddy_webhook_guard_spool_events{scope="held",state="pending"} 0`,
	)
	out := spoolCLI(t, g, "list", "--state", "dead")
	if !strings.Contains(out, id) || !strings.Contains(out, strconv.FormatUint(entry.ID, 10)) {
		t.Fatalf("CLI list does not show the dead event:\n%s", out)
	}
	show := spoolCLI(t, g, "show", strconv.FormatUint(entry.ID, 10), "--json")
	if !strings.Contains(show, `\"payment_id\"`) && !strings.Contains(show, `"payment_id`) {
		t.Errorf("CLI show has no body:\n%s", show)
	}
	expectNoCredentialIn(t, "the CLI's show", []byte(show), key)
	_, detail := g.AdminGet(t, "/webhook_guard/spool/"+strconv.FormatUint(entry.ID, 10))
	g.record(testkit.Response{Body: detail})
	expectNoCredentialIn(t, "the admin API's show", detail, key)

	// Fixed backend, retry: delivered, attempts counted afresh.
	backend.setAnswer(func(arrival) (int, string) { return http.StatusNoContent, "" })
	spoolCLI(t, g, "retry", strconv.FormatUint(entry.ID, 10))
	a := backend.waitArrival(id)
	expectDelivered(t, a, id, "/ivpay/held", body)
	if a.attempt != 1 {
		t.Errorf("attempt after retry %d, want 1", a.attempt)
	}
	g.expectLog(mark, logWant{Msg: "spooled webhook delivered", EventID: id})

	// Pause holds "held"; "other" goes on. Events are due in order, so once the later event of
	// "other" is delivered, the earlier one of "held" would have been started had it not been
	// held.
	spoolCLI(t, g, "pause", "--scope", "held")
	heldPay, otherPay := newID(t, "pay_held"), newID(t, "pay_other")
	heldID, otherID := ivpayID(heldPay), ivpayID(otherPay)
	expectDropped(t, "held event", g.post("/ivpay/held", ivpayHeaders(key), ivpayEvent(heldPay)), "spooled")
	expectDropped(t, "other event", g.post("/ivpay/other", ivpayHeaders(key), ivpayEvent(otherPay)), "spooled")
	backend.waitArrival(otherID)
	g.expectLog(mark, logWant{Msg: "spooled webhook delivered", EventID: otherID})
	if got := backend.of(heldID); len(got) != 0 {
		t.Fatalf("a paused scope's event reached the backend")
	}
	if e, ok := findEntry(spoolList(t, g, "?state=pending&scope=held"), heldID); !ok || e.Attempts != 0 {
		t.Fatalf("held event not pending with 0 attempts: %+v", e)
	}
	// Discard one while paused: it is never delivered; its id stays remembered.
	dropPay := newID(t, "pay_drop")
	dropBody, dropID := ivpayEvent(dropPay), ivpayID(dropPay)
	expectDropped(t, "event to discard", g.post("/ivpay/held", ivpayHeaders(key), dropBody), "spooled")
	drop, ok := findEntry(spoolList(t, g, "?scope=held"), dropID)
	if !ok {
		t.Fatal("event to discard not listed")
	}
	if status, b := adminDo(t, g, http.MethodDelete, "/webhook_guard/spool/"+strconv.FormatUint(drop.ID, 10)); status != http.StatusOK {
		t.Fatalf("discard: %d %s", status, b)
	}
	discarded := g.WaitLogSince(t, mark, func(e testkit.LogEntry) bool {
		return e.Msg == "spooled event discarded through the admin API" && e.Field("event_id") == dropID
	})
	if discarded.Level != "warn" {
		t.Errorf("discard logged at %s", discarded.Level)
	}
	if e, ok := findEntry(spoolList(t, g, ""), dropID); !ok || e.State != "discarded" {
		t.Fatalf("discarded event listed as %+v, want state discarded", e)
	}
	if status, b := adminDo(t, g, http.MethodPost, "/webhook_guard/spool/resume?scope=held"); status != http.StatusOK {
		t.Fatalf("resume: %d %s", status, b)
	}
	backend.waitArrival(heldID)
	g.expectLog(mark, logWant{Msg: "spooled webhook delivered", EventID: heldID})
	// The discarded event was due before the held one: it would have gone first.
	if got := backend.of(dropID); len(got) != 0 {
		t.Fatal("a discarded event reached the backend")
	}
	expectDropped(t, "provider retry of a discarded event", g.post("/ivpay/held", ivpayHeaders(key), dropBody), "duplicate")

	// The admin API's answers and the CLI output were recorded: checkNoSecrets (at the end)
	// looks for the key there and in Caddy's output; and in the ledger file here, with one
	// event left pending (its scope paused) so that the file holds a stored request.
	spoolCLI(t, g, "pause", "--scope", "held")
	lastPay := newID(t, "pay_last")
	expectDropped(t, "last event", g.post("/ivpay/held", ivpayHeaders(key), ivpayEvent(lastPay)), "spooled")
	g.Stop()
	ledger, err := os.ReadFile(filepath.Join(g.DataDir(), "webhook_guard", "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	expectNoCredentialIn(t, "the ledger file", ledger, key)
	if !bytes.Contains(ledger, []byte(lastPay)) || !bytes.Contains(ledger, []byte("application/json")) {
		t.Error("the ledger file holds no event body at all: the credential check above checks nothing")
	}
}

// TestSpoolHonoursRetryAfter: the backend's Retry-After (seconds) sets the next attempt, which
// never comes before it. (An HTTP date is parsed the same way: see dedupe's unit tests.)
func TestSpoolHonoursRetryAfter(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	key := newSecret(t, "ivpay_ra_")
	backend := newSpoolBackend(t)
	var mu sync.Mutex
	first := true
	backend.setAnswer(func(arrival) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if first {
			first = false
			return http.StatusServiceUnavailable, "3"
		}
		return http.StatusOK, ""
	})
	backend.start()
	g := startGuard(t, globalOptions()+site(spoolRoute("/ivpay", spoolGuard("ivpay", backend.addr, "backoff 1s"))), map[string]string{"IVPAY_KEY": key})
	spoolSecrets(g)
	pay := newID(t, "pay_ra")
	expectDropped(t, "event", g.post("/ivpay", ivpayHeaders(key), ivpayEvent(pay)), "spooled")
	id := ivpayID(pay)
	one := backend.waitArrival(id)
	two := backend.waitArrival(id)
	if one.retryAfter != "3" || two.attempt != 2 {
		t.Fatalf("attempts %+v then %+v", one, two)
	}
	if gap := two.at.Sub(one.at); gap < 3*time.Second {
		t.Errorf("second attempt %v after the first, before the Retry-After: 3 it sent", gap)
	}
}

// TestSpoolFullLedger: with the file store's disk budget (JSON max_size) full, an event is
// answered 503 with Retry-After, and nothing of it is kept: the spool holds exactly the events
// answered 200.
func TestSpoolFullLedger(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	key := newSecret(t, "ivpay_full_")
	down := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t)) // never listening
	// Started without the guard, so that the ledger is first opened by the JSON config below,
	// with its max_size.
	g := startGuard(t, globalOptions()+site(), map[string]string{"IVPAY_KEY": key})
	spoolSecrets(g)
	guardCfg := globalOptions() + site(spoolRoute("/ivpay", "ivpay {\n api_key {env.IVPAY_KEY}\n allow_ips 127.0.0.1\n max_body 64KiB\n spool {\n  to http://"+down+"\n }\n}"))
	jsonCfg, errOut := testkit.Adapt(t, guardCfg, "IVPAY_KEY="+key)
	if errOut != "" {
		t.Fatal(errOut)
	}
	jsonCfg = withMaxSize(t, jsonCfg, 512<<10)
	jsonCfg = strings.NewReplacer(testkit.AdaptAdminAddr, g.AdminAddr(), ":"+strconv.Itoa(testkit.AdaptHTTPPort), ":"+strconv.Itoa(g.HTTPPort())).Replace(jsonCfg)
	req, _ := http.NewRequest(http.MethodPost, g.AdminURL()+"/load", strings.NewReader(jsonCfg))
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: testkit.AdminTimeout}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("loading the JSON config: %d %s", resp.StatusCode, b)
	}

	mark := g.LogMark()
	accepted := 0
	pad := strings.Repeat("x", 16<<10)
	var refused testkit.Response
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatal("1000 events of 16 KiB did not fill a 512 KiB ledger")
		}
		pay := newID(t, "pay_full")
		body := []byte(`{"payment_id":"` + pay + `","status":"paid","pad":"` + pad + `"}`)
		resp := g.post("/ivpay", ivpayHeaders(key), body)
		if resp.Status == http.StatusOK {
			expectDropped(t, "event", resp, "spooled")
			accepted++
			continue
		}
		refused = resp
		break
	}
	expectStatus(t, "event on a full ledger", refused, http.StatusServiceUnavailable)
	if refused.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	g.expectLog(mark, logWant{Outcome: "store_full", Status: http.StatusServiceUnavailable})
	if list := spoolList(t, g, ""); len(list) != accepted {
		t.Fatalf("the spool holds %d events, want the %d answered 200", len(list), accepted)
	}
	t.Logf("%d events of 16 KiB spooled before the 512 KiB budget was full", accepted)
}

// waitMetrics polls the admin endpoint's /metrics (bounded) until it has every line of want.
func waitMetrics(t testing.TB, g *guard, want ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := g.AdminGet(t, "/metrics")
		missing := ""
		for _, line := range want {
			if !bytes.Contains(body, []byte("\n"+line+"\n")) {
				missing = line
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics has no line %s within 15s", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// withMaxSize sets max_size on the file store of every webhook_guard handler of a JSON config.
func withMaxSize(t testing.TB, cfg string, size int) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(cfg), &v); err != nil {
		t.Fatal(err)
	}
	found := false
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			if x["handler"] == "webhook_guard" {
				x["store"] = map[string]any{"type": "file", "max_size": size}
				found = true
			}
			for _, y := range x {
				walk(y)
			}
		case []any:
			for _, y := range x {
				walk(y)
			}
		}
	}
	walk(v)
	if !found {
		t.Fatal("no webhook_guard handler in the JSON config")
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestSpoolDeliversToTheHandlerThatAccepted: two ivpay handlers share a key and so a scope, as
// two routes of one merchant do (/orders, /billing), each spooling to a backend of its own; an
// ivy handler shares the scope name too. Every event reaches the backend of the route that
// accepted it, and no other, with its attempts and options; before, the last handler
// provisioned took every event of the scope.
func TestSpoolDeliversToTheHandlerThatAccepted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	key, ivySecret := newSecret(t, "ivpay_routes_"), newSecret(t, "ivy_routes_")
	orders, billing, ivyBackend := newSpoolBackend(t), newSpoolBackend(t), newSpoolBackend(t)
	for _, b := range []*spoolBackend{orders, billing, ivyBackend} {
		b.start()
	}
	g := startGuard(t, globalOptions()+site(
		spoolRoute("/ivpay/orders", spoolGuard("shop", orders.addr)),
		spoolRoute("/ivpay/billing", spoolGuard("shop", billing.addr)),
		spoolRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n scope shop\n spool {\n  to http://"+ivyBackend.addr+"\n }\n}"),
	), map[string]string{"IVPAY_KEY": key, "IVY_SECRET": ivySecret})
	spoolSecrets(g)

	want := map[*spoolBackend][]string{}
	for i := range 3 {
		for _, r := range []struct {
			path    string
			backend *spoolBackend
		}{{"/ivpay/orders", orders}, {"/ivpay/billing", billing}} {
			pay := newID(t, "pay_route"+strconv.Itoa(i))
			expectDropped(t, r.path, g.post(r.path, ivpayHeaders(key), ivpayEvent(pay)), "spooled")
			want[r.backend] = append(want[r.backend], ivpayID(pay))
		}
		id := newID(t, "evt_route"+strconv.Itoa(i))
		body := eventBody(id, "payment.succeeded")
		expectDropped(t, "/ivy", g.post("/ivy", signIvy(ivySecret, body), body), "spooled")
		want[ivyBackend] = append(want[ivyBackend], id)
	}
	for b, ids := range want {
		b.waitAccepted(ids...)
	}
	for b, ids := range want {
		got := b.arrivals()
		if len(got) != len(ids) {
			t.Errorf("backend %s received %d deliveries, want %d", b.addr, len(got), len(ids))
		}
		for _, a := range got {
			if !slices.Contains(ids, a.eventID) {
				t.Errorf("backend %s received %s, accepted by another route", b.addr, a.eventID)
			}
		}
	}
}

// headerEventID is the event id a Webhook-Guard-Event-Id carries: the id
// itself, or decoded from its header-safe base64 form (verify.HeaderEventID).
func headerEventID(t testing.TB, v string) string {
	enc, ok := strings.CutPrefix(v, verify.HeaderIDBase64Prefix)
	if !ok {
		return v
	}
	id, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		t.Errorf("Webhook-Guard-Event-Id %q: not base64url: %v", v, err)
		return v
	}
	return string(id)
}

// ledgerSpoolGuard is an ivpay guard of scope that spools to backend, with its own ledger
// file dir/file, retrying at most hourly.
func ledgerSpoolGuard(dir, backend, scope, file string) string {
	return "ivpay {\n api_key {env.IVPAY_KEY}\n allow_ips 127.0.0.1\n scope " + scope + "\n store file " + filepath.Join(dir, file) +
		"\n spool {\n  to http://" + backend + "\n  backoff 1h\n }\n}"
}

// spoolOverTwo spools n IVPAY events of key through /a and /b (two of three on /a) and
// returns their event ids, newest first.
func spoolOverTwo(t *testing.T, g *guard, key, prefix string, n int) []string {
	t.Helper()
	var want []string
	for i := range n {
		path := "/a"
		if i%3 == 1 {
			path = "/b"
		}
		pay := newID(t, prefix+strconv.Itoa(i))
		expectDropped(t, path, g.post(path, ivpayHeaders(key), ivpayEvent(pay)), "spooled")
		want = append([]string{ivpayID(pay)}, want...)
	}
	return want
}

// TestSpoolListPagesAcrossLedgers: two sites keep their spools in two ledger files (ids
// colliding). The admin API's pages hold at most limit events in all and, followed by next,
// list every event once, newest first; the CLI prints the next page's command with the cursor.
// A config reload that keeps the stores keeps the cursor good; one that adds a store makes it
// a 400 that says to start again.
func TestSpoolListPagesAcrossLedgers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	key := newSecret(t, "ivpay_pages_")
	backend := newSpoolBackend(t) // not started: every event stays pending
	dir := t.TempDir()
	ledgerGuard := func(scope, file string) string { return ledgerSpoolGuard(dir, backend.addr, scope, file) }
	two := globalOptions() + site(spoolRoute("/a", ledgerGuard("site_a", "a.db")), spoolRoute("/b", ledgerGuard("site_b", "b.db")))
	g := startGuard(t, two, map[string]string{"IVPAY_KEY": key})
	spoolSecrets(g)
	want := spoolOverTwo(t, g, key, "pay_page", 7)
	type page struct {
		Events []spoolEntry `json:"events"`
		Next   string       `json:"next"`
	}
	list := func(after string) (int, page, []byte) {
		t.Helper()
		status, body := adminDo(t, g, http.MethodGet, "/webhook_guard/spool?limit=3&after="+url.QueryEscape(after))
		var p page
		if status == http.StatusOK {
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("list: %v: %s", err, body)
			}
		}
		return status, p, body
	}
	var got []string
	after, second := "", ""
	for n := 1; ; n++ {
		status, p, body := list(after)
		if status != http.StatusOK || len(p.Events) > 3 || n > 4 {
			t.Fatalf("page %d: status %d, %d events: %s", n, status, len(p.Events), body)
		}
		for _, e := range p.Events {
			got = append(got, e.EventID)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
		if n == 1 {
			second = after
			// A reload that keeps both stores keeps the cursor.
			g.Reload(t, globalOptions()+site(spoolRoute("/b", ledgerGuard("site_b", "b.db")), spoolRoute("/a", ledgerGuard("site_a", "a.db"))))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages listed %q, want %q", got, want)
	}
	out := spoolCLI(t, g, "list", "--limit", "3")
	if !strings.Contains(out, "\nmore: caddy webhook-guard spool list --after "+second+" --limit 3\n") {
		t.Errorf("CLI first page: no next page's command with the cursor %s:\n%s", second, out)
	}
	if out := spoolCLI(t, g, "list", "--limit", "3", "--after", second); !strings.Contains(out, want[3]) || strings.Contains(out, want[0]) {
		t.Errorf("CLI second page:\n%s", out)
	}
	g.Reload(t, globalOptions()+site(spoolRoute("/a", ledgerGuard("site_a", "a.db")), spoolRoute("/b", ledgerGuard("site_b", "b.db")),
		spoolRoute("/c", ledgerGuard("site_c", "c.db"))))
	if status, _, body := list(second); status != http.StatusBadRequest ||
		!strings.Contains(string(body), "changed since the first page: list again from the first page") {
		t.Errorf("a cursor after a reload added a ledger: status %d: %s", status, body)
	}
}
