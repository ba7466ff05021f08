package integration

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

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

// switchingAnswer is an upstream Answer that switches protocols whatever was asked: it sends
// 101 Switching Protocols (Upgrade: websocket), then reads the connection until it is closed and
// sends what arrived after the request on tunnelled. Its read is bounded by rawDeadline.
func switchingAnswer(tunnelled chan<- []byte) testkit.Answer {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			tunnelled <- []byte("hijack failed: " + err.Error())
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(rawDeadline))
		_, _ = buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = buf.Flush()
		rest, _ := io.ReadAll(buf) // until reverse_proxy closes its side (or the deadline)
		tunnelled <- rest
	}
}

// TestUpgradeOnWebhookRefused sends a signed ivy event asking for a protocol upgrade
// (Connection: Upgrade, X-Hop; Upgrade: websocket), followed on the same connection by bytes no
// signature covers, to an upstream that answers 101 to anything. The upstream receives one plain
// POST (no Connection, Upgrade or X-Hop) and nothing after it; the sender gets 502; the delivery
// is logged upstream_failed and the claim released: the provider's retry is forwarded, and the
// next copy is a duplicate.
func TestUpgradeOnWebhookRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_upgrade_")
	g := startGuard(t, ivyGuardRoute(up), map[string]string{"IVY_SECRET": secret})

	id := newID(t, "evt_upgrade_")
	body := eventBody(id, "payment.succeeded")
	tunnelled := make(chan []byte, 1)
	up.AnswerWith(switchingAnswer(tunnelled))
	mark := g.LogMark()

	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(g.HTTPPort()), rawDeadline)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(rawDeadline)); err != nil {
		t.Fatal(err)
	}
	const unsigned = "UNSIGNED BYTES FOR THE BACKEND\r\n"
	head := "POST /ivy HTTP/1.1\r\n" +
		"Host: 127.0.0.1:" + strconv.Itoa(g.HTTPPort()) + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"X-Ivy-Signature: " + signIvy(secret, body).Get("X-Ivy-Signature") + "\r\n" +
		"Connection: Upgrade, X-Hop\r\n" +
		"Upgrade: websocket\r\n" +
		"X-Hop: hop-by-hop\r\n\r\n"
	if _, err := io.WriteString(conn, head+string(body)+unsigned); err != nil {
		t.Fatal(err)
	}
	answer, err := readResponseHead(bufio.NewReader(conn))
	if err != nil {
		t.Fatalf("reading the answer: %v (got %q)", err, answer)
	}
	g.record(testkit.Response{Body: []byte(answer)})
	if !strings.HasPrefix(answer, "HTTP/1.1 502 ") {
		t.Fatalf("answer %q, want 502", firstLine(answer))
	}
	var rest []byte
	select {
	case rest = <-tunnelled:
	case <-time.After(2 * rawDeadline):
		t.Fatal("the upstream's connection was never closed")
	}
	if len(rest) != 0 {
		t.Errorf("the upstream received %d bytes after the request: %q", len(rest), rest)
	}
	rec := expectForwarded(t, "the upgrade request", up, 0, body)
	for _, name := range []string{"Connection", "Upgrade", "X-Hop"} {
		if v := rec.Header.Values(name); len(v) > 0 {
			t.Errorf("the upstream received %s: %q", name, v)
		}
	}
	g.expectLog(mark, logWant{Msg: "webhook not accepted by upstream", Outcome: "upstream_failed", EventID: id,
		Reason: "101 Switching Protocols", Status: http.StatusBadGateway})

	resp := g.post("/ivy", signIvy(secret, body), body)
	expectStatus(t, "the provider's retry", resp, http.StatusOK)
	expectForwarded(t, "the provider's retry", up, 1, body)
	expectDropped(t, "the next copy", g.post("/ivy", signIvy(secret, body), body), "duplicate")
	if n := up.Count(); n != 2 {
		t.Fatalf("the upstream received %d requests, want 2", n)
	}
}

