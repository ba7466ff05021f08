package integration

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// ledgerIvySite is a site with one ivy route and no `store` line: the default store, the
// ledger file in Caddy's data directory.
func ledgerIvySite(up *testkit.Upstream, storeLines string) string {
	return globalOptions() + site(guardRoute("/ivy",
		"ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n"+storeLines+"}", up.Addr(), ""))
}

// ledgerLogPath is where the default ledger lives for a Caddy run in dir.
func ledgerLogPath(dir string) string {
	return filepath.Join(dir, "data", "caddy", "webhook_guard", "ledger.db")
}

// TestLedgerSurvivesRestartAndKill proves the default store is the ledger on disk: an Ivy event
// (Ivy signs no timestamp) delivered before a graceful restart, and one delivered right before
// Caddy is SIGKILLed (the kill follows the guard's 200 at once), are answered 200 duplicate and
// not forwarded by the Caddy started again on the same data directory.
func TestLedgerSurvivesRestartAndKill(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	env := map[string]string{"IVY_SECRET": secret}
	dir := t.TempDir()
	cfg := ledgerIvySite(up, "")

	g := startGuardIn(t, dir, cfg, env)
	if fi, err := os.Stat(ledgerLogPath(dir)); err != nil {
		t.Fatalf("no ledger at the default path: %v", err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("ledger mode %v, want 0600", fi.Mode().Perm())
	}
	restarted := newID(t, "evt_restart_")
	body1 := eventBody(restarted, "payment.succeeded")
	expectStatus(t, "first delivery", g.post("/ivy", signIvy(secret, body1), body1), http.StatusOK)
	expectForwarded(t, "first delivery", up, 0, body1)
	g.Stop()

	g = startGuardIn(t, dir, cfg, env)
	before := up.Count()
	expectDropped(t, "copy after a graceful restart", g.post("/ivy", signIvy(secret, body1), body1), "duplicate")
	expectNotForwarded(t, "copy after a graceful restart", up, before)

	killed := newID(t, "evt_kill_")
	body2 := eventBody(killed, "payment.succeeded")
	expectStatus(t, "delivery before the kill", g.post("/ivy", signIvy(secret, body2), body2), http.StatusOK)
	g.Kill() // right after the 200: the id must already be on disk
	expectForwarded(t, "delivery before the kill", up, before, body2)

	g = startGuardIn(t, dir, cfg, env)
	before = up.Count()
	for _, b := range [][]byte{body1, body2} {
		expectDropped(t, "copy after SIGKILL", g.post("/ivy", signIvy(secret, b), b), "duplicate")
	}
	expectNotForwarded(t, "copies after SIGKILL", up, before)

	// A new event still goes through.
	fresh := eventBody(newID(t, "evt_after_"), "payment.succeeded")
	expectStatus(t, "new event after restart", g.post("/ivy", signIvy(secret, fresh), fresh), http.StatusOK)
	expectForwarded(t, "new event after restart", up, before, fresh)
}

// TestLedgerKeysBoundToSignature proves that for schemes whose event id header is not signed
// (github, shopify, hmac with `event_id header:`), a captured delivery sent again with a new id
// header is a duplicate: the replay key is built from what is signed.
func TestLedgerKeysBoundToSignature(t *testing.T) {
	up := testkit.StartUpstream(t)
	ghSecret, shSecret, hmSecret := newSecret(t, "gh_"), newSecret(t, "shp_"), newSecret(t, "hm_")
	g := startGuard(t, globalOptions()+site(
		guardRoute("/github", "github {\n secret {env.GH}\n}", up.Addr(), ""),
		guardRoute("/shopify", "shopify {\n secret {env.SHP}\n}", up.Addr(), ""),
		guardRoute("/hmac", "hmac {\n secret {env.HM}\n header X-Signature\n event_id header:X-Event-Id\n}", up.Addr(), ""),
	), map[string]string{"GH": ghSecret, "SHP": shSecret, "HM": hmSecret})

	cases := []struct {
		name, path, idHeader string
		sign                 func(body []byte, id string) http.Header
	}{
		{"github", "/github", "X-GitHub-Delivery", func(body []byte, id string) http.Header {
			return headers("X-Hub-Signature-256", "sha256="+hex.EncodeToString(hmacSHA256([]byte(ghSecret), body)),
				"X-GitHub-Event", "push", "X-GitHub-Delivery", id)
		}},
		{"shopify", "/shopify", "X-Shopify-Webhook-Id", func(body []byte, id string) http.Header {
			return headers("X-Shopify-Hmac-Sha256", base64.StdEncoding.EncodeToString(hmacSHA256([]byte(shSecret), body)),
				"X-Shopify-Topic", "orders/paid", "X-Shopify-Webhook-Id", id)
		}},
		{"hmac", "/hmac", "X-Event-Id", func(body []byte, id string) http.Header {
			return headers("X-Signature", hex.EncodeToString(hmacSHA256([]byte(hmSecret), body)), "X-Event-Id", id)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := g.sub(t)
			body := eventBody(newID(t, "evt_bound_"), "orders.paid", `"amount":100`)
			before := up.Count()
			expectStatus(t, "delivery", g.post(tc.path, tc.sign(body, newID(t, "dlv_")), body), http.StatusOK)
			expectForwarded(t, "delivery", up, before, body)
			for i := range 3 {
				what := "replay with a new " + tc.idHeader + " #" + strconv.Itoa(i+1)
				mark := g.LogMark()
				id := newID(t, "forged_")
				expectDropped(t, what, g.post(tc.path, tc.sign(body, id), body), "duplicate")
				expectNotForwarded(t, what, up, before+1)
				// The provider's id stays in the log line.
				g.expectLog(mark, logWant{Provider: tc.name, Outcome: "duplicate", EventID: id})
			}
		})
	}
}

// stripeSign returns a Stripe-Signature header for body at ts.
func stripeSign(secret string, ts int64, body []byte) http.Header {
	t := strconv.FormatInt(ts, 10)
	return headers("Stripe-Signature", "t="+t+",v1="+hex.EncodeToString(hmacSHA256([]byte(secret), []byte(t+"."), body)))
}

// TestLedgerScopes proves that two routes of one provider with different secrets and no
// `scope` fail the config load naming both and asking for a scope, and that with a scope each
// the same event id is forwarded on both routes.
func TestLedgerScopes(t *testing.T) {
	up := testkit.StartUpstream(t)
	a, b := newSecret(t, "whsec_a"), newSecret(t, "whsec_b")
	env := map[string]string{"STRIPE_A": a, "STRIPE_B": b}
	routes := func(scopeA, scopeB string) string {
		return globalOptions() + site(
			guardRoute("/a", "stripe {\n secret {env.STRIPE_A}\n"+scopeA+"}", up.Addr(), ""),
			guardRoute("/b", "stripe {\n secret {env.STRIPE_B}\n"+scopeB+"}", up.Addr(), ""),
		)
	}
	pairs := []string{"STRIPE_A=" + a, "STRIPE_B=" + b}
	out := testkit.Validate(t, routes("", ""), pairs...)
	for _, want := range []string{`scope`, `{env.STRIPE_A}`, `{env.STRIPE_B}`, "give each a `scope`"} {
		if !strings.Contains(out, want) {
			t.Errorf("config without scopes: output lacks %q:\n%s", want, out)
		}
	}
	for _, s := range []string{a, b} {
		if strings.Contains(out, s) {
			t.Errorf("config error shows a secret:\n%s", out)
		}
	}

	g := startGuard(t, routes(" scope tenant_a\n", " scope tenant_b\n"), env)
	id := newID(t, "evt_scoped_")
	body := eventBody(id, "payment_intent.succeeded")
	ts := time.Now().Unix()
	expectStatus(t, "route a", g.post("/a", stripeSign(a, ts, body), body), http.StatusOK)
	expectForwarded(t, "route a", up, 0, body)
	expectStatus(t, "route b", g.post("/b", stripeSign(b, ts, body), body), http.StatusOK)
	expectForwarded(t, "route b", up, 1, body)
	expectDropped(t, "route a again", g.post("/a", stripeSign(a, ts, body), body), "duplicate")
	expectNotForwarded(t, "route a again", up, 2)
}

// TestLedgerFullRefusesNewEvents proves that a store at max_events answers 503 with Retry-After
// to a new event (outcome store_full, logged at ERROR), forwards nothing, warns at 80 %, and
// forgets no remembered id — for the file and the memory store.
func TestLedgerFullRefusesNewEvents(t *testing.T) {
	for _, store := range []string{"file", "memory"} {
		t.Run(store, func(t *testing.T) {
			up := testkit.StartUpstream(t)
			secret := newSecret(t, "ivy_")
			g := startGuard(t, ledgerIvySite(up, " store "+store+" {\n max_events 5\n }\n"), map[string]string{"IVY_SECRET": secret})
			var bodies [][]byte
			mark := g.LogMark()
			for i := range 5 {
				b := eventBody(newID(t, "evt_full_"), "payment.succeeded")
				bodies = append(bodies, b)
				expectStatus(t, "event "+strconv.Itoa(i+1), g.post("/ivy", signIvy(secret, b), b), http.StatusOK)
				expectForwarded(t, "event "+strconv.Itoa(i+1), up, i, b)
			}
			g.WaitLogSince(t, mark, func(e testkit.LogEntry) bool {
				return e.Logger == guardLogger && e.Level == "warn" && strings.Contains(e.Msg, "nearly full")
			})

			mark = g.LogMark()
			extra := eventBody(newID(t, "evt_over_"), "payment.succeeded")
			resp := g.post("/ivy", signIvy(secret, extra), extra)
			expectStatus(t, "event over max_events", resp, http.StatusServiceUnavailable)
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra <= 0 {
				t.Errorf("503 with Retry-After %q", resp.Header.Get("Retry-After"))
			}
			expectNotForwarded(t, "event over max_events", up, 5)
			e := g.expectLog(mark, logWant{Provider: "ivy", Outcome: "store_full", Status: 503})
			if e.Level != "error" {
				t.Errorf("store_full logged at %s, want error", e.Level)
			}
			for i, b := range bodies {
				expectDropped(t, "remembered event "+strconv.Itoa(i+1), g.post("/ivy", signIvy(secret, b), b), "duplicate")
			}
			expectNotForwarded(t, "remembered events", up, 5)
		})
	}
}

// TestLedgerSettling proves the claim is settled by what the upstream did, not by the sender:
// a sender that disconnects while the upstream holds its event does not cause a second delivery
// once the upstream answers 2xx; a guard with nothing after it answers 502 and releases the
// claim; a slow upstream (longer than the lease) gets one delivery out of 16 concurrent copies.
func TestLedgerSettling(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	g := startGuard(t, globalOptions()+site(
		guardRoute("/ivy", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n store file {\n lease 2s\n }\n}", up.Addr(), ""),
		guardRoute("/ivy30", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n}", up.Addr(), ""),
		"handle /alone {\n webhook_guard ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n scope alone\n }\n}\n",
	), map[string]string{"IVY_SECRET": secret})

	t.Run("sender disconnects", func(t *testing.T) {
		g := g.sub(t)
		body := eventBody(newID(t, "evt_gone_"), "payment.succeeded")
		before := up.Count()
		release := up.Block()
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.URL("/ivy30"), strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = signIvy(secret, body)
		done := make(chan error, 1)
		go func() {
			resp, err := loopbackClient.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- err
		}()
		up.WaitArrival(t)
		mark := g.LogMark()
		cancel() // the sender gives up while the upstream holds the event
		if err := <-done; err == nil {
			t.Fatal("the cancelled request got an answer")
		}
		release()
		g.expectLog(mark, logWant{Provider: "ivy", Outcome: "forwarded", Status: 200})
		expectDropped(t, "the provider's retry", g.post("/ivy30", signIvy(secret, body), body), "duplicate")
		if n := up.Count() - before; n != 1 {
			t.Fatalf("the upstream received the event %d times, want 1", n)
		}
	})

	t.Run("nothing after the guard", func(t *testing.T) {
		g := g.sub(t)
		body := eventBody(newID(t, "evt_alone_"), "payment.succeeded")
		for i := range 2 { // the second copy is not 409: the claim was released
			mark := g.LogMark()
			expectStatus(t, "copy "+strconv.Itoa(i+1), g.post("/alone", signIvy(secret, body), body), http.StatusBadGateway)
			g.expectLog(mark, logWant{Provider: "ivy", Outcome: "no_upstream", Status: 502})
		}
	})

	t.Run("slow upstream", func(t *testing.T) {
		g := g.sub(t)
		body := eventBody(newID(t, "evt_slow_"), "payment.succeeded")
		h := signIvy(secret, body)
		before := up.Count()
		release := up.Block()
		defer release()
		const copies = 16
		results := make(chan result, copies)
		send := func() {
			resp, err := g.send(nil, http.MethodPost, "/ivy", h, body)
			results <- result{resp, err}
		}
		go send()
		up.WaitArrival(t)
		// The scenario is time passing: the upstream holds the event for two and a half leases (renewed every lease/3 meanwhile).
		time.Sleep(5 * time.Second)
		for range copies - 1 {
			go send()
		}
		for i := range copies - 1 {
			r := <-results
			if r.err != nil {
				t.Fatal(r.err)
			}
			expectStatus(t, "copy "+strconv.Itoa(i+2)+" while the first is held past its lease", r.resp, http.StatusConflict)
		}
		release()
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		expectStatus(t, "the held copy", r.resp, http.StatusOK)
		if n := up.Count() - before; n != 1 {
			t.Fatalf("the upstream received %d copies, want 1", n)
		}
	})
}

// TestLedgerUnusableFileFailsLoad proves that a ledger that cannot be used fails the config load
// with its path: a corrupt file, and one held by another running Caddy.
func TestLedgerUnusableFileFailsLoad(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	cfg := ledgerIvySite(up, "")
	env := "IVY_SECRET=" + secret

	t.Run("corrupt", func(t *testing.T) {
		dir := t.TempDir()
		path := ledgerLogPath(dir)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		garbage := []byte(strings.Repeat("not a bbolt file\n", 1024))
		if err := os.WriteFile(path, garbage, 0o600); err != nil {
			t.Fatal(err)
		}
		out := testkit.ValidateIn(t, dir, cfg, env)
		if out == "" || !strings.Contains(out, path) {
			t.Fatalf("a corrupt ledger did not fail the load with its path %s:\n%s", path, out)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != string(garbage) {
			t.Errorf("the corrupt ledger was changed (err %v)", err)
		}
	})

	t.Run("held by another Caddy", func(t *testing.T) {
		dir := t.TempDir()
		g := startGuardIn(t, dir, cfg, map[string]string{"IVY_SECRET": secret})
		out := testkit.RunFailsIn(t, dir, cfg, env)
		if !strings.Contains(out, ledgerLogPath(dir)) || !strings.Contains(out, "in use") {
			t.Fatalf("a ledger held by another Caddy did not fail the load with its path and 'in use':\n%s", out)
		}
		// The running Caddy is unharmed.
		body := eventBody(newID(t, "evt_lock_"), "payment.succeeded")
		expectStatus(t, "delivery to the running Caddy", g.post("/ivy", signIvy(secret, body), body), http.StatusOK)
	})
}

// dirState is what a folder holds: each file's size, mode and modification time.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[path] = fi.Mode().String() + " " + strconv.FormatInt(fi.Size(), 10) + " " + fi.ModTime().String()
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// waitJournalSettled waits until g's ledger journal has nothing left to
// apply to the ledger file and has made its spare segment, as /metrics
// says: its files then change only with new events.
func waitJournalSettled(t testing.TB, g *guard) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		_, body := g.AdminGet(t, "/metrics")
		lag, segments := metricLine(body, "caddy_webhook_guard_journal_checkpoint_lag_records"), metricLine(body, "caddy_webhook_guard_journal_segments")
		last = lag + ", " + segments
		if n, err := strconv.ParseFloat(segments, 64); lag == "0" && err == nil && n >= 2 {
			return
		}
	}
	t.Fatalf("the journal did not settle within 30s: checkpoint lag and segments %s", last)
}

