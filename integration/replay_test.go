package integration

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// TestReplayDuplicateDropped proves, for ivy, ivpay and standard, that a second copy of a
// delivered event is answered 200 with Webhook-Guard-Outcome: duplicate and not forwarded, and is
// logged as a duplicate with its event id; a Standard Webhooks retry signed anew (new timestamp,
// same webhook-id) is a duplicate too.
func TestReplayDuplicateDropped(t *testing.T) {
	up := testkit.StartUpstream(t)
	ivySecret, ivpayKey, stdSecret := newSecret(t, "ivy_"), newSecret(t, "ivpay_"), newWhsec(t)
	g := startGuard(t, globalOptions()+site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n}", up.Addr(), ""),
		guardRoute("/ivpay", "ivpay {\n api_key {env.IVPAY_KEY}\n}", up.Addr(), ""),
		guardRoute("/standard", "standard {\n secret {env.STD_SECRET}\n}", up.Addr(), ""),
	), map[string]string{"IVY_SECRET": ivySecret, "IVPAY_KEY": ivpayKey, "STD_SECRET": stdSecret})

	type copyOf func(n int) (http.Header, []byte) // the n-th copy of the event, from 1
	cases := []struct {
		provider, path, eventID string
		copy                    copyOf
	}{
		{"ivy", "/ivy", "evt_dup_ivy", func(int) (http.Header, []byte) {
			b := eventBody("evt_dup_ivy", "payment.succeeded")
			return signIvy(ivySecret, b), b
		}},
		{"ivpay", "/ivpay", "pay_dup_1/paid", func(int) (http.Header, []byte) {
			return headers("X-API-KEY", ivpayKey), []byte(`{"payment_id":"pay_dup_1","status":"paid"}`)
		}},
		{"standard", "/standard", "msg_dup_std", func(n int) (http.Header, []byte) {
			b := eventBody("evt_x", "invoice.paid")
			// Each retry is signed again, with its own timestamp, as the sender does.
			return signStandard(t, stdSecret, "msg_dup_std", time.Now().Unix()-int64(n), b), b
		}},
	}
	for _, tc := range cases {
		t.Run(tc.provider, func(t *testing.T) {
			g := g.sub(t)
			h, body := tc.copy(1)
			before, mark := up.Count(), g.LogMark()
			resp := g.post(tc.path, h, body)
			expectStatus(t, "first copy", resp, http.StatusOK)
			if o := resp.Header.Get("Webhook-Guard-Outcome"); o != "" {
				t.Errorf("first copy: Webhook-Guard-Outcome %q on a forwarded event", o)
			}
			expectForwarded(t, "first copy", up, before, body)
			g.expectLog(mark, logWant{Provider: tc.provider, Outcome: "forwarded", EventID: tc.eventID, ClientIP: "127.0.0.1"})

			for n := 2; n <= 3; n++ {
				h, body := tc.copy(n)
				what := "copy " + strconv.Itoa(n)
				before, mark := up.Count(), g.LogMark()
				resp := g.post(tc.path, h, body)
				expectDropped(t, what, resp, "duplicate")
				expectNotForwarded(t, what, up, before)
				g.expectLog(mark, logWant{Msg: "webhook dropped", Provider: tc.provider, Outcome: "duplicate",
					EventID: tc.eventID, ClientIP: "127.0.0.1", Reason: "already delivered", Status: 200})
			}
		})
	}
}

// result is one answer of a request sent from a goroutine.
type result struct {
	resp testkit.Response
	err  error
}

