package webhookguard

import (
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/spoolapi"
	"github.com/hookguard/caddy-webhook-guard/spool"

	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// startAdminEndpoint runs Caddy's own admin endpoint in this process, on a
// free loopback port, with no apps, its logs as JSON into a file; it returns
// the admin address and the log file. No Caddy binary is built, so this runs
// under -short too.
func startAdminEndpoint(t *testing.T) (addr, logFile string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	logFile = filepath.Join(t.TempDir(), "caddy.log")
	cfg, err := json.Marshal(map[string]any{
		"admin": map[string]any{"listen": addr, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{
			"level":   "DEBUG",
			"writer":  map[string]any{"output": "file", "filename": logFile},
			"encoder": map[string]any{"format": "json"},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("starting Caddy's admin endpoint: %v", err)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping Caddy: %v", err)
		}
	})
	return addr, logFile
}

// runWebhookGuard runs `caddy webhook-guard <args>` from the command this
// package registers (through its import of internal/cli), under a root
// command set up as Caddy's is.
func runWebhookGuard(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	c, ok := caddycmd.Commands()["webhook-guard"]
	if !ok {
		t.Fatal("the webhook-guard command is not registered by importing the module")
	}
	root := &cobra.Command{Use: "caddy", SilenceUsage: true, SilenceErrors: true}
	sub := &cobra.Command{Use: c.Name, Short: c.Short}
	c.CobraFunc(sub)
	root.AddCommand(sub)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"webhook-guard"}, args...))
	err = root.Execute()
	return out.String(), errOut.String(), err
}