// TestUpstreamTrailersNotSentToTheSender: the upstream answers 200 with a chunked body and
// trailers (one declared, one announced only by http.TrailerPrefix). The sender gets the 200 and
// the body, and neither trailer, as a header or as a trailer.
func TestUpstreamTrailersNotSentToTheSender(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_trailers_")
	g := startGuard(t, ivyGuardRoute(up), map[string]string{"IVY_SECRET": secret})
	up.AnswerWith(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Upstream-Sum")
		w.Header().Set("X-Upstream-Head", "kept")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "accepted")
		w.Header().Set("X-Upstream-Sum", "sum-value")
		w.Header().Set(http.TrailerPrefix+"X-Upstream-Late", "late-value")
	})

	id := newID(t, "evt_trailers_")
	body := eventBody(id, "payment.succeeded")
	req, err := http.NewRequest(http.MethodPost, g.URL("/ivy"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = signIvy(secret, body)
	resp, err := loopbackClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body) // trailers are read with the body's end
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	g.record(testkit.Response{Status: resp.StatusCode, Header: resp.Header, Body: got})
	if resp.StatusCode != http.StatusOK || string(got) != "accepted" {
		t.Fatalf("answer %d %q, want the upstream's 200 \"accepted\"", resp.StatusCode, got)
	}
	expectForwarded(t, "the event", up, 0, body)
	if resp.Header.Get("X-Upstream-Head") != "kept" {
		t.Errorf("the upstream's header was lost: %v", resp.Header)
	}
	for _, name := range []string{"Trailer", "X-Upstream-Sum", "X-Upstream-Late"} {
		if v := resp.Header.Values(name); len(v) > 0 {
			t.Errorf("the sender got header %s: %q", name, v)
		}
		if v := resp.Trailer.Values(name); len(v) > 0 {
			t.Errorf("the sender got trailer %s: %q", name, v)
		}
	}
}

// TestSpoolLoopLogged: a spool whose `to` points back at a guard of the same Caddy (a loop). The
// second guard logs an ERROR naming the header and the event, and handles the event as usual
// (here: forwards it to its upstream).
func TestSpoolLoopLogged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_loop_")
	g := startGuard(t, globalOptions()+site(
		spoolRoute("/in", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n scope spooled\n"+
			" spool {\n  to http://127.0.0.1:"+testkit.HTTPPlaceholder+"/loop\n }\n}"),
		guardRoute("/loop", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n scope looped\n}", up.Addr(), ""),
	), map[string]string{"IVY_SECRET": secret})

	id := newID(t, "evt_loop_")
	body := eventBody(id, "payment.succeeded")
	mark := g.LogMark()
	expectDropped(t, "the event", g.post("/in", signIvy(secret, body), body), "spooled")
	rec := up.WaitArrival(t)
	if rec.Header.Get("Webhook-Guard-Event-Id") != id || !bytes.Equal(rec.Body, body) {
		t.Fatalf("the upstream got %q with Webhook-Guard-Event-Id %q", rec.Body, rec.Header.Get("Webhook-Guard-Event-Id"))
	}
	e := g.expectLog(mark, logWant{
		Msg:      "webhook_guard received a request carrying Webhook-Guard-Event-Id: a spool delivers to a guard, not to its backend; point the spool's to at the backend",
		Provider: "ivy", EventID: id, ClientIP: "127.0.0.1"})
	if e.Level != "error" {
		t.Fatalf("the loop was logged at %s, want error", e.Level)
	}
	g.expectLog(mark, logWant{Msg: "webhook forwarded", Outcome: "forwarded", EventID: id})
	if n := len(g.guardLogs(mark, logWant{Msg: e.Msg})); n != 1 {
		t.Fatalf("%d loop lines, want 1", n)
	}
}

// lineOf is the 1-based line of the n-th (from 1) line of text that contains substr; 0 if none.
func lineOf(text, substr string, n int) int {
	for i, line := range strings.Split(text, "\n") {
		if strings.Contains(line, substr) {
			if n--; n == 0 {
				return i + 1
			}
		}
	}
	return 0
}