// TestReplayConcurrentCopies sends 16 copies of a new event at once while the upstream holds the
// first one: exactly one reaches the upstream, every other copy is answered 409 with Retry-After
// (in flight) or 200 duplicate; once the upstream answers, the held copy gets 200 and a further
// copy is a duplicate.
func TestReplayConcurrentCopies(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	g := startGuard(t, globalOptions()+site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n}", up.Addr(), ""),
	), map[string]string{"IVY_SECRET": secret})

	const copies = 16
	id := newID(t, "evt_conc_")
	body := eventBody(id, "payment.succeeded", `"amount":4200`)
	h := signIvy(secret, body)

	release := up.Block()
	defer release()
	mark := g.LogMark()
	results := make(chan result, copies)
	for range copies {
		go func() {
			resp, err := g.send(nil, http.MethodPost, "/ivy", h, body)
			results <- result{resp, err}
		}()
	}
	held := up.WaitArrival(t) // one copy is at the upstream, unanswered

	// Every other copy is answered while that one is held. Bounded: a copy wrongly forwarded
	// would be held too, and its client gives up after testkit.ClientTimeout.
	bound := time.NewTimer(2 * testkit.ClientTimeout)
	defer bound.Stop()
	var others []result
	for len(others) < copies-1 {
		select {
		case r := <-results:
			others = append(others, r)
		case <-bound.C:
			t.Fatalf("only %d of the %d other copies were answered", len(others), copies-1)
		}
	}
	if n := up.Count(); n != 1 {
		t.Fatalf("the upstream received %d copies while the first was in flight, want 1", n)
	}
	inFlight, duplicates := 0, 0
	for i, r := range others {
		if r.err != nil {
			t.Fatalf("copy %d: %v", i, r.err)
		}
		switch {
		case r.resp.Status == http.StatusConflict:
			inFlight++
			if ra, err := strconv.Atoi(r.resp.Header.Get("Retry-After")); err != nil || ra <= 0 {
				t.Errorf("409 with Retry-After %q, want a positive number of seconds", r.resp.Header.Get("Retry-After"))
			}
		case r.resp.Status == http.StatusOK && r.resp.Header.Get("Webhook-Guard-Outcome") == "duplicate":
			duplicates++
		default:
			t.Errorf("copy answered %d (outcome %q, body %q), want 409 in flight or 200 duplicate",
				r.resp.Status, r.resp.Header.Get("Webhook-Guard-Outcome"), r.resp.Body)
		}
	}
	t.Logf("%d copies answered 409 in flight, %d 200 duplicate", inFlight, duplicates)

	release()
	var first result
	select {
	case first = <-results:
	case <-bound.C:
		t.Fatal("the held copy was not answered after the upstream was released")
	}
	if first.err != nil {
		t.Fatal(first.err)
	}
	expectStatus(t, "held copy", first.resp, http.StatusOK)
	if string(first.resp.Body) != "upstream 200" || first.resp.Header.Get("Webhook-Guard-Outcome") != "" {
		t.Errorf("held copy: answer %q (outcome %q), want the upstream's", first.resp.Body, first.resp.Header.Get("Webhook-Guard-Outcome"))
	}
	expectForwarded(t, "held copy", up, 0, body)
	if held.Seq != 1 {
		t.Errorf("held request seq %d", held.Seq)
	}

	forwarded := logWant{Provider: "ivy", Outcome: "forwarded", EventID: id, ClientIP: "127.0.0.1", Status: 200}
	g.expectLogs(mark, forwarded, 1)
	g.expectLogs(mark, logWant{Provider: "ivy", Outcome: "in_flight", EventID: id, Status: 409, Reason: "in flight"}, inFlight)
	g.expectLogs(mark, logWant{Provider: "ivy", Outcome: "duplicate", EventID: id}, duplicates)
	// All 16 answers are in and their lines waited for: count exactly.
	if n := len(g.guardLogs(mark, forwarded)); n != 1 {
		t.Errorf("%d forwarded lines for the event, want 1", n)
	}
	if n := len(g.guardLogs(mark, logWant{EventID: id})); n != copies {
		t.Errorf("%d log lines for the event, want %d (one per copy)", n, copies)
	}

	// After the delivery, a copy is a duplicate.
	resp := g.post("/ivy", h, body)
	expectDropped(t, "copy after the delivery", resp, "duplicate")
	expectNotForwarded(t, "copy after the delivery", up, 1)
}

