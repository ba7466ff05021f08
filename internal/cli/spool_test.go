package cli

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// cannedAdmin is an admin endpoint answering each "METHOD /path?query" with
// a canned status and body, recording what it was asked. The module's real
// routes are exercised by the root package's spool CLI tests; these check
// the command line's side: requests, output, errors.
type cannedAdmin struct {
	*httptest.Server
	addr    string // host:port, as --address takes it
	mu      sync.Mutex
	answers map[string]cannedAnswer
	asked   []string
	origins []string
}

type cannedAnswer struct {
	status int
	body   string
}

func newCannedAdmin(t *testing.T, answers map[string]cannedAnswer) *cannedAdmin {
	t.Helper()
	a := &cannedAdmin{answers: answers}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.RequestURI()
		a.mu.Lock()
		a.asked = append(a.asked, key)
		a.origins = append(a.origins, r.Header.Get("Origin"))
		ans, ok := a.answers[key]
		a.mu.Unlock()
		if !ok {
			ans = cannedAnswer{404, `{"error":"no canned answer for ` + key + `"}`}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ans.status)
		w.Write([]byte(ans.body))
	}))
	t.Cleanup(a.Close)
	a.addr = strings.TrimPrefix(a.URL, "http://")
	return a
}

func (a *cannedAdmin) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.asked)
}

// runSpool runs `caddy webhook-guard spool <args>` as Caddy's root command
// does, which silences cobra's usage and error printing.
func runSpool(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := &cobra.Command{Use: "webhook-guard", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newSpoolCommand())
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"spool"}, args...))
	err = root.Execute()
	return out.String(), errOut.String(), err
}

const cannedList = `{"events":[` +
	`{"id":2,"scope":"ivpay","provider":"ivpay","event_id":"pay_bbb","event_type":"PAID","state":"dead","attempts":25,"received_at":"2026-11-27T22:00:00Z","next_attempt_at":null,"last_error":"500 Internal Server Error: the backend's answer was long, and spread over\nseveral lines, and more"},` +
	`{"id":17,"scope":"shop","provider":"stripe","event_id":"evt_\u001b[31mred","event_type":"charge.succeeded","state":"pending","attempts":3,"received_at":"2026-11-30T17:00:00Z","next_attempt_at":"2026-11-30T22:10:00.123+01:00","last_error":""}` +
	`],"paused":[]}` + "\n"