// TestLoadErrorsNameTheHandler: `caddy validate` of a guard whose {env.*} secret is unset names
// the guard by its Caddyfile line and route; two guards of one provider and scope with different
// literal secrets are told apart the same way (and no secret is printed).
func TestLoadErrorsNameTheHandler(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	const unset = "WG_EDGES_NAMED_UNSET"
	caddyfile := testkit.GlobalOptions("") + site(
		guardRoute("/other", "ivy {\n secret {env.WG_EDGES_NAMED_SET}\n}", "127.0.0.1:9", ""),
		guardRoute("/ivy", "ivy {\n secret {env."+unset+"}\n scope second\n}", "127.0.0.1:9", ""),
	)
	out := unquoteLog(testkit.Validate(t, caddyfile, "WG_EDGES_NAMED_SET=set-secret-value-0123"))
	line := lineOf(caddyfile, "webhook_guard ivy", 2)
	want := regexp.MustCompile(`webhook_guard ivy at \S*Caddyfile\.validate:` + strconv.Itoa(line) +
		` \(route: path /ivy\): secret #1 "\{env\.` + unset + `\}" resolved to an empty value`)
	if !want.MatchString(out) {
		t.Errorf("caddy validate with an unset secret: want %s in:\n%s", want, out)
	}

	secretA, secretB := newSecret(t, "ivy_named_a_"), newSecret(t, "ivy_named_b_")
	caddyfile = testkit.GlobalOptions("") + site(
		guardRoute("/a", "ivy {\n secret "+secretA+"\n}", "127.0.0.1:9", ""),
		guardRoute("/b", "ivy {\n secret "+secretB+"\n}", "127.0.0.1:9", ""),
	)
	out = unquoteLog(testkit.Validate(t, caddyfile))
	for i, path := range []string{"/a", "/b"} {
		want := regexp.MustCompile(`webhook_guard ivy at \S*Caddyfile\.validate:` + strconv.Itoa(lineOf(caddyfile, "webhook_guard ivy", i+1)) +
			` \(route: path ` + path + `; secret given literally, ` + strconv.Itoa(len(secretA)) + ` characters\)`)
		if !want.MatchString(out) {
			t.Errorf("scope conflict: want %s in:\n%s", want, out)
		}
	}
	if !strings.Contains(out, `remember events under the same scope "ivy"`) {
		t.Errorf("scope conflict: the error does not say why:\n%s", out)
	}
	for _, s := range []string{secretA, secretB} {
		if strings.Contains(out, s) {
			t.Error("caddy validate printed a secret")
		}
	}
}

// TestSpoolGuardWarnsOfDeadReverseProxy: a reverse_proxy after a spool guard in its route never
// runs; Caddy's log warns at load, naming the guard's line and route and the reverse_proxy.
func TestSpoolGuardWarnsOfDeadReverseProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	backend := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_dead_")
	caddyfile := globalOptions() + site(
		"handle /ivy {\nwebhook_guard ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n"+
			" spool {\n  to http://"+backend.Addr()+"\n }\n}\nreverse_proxy "+backend.Addr()+"\n}\n",
	)
	g := startGuard(t, caddyfile, map[string]string{"IVY_SECRET": secret})
	line := strconv.Itoa(lineOf(caddyfile, "webhook_guard ivy", 1))
	e := g.WaitLogSince(t, 0, func(e testkit.LogEntry) bool {
		return e.Logger == guardLogger && e.Level == "warn" && strings.Contains(e.Msg, "never runs")
	})
	if !strings.HasSuffix(e.Field("declared_at"), "Caddyfile:"+line) ||
		!strings.HasSuffix(e.Field("handler"), ":"+line+" (route: path /ivy)") ||
		!strings.Contains(e.Field("never_runs"), "reverse_proxy") {
		t.Fatalf("warning %q (declared_at %q), want it to name line %s, the route and reverse_proxy", e.Msg, e.Field("declared_at"), line)
	}

	// And it is so: the event is spooled and delivered by the spool; the reverse_proxy
	// after the guard never sends it.
	id := newID(t, "evt_dead_")
	body := eventBody(id, "payment.succeeded")
	expectDropped(t, "the event", g.post("/ivy", signIvy(secret, body), body), "spooled")
	rec := backend.WaitArrival(t)
	if rec.Header.Get("Webhook-Guard-Event-Id") != id {
		t.Fatalf("the backend got a request without the spool's header: %v", rec.Header)
	}
}
