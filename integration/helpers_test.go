// Package integration runs the real Caddy binary, built with webhook_guard, in front of a real
// recording upstream, and checks what the sender gets back, what reaches the upstream and what
// the module logs. Everything listens on loopback; every wait is bounded and event-driven.
//
// This file holds the helpers shared by every test file of the package. Their names and
// signatures are relied upon by other files: extend them, do not rename them.
package integration

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// guardLogger is the logger name of the webhook_guard handler.
const guardLogger = "http.handlers.webhook_guard"

// guardLogBlock sends the module's log lines, DEBUG included ("webhook forwarded" is a DEBUG
// line), to a log of their own on stderr in JSON. Caddy puts a logger named by a log's include
// into the default log's exclude list, so every line is printed once, and the rest of Caddy stays
// at INFO: Caddy's own DEBUG lines (reverse_proxy's "upstream roundtrip") print the request
// headers, an ivpay X-API-KEY among them, which no test wants in the output.
const guardLogBlock = "log webhook_guard {\n" +
	"\t\toutput stderr\n" +
	"\t\tformat json\n" +
	"\t\tlevel DEBUG\n" +
	"\t\tinclude " + guardLogger + "\n" +
	"\t}"

// globalOptions returns the global options block of the suite: testkit.GlobalOptions (admin on
// {ADMIN}, HTTP on {HTTP} bound to 127.0.0.1, no automatic HTTPS, JSON logs on stderr) plus the
// module's DEBUG log (see guardLogBlock), then each extra option as written, e.g.
// "servers {\n trusted_proxies static 127.0.0.1/32\n}". Do not add `debug`: it would print
// request headers (see guardLogBlock).
func globalOptions(extra ...string) string {
	return testkit.GlobalOptions(strings.Join(append([]string{guardLogBlock}, extra...), "\n\t"))
}

// guardRoute returns a route block for a site: requests to path go through
// `webhook_guard <guard>` and then `reverse_proxy <upstream>`. guard is the directive's
// arguments and block as written, e.g. "ivy {\n secret {env.IVY}\n allow_ips any\n}".
// proxyBlock, when not "", is the body of reverse_proxy's block (header_up lines...).
func guardRoute(path, guard, upstream, proxyBlock string) string {
	proxy := "reverse_proxy " + upstream
	if proxyBlock != "" {
		proxy += " {\n" + proxyBlock + "\n}"
	}
	return "handle " + path + " {\n" +
		"webhook_guard " + guard + "\n" +
		proxy + "\n" +
		"}\n"
}

// site returns the site block `:{HTTP} { <routes> }` followed by a catch-all 404, so a request to
// a path no route handles is answered 404 rather than an empty 200.
func site(routes ...string) string {
	return ":{HTTP} {\n" + strings.Join(routes, "") + "handle {\n respond \"no route\" 404\n}\n}\n"
}

// guard is a running Caddy with webhook_guard routes, started by startGuard. It remembers the
// secrets it was given and every answer its send helpers received, and when the test ends it
// fails the test if any secret appears in Caddy's whole output or in any answer (bodies and
// header values). Its helpers report to the test it was started in; sub gives a view of the same
// Caddy that reports to a subtest.
type guard struct {
	*testkit.Caddy
	t     testing.TB
	watch *secretWatch
}

// secretWatch holds the secrets of one Caddy and the answers it gave, shared by a guard and its
// sub views.
type secretWatch struct {
	mu      sync.Mutex
	secrets []string
	answers []string // bodies and header values of every response received through the helpers
}

// startGuard starts Caddy with caddyfile (see globalOptions, site, guardRoute) and env, a map
// from environment variable names to secret values that the Caddyfile reads as {env.NAME}. Every
// value of env, and every extra value in alsoSecret (a key or secret that reaches Caddy in
// another way), is a secret that must never appear in Caddy's output or in an answer: this is
// checked when the test ends (and whenever checkNoSecrets is called).
func startGuard(t testing.TB, caddyfile string, env map[string]string, alsoSecret ...string) *guard {
	t.Helper()
	return startGuardIn(t, t.TempDir(), caddyfile, env, alsoSecret...)
}

// startGuardIn is startGuard with Caddy's folders in dir (see testkit.StartCaddyIn): a Caddy
// started again in the same dir finds the same ledger.
func startGuardIn(t testing.TB, dir, caddyfile string, env map[string]string, alsoSecret ...string) *guard {
	t.Helper()
	names := make([]string, 0, len(env))
	for name := range env {
		names = append(names, name)
	}
	sort.Strings(names)
	pairs := make([]string, 0, len(env))
	g := &guard{t: t, watch: &secretWatch{}}
	for _, name := range names {
		pairs = append(pairs, name+"="+env[name])
		g.watch.secrets = append(g.watch.secrets, env[name])
	}
	g.watch.secrets = append(g.watch.secrets, alsoSecret...)
	g.Caddy = testkit.StartCaddyIn(t, dir, caddyfile, pairs...)
	// Registered after StartCaddy's own cleanup, so it runs first: stop Caddy to have its whole
	// output, then look for secrets.
	t.Cleanup(func() {
		g.Stop()
		g.checkNoSecrets()
	})
	return g
}