// TestReplayAfterUpstreamFailure proves that no event is remembered unless the upstream answered
// 2xx: an event whose first delivery got a 500 is answered 500, forwarded again on the next copy
// (200) and dropped after that; with the upstream down an event is answered 502, and the next
// copy, once an upstream is back (a reload pointing at it), is forwarded, then dropped.
func TestReplayAfterUpstreamFailure(t *testing.T) {
	flaky := testkit.StartUpstream(t)
	down := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	env := map[string]string{"IVY_SECRET": secret}
	ivy := "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n}"
	caddyfile := func(downAddr string) string {
		return globalOptions() + site(
			guardRoute("/flaky", ivy, flaky.Addr(), ""),
			guardRoute("/down", ivy, downAddr, ""),
		)
	}
	g := startGuard(t, caddyfile(down.Addr()), env)

	t.Run("upstream 500", func(t *testing.T) {
		g := g.sub(t)
		id := newID(t, "evt_500_")
		body := eventBody(id, "payment.succeeded")
		h := signIvy(secret, body)

		flaky.RespondWith(http.StatusInternalServerError)
		mark := g.LogMark()
		resp := g.post("/flaky", h, body)
		expectStatus(t, "first copy", resp, http.StatusInternalServerError)
		expectForwarded(t, "first copy", flaky, 0, body)
		g.expectLog(mark, logWant{Msg: "webhook not accepted by upstream", Provider: "ivy", Outcome: "upstream_failed",
			EventID: id, ClientIP: "127.0.0.1", Reason: "upstream answered 500", Status: 500})

		mark = g.LogMark()
		resp = g.post("/flaky", h, body)
		expectStatus(t, "second copy", resp, http.StatusOK)
		expectForwarded(t, "second copy", flaky, 1, body)
		g.expectLog(mark, logWant{Provider: "ivy", Outcome: "forwarded", EventID: id, Status: 200})

		mark = g.LogMark()
		resp = g.post("/flaky", h, body)
		expectDropped(t, "third copy", resp, "duplicate")
		expectNotForwarded(t, "third copy", flaky, 2)
		g.expectLog(mark, logWant{Provider: "ivy", Outcome: "duplicate", EventID: id})
	})

	t.Run("upstream down", func(t *testing.T) {
		g := g.sub(t)
		// An event delivered before the upstream goes down, to show the reload below keeps the
		// store's history (so the retry passing is the failed delivery's release at work).
		before := eventBody(newID(t, "evt_before_"), "payment.succeeded")
		expectStatus(t, "event before", g.post("/down", signIvy(secret, before), before), http.StatusOK)

		id := newID(t, "evt_down_")
		body := eventBody(id, "payment.succeeded")
		h := signIvy(secret, body)
		down.Close()
		mark := g.LogMark()
		resp := g.post("/down", h, body)
		expectStatus(t, "upstream down", resp, http.StatusBadGateway)
		g.expectLog(mark, logWant{Provider: "ivy", Outcome: "upstream_failed", EventID: id, Reason: "upstream error", Status: 502})

		back := testkit.StartUpstream(t)
		g.Reload(t, caddyfile(back.Addr()))
		mark = g.LogMark()
		resp = g.post("/down", h, body)
		expectStatus(t, "copy once the upstream is back", resp, http.StatusOK)
		expectForwarded(t, "copy once the upstream is back", back, 0, body)
		g.expectLog(mark, logWant{Provider: "ivy", Outcome: "forwarded", EventID: id})

		for what, b := range map[string][]byte{"next copy": body, "event before, after the reload": before} {
			resp = g.post("/down", signIvy(secret, b), b)
			expectDropped(t, what, resp, "duplicate")
			expectNotForwarded(t, what, back, 1)
		}
	})
}