// readLogLines returns the JSON log lines of file.
func readLogLines(t *testing.T, file string) []map[string]any {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestSpoolCLIThroughAdminAPI runs every spool subcommand, as registered by
// the module, against Caddy's real admin endpoint serving this module's
// routes over a fake spool: what they print, what they change, what Caddy
// logs, and that no credential shows anywhere.
func TestSpoolCLIThroughAdminAPI(t *testing.T) {
	s := newFakeSpool(adminTestRecords()...)
	defer registerSpool(s.Spool)()
	addr, logFile := startAdminEndpoint(t)

	var printed []string
	run := func(args ...string) (string, error) {
		t.Helper()
		out, stderr, err := runWebhookGuard(t, append(args, "--address", addr)...)
		printed = append(printed, out, stderr)
		if err != nil {
			printed = append(printed, err.Error())
		}
		return out, err
	}

	out, err := run("spool", "list")
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"spool of the Caddy at " + addr + "\n" +
		"ID  SCOPE  PROVIDER  EVENT_ID  STATE    ATTEMPTS  NEXT_ATTEMPT          LAST_ERROR\n" +
		"3   shop   stripe    evt_ccc   dead     25        -                     dial tcp 127.0.0.1:9: connection refused\n" +
		"2   ivpay  ivpay     pay_bbb   dead     25        -                     500 Internal Server Error\n" +
		"1   ivpay  ivpay     pay_aaa   pending  2         2026-11-30T22:00:30Z  502 Bad Gateway\n"
	if out != want {
		t.Errorf("list:\n%s\nwant:\n%s", out, want)
	}
	out, err = run("spool", "list", "--state", "dead", "--scope", "ivpay")
	if err != nil || strings.Count(out, "\n") != 3 || !strings.Contains(out, "\n2   ivpay") {
		t.Errorf("list --state dead --scope ivpay: %v\n%s", err, out)
	}
	out, err = run("spool", "list", "--json", "--state", "pending")
	var list spoolapi.List
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Events) != 1 || list.Events[0].EventID != "pay_aaa" || !list.Events[0].ReceivedAt.Equal(adminTestNow.Add(-10*time.Minute)) {
		t.Errorf("list --json: %v\n%s", err, out)
	}
	// Pages: the next page's command is printed.
	more := regexp.MustCompile(`\nmore: caddy webhook-guard spool list --after (c1\.[0-9a-f.x]+) --limit 2\n$`)
	out, err = run("spool", "list", "--limit", "2")
	m := more.FindStringSubmatch(out)
	if err != nil || m == nil || !strings.HasSuffix(m[1], ".2") || strings.Contains(out, "pay_aaa") {
		t.Errorf("list --limit 2: %v\n%s", err, out)
	}
	for _, after := range []string{m[1], "2"} { // the cursor printed, or an id typed
		out, err = run("spool", "list", "--limit", "2", "--after", after)
		if err != nil || !strings.Contains(out, "pay_aaa") || strings.Contains(out, "more:") {
			t.Errorf("list --limit 2 --after %s: %v\n%s", after, err, out)
		}
	}
	// Two spools (two ledgers, their ids colliding): the printed command
	// carries the opaque cursor as it is, and following it lists every
	// event once, two a page.
	s2 := newFakeSpool(
		spool.Record{ID: 1, Target: "github/github/x", Scope: "github", Provider: "github", EventID: "d-1", State: spool.Dead, ReceivedAt: adminTestNow.Add(-100 * time.Hour)},
		spool.Record{ID: 2, Target: "github/github/x", Scope: "github", Provider: "github", EventID: "d-2", State: spool.Dead, ReceivedAt: adminTestNow.Add(-4 * time.Hour)})
	unregister2 := registerSpool(s2.Spool)
	var shown []string
	args, cursor := []string{"spool", "list", "--limit", "2"}, ""
	for page := 1; ; page++ {
		out, err = run(args...)
		if err != nil || page > 5 {
			t.Fatalf("page %d: %v\n%s", page, err, out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		rows := 0
		for _, line := range lines[2:] {
			if strings.HasPrefix(line, "more: ") {
				break
			}
			shown = append(shown, strings.Fields(line)[3])
			rows++
		}
		if rows > 2 {
			t.Errorf("page %d: %d events\n%s", page, rows, out)
		}
		m := more.FindStringSubmatch(out)
		if m == nil {
			if strings.Contains(out, "more:") {
				t.Fatalf("page %d: the next page's command is not the cursor's\n%s", page, out)
			}
			break
		}
		cursor = m[1]
		args = []string{"spool", "list", "--after", cursor, "--limit", "2"}
	}
	if want := []string{"d-2", "evt_ccc", "pay_aaa", "pay_bbb", "d-1"}; !slices.Equal(shown, want) {
		t.Errorf("pages over two spools listed %q, want %q", shown, want)
	}
	// A reload that removes a spool: the cursor is refused, saying why.
	unregister2()
	_, err = run("spool", "list", "--after", cursor, "--limit", "2")
	if err == nil || !strings.HasSuffix(err.Error(), "HTTP 400: bad after: "+spool.ErrSpoolsChanged.Error()) {
		t.Errorf("a cursor after a reload: %v", err)
	}

	out, err = run("spool", "list", "--event-id", "evt_ccc")
	if err != nil || !strings.Contains(out, "\n3   shop") || strings.Contains(out, "pay_") {
		t.Errorf("list --event-id evt_ccc: %v\n%s", err, out)
	}

	out, err = run("spool", "show", "1")
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{
		"id:              1\n", "event_id:        pay_aaa\n", "received_at:     2026-11-30T21:50:00Z\n",
		"query:           token=[REDACTED]&shop=1\n", "client_ip:       203.0.113.7\n\n",
		"Authorization: [REDACTED]\n", "X-Api-Key: [REDACTED]\n", "X-Shopify-Hmac-Sha256: [REDACTED]\n",
		"Content-Type: application/json\n", "User-Agent: IVPAY/1.0\n",
		"\n\n" + `{"payment_id":"pay_aaa","status":"PAID","note":"é"}` + "\n",
	} {
		if !strings.Contains(out, part) {
			t.Errorf("show 1 lacks %q:\n%s", part, out)
		}
	}
	if out, err = run("spool", "show", "2"); err != nil || !strings.HasSuffix(out, "(4 bytes, not UTF-8: base64)\n//4AeA==\n") {
		t.Errorf("show 2: %v\n%s", err, out)
	}

	if out, err = run("spool", "retry", "2"); err != nil || out != "1 event due for delivery now\n" || s.record(2).State != spool.Pending {
		t.Errorf("retry 2: %v %q, state %s", err, out, s.record(2).State)
	}
	if out, err = run("spool", "retry", "--state", "dead"); err != nil || out != "1 event due for delivery now\n" || s.record(3).State != spool.Pending {
		t.Errorf("retry --state dead: %v %q", err, out)
	}
	if out, err = run("spool", "pause", "--scope", "ivpay"); err != nil || !strings.HasPrefix(out, "deliveries of scope ivpay paused") || !s.isPaused("ivpay") {
		t.Errorf("pause: %v %q", err, out)
	}
	if out, err = run("spool", "list"); err != nil || !strings.Contains(out, "\nPAUSED: ivpay ") || !strings.Contains(out, "pending (paused)") {
		t.Errorf("list while paused: %v\n%s", err, out)
	}
	if out, err = run("spool", "retry", "1"); err != nil || !strings.Contains(out, "but scope ivpay is paused") {
		t.Errorf("retry in a paused scope: %v %q", err, out)
	}
	if _, err = run("spool", "pause", "--scope", "nobody"); err == nil || !strings.Contains(err.Error(), `HTTP 404: no spool delivers scope "nobody"`) {
		t.Errorf("pause of an unknown scope: %v", err)
	}
	if out, err = run("spool", "resume", "--scope", "ivpay"); err != nil || !strings.HasPrefix(out, "deliveries of scope ivpay resumed") || s.isPaused("ivpay") {
		t.Errorf("resume: %v %q", err, out)
	}
	out, err = run("spool", "discard", "3")
	if err != nil || out != "discarded event 3 (scope shop, stripe event evt_ccc, after 25 attempts): it will not be delivered; it is kept until its id is forgotten, and `spool retry 3` undoes this\n" || s.record(3).State != spool.Discarded {
		t.Errorf("discard 3: %v %q", err, out)
	}
	if out, err = run("spool", "show", "3"); err != nil || !strings.Contains(out, "state:           discarded\n") || !strings.Contains(out, "discarded:       2026-11-30T22:00:00Z by ") {
		t.Errorf("show of a discarded event: %v\n%s", err, out)
	}
	if _, err = run("spool", "show", "9"); err == nil || !strings.Contains(err.Error(), "admin API at "+addr+": HTTP 404: no spooled event 9") {
		t.Errorf("show of an unknown event: %v", err)
	}
	if out, err = run("spool", "forget", "--provider", "stripe", "--scope", "shop", "--event-id", "evt_ccc"); err != nil || !strings.Contains(out, "was not remembered") {
		t.Errorf("forget: %v %q", err, out)
	}
	_, err = run("spool", "retry", "--state", "dead", "--scope", "ivpay")
	if err != nil {
		t.Errorf("retry with nothing dead: %v", err)
	}

	// Caddy logged the discard at WARN with what identifies the event.
	var discards int
	lines := readLogLines(t, logFile)
	for _, l := range lines {
		if l["msg"] != "spooled event discarded through the admin API" {
			continue
		}
		discards++
		if l["level"] != "warn" || l["logger"] != "admin.api.webhook_guard" || l["id"] != float64(3) ||
			l["scope"] != "shop" || l["event_id"] != "evt_ccc" {
			t.Errorf("discard log line: %v", l)
		}
	}
	if discards != 1 {
		t.Errorf("%d discard log lines, want 1", discards)
	}

	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) < 10 || strings.Contains(string(raw), adminTestSecret) {
		t.Errorf("%d log lines; a secret in Caddy's log: %v", len(lines), strings.Contains(string(raw), adminTestSecret))
	}
	for _, p := range printed {
		if strings.Contains(p, adminTestSecret) {
			t.Errorf("the CLI printed a secret:\n%s", p)
		}
	}
}
