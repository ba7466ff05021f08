package integration

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// The module's metric families, as Caddy's admin endpoint serves them.
const (
	metricsEvents    = "caddy_webhook_guard_events_total"
	metricsVerify    = "caddy_webhook_guard_verify_seconds"
	metricsPrefix    = "caddy_webhook_guard_"
	metricsIvyEnv1   = "METRICS_IVY_SECRET_1"
	metricsIvyEnv2   = "METRICS_IVY_SECRET_2"
	metricsStdEnv    = "METRICS_STANDARD_SECRET"
	metricsMaxBody   = 4096
	metricsTolerance = 5 * time.Minute
)

// metricsCaddyfile is the suite's configuration for this test: two ivy routes (one with two
// secrets, an events filter and a small max_body; one that accepts only 127.0.0.2) and two
// standard routes (the memory store; a Redis store on a port where nothing listens).
func metricsCaddyfile(up *testkit.Upstream, redisURL string) string {
	return globalOptions() + site(
		guardRoute("/ivy", "ivy {\n"+
			"secret {env."+metricsIvyEnv1+"}\n"+
			"secret {env."+metricsIvyEnv2+"}\n"+
			"allow_ips 127.0.0.1\n"+
			"max_body "+strconv.Itoa(metricsMaxBody)+"\n"+
			"events payment.succeeded payment.failed\n"+
			"}", up.Addr(), ""),
		guardRoute("/ivy-locked", "ivy {\n"+
			"secret {env."+metricsIvyEnv1+"}\n"+
			"allow_ips 127.0.0.2\n"+
			"}", up.Addr(), ""),
		guardRoute("/standard", "standard {\n"+
			"secret {env."+metricsStdEnv+"}\n"+
			"}", up.Addr(), ""),
		guardRoute("/standard-redis", "standard {\n"+
			"secret {env."+metricsStdEnv+"}\n"+
			"store redis "+redisURL+"\n"+
			"}", up.Addr(), ""),
	)
}

// metricsKey names one series of the events counter.
type metricsKey struct{ provider, outcome string }

func (k metricsKey) String() string { return k.provider + "/" + k.outcome }

// metricsScrape is what the module exported at one scrape.
type metricsScrape struct {
	text   string
	events map[metricsKey]float64
	verify map[string]uint64 // verify_seconds_count by provider
	labels []string          // every label value of every caddy_webhook_guard_* series
}

