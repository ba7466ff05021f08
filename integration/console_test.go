package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// The console's tests in a real browser: the built Caddy with guard handlers that spool to a
// backend, a console behind basic_auth that may act, a read-only one, and Debian's Chromium
// driven through chromedp. Names given to loopback addresses by the browser's host rules play
// DNS: evil.test resolves to 127.0.0.1 (a DNS rebinding), attacker.test to 127.0.0.2 (another
// site).

// consoleLogger is the logger of the console's action lines.
const consoleLogger = "http.handlers.webhook_guard_console"

// screenshotsEnv, set to 1, makes TestConsoleInBrowser write its screenshots to docs/.
const screenshotsEnv = "WEBHOOK_GUARD_SCREENSHOTS"

// hashPassword returns the bcrypt hash of password by `caddy hash-password`.
func hashPassword(t testing.TB, password string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.CommandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, testkit.CaddyBinary(t), "hash-password", "--algorithm", "bcrypt", "--bcrypt-cost", "10", "--plaintext", password).Output()
	if err != nil {
		t.Fatalf("caddy hash-password: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// basicAuth is the Authorization value of user and password.
func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// consoleRig is a Caddy with guards and two consoles, a backend and a browser.
type consoleRig struct {
	t         *testing.T
	g         *guard
	b         *testkit.Browser
	backend   *spoolBackend
	key       string
	ivySecret string
	console   string // http://127.0.0.1:<port>: the console that acts (catch-all site)
	readOnly  string // http://127.0.0.1:<port>: the read-only console (site 127.0.0.1)
	opsAuth   string
	viewAuth  string
	shots     string // where screenshots go
}

// startConsoleRig starts the Caddy of the console tests.
func startConsoleRig(t *testing.T) *consoleRig {
	r := &consoleRig{t: t, key: newSecret(t, "ivpay_console_")}
	r.ivySecret = newSecret(t, "ivy_console_")
	ivySecret := r.ivySecret
	opsPassword, viewPassword := newSecret(t, "ops-"), newSecret(t, "view-")
	r.opsAuth, r.viewAuth = basicAuth("ops", opsPassword), basicAuth("viewer", viewPassword)
	r.backend = newSpoolBackend(t)
	r.backend.setAnswer(func(arrival) (int, string) { return http.StatusInternalServerError, "" })
	r.backend.start()
	up := testkit.StartUpstream(t)
	consolePort, readOnlyPort := testkit.FreePort(t), testkit.FreePort(t)
	r.console = "http://127.0.0.1:" + strconv.Itoa(consolePort)
	r.readOnly = "http://127.0.0.1:" + strconv.Itoa(readOnlyPort)
	cfg := globalOptions() + site(
		spoolRoute("/ivpay/shop", spoolGuard("shop", r.backend.addr, "max_attempts 1")),
		spoolRoute("/ivpay/held", spoolGuard("held", r.backend.addr)),
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n}", up.Addr(), ""),
	) + fmt.Sprintf(`:%d {
	basic_auth {
		ops %s
	}
	route {
		webhook_guard_console {
			actions retry discard pause
		}
	}
}
http://127.0.0.1:%d {
	basic_auth {
		viewer %s
	}
	webhook_guard_console
}
`, consolePort, hashPassword(t, opsPassword), readOnlyPort, hashPassword(t, viewPassword))
	r.g = startGuard(t, cfg, map[string]string{"IVPAY_KEY": r.key, "IVY_SECRET": ivySecret},
		opsPassword, viewPassword, r.opsAuth, r.viewAuth)
	spoolSecrets(r.g)
	r.shots = t.TempDir()
	if os.Getenv(screenshotsEnv) == "1" {
		root, err := testkit.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		r.shots = filepath.Join(root, "docs")
	}
	return r
}

// sub is r reporting to t, a subtest.
func (r *consoleRig) sub(t *testing.T) *consoleRig {
	c := *r
	c.t, c.g = t, r.g.sub(t)
	return &c
}

// as makes the browser send auth (an Authorization header) with every request from now on,
// as it does once the user has signed in to basic_auth.
func (r *consoleRig) as(auth string) {
	r.t.Helper()
	if _, err := chromedp.Call(r.b.Context(), network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		r.t.Fatal(err)
	}
}

// open navigates to url and returns the status and the document's HTML, recorded for the
// secret check.
func (r *consoleRig) open(url string) (int, string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.b.Context(), testkit.BrowserTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(url))
	if err != nil {
		r.t.Fatalf("open %s: %v", url, err)
	}
	return int(resp.Status), r.html()
}