// sub returns a view of g whose helpers report to t (a subtest of g's test). The Caddy, the
// secrets and the record of answers are shared.
func (g *guard) sub(t testing.TB) *guard {
	return &guard{Caddy: g.Caddy, t: t, watch: g.watch}
}

// addSecret registers more values that must never appear in the output or an answer.
func (g *guard) addSecret(values ...string) {
	g.watch.mu.Lock()
	defer g.watch.mu.Unlock()
	g.watch.secrets = append(g.watch.secrets, values...)
}

// checkNoSecrets fails the test if Caddy's output so far, or any answer received through the
// helpers, contains a registered secret. It names where, never the secret.
func (g *guard) checkNoSecrets() {
	g.t.Helper()
	g.watch.mu.Lock()
	secrets := append([]string(nil), g.watch.secrets...)
	answers := append([]string(nil), g.watch.answers...)
	g.watch.mu.Unlock()
	text := g.LogsText()
	if len(answers) == 0 && !strings.Contains(text, "serving initial configuration") {
		g.t.Errorf("checkNoSecrets: nothing to check (no answer recorded, no Caddy output)")
	}
	for i, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(text, s) {
			g.t.Errorf("Caddy's output contains secret #%d", i+1)
		}
		for j, a := range answers {
			if strings.Contains(a, s) {
				g.t.Errorf("answer #%d contains secret #%d", j+1, i+1)
			}
		}
	}
}

// record keeps an answer's body and header values for checkNoSecrets.
func (g *guard) record(resp testkit.Response) {
	var b strings.Builder
	b.Write(resp.Body)
	for k, vs := range resp.Header {
		b.WriteString("\n" + k + ": " + strings.Join(vs, ", "))
	}
	g.watch.mu.Lock()
	g.watch.answers = append(g.watch.answers, b.String())
	g.watch.mu.Unlock()
}

// loopbackClient is the client of post: connections from 127.0.0.1.
var loopbackClient = testkit.ClientFrom("127.0.0.1")

// resetAttempts bounds how often send tries a request whose connection was reset or closed
// before any answer (see send).
const resetAttempts = 3

