package integration

import (
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// The fleet's tests: several built Caddy instances share one spool and one replay memory
// through a real Redis (redis-server 7.0, valkey-server 8, a Sentinel, a Cluster), in front of
// one backend (fleetBackend) that records every delivery and can hold deliveries open.

// fleetWait bounds the waits for deliveries: a lease to expire, a Redis to come back, the
// spool's retries (1s apart in these tests).
const fleetWait = 90 * time.Second

// fleetArrival is one delivery as the backend received it.
type fleetArrival struct {
	at      time.Time
	eventID string // Webhook-Guard-Event-Id
	attempt int    // Webhook-Guard-Attempt
	path    string
	header  http.Header
	body    []byte
	remote  string
	// status is what the backend answered; 0 when it dropped the request unanswered (a
	// delivery held open whose sender died).
	status int
}

// fleetHeld is a delivery the backend holds open.
type fleetHeld struct {
	a       fleetArrival
	release chan bool // true: answer it; false: drop it unanswered
}

// fleetBackend is the backend of the fleet's spools: an HTTP server on loopback that answers
// 200 (or the status set), holds open the deliveries asked for, and records every delivery.
type fleetBackend struct {
	t    testing.TB
	addr string
	srv  *http.Server

	mu      sync.Mutex
	status  int
	holdAll bool
	holdIDs map[string]bool
	held    []*fleetHeld
	got     []fleetArrival
	arrived chan fleetArrival // every delivery answered or dropped
	holding chan fleetArrival // every delivery as it starts being held
}

// startFleetBackend starts a backend answering 200; it is closed when the test ends, after
// releasing what it holds.
func startFleetBackend(t testing.TB) *fleetBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fleetBackend{t: t, addr: l.Addr().String(), status: http.StatusOK, holdIDs: map[string]bool{},
		arrived: make(chan fleetArrival, 1<<16), holding: make(chan fleetArrival, 1<<12)}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() {
		b.releaseHeld(false)
		_ = b.srv.Close()
	})
	return b
}

func (b *fleetBackend) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	a := fleetArrival{at: time.Now(), eventID: r.Header.Get("Webhook-Guard-Event-Id"), path: r.URL.Path,
		header: r.Header.Clone(), body: body, remote: r.RemoteAddr}
	a.attempt, _ = strconv.Atoi(r.Header.Get("Webhook-Guard-Attempt"))
	b.mu.Lock()
	var h *fleetHeld
	if b.holdAll || b.holdIDs[a.eventID] {
		h = &fleetHeld{a: a, release: make(chan bool, 1)}
		b.held = append(b.held, h)
	}
	status := b.status
	b.mu.Unlock()
	if h != nil {
		b.holding <- a
		if answer := <-h.release; !answer {
			a.status = 0
			b.record(a)
			panic(http.ErrAbortHandler)
		}
		b.mu.Lock()
		status = b.status
		b.mu.Unlock()
	}
	a.status = status
	w.WriteHeader(status)
	b.record(a)
}

func (b *fleetBackend) record(a fleetArrival) {
	b.mu.Lock()
	b.got = append(b.got, a)
	b.mu.Unlock()
	b.arrived <- a
}

// url is the backend's URL, for spool's to.
func (b *fleetBackend) url() string { return "http://" + b.addr }

// setStatus sets the status of the answers from now on (and of held deliveries answered).
func (b *fleetBackend) setStatus(status int) {
	b.mu.Lock()
	b.status = status
	b.mu.Unlock()
}

// hold makes the backend hold open every delivery that arrives from now on (all) or those of
// the event ids given, until releaseHeld.
func (b *fleetBackend) hold(all bool, ids ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holdAll = all
	b.holdIDs = map[string]bool{}
	for _, id := range ids {
		b.holdIDs[id] = true
	}
}

// releaseHeld stops holding and lets every held delivery go: answered (answer) or dropped.
func (b *fleetBackend) releaseHeld(answer bool) {
	b.mu.Lock()
	held := b.held
	b.held = nil
	b.holdAll, b.holdIDs = false, map[string]bool{}
	b.mu.Unlock()
	for _, h := range held {
		h.release <- answer
	}
}

// waitHeld waits (bounded) until n deliveries are held open, and returns them.
func (b *fleetBackend) waitHeld(n int) []fleetArrival {
	b.t.Helper()
	var out []fleetArrival
	deadline := time.NewTimer(fleetWait)
	defer deadline.Stop()
	for len(out) < n {
		select {
		case a := <-b.holding:
			out = append(out, a)
		case <-deadline.C:
			b.t.Fatalf("backend: %d of %d deliveries held within %v", len(out), n, fleetWait)
		}
	}
	return out
}

// arrivals returns every delivery answered or dropped so far.
func (b *fleetBackend) arrivals() []fleetArrival {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]fleetArrival(nil), b.got...)
}