// page opens a console page, which must answer 200, and returns its HTML.
func (r *consoleRig) page(url string) string {
	r.t.Helper()
	status, html := r.open(url)
	if status != http.StatusOK {
		r.t.Fatalf("%s: status %d\n%s", url, status, html)
	}
	r.noScriptRan(url)
	return html
}

// html is the current document, recorded for the secret check.
func (r *consoleRig) html() string {
	r.t.Helper()
	html := testkit.BrowserRun(r.t, r.b, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	r.g.record(testkit.Response{Body: []byte(html)})
	return html
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](r *consoleRig, js string) T {
	r.t.Helper()
	return testkit.BrowserRun(r.t, r.b, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// noScriptRan fails the test if a script of a hostile event ran (it sets window.__pwned) or
// left an element the console never makes.
func (r *consoleRig) noScriptRan(where string) {
	r.t.Helper()
	if got := eval[string](r, `String(window.__pwned) + " " + document.images.length + " " + document.scripts.length`); got != "undefined 0 1" {
		r.t.Errorf("%s: __pwned, images, scripts = %s, want undefined 0 1", where, got)
	}
}

// shot takes a full-page screenshot into name (a PNG).
func (r *consoleRig) shot(name string) {
	r.t.Helper()
	png := testkit.BrowserRun(r.t, r.b, chromedp.FullScreenshot(100))
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		r.t.Fatalf("screenshot %s: %d bytes, not a PNG", name, len(png))
	}
	if err := os.WriteFile(filepath.Join(r.shots, name), png, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// click clicks the first element that sel (CSS) finds.
func (r *consoleRig) click(sel string) {
	r.t.Helper()
	r.b.Do(r.t, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// act runs steps that end with an action's button or key (its confirmation included), waits
// for the page the console's script reloads once the action is done, and checks that its
// status region says want.
func (r *consoleRig) act(want string, steps ...chromedp.Action[chromedp.Void]) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.b.Context(), testkit.BrowserTimeout)
	defer cancel()
	if _, err := chromedp.RunResponse(ctx, steps...); err != nil {
		r.t.Fatalf("action (want %q): no reload: %v; status %q", want, err,
			testkit.BrowserRun(r.t, r.b, chromedp.Evaluate[string](`document.getElementById("status").textContent`)))
	}
	if text := eval[string](r, `document.getElementById("status").textContent`); !strings.Contains(text, want) {
		r.t.Fatalf("after the action the status says %q, want %q", text, want)
	}
	r.html()
}

// follow runs steps that navigate (a link, a form) and waits for the new page.
func (r *consoleRig) follow(steps ...chromedp.Action[chromedp.Void]) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.b.Context(), testkit.BrowserTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil || resp.Status != http.StatusOK {
		r.t.Fatalf("navigation: %v %v", resp, err)
	}
}

// clickOn is a click on the first visible element that sel (CSS) finds.
func clickOn(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)
}

// actionLine waits for the console's log line of action after mark and returns it.
func (r *consoleRig) actionLine(mark int, action string) testkit.LogEntry {
	r.t.Helper()
	return r.g.WaitLogSince(r.t, mark, func(e testkit.LogEntry) bool {
		return e.Logger == consoleLogger && e.Msg == "console action" && e.Field("action") == action
	})
}

// events lists the spool through the admin API, by state ("" all).
func (r *consoleRig) events(state string) []spoolEntry {
	q := ""
	if state != "" {
		q = "?state=" + state
	}
	return spoolList(r.t, r.g, q)
}

// postIVPAY sends one IVPAY event to path (spooled) and returns its event id.
func (r *consoleRig) postIVPAY(path, payment string, extra ...string) string {
	r.t.Helper()
	h := withHeaders(ivpayHeaders(r.key), extra...)
	expectDropped(r.t, "event "+payment, r.g.post(path, h, ivpayEvent(payment)), "spooled")
	return ivpayID(payment)
}

// idOf returns the spool id of eventID.
func idOf(t testing.TB, list []spoolEntry, eventID string) string {
	t.Helper()
	e, ok := findEntry(list, eventID)
	if !ok {
		t.Fatalf("event %s not listed", eventID)
	}
	return strconv.FormatUint(e.ID, 10)
}

// TestConsoleInBrowser drives the console in Chromium: the overview, the list and its filter,
// an event's page, a hostile event shown as text, retry, discard (from the keyboard), retry all,
// pause and resume, a phone's screen, the read-only console, a cross-site attack and a DNS
// rebinding; no page holds a secret (checked when the test ends, with Caddy's output).
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy and Chromium")
	}
	r := startConsoleRig(t)
	g := r.g
	mark := g.LogMark()

	// The held scope is paused before its events come: they stay pending.
	if status, body := adminDo(t, g, http.MethodPost, "/webhook_guard/spool/pause?scope=held"); status != http.StatusOK {
		t.Fatalf("pause held: %d %s", status, body)
	}
	var dead []string
	for i := range 3 {
		dead = append(dead, r.postIVPAY("/ivpay/shop", newID(t, fmt.Sprintf("pay_shop%d_", i))))
	}
	held := []string{r.postIVPAY("/ivpay/held", newID(t, "pay_held")), r.postIVPAY("/ivpay/held", newID(t, "pay_held"))}
	for _, id := range dead {
		g.expectLog(mark, logWant{Msg: "spooled webhook is dead", EventID: id})
	}
	// Outcomes of every kind for the chart: forwarded, duplicate, invalid_signature, ip_denied.
	ivyBody := eventBody(newID(t, "evt_console"), "order_updated")
	expectStatus(t, "forged ivy event", g.post("/ivy", signIvy(newSecret(t, "wrong_"), ivyBody), ivyBody), http.StatusUnauthorized)
	expectStatus(t, "ivy event from elsewhere", g.postFrom("127.0.0.2", "/ivy", signIvy(r.ivySecret, ivyBody), ivyBody), http.StatusForbidden)
	var b []byte
	for range 3 {
		b = eventBody(newID(t, "evt_console"), "order_updated")
		expectStatus(t, "signed ivy event", g.post("/ivy", signIvy(r.ivySecret, b), b), http.StatusOK)
	}
	expectDropped(t, "ivy event again", g.post("/ivy", signIvy(r.ivySecret, b), b), "duplicate")
	deadList := r.events("dead")

	// The browser: evil.test is the console's address under another name (DNS rebinding);
	// attacker.test another site on another loopback address.
	r.b = testkit.StartBrowser(t, "MAP evil.test 127.0.0.1", "MAP attacker.test 127.0.0.2")
	r.as(r.opsAuth)

	t.Run("overview", func(t *testing.T) {
		r := r.sub(t)
		html := r.page(r.console + "/")
		text := eval[string](r, `document.querySelector("main").innerText`)
		for _, want := range []string{"shop", "held", "Paused", "Running", "invalid_signature", "ip_denied", "duplicate", "forwarded", "spooled"} {
			if !strings.Contains(text, want) {
				t.Errorf("overview lacks %q", want)
			}
		}
		if got := eval[string](r, `document.querySelector('a[href="./events?state=dead&scope=shop"]').textContent`); got != "3" {
			t.Errorf("shop's dead count %q, want 3", got)
		}
		if got := eval[string](r, `Array.from(document.querySelectorAll("figure.chart rect")).map(b => b.getAttribute("class")).join(" ")`); got != "o-forwarded o-spooled o-duplicate o-invalid-signature o-ip-denied" {
			t.Errorf("the chart's bars %q: want one stack of forwarded, spooled, duplicate, invalid_signature, ip_denied", got)
		}
		if !strings.Contains(html, "does not match any of 1 secret") {
			t.Error("the recent outcomes do not say why the forged event was refused")
		}
		r.shot("console-overview.png")
	})

	t.Run("list and filter", func(t *testing.T) {
		r := r.sub(t)
		r.follow(clickOn(`nav a[href="./events"]`))
		if n := eval[int](r, `document.querySelectorAll("table.events tbody tr").length`); n != 5 {
			t.Errorf("list: %d rows, want 5", n)
		}
		r.b.Do(t, chromedp.SetValue(chromedp.CSS(`select[name="state"]`), "dead"))
		r.follow(clickOn(`form.filters button[type="submit"]`))
		if loc := eval[string](r, `location.search`); loc != "?state=dead&scope=&q=" {
			t.Errorf("the filter's URL query %q", loc)
		}
		states := eval[string](r, `Array.from(document.querySelectorAll("table.events tbody .badge")).map(b => b.textContent).join(",")`)
		if states != "dead,dead,dead" {
			t.Errorf("filtered states %q", states)
		}
		r.html()
		r.noScriptRan("the dead list")
		r.shot("console-events.png")
		r.page(r.console + "/events?q=" + dead[1])
		if n := eval[int](r, `document.querySelectorAll("table.events tbody tr").length`); n != 1 {
			t.Errorf("search by event id: %d rows", n)
		}
	})

	t.Run("event", func(t *testing.T) {
		r := r.sub(t)
		r.page(r.console + "/events?state=dead")
		r.follow(clickOn(`table.events a[href*="events/` + idOf(t, deadList, dead[0]) + `?"]`))
		html := r.html()
		body := eval[string](r, `document.querySelector("pre.body").textContent`)
		if !strings.Contains(body, "\n  \"payment_id\": \"") || !strings.Contains(body, strings.TrimSuffix(dead[0], "/paid")) {
			t.Errorf("body not shown indented: %q", body)
		}
		attempts := eval[string](r, `Array.from(document.querySelectorAll("#attempts ~ .table-wrap tbody tr")).map(r => r.innerText).join("|")`)
		if !strings.Contains(attempts, "500") || strings.Count(attempts, "|") != 0 {
			t.Errorf("attempts %q, want one with status 500", attempts)
		}
		if strings.Contains(html, r.key) || !strings.Contains(html, "Content-Type") {
			t.Error("the event's page shows a credential, or no header")
		}
		r.shot("console-event.png")
	})

	// A hostile event: markup in its event id (so in every listing) and in a header. Spooled
	// after the screenshots, which show ordinary events.
	m := g.LogMark()
	hostile := r.postIVPAY("/ivpay/shop", newID(t, `<script>window.__pwned=1</script><img src=x onerror='window.__pwned=2'>`),
		"X-Note", `<img src=x onerror='window.__pwned=3'>`)
	g.expectLog(m, logWant{Msg: "spooled webhook is dead", EventID: hostile})

	t.Run("hostile event", func(t *testing.T) {
		r := r.sub(t)
		r.page(r.console + "/events/" + idOf(t, r.events("dead"), hostile))
		if got := eval[string](r, `document.querySelector("dd.id").textContent`); got != hostile {
			t.Errorf("event id shown as %q, want the characters %q", got, hostile)
		}
		if got := eval[string](r, `Array.from(document.querySelectorAll("table.headers tr")).map(r => r.innerText).join("\n")`); !strings.Contains(got, `<img src=x onerror='window.__pwned=3'>`) {
			t.Errorf("the hostile header is not shown as text: %q", got)
		}
		for _, page := range []string{"/", "/events", "/events?state=dead", "/recent"} {
			r.page(r.console + page)
		}
	})

	t.Run("retry", func(t *testing.T) {
		r := r.sub(t)
		r.backend.setAnswer(func(arrival) (int, string) { return http.StatusOK, "" })
		m := g.LogMark()
		id := idOf(t, deadList, dead[0])
		r.page(r.console + "/events/" + id + "?scope=shop")
		r.act("retried", clickOn(`button[data-action="retry"]`))
		r.backend.waitAccepted(dead[0])
		line := r.actionLine(m, "retry")
		if line.Field("user") != "ops" || line.Field("ids") != "["+id+"]" || line.Field("count") != "1" || line.Field("scope") != "shop" {
			t.Errorf("retry line: %s", line.Raw)
		}
	})

	t.Run("discard from the keyboard", func(t *testing.T) {
		r := r.sub(t)
		m := g.LogMark()
		id := idOf(t, deadList, dead[1])
		r.page(r.console + "/events/" + id)
		r.b.Do(t, chromedp.Focus(chromedp.CSS(`button[data-action="discard"]`)), chromedp.KeyEvent("\r"))
		if got := eval[string](r, `document.getElementById("confirm").hidden + " " + document.activeElement.id`); got != "false confirm-no" {
			t.Fatalf("confirmation hidden, focus: %s; want it open on Cancel", got)
		}
		r.b.Do(t, chromedp.KeyEvent("\x1b")) // Escape
		if got := eval[string](r, `document.getElementById("confirm").hidden + " " + document.activeElement.dataset.action`); got != "true discard" {
			t.Fatalf("after Escape: %s; want closed, focus back on Discard", got)
		}
		if e, _ := findEntry(r.events(""), dead[1]); e.State != "dead" {
			t.Fatalf("Escape discarded the event: %s", e.State)
		}
		r.b.Do(t, chromedp.KeyEvent("\r"), chromedp.KeyEvent("\t"))
		if got := eval[string](r, `document.activeElement.id`); got != "confirm-yes" {
			t.Fatalf("Tab moved the focus to %q, want confirm-yes", got)
		}
		r.act("discarded", chromedp.KeyEvent("\r"))
		if e, _ := findEntry(r.events(""), dead[1]); e.State != "discarded" {
			t.Errorf("state %s after discard", e.State)
		}
		if page := r.html(); !strings.Contains(page, "by ops (console)") {
			t.Error("the discarded event does not say who discarded it")
		}
		line := r.actionLine(m, "discard")
		if line.Field("user") != "ops" || line.Field("ids") != "["+id+"]" || line.Field("count") != "1" {
			t.Errorf("discard line: %s", line.Raw)
		}
	})

	t.Run("retry all", func(t *testing.T) {
		r := r.sub(t)
		m := g.LogMark()
		r.page(r.console + "/events?state=dead")
		if got := eval[string](r, `document.querySelector('button[data-action="retry-all"]').textContent`); got != "Retry all (2)" {
			t.Fatalf("button %q, want Retry all (2)", got)
		}
		r.click(`button[data-action="retry-all"]`)
		if text := eval[string](r, `document.getElementById("confirm-text").textContent`); !strings.Contains(text, "Retry all 2 dead events?") {
			t.Errorf("confirmation %q", text)
		}
		r.act("2 dead events retried", clickOn("#confirm-yes"))
		r.backend.waitAccepted(dead[2], hostile)
		if line := r.actionLine(m, "retry-all"); line.Field("count") != "2" || line.Field("state") != "dead" || line.Field("user") != "ops" {
			t.Errorf("retry all line: %s", line.Raw)
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		r := r.sub(t)
		m := g.LogMark()
		r.page(r.console + "/")
		r.act("resumed", clickOn(`button[data-action="resume"][data-scope="held"]`))
		r.backend.waitAccepted(held...)
		r.click(`button[data-action="pause"][data-scope="shop"]`)
		r.act("paused", clickOn("#confirm-yes"))
		status, body := g.AdminGet(t, "/webhook_guard/spool")
		if status != http.StatusOK || !strings.Contains(string(body), `"paused":["shop"]`) {
			t.Fatalf("after Pause: %d %s", status, body)
		}
		if got := eval[string](r, `document.querySelector('button[data-action="resume"]').dataset.scope`); got != "shop" {
			t.Errorf("Resume offered for %q", got)
		}
		r.act("resumed", clickOn(`button[data-action="resume"][data-scope="shop"]`))
		if _, body := g.AdminGet(t, "/webhook_guard/spool"); !strings.Contains(string(body), `"paused":[]`) {
			t.Errorf("after Resume: %s", body)
		}
		for _, action := range []string{"resume", "pause"} {
			if line := r.actionLine(m, action); line.Field("user") != "ops" || line.Field("scope") == "" {
				t.Errorf("%s line: %s", action, line.Raw)
			}
		}
	})

	t.Run("phone", func(t *testing.T) {
		r := r.sub(t)
		r.b.Do(t, chromedp.EmulateViewport(390, 844))
		defer r.b.Do(t, chromedp.EmulateViewport(1280, 900))
		for _, page := range []string{"/", "/events", "/events/" + idOf(t, deadList, dead[1]), "/recent"} {
			r.page(r.console + page)
			if got := eval[string](r, `document.documentElement.scrollWidth + " " + window.innerWidth`); got != "390 390" {
				t.Errorf("%s on a phone: page width, screen width = %s (the page scrolls sideways)", page, got)
			}
		}
	})

	// A fresh dead event, which the read-only console and the attacks below must leave dead.
	r.backend.setAnswer(func(arrival) (int, string) { return http.StatusInternalServerError, "" })
	m = g.LogMark()
	victim := r.postIVPAY("/ivpay/shop", newID(t, "pay_victim"))
	g.expectLog(m, logWant{Msg: "spooled webhook is dead", EventID: victim})
	victimID := idOf(t, r.events("dead"), victim)
	stillDead := func(t *testing.T, after string) {
		t.Helper()
		if e, ok := findEntry(r.events(""), victim); !ok || e.State != "dead" {
			t.Fatalf("after %s the event is %+v, want dead", after, e)
		}
	}

	t.Run("read-only console", func(t *testing.T) {
		r := r.sub(t)
		m := g.LogMark()
		r.as(r.viewAuth)
		defer r.as(r.opsAuth)
		for _, page := range []string{"/", "/events?state=dead", "/events/" + victimID} {
			r.page(r.readOnly + page)
			if n := eval[int](r, `document.querySelectorAll("button[data-action]").length`); n != 0 {
				t.Errorf("read-only %s shows %d action buttons", page, n)
			}
		}
		for action, body := range map[string]string{
			"retry": `{"id":"` + victimID + `"}`, "discard": `{"id":"` + victimID + `"}`,
			"retry-all": `{"state":"dead"}`, "pause": `{"scope":"shop"}`,
		} {
			js := `fetch("../actions/` + action + `", {method: "POST", headers: {"Content-Type": "application/json", "Webhook-Guard-Console": "1"}, body: '` + body + `'}).then(r => r.status)`
			if status := eval[int](r, js); status != http.StatusForbidden {
				t.Errorf("read-only %s: status %d, want 403", action, status)
			}
		}
		stillDead(t, "the read-only console's actions")
		refused := g.WaitLogSince(t, m, func(e testkit.LogEntry) bool {
			return e.Logger == consoleLogger && e.Msg == "console action refused" && e.Field("action") == "pause"
		})
		if refused.Field("user") != "viewer" || !strings.Contains(refused.Field("why"), "does not name pause") {
			t.Errorf("refusal line: %s", refused.Raw)
		}
		if n := len(consoleLines(g, m, "console action")); n != 0 {
			t.Errorf("%d actions done by the read-only console", n)
		}
	})

	t.Run("cross-site request", func(t *testing.T) {
		r := r.sub(t)
		m := g.LogMark()
		target := r.console + "/actions/retry-all"
		evil := startEvilSite(t, `<!doctype html><title>evil</title>
<form id="f" method="post" action="`+target+`" enctype="text/plain"><input type="hidden" name='{"state":"dead","x":"' value='"}'></form>
<script>
Promise.allSettled([
  fetch("`+target+`", {method: "POST", mode: "no-cors", credentials: "include", headers: {"Content-Type": "text/plain"}, body: '{"state":"dead"}'}),
  fetch("`+target+`", {method: "POST", credentials: "include", headers: {"Content-Type": "application/json", "Webhook-Guard-Console": "1"}, body: '{"state":"dead"}'}),
]).then(rs => { document.title = "fetched " + rs.map(x => x.status).join(" "); });
</script>`)
		r.open(evil)
		r.b.Do(t, chromedp.Poll[chromedp.Void](`document.title.startsWith("fetched")`))
		// The no-cors POST is sent (and refused by the console, below), its answer withheld from
		// the page (Cross-Origin-Resource-Policy); the one with the console's header needs a
		// preflight, which the console never grants: it is never sent.
		if got := eval[string](r, `document.title`); got != "fetched rejected rejected" {
			t.Errorf("the attacker's fetches: %q, want both rejected", got)
		}
		ctx, cancel := context.WithTimeout(r.b.Context(), testkit.BrowserTimeout)
		resp, err := chromedp.RunResponse(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("f").submit()`))
		cancel()
		if err != nil {
			t.Fatalf("form post: %v", err)
		}
		if resp.Status != http.StatusForbidden || !strings.Contains(r.html(), "cross-origin request refused") {
			t.Errorf("the attacker's form: status %d", resp.Status)
		}
		stillDead(t, "the cross-site requests")
		if n := len(consoleLines(g, m, "console action")); n != 0 {
			t.Errorf("%d actions done by another site", n)
		}
		refused := consoleLines(g, m, "console action refused")
		if len(refused) != 2 || refused[0].Field("why") != "cross-origin request refused" || refused[1].Field("why") != "cross-origin request refused" {
			t.Errorf("refusals: %d lines", len(refused))
			for _, e := range refused {
				t.Log(e.Raw)
			}
		}
	})

	t.Run("rebinding Host", func(t *testing.T) {
		r := r.sub(t)
		m := g.LogMark()
		consolePort := strings.TrimPrefix(r.console, "http://127.0.0.1:")
		status, html := r.open("http://evil.test:" + consolePort + "/events?state=dead")
		if status != http.StatusForbidden || !strings.Contains(html, "Host not allowed") || strings.Contains(html, victim) {
			t.Errorf("rebinding the catch-all console: status %d", status)
		}
		g.WaitLogSince(t, m, func(e testkit.LogEntry) bool {
			return e.Logger == consoleLogger && strings.Contains(e.Msg, "DNS rebinding") && e.Field("host") == "evil.test:"+consolePort
		})
		readOnlyPort := strings.TrimPrefix(r.readOnly, "http://127.0.0.1:")
		r.as(r.viewAuth)
		defer r.as(r.opsAuth)
		if _, html := r.open("http://evil.test:" + readOnlyPort + "/"); strings.Contains(html, "Webhook guard") || strings.Contains(html, victim) {
			t.Error("the console of site 127.0.0.1 answered Host evil.test")
		}
	})

	t.Run("headers", func(t *testing.T) {
		r := r.sub(t)
		for _, tc := range []struct {
			url, auth string
			status    int
		}{
			{r.console + "/", r.opsAuth, 200},
			{r.console + "/events/" + victimID, r.opsAuth, 200},
			{r.console + "/assets/console.js", r.opsAuth, 200},
			{r.console + "/", "", 401},
			{r.console + "/", r.viewAuth, 401},
		} {
			req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := loopbackClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			g.record(testkit.Response{Status: resp.StatusCode, Header: resp.Header, Body: body})
			if resp.StatusCode != tc.status {
				t.Errorf("%s: %d, want %d", tc.url, resp.StatusCode, tc.status)
				continue
			}
			if tc.status != 200 {
				continue
			}
			csp := resp.Header.Get("Content-Security-Policy")
			if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") ||
				resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" || resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("%s: headers %v", tc.url, resp.Header)
			}
		}
	})

	// When the configuration started, each console found itself in its server's routes, behind
	// basic_auth, on a loopback listener: no warning.
	consolePort := strings.TrimPrefix(r.console, "http://127.0.0.1:")
	readOnlyPort := strings.TrimPrefix(r.readOnly, "http://127.0.0.1:")
	seen := map[string]string{}
	for _, e := range g.Logs() {
		if e.Logger == consoleLogger && strings.Contains(e.Msg, "listens beyond loopback") {
			t.Errorf("unexpected warning: %s", e.Raw)
		}
		if e.Logger == consoleLogger && e.Msg == "console serving" {
			seen[e.Field("listen")] = e.Field("found_in_routes") + " " + e.Field("authentication_before") + " " + e.Field("hosts")
		}
	}
	for listen, want := range map[string]string{
		"[127.0.0.1:" + consolePort + "]":  "true true []",
		"[127.0.0.1:" + readOnlyPort + "]": "true true [127.0.0.1]",
	} {
		if seen[listen] != want {
			t.Errorf("console on %s: found, authentication before, hosts = %q, want %q (all: %v)", listen, seen[listen], want, seen)
		}
	}
}

// consoleLines returns the console's log lines with msg after mark.
func consoleLines(g *guard, mark int, msg string) []testkit.LogEntry {
	var out []testkit.LogEntry
	logs := g.Logs()
	for _, e := range logs[min(mark, len(logs)):] {
		if e.Logger == consoleLogger && e.Msg == msg {
			out = append(out, e)
		}
	}
	return out
}

// startEvilSite serves page at http://attacker.test:<port>/ (127.0.0.2 in the browser's host
// rules) and returns that URL.
func startEvilSite(t testing.TB, page string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, page)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://attacker.test:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port) + "/"
}

// TestConsolePagesAcrossLedgersInBrowser: two sites spool into two ledger files, their ids
// colliding. In a real browser the console's events list shows 100 events, newest first, and
// the rest behind its Older link: every event once, in order, the last page without Older.
// After a reload that adds a ledger, the Older link of before is refused with what to do.
func TestConsolePagesAcrossLedgersInBrowser(t *testing.T) {
	testkit.SkipIfShort(t, "builds and runs Caddy and Chromium")
	key := newSecret(t, "ivpay_console_pages_")
	password := newSecret(t, "ops-")
	auth := basicAuth("ops", password)
	backend := newSpoolBackend(t) // not started: every event stays pending
	dir := t.TempDir()
	ledgerGuard := func(scope, file string) string { return ledgerSpoolGuard(dir, backend.addr, scope, file) }
	port := testkit.FreePort(t)
	console := "http://127.0.0.1:" + strconv.Itoa(port)
	consoleSite := fmt.Sprintf(":%d {\n\tbasic_auth {\n\t\tops %s\n\t}\n\twebhook_guard_console\n}\n", port, hashPassword(t, password))
	routes := []string{spoolRoute("/a", ledgerGuard("site_a", "a.db")), spoolRoute("/b", ledgerGuard("site_b", "b.db"))}
	g := startGuard(t, globalOptions()+site(routes...)+consoleSite, map[string]string{"IVPAY_KEY": key}, password, auth)
	spoolSecrets(g)
	const events = 105 // a page holds 100
	want := spoolOverTwo(t, g, key, "pay_cpage", events)
	r := &consoleRig{t: t, g: g, key: key}
	r.b = testkit.StartBrowser(t)
	r.as(auth)
	shown := func() []string {
		return eval[[]string](r, `Array.from(document.querySelectorAll("table.events td[data-label='Event id']")).map(td => td.textContent.trim())`)
	}
	r.page(console + "/events")
	first := shown()
	if len(first) != 100 || !slices.Equal(first, want[:100]) {
		t.Fatalf("first page: %d events, want the newest 100 of %d in order; first %q", len(first), events, first[:min(3, len(first))])
	}
	if caption := eval[string](r, `document.querySelector("table.events caption").textContent`); !strings.Contains(caption, "merged from several spools") {
		t.Errorf("caption %q", caption)
	}
	older := eval[string](r, `document.querySelector("a[rel=next]").href`)
	r.follow(clickOn(`a[rel="next"]`))
	r.noScriptRan("the second page")
	if second := shown(); !slices.Equal(second, want[100:]) {
		t.Errorf("second page: %q, want %q", second, want[100:])
	}
	if n := eval[int](r, `document.querySelectorAll("a[rel=next]").length`); n != 0 {
		t.Error("the last page has an Older link")
	}
	if !strings.HasPrefix(eval[string](r, `location.href`), older) {
		t.Errorf("Older led to %s, want %s", eval[string](r, `location.href`), older)
	}

	g.Reload(t, globalOptions()+site(append(routes, spoolRoute("/c", ledgerGuard("site_c", "c.db")))...)+consoleSite)
	status, html := r.open(older)
	if status != http.StatusBadRequest || !strings.Contains(html, "made before a config reload changed the spools, or with other filters: start again from the newest events") {
		t.Errorf("the Older link of before the reload: status %d\n%s", status, html)
	}
}