func TestSpoolList(t *testing.T) {
	a := newCannedAdmin(t, map[string]cannedAnswer{
		"GET /webhook_guard/spool":                        {200, cannedList},
		"GET /webhook_guard/spool?scope=ivpay&state=dead": {200, `{"events":[],"paused":["ivpay"]}` + "\n"},
	})
	out, _, err := runSpool(t, "list", "--address", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"spool of the Caddy at " + a.addr + "\n" +
		"ID  SCOPE  PROVIDER  EVENT_ID         STATE    ATTEMPTS  NEXT_ATTEMPT          LAST_ERROR\n" +
		"2   ivpay  ivpay     pay_bbb          dead     25        -                     500 Internal Server Error: the backend's answer was long, an…\n" +
		"17  shop   stripe    evt_\\x1b[31mred  pending  3         2026-11-30T21:10:00Z  -\n"
	if out != want {
		t.Errorf("table:\n%s\nwant:\n%s", out, want)
	}
	if o := a.origins[0]; o != "http://"+a.addr {
		t.Errorf("Origin %q: not sent as caddy's AdminAPIRequest does", o)
	}

	out, _, err = runSpool(t, "list", "--address", a.addr, "--json")
	if err != nil || out != cannedList {
		t.Errorf("--json: %v\n%s", err, out)
	}
	out, _, err = runSpool(t, "list", "--address", a.addr, "--state", "dead", "--scope", "ivpay")
	if err != nil || out != "spool of the Caddy at "+a.addr+"\nPAUSED: ivpay (nothing of it is delivered until: caddy webhook-guard spool resume --scope ...)\nno spooled events (state dead, scope ivpay)\n" {
		t.Errorf("empty list: %v %q", err, out)
	}
	if got := a.requests(); !slices.Equal(got, []string{"GET /webhook_guard/spool", "GET /webhook_guard/spool", "GET /webhook_guard/spool?scope=ivpay&state=dead"}) {
		t.Errorf("requests %q", got)
	}
}

// TestSpoolListPages: the next page's command carries the admin API's next
// as it is (a cursor with several spools), quoted for a shell when it needs
// it, and --after passes it back untouched.
func TestSpoolListPages(t *testing.T) {
	const cursor = "c1.0123456789abcdef.17.x.0"
	page := func(next string) cannedAnswer {
		return cannedAnswer{200, `{"events":[{"id":17,"scope":"shop","provider":"stripe","event_id":"evt_1","event_type":"x","state":"dead","attempts":1,` +
			`"received_at":"2026-11-30T17:00:00Z","next_attempt_at":null,"last_error":""}],"next":"` + next + `","paused":[]}`}
	}
	a := newCannedAdmin(t, map[string]cannedAnswer{
		"GET /webhook_guard/spool?limit=1&state=dead":                      page(cursor),
		"GET /webhook_guard/spool?after=" + cursor + "&limit=1&state=dead": page(`it's odd;\u001b`),
	})
	out, _, err := runSpool(t, "list", "--address", a.addr, "--state", "dead", "--limit", "1")
	if want := "\nmore: caddy webhook-guard spool list --after " + cursor + " --state dead --limit 1\n"; err != nil || !strings.HasSuffix(out, want) {
		t.Errorf("first page: %v\n%s\nwant it to end with %q", err, out, want)
	}
	out, _, err = runSpool(t, "list", "--address", a.addr, "--after", cursor, "--state", "dead", "--limit", "1")
	if want := `more: caddy webhook-guard spool list --after 'it'\''s odd;\x1b' --state dead --limit 1` + "\n"; err != nil || !strings.HasSuffix(out, want) {
		t.Errorf("second page: %v\n%s\nwant it to end with %q", err, out, want)
	}
}

func TestSpoolShow(t *testing.T) {
	a := newCannedAdmin(t, map[string]cannedAnswer{
		"GET /webhook_guard/spool/17": {200, `{"id":17,"scope":"shop","provider":"stripe","event_id":"evt_1","event_type":"charge.succeeded","state":"pending",` +
			`"attempts":3,"received_at":"2026-11-30T17:00:00Z","next_attempt_at":"2026-11-30T22:10:00Z","last_error":"502 Bad Gateway",` +
			`"method":"POST","path":"/hooks/stripe","query":"a=1&token=[REDACTED]","client_ip":"198.51.100.1",` +
			`"headers":{"Stripe-Signature":["[REDACTED]"],"Content-Type":["application/json"],"X-Multi":["1","2\u001b]0;title\u0007"]},` +
			`"body":"{\"id\":\"evt_1\",\n\t\"x\":\"\u202e\"}"}` + "\n"},
		"GET /webhook_guard/spool/18?scope=bin": {200, `{"id":18,"scope":"bin","provider":"hmac","event_id":"e","event_type":"","state":"dead",` +
			`"attempts":1,"received_at":"2026-11-30T17:00:00Z","next_attempt_at":null,"last_error":"","method":"PUT","path":"/","query":"",` +
			`"client_ip":"::1","headers":{},"body_base64":"//4AeA=="}`},
	})
	out, _, err := runSpool(t, "show", "17", "--address", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	want := `id:              17
scope:           shop
provider:        stripe
event_id:        evt_1
event_type:      charge.succeeded
state:           pending
attempts:        3
received_at:     2026-11-30T17:00:00Z
next_attempt_at: 2026-11-30T22:10:00Z
last_error:      502 Bad Gateway
method:          POST
path:            /hooks/stripe
query:           a=1&token=[REDACTED]
client_ip:       198.51.100.1

Content-Type: application/json
Stripe-Signature: [REDACTED]
X-Multi: 1
X-Multi: 2\x1b]0;title\x07

{"id":"evt_1",
	"x":"\u202e"}
`
	if out != want {
		t.Errorf("show:\n%s\nwant:\n%s", out, want)
	}

	out, _, err = runSpool(t, "show", "--scope", "bin", "18", "--address", a.addr)
	if err != nil || !strings.HasSuffix(out, "client_ip:       ::1\n\n\n(4 bytes, not UTF-8: base64)\n//4AeA==\n") {
		t.Errorf("binary body: %v\n%s", err, out)
	}
	out, _, err = runSpool(t, "show", "17", "--address", a.addr, "--json")
	if err != nil || !strings.HasPrefix(out, `{"id":17,`) {
		t.Errorf("--json: %v\n%s", err, out)
	}
}

func TestSpoolRetryDiscardPause(t *testing.T) {
	a := newCannedAdmin(t, map[string]cannedAnswer{
		"POST /webhook_guard/spool/17/retry":                    {200, `{"retried":1}`},
		"POST /webhook_guard/spool/retry?state=dead":            {200, `{"retried":0}`},
		"POST /webhook_guard/spool/retry?scope=shop&state=dead": {200, `{"retried":12}`},
		"DELETE /webhook_guard/spool/17?scope=shop": {200, `{"discarded":{"id":17,"scope":"shop","provider":"stripe","event_id":"evt_1",` +
			`"event_type":"x","state":"dead","attempts":25,"received_at":"2026-11-30T17:00:00Z","next_attempt_at":null,"last_error":""}}`},
		"DELETE /webhook_guard/spool/18": {200, `{"discarded":{"id":18,"scope":"ivy","provider":"ivy","event_id":"evt_2",` +
			`"event_type":"x","state":"pending","attempts":1,"received_at":"2026-11-30T17:00:00Z","next_attempt_at":null,"last_error":""}}`},
		"POST /webhook_guard/spool/pause?scope=shop":  {200, `{"scope":"shop","paused":true}`},
		"POST /webhook_guard/spool/resume?scope=shop": {200, `{"scope":"shop","paused":false}`},
	})
	for _, c := range []struct {
		args []string
		out  string
	}{
		{[]string{"retry", "17"}, "1 event due for delivery now\n"},
		{[]string{"retry", "--state", "dead"}, "0 events due for delivery now\n"},
		{[]string{"retry", "--state", "dead", "--scope", "shop"}, "12 events due for delivery now\n"},
		{[]string{"discard", "17", "--scope", "shop"}, "discarded event 17 (scope shop, stripe event evt_1, after 25 attempts): it will not be delivered; it is kept until its id is forgotten, and `spool retry 17` undoes this\n"},
		{[]string{"discard", "18"}, "discarded event 18 (scope ivy, ivy event evt_2, after 1 attempt): it will not be delivered; it is kept until its id is forgotten, and `spool retry 18` undoes this\n"},
		{[]string{"pause", "--scope", "shop"}, "deliveries of scope shop paused: events are still accepted and spooled, none is delivered until resume\n"},
		{[]string{"resume", "--scope", "shop"}, "deliveries of scope shop resumed: due events are delivered again\n"},
	} {
		out, _, err := runSpool(t, append(c.args, "--address", a.addr)...)
		if err != nil || out != c.out {
			t.Errorf("%q: %v, output %q, want %q", c.args, err, out, c.out)
		}
	}
	want := []string{"POST /webhook_guard/spool/17/retry", "POST /webhook_guard/spool/retry?state=dead",
		"POST /webhook_guard/spool/retry?scope=shop&state=dead", "DELETE /webhook_guard/spool/17?scope=shop", "DELETE /webhook_guard/spool/18",
		"POST /webhook_guard/spool/pause?scope=shop", "POST /webhook_guard/spool/resume?scope=shop"}
	if got := a.requests(); !slices.Equal(got, want) {
		t.Errorf("requests %q\nwant %q", got, want)
	}
}

// TestSpoolUsageErrors: a mistake on the command line is refused before any
// request, naming the flag, with the usage.
func TestSpoolUsageErrors(t *testing.T) {
	a := newCannedAdmin(t, nil)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"retry"}, "--state: give an event <id>, or --state dead"},
		{[]string{"retry", "17", "--state", "dead"}, "--state: retries every event in a state: not with an <id>"},
		{[]string{"retry", "--state", "delivered"}, `--state: "delivered": want pending, dead or discarded`},
		{[]string{"list", "--state", "DEAD"}, `--state: "DEAD": want pending, dead or discarded`},
		{[]string{"list", "--scope", ""}, "--scope: is empty"},
		{[]string{"show", "abc"}, `<id>: "abc" is not an event id`},
		{[]string{"show", "-1"}, "unknown shorthand flag"},
		{[]string{"show"}, "<id>: want one event id"},
		{[]string{"discard", "1", "2"}, "<id>: want one event id, the number the list shows; 2 given"},
		{[]string{"discard", "18446744073709551616"}, "is not an event id"},
		{[]string{"pause"}, "--scope: required"},
		{[]string{"resume", "--scope="}, "--scope: is empty"},
		{[]string{"list", "extra"}, "arguments: 1 given, but this takes flags only"},
		{[]string{"retry", "1", "2"}, "<id>: want at most one event id; 2 given"},
		{[]string{"pause", "--scope", "a", "--state", "dead"}, "unknown flag: --state"},
	} {
		_, stderr, err := runSpool(t, append(c.args, "--address", a.addr)...)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: error %v, want %q", c.args, err, c.msg)
		}
		if !strings.Contains(stderr, "Usage:") {
			t.Errorf("%q: no usage printed:\n%s", c.args, stderr)
		}
	}
	if got := a.requests(); len(got) != 0 {
		t.Errorf("usage errors sent requests: %q", got)
	}
	_, _, err := runSpool(t, "frobnicate")
	if err == nil || !strings.Contains(err.Error(), "use list, show, retry, discard, forget, pause or resume") {
		t.Errorf("unknown subcommand: %v", err)
	}
	out, _, err := runSpool(t)
	if err != nil || !strings.Contains(out, "caddy webhook-guard spool retry --state dead") {
		t.Errorf("spool without a subcommand prints its help: %v\n%s", err, out)
	}
}