// TestReplaySurvivesReload proves that `caddy reload` keeps the replay history: events delivered
// before a reload with the same Caddyfile, and before one with a changed Caddyfile (another
// max_body and tolerance, a rotated-in secret, a new route), are still dropped as duplicates.
func TestReplaySurvivesReload(t *testing.T) {
	up := testkit.StartUpstream(t)
	ivySecret, ivyNext, stdSecret := newSecret(t, "ivy_"), newSecret(t, "ivy_"), newWhsec(t)
	env := map[string]string{"IVY_SECRET": ivySecret, "IVY_NEXT": ivyNext, "STD_SECRET": stdSecret}
	original := globalOptions() + site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n}", up.Addr(), ""),
		guardRoute("/standard", "standard {\n secret {env.STD_SECRET}\n}", up.Addr(), ""),
	)
	changed := globalOptions() + site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_NEXT}\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n max_body 64KiB\n}", up.Addr(), ""),
		guardRoute("/standard", "standard {\n secret {env.STD_SECRET}\n tolerance 10m\n max_body 64KiB\n}", up.Addr(), ""),
		guardRoute("/ivy-new", "ivy {\n secret {env.IVY_NEXT}\n allow_ips 127.0.0.1\n}", up.Addr(), ""),
	)
	g := startGuard(t, original, env)

	ivyBody := eventBody(newID(t, "evt_reload_"), "payment.succeeded")
	stdID := newID(t, "msg_reload_")
	stdBody := eventBody("evt_reload_std", "invoice.paid")
	deliver := func(what string) {
		t.Helper()
		expectStatus(t, what+": ivy", g.post("/ivy", signIvy(ivySecret, ivyBody), ivyBody), http.StatusOK)
		expectStatus(t, what+": standard", g.post("/standard", signStandard(t, stdSecret, stdID, time.Now().Unix(), stdBody), stdBody), http.StatusOK)
	}
	expectDuplicates := func(what string) {
		t.Helper()
		before, mark := up.Count(), g.LogMark()
		expectDropped(t, what+": ivy", g.post("/ivy", signIvy(ivySecret, ivyBody), ivyBody), "duplicate")
		expectDropped(t, what+": standard", g.post("/standard", signStandard(t, stdSecret, stdID, time.Now().Unix(), stdBody), stdBody), "duplicate")
		expectNotForwarded(t, what, up, before)
		g.expectLog(mark, logWant{Provider: "ivy", Outcome: "duplicate"})
		g.expectLog(mark, logWant{Provider: "standard", Outcome: "duplicate", EventID: stdID})
	}

	deliver("before any reload")
	expectNotForwarded(t, "deliveries", up, 2)
	expectDuplicates("before any reload")

	// Caddy skips a reload of an unchanged configuration unless forced (caddy reload --force).
	mark := g.LogMark()
	g.Reload(t, original)
	g.WaitLogSince(t, mark, func(e testkit.LogEntry) bool { return e.Msg == "config is unchanged" })
	expectDuplicates("after a skipped reload of the same Caddyfile")
	mark = g.LogMark()
	g.reloadForced(original)
	g.WaitLogSince(t, mark, func(e testkit.LogEntry) bool {
		return e.Logger == "http" && strings.HasPrefix(e.Msg, "servers shutting down")
	})
	expectDuplicates("after a forced reload of the same Caddyfile")

	g.Reload(t, changed)
	expectDuplicates("after a reload with a changed Caddyfile")
	// The changed configuration is the one serving: the new route exists and takes the new secret.
	fresh := eventBody(newID(t, "evt_new_route_"), "payment.succeeded")
	before := up.Count()
	expectStatus(t, "new route", g.post("/ivy-new", signIvy(ivyNext, fresh), fresh), http.StatusOK)
	expectForwarded(t, "new route", up, before, fresh)

	g.Reload(t, original)
	expectDuplicates("after reloading back")

	// Stopping Caddy closes the store: that is not capacity pressure.
	g.Stop()
	for _, e := range g.Logs() {
		if e.Logger == guardLogger && strings.HasPrefix(e.Msg, "replay store nearly full") {
			t.Errorf("a capacity warning without any capacity pressure: %s", e.Raw)
		}
	}
}