// of returns the deliveries of one event.
func (b *fleetBackend) of(eventID string) []fleetArrival {
	var out []fleetArrival
	for _, a := range b.arrivals() {
		if a.eventID == eventID {
			out = append(out, a)
		}
	}
	return out
}

// accepted returns, by event id, how many deliveries the backend answered 2xx.
func (b *fleetBackend) accepted() map[string]int {
	out := map[string]int{}
	for _, a := range b.arrivals() {
		if a.status/100 == 2 {
			out[a.eventID]++
		}
	}
	return out
}

// waitRecordedDelivered waits (bounded by fleetWait) until, for every event of ids, one of gs
// has logged "spooled webhook delivered", which the spool logs once the delivery is recorded:
// the backend counts an event when it answers, before that.
func waitRecordedDelivered(t *testing.T, gs []*guard, ids []string) {
	t.Helper()
	deadline := time.Now().Add(fleetWait)
	for {
		missing := map[string]bool{}
		for _, id := range ids {
			missing[id] = true
		}
		for _, g := range gs {
			for _, e := range g.guardLogs(0, logWant{Msg: "spooled webhook delivered"}) {
				delete(missing, e.Field("event_id"))
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events not recorded delivered within %v, e.g. %v", len(missing), fleetWait, slices.Collect(maps.Keys(missing))[:min(5, len(missing))])
		}
		time.Sleep(20 * time.Millisecond) // the logs of several instances: polled
	}
}

// waitAccepted waits (bounded by fleetWait) until the backend has answered 2xx to every event
// of ids.
func (b *fleetBackend) waitAccepted(ids ...string) {
	b.t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for id := range b.accepted() {
		delete(want, id)
	}
	deadline := time.NewTimer(fleetWait)
	defer deadline.Stop()
	for len(want) > 0 {
		select {
		case a := <-b.arrived:
			if a.status/100 == 2 {
				delete(want, a.eventID)
			}
		case <-deadline.C:
			missing := make([]string, 0, len(want))
			for id := range want {
				missing = append(missing, id)
			}
			b.t.Fatalf("backend: %d events not delivered within %v, e.g. %v", len(want), fleetWait, missing[:min(5, len(missing))])
		}
	}
}

// fleetEvent is one IVPAY callback of the fleet's tests.
type fleetEvent struct {
	id   string // the guard's event id (payment/paid)
	body []byte
}

// newFleetEvent returns a new IVPAY callback.
func newFleetEvent(t testing.TB, prefix string) fleetEvent {
	t.Helper()
	payment := newID(t, prefix)
	return fleetEvent{id: ivpayID(payment), body: ivpayEvent(payment)}
}

// fleetRedisStore is the store block of the fleet's guards: Redis from {env.REDIS_URL} (or
// the forms in lines), with a lease.
func fleetRedisStore(lease string, lines ...string) string {
	url := "{env.REDIS_URL}"
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "sentinel ") || strings.HasPrefix(strings.TrimSpace(l), "cluster ") {
			url = ""
		}
	}
	return "store redis " + url + " {\n  lease " + lease + "\n  " + strings.Join(lines, "\n  ") + "\n }"
}

// fleetGuard is an ivpay guard (key {env.IVPAY_KEY}, from 127.0.0.1) with scope, store and a
// spool to backend whose retries are a second apart, with extra spool lines.
func fleetGuard(scope, store, backend string, extra ...string) string {
	return "ivpay {\n api_key {env.IVPAY_KEY}\n allow_ips 127.0.0.1\n scope " + scope + "\n " + store + "\n" +
		" spool {\n  to " + backend + "\n  backoff 1s\n  timeout 1m\n" + strings.Join(extra, "\n") + "\n }\n}"
}

// fleetConfig is the Caddyfile of instance n of a fleet: the route /ivpay (scope ivpay) and
// the instance's own marker route /marker (scope marker, spool name marker-<n>), whose events
// only that instance delivers.
func fleetConfig(n int, store, backend string) string {
	return globalOptions() + site(
		spoolRoute("/ivpay", fleetGuard("ivpay", store, backend)),
		spoolRoute("/marker", fleetGuard("marker", store, backend, "  name marker-"+strconv.Itoa(n))),
	)
}

// fleetStart starts instance n of a fleet with Redis at redisURL (may be "" for the sentinel
// and cluster forms).
func fleetStart(t testing.TB, n int, store, backend, key, redisURL string) *guard {
	t.Helper()
	env := map[string]string{"IVPAY_KEY": key}
	if redisURL != "" {
		env["REDIS_URL"] = redisURL
	}
	g := startGuard(t, fleetConfig(n, store, backend), env)
	spoolSecrets(g)
	return g
}

// fleetSend sends ev to g's /ivpay and returns the answer; a transport error fails the test.
func fleetSend(t testing.TB, g *guard, key string, ev fleetEvent) testkit.Response {
	t.Helper()
	resp, err := g.send(nil, http.MethodPost, "/ivpay", ivpayHeaders(key), ev.body)
	if err != nil {
		t.Fatalf("POST /ivpay (%s): %v", ev.id, err)
	}
	return resp
}