func TestSpoolAdminErrors(t *testing.T) {
	a := newCannedAdmin(t, map[string]cannedAnswer{
		"GET /webhook_guard/spool/9":        {404, `{"error":"no spooled event 9 (delivered, discarded, or never spooled)"}` + "\n"},
		"POST /webhook_guard/spool/5/retry": {409, `{"error":"event id 5 is in more than one ledger: add ?scope=<scope> to choose"}`},
		"GET /webhook_guard/spool":          {500, "not json\x1b[2J"},
		"GET /webhook_guard/spool/7":        {200, "{truncated"},
		"POST /webhook_guard/spool/8/retry": {200, `{"other":1}`},
	})
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"show", "9"}, "admin API at " + a.addr + ": HTTP 404: no spooled event 9 (delivered, discarded, or never spooled)"},
		{[]string{"retry", "5"}, "HTTP 409: event id 5 is in more than one ledger: add ?scope=<scope> to choose"},
		{[]string{"list"}, `HTTP 500: not json\x1b[2J`},
		{[]string{"show", "7"}, "reading the admin API's event"},
		{[]string{"retry", "8"}, `reading the admin API's answer "{\"other\":1}"`},
		{[]string{"discard", "3"}, "HTTP 404: no canned answer for DELETE /webhook_guard/spool/3"},
	} {
		out, _, err := runSpool(t, append(c.args, "--address", a.addr)...)
		if err == nil || !strings.Contains(err.Error(), c.msg) || out != "" {
			t.Errorf("%q: error %v, want %q; output %q", c.args, err, c.msg, out)
		}
	}

	// Nothing listening: say where the command looked.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, _, err = runSpool(t, "list", "--address", closed)
	if err == nil || !strings.Contains(err.Error(), "reaching the admin API at "+closed) || !strings.Contains(err.Error(), "--address") {
		t.Errorf("no admin endpoint: %v", err)
	}
	_, _, err = runSpool(t, "list", "--address", "127.0.0.1:1-3")
	if err == nil || !strings.Contains(err.Error(), "invalid admin address") {
		t.Errorf("a bad --address: %v", err)
	}

	// A Caddy without the module answers the mux's plain 404.
	bare := httptest.NewServer(http.NotFoundHandler())
	defer bare.Close()
	_, _, err = runSpool(t, "list", "--address", strings.TrimPrefix(bare.URL, "http://"))
	if err == nil || !strings.Contains(err.Error(), "is it built with the module?") {
		t.Errorf("no module: %v", err)
	}
}

