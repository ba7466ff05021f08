package integration

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// ivyGuardRoute is a site with one ivy route at /ivy (secret from {env.IVY_SECRET}, loopback
// only) in front of up.
func ivyGuardRoute(up *testkit.Upstream) string {
	return globalOptions() + site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n}", up.Addr(), ""),
	)
}

// TestCutAnswerAfter2xxIsDelivered: the upstream answers 200 and part of its body, then resets
// the connection. It has the event: the sender gets the 200 and the part, then the cut; the
// delivery is logged and counted as forwarded with the answer cut; the provider's retry is a
// duplicate, and the upstream received exactly one copy.
func TestCutAnswerAfter2xxIsDelivered(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_cut_")
	g := startGuard(t, ivyGuardRoute(up), map[string]string{"IVY_SECRET": secret})

	id := newID(t, "evt_cut_")
	body := eventBody(id, "payment.succeeded")
	up.AnswerWith(testkit.ResetAfter(http.StatusOK, "partial"))
	mark := g.LogMark()
	req, err := http.NewRequest(http.MethodPost, g.URL("/ivy"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = signIvy(secret, body)
	resp, err := loopbackClient.Do(req)
	if err != nil {
		t.Fatalf("the first copy got no answer: %v", err)
	}
	got, readErr := io.ReadAll(resp.Body)
	resp.Body.Close()
	g.record(testkit.Response{Status: resp.StatusCode, Header: resp.Header, Body: got})
	if resp.StatusCode != http.StatusOK || string(got) != "partial" || readErr == nil {
		t.Fatalf("the first copy: %d %q (read error %v); want the upstream's 200 and its part, then the cut",
			resp.StatusCode, got, readErr)
	}
	g.expectLog(mark, logWant{Msg: "webhook forwarded", Outcome: "forwarded", EventID: id,
		Reason: "upstream accepted (status 200); its answer was cut", Status: http.StatusOK})
	expectForwarded(t, "the cut copy", up, 0, body)

	expectDropped(t, "the provider's retry", g.post("/ivy", signIvy(secret, body), body), "duplicate")
	if n := up.Count(); n != 1 {
		t.Fatalf("the upstream received %d copies, want 1", n)
	}
	if failed := g.guardLogs(mark, logWant{Outcome: "upstream_failed"}); len(failed) != 0 {
		t.Fatalf("logged upstream_failed for a delivered event: %v", failed)
	}
	m := metricsGet(t, g)
	if n := m.events[metricsKey{"ivy", "forwarded"}]; n != 1 {
		t.Errorf("forwarded counted %v times, want 1", n)
	}
	if n := m.events[metricsKey{"ivy", "upstream_failed"}]; n != 0 {
		t.Errorf("upstream_failed counted %v times, want 0", n)
	}
}