// unanswered reports whether err, from testkit.Send, says the connection was reset or closed
// before any part of an answer arrived (an error of the round trip itself, not of reading a body).
func unanswered(err error) bool {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) {
		return false
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// send sends one request to path on Caddy with client (nil: from 127.0.0.1) and records the
// answer. The body goes with its exact Content-Length. It is safe to call from any goroutine;
// a transport error is returned, not fatal.
//
// A connection reset or closed before any answer is tried again, at most resetAttempts times in
// all: just after a reload, Caddy's new configuration listens on a new SO_REUSEPORT socket and
// the reload returns before the old one is closed (caddyhttp.App.Stop only waits for the
// shutdowns to start), so a connection the kernel queued on the old socket is reset, or closed by
// the old server as it stops, without a request being served (a served request is answered: the
// grace period is eternal); a sender retrying it would do the same. Were a request served
// twice, the tests' counts of upstream deliveries would show it.
func (g *guard) send(client *http.Client, method, path string, h http.Header, body []byte) (testkit.Response, error) {
	if client == nil {
		client = loopbackClient
	}
	var resp testkit.Response
	var err error
	for range resetAttempts {
		resp, err = testkit.Send(client, method, g.URL(path), h, body)
		if !unanswered(err) {
			break
		}
	}
	if err == nil {
		g.record(resp)
	}
	return resp, err
}

// post POSTs body with headers h to path from 127.0.0.1 and returns the answer; a transport
// error fails the test. Call it from the test's goroutine (other goroutines use send).
func (g *guard) post(path string, h http.Header, body []byte) testkit.Response {
	g.t.Helper()
	return g.postFrom("", path, h, body)
}

// postFrom is post from the loopback address sourceIP ("" for 127.0.0.1).
func (g *guard) postFrom(sourceIP, path string, h http.Header, body []byte) testkit.Response {
	g.t.Helper()
	var client *http.Client
	if sourceIP != "" {
		client = testkit.ClientFrom(sourceIP)
	}
	resp, err := g.send(client, http.MethodPost, path, h, body)
	if err != nil {
		g.t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

// postChunked POSTs body without a Content-Length (Transfer-Encoding: chunked) from 127.0.0.1.
// The answer may come before the whole body is sent (a 413 does); a transport error on a write
// after the answer is not an error.
func (g *guard) postChunked(path string, h http.Header, body []byte) testkit.Response {
	g.t.Helper()
	req, err := http.NewRequest(http.MethodPost, g.URL(path), io.NopCloser(bytes.NewReader(body)))
	if err != nil {
		g.t.Fatal(err)
	}
	req.ContentLength = -1 // unknown: sent chunked
	for k, vs := range h {
		req.Header[k] = append([]string(nil), vs...)
	}
	resp, err := loopbackClient.Do(req)
	if err != nil {
		g.t.Fatalf("chunked POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("chunked POST %s: reading the answer: %v", path, err)
	}
	out := testkit.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	g.record(out)
	return out
}

// reloadForced is Caddy.Reload that reloads even when the configuration is unchanged: Caddy
// skips a /load of the same configuration ("config is unchanged") unless the request carries
// Cache-Control: must-revalidate, as `caddy reload --force` sends. It returns once the new
// configuration serves; a refusal fails the test.
func (g *guard) reloadForced(caddyfile string) {
	g.t.Helper()
	text := strings.NewReplacer(testkit.AdminPlaceholder, g.AdminAddr(),
		testkit.HTTPPlaceholder, strconv.Itoa(g.HTTPPort())).Replace(caddyfile)
	req, err := http.NewRequest(http.MethodPost, g.AdminURL()+"/load", strings.NewReader(text))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	client := &http.Client{Timeout: testkit.AdminTimeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		g.t.Fatalf("forced reload: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("forced reload: status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
}

// logWant describes a module log line; empty fields (and a zero Status) match anything.
type logWant struct {
	Msg      string // exact "msg", e.g. "webhook refused"
	Provider string // exact "provider"
	Outcome  string // exact "outcome": forwarded, duplicate, in_flight, ignored_type, ...
	ClientIP string // exact "client_ip"
	EventID  string // exact "event_id"
	Type     string // exact "event_type"
	Reason   string // a substring of "reason"
	Status   int    // exact "status"
}

// matches reports whether e is a webhook_guard line with the wanted fields.
func (w logWant) matches(e testkit.LogEntry) bool {
	if e.Logger != guardLogger {
		return false
	}
	exact := [][2]string{
		{w.Provider, e.Field("provider")}, {w.Outcome, e.Field("outcome")},
		{w.ClientIP, e.Field("client_ip")}, {w.EventID, e.Field("event_id")},
		{w.Type, e.Field("event_type")}, {w.Msg, e.Msg},
	}
	for _, p := range exact {
		if p[0] != "" && p[0] != p[1] {
			return false
		}
	}
	if w.Reason != "" && !strings.Contains(e.Field("reason"), w.Reason) {
		return false
	}
	return w.Status == 0 || e.Field("status") == strconv.Itoa(w.Status)
}

// String describes the wanted line for failure messages.
func (w logWant) String() string {
	type plain logWant // without the String method
	return fmt.Sprintf("%+v", plain(w))
}

// expectLog waits (bounded, see testkit.LogWaitTimeout) for a webhook_guard log line after
// mark (from LogMark, taken before the request) matching want, and returns it.
func (g *guard) expectLog(mark int, want logWant) testkit.LogEntry {
	g.t.Helper()
	g.t.Logf("waiting for log line %v", want)
	return g.WaitLogSince(g.t, mark, want.matches)
}

// expectLogs waits (bounded) until n webhook_guard log lines after mark match want, and returns
// them in order.
func (g *guard) expectLogs(mark int, want logWant, n int) []testkit.LogEntry {
	g.t.Helper()
	g.t.Logf("waiting for %d log lines %v", n, want)
	var found []testkit.LogEntry
	g.WaitLogSince(g.t, mark, func(e testkit.LogEntry) bool {
		if want.matches(e) {
			found = append(found, e)
		}
		return len(found) >= n
	})
	return found
}

// guardLogs returns the webhook_guard log lines printed so far after mark that match want, without
// waiting: use it for exact counts once the lines expected have been waited for (or Caddy stopped).
func (g *guard) guardLogs(mark int, want logWant) []testkit.LogEntry {
	var found []testkit.LogEntry
	logs := g.Logs()
	for _, e := range logs[min(mark, len(logs)):] {
		if want.matches(e) {
			found = append(found, e)
		}
	}
	return found
}

// expectStatus fails the test unless resp has status want.
func expectStatus(t testing.TB, what string, resp testkit.Response, want int) {
	t.Helper()
	if resp.Status != want {
		t.Fatalf("%s: status %d, want %d (body %q)", what, resp.Status, want, resp.Body)
	}
}

// expectDropped fails the test unless resp is a 200 carrying Webhook-Guard-Outcome: outcome
// (duplicate or ignored_type).
func expectDropped(t testing.TB, what string, resp testkit.Response, outcome string) {
	t.Helper()
	expectStatus(t, what, resp, http.StatusOK)
	if got := resp.Header.Get("Webhook-Guard-Outcome"); got != outcome {
		t.Fatalf("%s: Webhook-Guard-Outcome %q, want %q", what, got, outcome)
	}
}

// expectForwarded fails the test unless exactly one request reached up since it had counted
// before, carrying body byte for byte with a matching Content-Length, and returns it. Call it
// after the answer arrived: reverse_proxy answers only once the upstream did.
func expectForwarded(t testing.TB, what string, up *testkit.Upstream, before int, body []byte) testkit.Recorded {
	t.Helper()
	if n := up.Count(); n != before+1 {
		t.Fatalf("%s: the upstream received %d requests, want 1", what, n-before)
	}
	rec := up.Requests()[before]
	if rec.Method != http.MethodPost {
		t.Errorf("%s: the upstream got method %s", what, rec.Method)
	}
	if !bytes.Equal(rec.Body, body) {
		t.Errorf("%s: the upstream got body %q, want %q", what, rec.Body, body)
	}
	if rec.BodyErr != "" {
		t.Errorf("%s: the upstream failed to read the body: %s", what, rec.BodyErr)
	}
	if rec.ContentLength != int64(len(body)) {
		t.Errorf("%s: the upstream got Content-Length %d, want %d", what, rec.ContentLength, len(body))
	}
	if te := rec.Header.Get("Transfer-Encoding"); te != "" {
		t.Errorf("%s: the upstream got Transfer-Encoding %q", what, te)
	}
	return rec
}

// expectNotForwarded fails the test if any request reached up since it had counted before.
func expectNotForwarded(t testing.TB, what string, up *testkit.Upstream, before int) {
	t.Helper()
	if n := up.Count(); n != before {
		t.Fatalf("%s: the upstream received %d requests, want none", what, n-before)
	}
}

// idSeq makes newID's values unique within the test process.
var idSeq atomic.Int64

// newID returns an event id unique in the test process and across runs: prefix, a counter and
// random hex.
func newID(t testing.TB, prefix string) string {
	t.Helper()
	return prefix + strconv.FormatInt(idSeq.Add(1), 10) + "_" + randomHex(t, 6)
}

// randomHex returns n random bytes as hex.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newSecret returns a random secret: prefix followed by 48 hex characters.
func newSecret(t testing.TB, prefix string) string {
	t.Helper()
	return prefix + randomHex(t, 24)
}

// newWhsec returns a random Standard Webhooks secret, "whsec_" + base64 of 32 bytes.
func newWhsec(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// eventBody returns a JSON event {"id":..,"type":..} followed by extra members (each a JSON
// `"name":value` text), e.g. eventBody("evt_1", "payment.succeeded", `"amount":100`).
func eventBody(id, typ string, extra ...string) []byte {
	members := append([]string{`"id":` + strconv.Quote(id), `"type":` + strconv.Quote(typ)}, extra...)
	return []byte("{" + strings.Join(members, ",") + "}")
}

// headers builds an http.Header from name, value pairs (canonical names).
func headers(pairs ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(pairs); i += 2 {
		h.Add(pairs[i], pairs[i+1])
	}
	return h
}

// withHeaders returns a copy of h with the given name, value pairs set (replacing values).
func withHeaders(h http.Header, pairs ...string) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		out.Set(pairs[i], pairs[i+1])
	}
	return out
}

// hmacSHA256 computes HMAC-SHA256 of the concatenated parts under key, with the standard
// library only (independently of the module's signers).
func hmacSHA256(key []byte, parts ...[]byte) []byte {
	mac := hmac.New(sha256.New, key)
	for _, p := range parts {
		mac.Write(p)
	}
	return mac.Sum(nil)
}

// signIvy returns the headers Ivy sends with body, per its documentation: X-Ivy-Signature, the
// lowercase hex HMAC-SHA256 of the raw body keyed by the secret string.
func signIvy(secret string, body []byte) http.Header {
	return headers("X-Ivy-Signature", hex.EncodeToString(hmacSHA256([]byte(secret), body)))
}

// signStandard returns Standard Webhooks headers for body, per the specification:
// webhook-id, webhook-timestamp and webhook-signature "v1,<base64 HMAC-SHA256 of
// id.timestamp.body keyed by the base64 after whsec_>".
func signStandard(t testing.TB, secret, id string, ts int64, body []byte) http.Header {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatalf("signStandard: the secret is not whsec_<base64>")
	}
	tsText := strconv.FormatInt(ts, 10)
	sig := hmacSHA256(key, []byte(id+"."+tsText+"."), body)
	return headers("webhook-id", id, "webhook-timestamp", tsText,
		"webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(sig))
}