// metricLine is the value of the unlabelled series name in a /metrics
// body ("" when absent).
func metricLine(body []byte, name string) string {
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestValidateBesideRunningCaddy: deploy pipelines run `caddy validate` before `caddy reload`,
// on the host where Caddy runs. It passes beside a running Caddy that holds the ledger, and
// writes nothing: the data directory is as it was, and a ledger path that does not exist yet is
// not created. A corrupt ledger still fails it (TestLedgerUnusableFileFailsLoad).
func TestValidateBesideRunningCaddy(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	env := map[string]string{"IVY_SECRET": secret}
	dir := t.TempDir()
	cfg := ledgerIvySite(up, "")
	g := startGuardIn(t, dir, cfg, env)
	body := eventBody(newID(t, "evt_validate_"), "payment.succeeded")
	expectStatus(t, "delivery", g.post("/ivy", signIvy(secret, body), body), http.StatusOK)

	// The running Caddy's own background writes (the checkpoint of the
	// delivery, the journal's spare segment) end before the snapshot.
	// Caddy's own storage upkeep may remove files elsewhere in data/
	// meanwhile; validate must add none, and leave the ledger's alone.
	waitJournalSettled(t, g)
	data := filepath.Join(dir, "data")
	before := dirState(t, data)
	if out := testkit.ValidateIn(t, dir, cfg, "IVY_SECRET="+secret); out != "" {
		t.Fatalf("caddy validate beside the running Caddy failed:\n%s", out)
	}
	after := dirState(t, data)
	for path := range after {
		if _, ok := before[path]; !ok {
			t.Errorf("caddy validate created %s", path)
		}
	}
	for path, st := range before {
		if strings.Contains(path, "webhook_guard") && after[path] != st {
			t.Errorf("caddy validate changed %s: %s → %s", path, st, after[path])
		}
	}

	// A ledger at a path that does not exist: validated, not created.
	fresh := filepath.Join(t.TempDir(), "var", "lib", "ledger.db")
	if out := testkit.ValidateIn(t, dir, ledgerIvySite(up, " store file "+fresh+"\n"), "IVY_SECRET="+secret); out != "" {
		t.Fatalf("caddy validate of a new ledger path failed:\n%s", out)
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(fresh))); !os.IsNotExist(err) {
		t.Errorf("caddy validate created the ledger's folder (%v)", err)
	}

	// The running Caddy is unharmed, and remembers the event.
	expectDropped(t, "copy after the validation", g.post("/ivy", signIvy(secret, body), body), "duplicate")
}