// fleetSpool sends a new event to g's /ivpay, expects 200 spooled and returns it.
func fleetSpool(t testing.TB, g *guard, key, prefix string) fleetEvent {
	t.Helper()
	ev := newFleetEvent(t, prefix)
	expectDropped(t, "event "+ev.id, fleetSend(t, g, key, ev), "spooled")
	return ev
}

// fleetMarkers sends a marker event to each instance's own /marker route and waits until the
// backend has them all: each instance then ran a pass of its spool's worker (which reads every
// target it has, the shared ones included) after everything sent before.
func fleetMarkers(t testing.TB, b *fleetBackend, key string, gs ...*guard) {
	t.Helper()
	var ids []string
	for _, g := range gs {
		ev := newFleetEvent(t, "marker")
		resp, err := g.send(nil, http.MethodPost, "/marker", ivpayHeaders(key), ev.body)
		if err != nil {
			t.Fatalf("POST /marker: %v", err)
		}
		expectDropped(t, "marker "+ev.id, resp, "spooled")
		ids = append(ids, ev.id)
	}
	b.waitAccepted(ids...)
}

// expectFleetDelivery checks the deliveries of ev: at least one accepted, each with its event
// id, the exact body and no credential.
func expectFleetDelivery(t testing.TB, b *fleetBackend, ev fleetEvent) {
	t.Helper()
	got := b.of(ev.id)
	accepted := 0
	for _, a := range got {
		if a.status/100 == 2 {
			accepted++
		}
		if string(a.body) != string(ev.body) || a.path != "/ivpay" || a.attempt < 1 {
			t.Errorf("delivery of %s: %s attempt %d body %q; want /ivpay and %q", ev.id, a.path, a.attempt, a.body, ev.body)
		}
		for _, name := range []string{"X-Api-Key", "Authorization", "Cookie"} {
			if a.header.Get(name) != "" {
				t.Errorf("delivery of %s carries %s", ev.id, name)
			}
		}
	}
	if accepted == 0 {
		t.Errorf("event %s: no accepted delivery among %d", ev.id, len(got))
	}
}

// adminPost sends POST path to g's admin endpoint and expects 200.
func adminPost(t testing.TB, g *guard, path string) {
	t.Helper()
	if status, body := adminDo(t, g, http.MethodPost, path); status != http.StatusOK {
		t.Fatalf("admin POST %s: status %d: %s", path, status, body)
	}
}

// fleetMetric returns the value of the metric line name{labels} (e.g.
// `caddy_webhook_guard_spool_data_lost_total`) on g's admin endpoint, "" when absent.
func fleetMetric(t testing.TB, g *guard, series string) string {
	t.Helper()
	status, body := g.AdminGet(t, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", status)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// fleetWaitMetric polls g's metrics (bounded) until series has value want.
func fleetWaitMetric(t testing.TB, g *guard, series, want string) {
	t.Helper()
	deadline := time.Now().Add(fleetWait)
	for {
		got := fleetMetric(t, g, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s is %q after %v, want %q", series, got, fleetWait, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fleetSendUntilOK sends ev to g as a provider does while it is answered 503 (a tenth of a
// second apart, bounded by fleetWait), and expects 200 with outcome at last.
func fleetSendUntilOK(t testing.TB, g *guard, key string, ev fleetEvent, outcome string) {
	t.Helper()
	deadline := time.Now().Add(fleetWait)
	refused := false
	for {
		resp := fleetSend(t, g, key, ev)
		if resp.Status != http.StatusServiceUnavailable {
			// A 503 may come after the event was stored (a replica did not confirm it in
			// time): the provider's retry then finds it, and is answered a duplicate. The
			// caller's check that every event is delivered is what counts then.
			if refused && resp.Header.Get("Webhook-Guard-Outcome") == "duplicate" {
				expectDropped(t, "event "+ev.id+" sent again after a 503", resp, "duplicate")
				return
			}
			expectDropped(t, "event "+ev.id, resp, outcome)
			return
		}
		refused = true
		if time.Now().After(deadline) {
			t.Fatalf("event %s: still 503 after %v", ev.id, fleetWait)
		}
		time.Sleep(100 * time.Millisecond) // a provider's retry, sped up
	}
}

// fleetSend2 sends ev to path on g and returns the answer.
func fleetSend2(t testing.TB, g *guard, path, key string, ev fleetEvent) testkit.Response {
	t.Helper()
	resp, err := g.send(nil, http.MethodPost, path, ivpayHeaders(key), ev.body)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

// dedupeKeyIvpay is the replay key of an IVPAY identity under the default scope ("" gives
// the start every such key shares but its identity's length and value).
func dedupeKeyIvpay(identity string) string {
	k := dedupe.Key("ivpay", "ivpay", identity)
	if identity == "" {
		k = strings.TrimSuffix(k, "0:")
	}
	return k
}