// metricsGet scrapes Caddy's admin /metrics and parses the exposition.
func metricsGet(t *testing.T, g *guard) metricsScrape {
	t.Helper()
	status, body := g.AdminGet(t, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("admin GET /metrics: status %d: %s", status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	s := metricsScrape{text: string(body), events: map[metricsKey]float64{}, verify: map[string]uint64{}}
	for name, mf := range families {
		if !strings.HasPrefix(name, metricsPrefix) {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := metricsLabels(m)
			for _, v := range labels {
				s.labels = append(s.labels, v)
			}
			switch name {
			case metricsEvents:
				s.events[metricsKey{labels["provider"], labels["outcome"]}] = m.GetCounter().GetValue()
			case metricsVerify:
				s.verify[labels["provider"]] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	return s
}

func metricsLabels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// metricsExpectEvents fails unless the events counter holds exactly want: every series with its
// value, and no other series.
func metricsExpectEvents(t *testing.T, got metricsScrape, want map[metricsKey]float64) {
	t.Helper()
	keys := map[metricsKey]bool{}
	for k := range got.events {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	var names []metricsKey
	for k := range keys {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return names[i].String() < names[j].String() })
	for _, k := range names {
		g, present := got.events[k]
		w, wanted := want[k]
		switch {
		case !wanted:
			t.Errorf("%s{provider=%q,outcome=%q} = %v, want no such series", metricsEvents, k.provider, k.outcome, g)
		case !present:
			t.Errorf("%s{provider=%q,outcome=%q} missing, want %v", metricsEvents, k.provider, k.outcome, w)
		case g != w:
			t.Errorf("%s{provider=%q,outcome=%q} = %v, want %v", metricsEvents, k.provider, k.outcome, g, w)
		}
	}
}

// metricsVerifications is how many deliveries of a provider reached signature verification:
// every outcome but the refusals that come before it.
func metricsVerifications(counts map[metricsKey]float64, provider string) uint64 {
	var n float64
	for k, v := range counts {
		switch k.outcome {
		case "bad_method", "ip_denied", "too_large", "bad_request":
			continue
		}
		if k.provider == provider {
			n += v
		}
	}
	return uint64(n)
}

// metricsLevels is the level each outcome is logged at.
var metricsLevels = map[string]string{
	"forwarded":         "debug",
	"duplicate":         "info",
	"in_flight":         "info",
	"ignored_type":      "warn", // the only one of its type: the first is a warning (TestEventsFilter: later ones info)
	"bad_method":        "info",
	"invalid_signature": "warn",
	"stale_timestamp":   "warn",
	"ip_denied":         "warn",
	"too_large":         "warn",
	"upstream_failed":   "warn",
	"store_unavailable": "error",
}

// metricsStale matches the reason of a timestamp out of tolerance in the past.
var metricsStale = regexp.MustCompile(`^timestamp (\S+) in the past, tolerance 5m$`)

// TestMetricsAndLogs drives a scripted mix of deliveries for two providers through a real Caddy
// in front of a real upstream, then checks that the admin endpoint's /metrics holds exactly one
// count per delivery under its provider and outcome (and one verification per delivery that got
// that far), with no IP, event id or secret among the label values; that each delivery left one
// log line with its provider, outcome, client IP, event id when known and a reason a person can
// read, forwarded ones only at DEBUG; that no secret appears anywhere in Caddy's output; and that
// the counters carry on across a reload, without a registration error.
func TestMetricsAndLogs(t *testing.T) {
	up := testkit.StartUpstream(t)
	ivy1, ivy2, std := newSecret(t, "ivy_m1_"), newSecret(t, "ivy_m2_"), newWhsec(t)
	redisURL := "redis://127.0.0.1:" + strconv.Itoa(testkit.FreePort(t)) + "/0" // nothing listens
	caddyfile := metricsCaddyfile(up, redisURL)
	g := startGuard(t, caddyfile, map[string]string{metricsIvyEnv1: ivy1, metricsIvyEnv2: ivy2, metricsStdEnv: std})

	if s := metricsGet(t, g); len(s.events) != 0 || len(s.verify) != 0 {
		t.Fatalf("before any delivery: events %v, verifications %v; want none", s.events, s.verify)
	}

	want := map[metricsKey]float64{}
	var ids []string // every event id sent, which no label may hold
	mark := g.LogMark()
	count := func(provider, outcome string) { want[metricsKey{provider, outcome}]++ }
	ivyEvent := func(typ string) (string, []byte) {
		id := newID(t, "evt_metrics_")
		ids = append(ids, id)
		return id, eventBody(id, typ, `"amount":4200`)
	}

	// ivy: forwarded, signed with either secret (rotation).
	var ivyDelivered [][]byte
	for i := range 5 {
		_, body := ivyEvent("payment.succeeded")
		secret := []string{ivy1, ivy2}[i%2]
		before := up.Count()
		resp := g.post("/ivy", signIvy(secret, body), body)
		expectStatus(t, "ivy event", resp, http.StatusOK)
		expectForwarded(t, "ivy event", up, before, body)
		ivyDelivered = append(ivyDelivered, body)
		count("ivy", "forwarded")
	}
	// ivy: duplicates of delivered events.
	for _, body := range ivyDelivered[:2] {
		expectDropped(t, "ivy duplicate", g.post("/ivy", signIvy(ivy1, body), body), "duplicate")
		count("ivy", "duplicate")
	}
	// ivy: a copy arriving while the first is held by the upstream.
	{
		_, body := ivyEvent("payment.failed")
		h := signIvy(ivy2, body)
		release := up.Block()
		first := make(chan testkit.Response, 1)
		go func() {
			resp, err := g.send(nil, http.MethodPost, "/ivy", h, body)
			if err != nil {
				t.Errorf("held ivy event: %v", err)
			}
			first <- resp
		}()
		// Wait until the upstream holds it (earlier arrivals are still in the channel).
		for !bytes.Equal(up.WaitArrival(t).Body, body) {
		}
		resp := g.post("/ivy", h, body)
		expectStatus(t, "ivy copy in flight", resp, http.StatusConflict)
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("ivy copy in flight: no Retry-After")
		}
		count("ivy", "in_flight")
		release()
		expectStatus(t, "held ivy event", <-first, http.StatusOK)
		count("ivy", "forwarded")
	}
	// ivy: a type the route does not want.
	{
		_, body := ivyEvent("customer.created")
		expectDropped(t, "ivy ignored type", g.post("/ivy", signIvy(ivy1, body), body), "ignored_type")
		count("ivy", "ignored_type")
	}
	// ivy: signed with secrets the route does not have.
	for range 2 {
		_, body := ivyEvent("payment.succeeded")
		resp := g.post("/ivy", signIvy(newSecret(t, "ivy_wrong_"), body), body)
		expectStatus(t, "ivy wrong secret", resp, http.StatusUnauthorized)
		count("ivy", "invalid_signature")
	}
	// ivy: over max_body.
	{
		_, body := ivyEvent("payment.succeeded")
		body = append(body[:len(body)-1], []byte(`,"pad":"`+strings.Repeat("x", metricsMaxBody)+`"}`)...)
		expectStatus(t, "ivy too large", g.post("/ivy", signIvy(ivy1, body), body), http.StatusRequestEntityTooLarge)
		count("ivy", "too_large")
	}
	// ivy: GET.
	{
		resp, err := g.send(nil, http.MethodGet, "/ivy", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		expectStatus(t, "ivy GET", resp, http.StatusMethodNotAllowed)
		count("ivy", "bad_method")
	}
	// ivy: the upstream fails, then takes the provider's retry.
	{
		_, body := ivyEvent("payment.succeeded")
		h := signIvy(ivy1, body)
		up.RespondWith(http.StatusInternalServerError)
		expectStatus(t, "ivy upstream failure", g.post("/ivy", h, body), http.StatusInternalServerError)
		count("ivy", "upstream_failed")
		expectStatus(t, "ivy retry", g.post("/ivy", h, body), http.StatusOK)
		count("ivy", "forwarded")
	}
	// ivy: from a source the route does not allow.
	{
		_, body := ivyEvent("payment.succeeded")
		expectStatus(t, "ivy from 127.0.0.1", g.post("/ivy-locked", signIvy(ivy1, body), body), http.StatusForbidden)
		count("ivy", "ip_denied")
	}

	stdEvent := func() (string, []byte) {
		id := newID(t, "msg_metrics_")
		ids = append(ids, id)
		return id, eventBody(id, "invoice.paid")
	}
	// standard: forwarded, then one replayed.
	var stdFirst http.Header
	var stdFirstBody []byte
	for i := range 3 {
		id, body := stdEvent()
		h := signStandard(t, std, id, time.Now().Unix(), body)
		before := up.Count()
		expectStatus(t, "standard event", g.post("/standard", h, body), http.StatusOK)
		expectForwarded(t, "standard event", up, before, body)
		count("standard", "forwarded")
		if i == 0 {
			stdFirst, stdFirstBody = h, body
		}
	}
	expectDropped(t, "standard duplicate", g.post("/standard", stdFirst, stdFirstBody), "duplicate")
	count("standard", "duplicate")
	// standard: signed 11 minutes ago.
	staleSent, staleAnswered, staleTS := func() (time.Time, time.Time, int64) {
		id, body := stdEvent()
		ts := time.Now().Add(-11*time.Minute - 4*time.Second).Unix()
		sent := time.Now()
		expectStatus(t, "standard stale", g.post("/standard", signStandard(t, std, id, ts, body), body), http.StatusUnauthorized)
		return sent, time.Now(), ts
	}()
	count("standard", "stale_timestamp")
	// standard: signed with a secret the route does not have.
	{
		id, body := stdEvent()
		resp := g.post("/standard", signStandard(t, newWhsec(t), id, time.Now().Unix(), body), body)
		expectStatus(t, "standard wrong secret", resp, http.StatusUnauthorized)
		count("standard", "invalid_signature")
	}
	// standard: the Redis store is down.
	{
		id, body := stdEvent()
		resp := g.post("/standard-redis", signStandard(t, std, id, time.Now().Unix(), body), body)
		expectStatus(t, "standard, Redis down", resp, http.StatusServiceUnavailable)
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("standard, Redis down: no Retry-After")
		}
		count("standard", "store_unavailable")
	}

	// The metrics.
	s := metricsGet(t, g)
	metricsExpectEvents(t, s, want)
	for _, provider := range []string{"ivy", "standard"} {
		if got, w := s.verify[provider], metricsVerifications(want, provider); got != w {
			t.Errorf("%s_count{provider=%q} = %d, want %d verifications", metricsVerify, provider, got, w)
		}
	}
	if len(s.verify) != 2 {
		t.Errorf("verify_seconds has providers %v, want ivy and standard", s.verify)
	}
	metricsExpectCleanLabels(t, s, ids, []string{ivy1, ivy2, std})

	// The log lines: one per delivery, forwarded ones at DEBUG, the others above.
	metricsExpectLogs(t, g, mark, want)
	ivyWrong := g.guardLogs(mark, logWant{Provider: "ivy", Outcome: "invalid_signature"})
	for _, e := range ivyWrong {
		if r := e.Field("reason"); r != "signature does not match any of 2 secrets" {
			t.Errorf("ivy wrong secret: reason %q, want %q", r, "signature does not match any of 2 secrets")
		}
	}
	for _, e := range g.guardLogs(mark, logWant{Provider: "standard", Outcome: "invalid_signature"}) {
		if r := e.Field("reason"); r != "signature does not match any of 1 secret" {
			t.Errorf("standard wrong secret: reason %q, want %q", r, "signature does not match any of 1 secret")
		}
	}
	for _, e := range g.guardLogs(mark, logWant{Provider: "standard", Outcome: "stale_timestamp"}) {
		metricsExpectStaleReason(t, e.Field("reason"), staleSent, staleAnswered, staleTS)
	}
	for _, e := range g.guardLogs(mark, logWant{Provider: "ivy", Outcome: "upstream_failed"}) {
		if r := e.Field("reason"); r != "upstream answered 500" {
			t.Errorf("upstream failure: reason %q, want %q", r, "upstream answered 500")
		}
	}
	g.checkNoSecrets()

	// A reload: the counters carry on from where they were, nothing is registered twice.
	reloadMark := g.LogMark()
	g.reloadForced(caddyfile)
	{
		_, body := ivyEvent("payment.succeeded")
		expectStatus(t, "ivy after reload", g.post("/ivy", signIvy(ivy2, body), body), http.StatusOK)
		count("ivy", "forwarded")
		old := ivyDelivered[4]
		expectDropped(t, "ivy duplicate after reload", g.post("/ivy", signIvy(ivy1, old), old), "duplicate")
		count("ivy", "duplicate")
	}
	s = metricsGet(t, g)
	metricsExpectEvents(t, s, want)
	if got, w := s.verify["ivy"], metricsVerifications(want, "ivy"); got != w {
		t.Errorf("after the reload: %s_count{provider=\"ivy\"} = %d, want %d", metricsVerify, got, w)
	}
	metricsExpectCleanLabels(t, s, ids, []string{ivy1, ivy2, std})
	for _, e := range g.Logs()[reloadMark:] {
		low := strings.ToLower(e.Raw)
		if strings.Contains(low, "registering metrics") || strings.Contains(low, "already registered") ||
			strings.Contains(low, "duplicate metrics collector") {
			t.Errorf("after the reload: %s", e.Raw)
		}
	}
	metricsExpectLogs(t, g, mark, want)
}

// metricsExpectCleanLabels fails if a label value of the module's series is an IP address, an
// event id, or holds a secret, or if an event id or a secret appears anywhere in the exposition.
func metricsExpectCleanLabels(t *testing.T, s metricsScrape, ids, secrets []string) {
	t.Helper()
	if len(s.labels) == 0 {
		t.Fatal("no caddy_webhook_guard_* series")
	}
	for _, v := range s.labels {
		if net.ParseIP(v) != nil {
			t.Errorf("label value %q is an IP address", v)
		}
		if strings.HasPrefix(v, "evt_") || strings.HasPrefix(v, "msg_") {
			t.Errorf("label value %q looks like an event id", v)
		}
	}
	for _, id := range ids {
		if strings.Contains(s.text, id) {
			t.Errorf("/metrics holds event id %q", id)
		}
	}
	for i, secret := range secrets {
		if strings.Contains(s.text, secret) {
			t.Errorf("/metrics holds secret #%d", i+1)
		}
	}
}

// metricsExpectLogs checks the module's log lines since mark against the deliveries counted in
// want: for each provider and outcome exactly as many lines as deliveries, at the outcome's
// level, each with the client IP, a reason and, after verification, the event id.
func metricsExpectLogs(t *testing.T, g *guard, mark int, want map[metricsKey]float64) {
	t.Helper()
	// Every answer has arrived, but a line may still be on its way through the pipe.
	for k, n := range want {
		g.expectLogs(mark, logWant{Provider: k.provider, Outcome: k.outcome}, int(n))
	}
	seen := map[metricsKey]int{}
	for _, e := range g.guardLogs(mark, logWant{}) {
		if e.Field("outcome") == "" {
			continue // not a delivery's line
		}
		k := metricsKey{e.Field("provider"), e.Field("outcome")}
		seen[k]++
		what := fmt.Sprintf("%s line %q", k, e.Raw)
		if level, ok := metricsLevels[k.outcome]; !ok || e.Level != level {
			t.Errorf("%s: level %q, want %q", what, e.Level, level)
		}
		if ip := e.Field("client_ip"); ip != "127.0.0.1" {
			t.Errorf("%s: client_ip %q, want 127.0.0.1", what, ip)
		}
		if e.Field("reason") == "" || e.Field("status") == "" {
			t.Errorf("%s: no reason or status", what)
		}
		switch k.outcome {
		case "bad_method", "ip_denied", "too_large", "invalid_signature", "stale_timestamp":
			if id := e.Field("event_id"); id != "" {
				t.Errorf("%s: event_id %q before the event was verified", what, id)
			}
		default:
			if id := e.Field("event_id"); !strings.HasPrefix(id, "evt_metrics_") && !strings.HasPrefix(id, "msg_metrics_") {
				t.Errorf("%s: event_id %q, want the event's", what, id)
			}
		}
	}
	for k, n := range want {
		if seen[k] != int(n) {
			t.Errorf("%s: %d log lines, want %d (one per delivery)", k, seen[k], int(n))
		}
	}
	for k, n := range seen {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %d unexpected log lines", k, n)
		}
	}
}

// metricsExpectStaleReason checks the reason of a stale timestamp names how far in the past it
// was (between the sending and the answer, to the second) and the tolerance.
func metricsExpectStaleReason(t *testing.T, reason string, sent, answered time.Time, ts int64) {
	t.Helper()
	m := metricsStale.FindStringSubmatch(reason)
	if m == nil {
		t.Errorf("stale timestamp: reason %q, want \"timestamp <age> in the past, tolerance 5m\"", reason)
		return
	}
	age, err := time.ParseDuration(m[1])
	if err != nil {
		t.Errorf("stale timestamp: reason %q: %v", reason, err)
		return
	}
	signed := time.Unix(ts, 0)
	lo, hi := sent.Sub(signed).Truncate(time.Second), answered.Sub(signed).Truncate(time.Second)
	if age < lo || age > hi || age <= metricsTolerance {
		t.Errorf("stale timestamp: reason %q, want an age between %v and %v", reason, lo, hi)
	}
}