// TestLedgerSaysWhatItHolds: at start, one INFO line per ledger says its path, the ids it
// remembers, its events by state and its paused scopes; a ledger created at a path the config
// gives is a WARN (a typo in the path starts an empty replay memory); a paused scope is a WARN
// at every start (a pause survives restarts). A relative path is refused.
func TestLedgerSaysWhatItHolds(t *testing.T) {
	key := newSecret(t, "ivpay_holds_")
	dir := t.TempDir()
	path := filepath.Join(t.TempDir(), "ledgers", "main.db")
	cfg := globalOptions() + site(spoolRoute("/ivpay", spoolGuard("shop", "127.0.0.1:9", "backoff 1h")+"\n")) // a backend that never answers
	cfg = strings.Replace(cfg, " scope shop\n", " scope shop\n store file "+path+"\n", 1)
	env := map[string]string{"IVPAY_KEY": key}

	g := startGuardIn(t, dir, cfg, env)
	spoolSecrets(g)
	opened := storeLog(t, g, "ledger opened")
	if opened.Level != "info" || opened.Field("path") != path || opened.Field("ids_remembered") != "0" || opened.Field("events_pending") != "0" {
		t.Errorf("ledger opened: %s", opened.Raw)
	}
	created := storeLog(t, g, ledgerCreatedMsg)
	if created.Level != "warn" || created.Field("path") != path {
		t.Errorf("ledger created: %s", created.Raw)
	}
	for i := range 3 {
		pay := newID(t, "pay_holds"+strconv.Itoa(i))
		expectDropped(t, "event", g.post("/ivpay", ivpayHeaders(key), ivpayEvent(pay)), "spooled")
	}
	if status, b := adminDo(t, g, http.MethodPost, "/webhook_guard/spool/pause?scope=shop"); status != http.StatusOK {
		t.Fatalf("pause: %d %s", status, b)
	}
	g.Stop()

	g = startGuardIn(t, dir, cfg, env)
	spoolSecrets(g)
	opened = storeLog(t, g, "ledger opened")
	if opened.Field("ids_remembered") != "3" || opened.Field("events_pending") != "3" || opened.Field("events_dead") != "0" ||
		!strings.Contains(opened.Field("paused_scopes"), "shop") {
		t.Errorf("ledger opened after a restart: %s", opened.Raw)
	}
	paused := storeLog(t, g, "spool deliveries of a scope are paused (a pause survives restarts): its events are accepted and kept, none is delivered until it is resumed")
	if paused.Level != "warn" || paused.Field("scope") != "shop" || paused.Field("events_pending") != "3" || paused.Field("resume") != "caddy webhook-guard spool resume --scope shop" {
		t.Errorf("paused at start: %s", paused.Raw)
	}
	for _, e := range g.Logs() {
		if e.Msg == ledgerCreatedMsg {
			t.Errorf("a 'ledger created' line for an existing ledger: %s", e.Raw)
		}
	}
	// `ledger inspect` reads it beside the running Caddy that holds it.
	ctx, cancel := context.WithTimeout(context.Background(), testkit.CommandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, testkit.CaddyBinary(t), "webhook-guard", "ledger", "inspect", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "read from a copy taken at") ||
		!strings.Contains(string(out), "ids remembered: 0 delivered, 3 accepted by the spool") ||
		!strings.Contains(string(out), "PAUSED: shop\n") || !strings.Contains(string(out), "\nshop   3        0     0 ") {
		t.Errorf("ledger inspect beside the running Caddy: %v\n%s", err, out)
	}
	g.Stop()

	refused := testkit.ValidateIn(t, dir, strings.Replace(cfg, path, "ledgers/main.db", 1), "IVPAY_KEY="+key)
	if !strings.Contains(refused, "path 'ledgers/main.db' is relative: give an absolute path") || !strings.Contains(refused, "Caddyfile") {
		t.Errorf("a relative ledger path: want an error with its line, got:\n%s", refused)
	}
}

// ledgerCreatedMsg is the WARN of a ledger created at a path the config gives.
const ledgerCreatedMsg = "ledger created: no ledger was at the path the config gives, so the replay memory starts empty; if the path has a typo, fix it and reload"

// storeLog waits (bounded) for a log line of the file store with msg.
func storeLog(t *testing.T, g *guard, msg string) testkit.LogEntry {
	t.Helper()
	return g.WaitLogSince(t, 0, func(e testkit.LogEntry) bool {
		return e.Logger == "http.handlers.webhook_guard.stores.file" && e.Msg == msg
	})
}