// TestSpoolAdminAddress: without --address, the address is the --config
// file's admin listen, else Caddy's default (localhost:2019, or
// $CADDY_ADMIN read at start), as for `caddy stop`.
func TestSpoolAdminAddress(t *testing.T) {
	a := newCannedAdmin(t, map[string]cannedAnswer{"GET /webhook_guard/spool": {200, `{"events":[],"paused":[]}`}})
	cfg := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(cfg, []byte(`{"admin":{"listen":"`+a.addr+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, err := runSpool(t, "list", "--config", cfg); err != nil || out != "spool of the Caddy at "+a.addr+"\nno spooled events\n" {
		t.Errorf("--config: %v %q", err, out)
	}

	defer func(was string) { caddy.DefaultAdminListen = was }(caddy.DefaultAdminListen)
	caddy.DefaultAdminListen = a.addr // what CADDY_ADMIN sets
	if out, _, err := runSpool(t, "list"); err != nil || out != "spool of the Caddy at "+a.addr+"\nno spooled events\n" {
		t.Errorf("default address: %v %q", err, out)
	}
	if got := a.requests(); len(got) != 2 {
		t.Errorf("requests %q", got)
	}
}

func TestCLIPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain é €":       "plain é €",
		"a\x1b[31mb":      `a\x1b[31mb`,
		"tab\there":       `tab\x09here`,
		"bidi\u202eabc":   `bidi\u202eabc`,
		"bad\xffutf8":     `bad\xffutf8`,
		"nul\x00":         `nul\x00`,
		"del\x7f":         `del\x7f`,
		"line\nbreak\r\n": `line\x0abreak\x0d\x0a`,
	} {
		if got := cliPrintable(in, ""); got != want {
			t.Errorf("cliPrintable(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cliPrintable("a\tb\nc\x1b", "\t\n"); got != "a\tb\nc\\x1b" {
		t.Errorf("keeping tab and newline: %q", got)
	}
	if got := cliShorten("a  b\nc", 60); got != "a b c" {
		t.Errorf("cliShorten: %q", got)
	}
	if got := cliShorten("ééééé", 3); got != "ééé…" {
		t.Errorf("cliShorten cuts runes: %q", got)
	}
	for s, n := range map[string]int{"": 0, "eA==": 1, "eHk=": 2, "eHl6": 3, "//4AeA==": 4} {
		if got := base64Len(s); got != n {
			t.Errorf("base64Len(%q) = %d, want %d", s, got, n)
		}
	}
}

// TestSpoolCommandInCaddyBinary runs the spool subcommands as a user does, in
// a Caddy built from ./cmd/caddy, against another such Caddy's admin
// endpoint, which has the module's admin routes and no spool loaded.
func TestSpoolCommandInCaddyBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	c := testkit.StartCaddy(t, testkit.GlobalOptions(""))
	bin := testkit.CaddyBinary(t)
	run := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if args[0] != "--help" {
			args = append(args, "--address", c.AdminAddr())
		}
		cmd := exec.CommandContext(ctx, bin, append([]string{"webhook-guard", "spool"}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			code = exit.ExitCode()
		case err != nil:
			t.Fatalf("%s %v: %v", bin, args, err)
		}
		return out.String(), errOut.String(), code
	}
	if out, stderr, code := run("list"); code != 0 || out != "spool of the Caddy at "+c.AdminAddr()+"\nno spooled events\n" {
		t.Errorf("list: exit %d, stdout %q\n%s", code, out, stderr)
	}
	if out, stderr, code := run("list", "--json"); code != 0 || out != `{"events":[],"paused":[]}`+"\n" {
		t.Errorf("list --json: exit %d, stdout %q\n%s", code, out, stderr)
	}
	if out, stderr, code := run("show", "1"); code != 1 || out != "" || !strings.Contains(stderr, "HTTP 404: no spooled event 1") {
		t.Errorf("show 1: exit %d, stdout %q\n%s", code, out, stderr)
	}
	if _, stderr, code := run("pause", "--scope", "ivpay"); code != 1 || !strings.Contains(stderr, `no spool delivers scope "ivpay"`) {
		t.Errorf("pause: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := run("retry"); code != 1 || !strings.Contains(stderr, "Usage:") || !strings.Contains(stderr, "--state: give an event <id>") {
		t.Errorf("retry without an id: exit %d\n%s", code, stderr)
	}
	if out, stderr, code := run("--help"); code != 0 || !strings.Contains(out, "discard") {
		t.Errorf("spool --help: exit %d\n%s%s", code, out, stderr)
	}
}
