package integration

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// TestLedgerLeaseOutlivesStop proves that a claim held by a Caddy that is stopped (SIGSTOP) for
// longer than its lease still holds when it runs again: a copy of the event sent then is
// answered 409 and does not reach the upstream, and the held delivery ends with one copy
// delivered.
func TestLedgerLeaseOutlivesStop(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	g := startGuard(t, ledgerIvySite(up, " store file {\n lease 1s\n }\n"), map[string]string{"IVY_SECRET": secret})
	body := eventBody(newID(t, "evt_stopped_"), "payment.succeeded")
	h := signIvy(secret, body)
	release := up.Block()
	defer release()
	first := make(chan result, 1)
	go func() {
		resp, err := g.send(nil, http.MethodPost, "/ivy", h, body)
		first <- result{resp, err}
	}()
	up.WaitArrival(t)
	if err := g.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The scenario is time passing: Caddy is frozen for three leases, its renewals with it.
	time.Sleep(3 * time.Second)
	if err := g.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		copyResult := make(chan result, 1)
		go func() {
			resp, err := g.send(nil, http.MethodPost, "/ivy", h, body)
			copyResult <- result{resp, err}
		}()
		select {
		case r := <-copyResult:
			if r.err != nil {
				t.Fatal(r.err)
			}
			expectStatus(t, "copy "+strconv.Itoa(i+1)+" after the stop", r.resp, http.StatusConflict)
		case rec := <-up.Arrived():
			t.Fatalf("copy %d after a stop longer than the lease reached the upstream (%d bytes)", i+1, len(rec.Body))
		}
	}
	release()
	r := <-first
	if r.err != nil {
		t.Fatal(r.err)
	}
	expectStatus(t, "the held delivery", r.resp, http.StatusOK)
	expectDropped(t, "a copy after the delivery", g.post("/ivy", h, body), "duplicate")
	if n := up.Count(); n != 1 {
		t.Fatalf("the upstream received %d copies, want 1", n)
	}
}

// mountTmpfs mounts a tmpfs of size (as mount's size option, "16m") on a new temporary folder,
// unmounted when the test ends; it skips the test where that is not allowed (not root, no
// mount permission in this container).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): the full-disk test needs root or CAP_SYS_ADMIN", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the file system is full, and returns its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	// The last bytes: a write smaller than a chunk may still fit.
	one := make([]byte, 512)
	for {
		if _, err := f.Write(one); err != nil {
			break
		}
	}
	return path
}

// TestLedgerFullDisk proves that a full disk never costs a remembered event: with Caddy's data on
// a small tmpfs filled up, new events are refused 503 with Retry-After (store_full) before they
// are forwarded; every event answered 200 is remembered — its replay is a duplicate, or, for one
// the upstream took at the moment the disk filled (outcome unrecorded, its commit failed), a 409
// while the claim is held, then a duplicate once its commit landed; once room is freed events are
// accepted again, and after a restart every event answered 200 is still a duplicate.
func TestLedgerFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "16m")
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	env := map[string]string{"IVY_SECRET": secret}
	cfg := ledgerIvySite(up, "")
	g := startGuardIn(t, dir, cfg, env)
	mark := g.LogMark()
	filler := fillDisk(t, dir)

	type sent struct {
		id   string
		body []byte
	}
	var accepted []sent
	refused := 0
	for i := 0; refused < 20; i++ {
		if i == 20_000 {
			t.Fatalf("20,000 events on a full disk: %d accepted, none refused", len(accepted))
		}
		id := newID(t, "evt_full_")
		body := eventBody(id, "payment.succeeded")
		resp := g.post("/ivy", signIvy(secret, body), body)
		switch resp.Status {
		case http.StatusOK:
			accepted = append(accepted, sent{id, body})
		case http.StatusServiceUnavailable:
			refused++
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra <= 0 {
				t.Fatalf("503 without Retry-After: %q", resp.Header.Get("Retry-After"))
			}
			e := g.expectLog(mark, logWant{Provider: "ivy", EventID: id, Status: http.StatusServiceUnavailable})
			if outcome := e.Field("outcome"); outcome != "store_full" {
				t.Fatalf("event %s refused with outcome %q (%s), want store_full", id, outcome, e.Field("reason"))
			}
		default:
			t.Fatalf("event %d: status %d, want 200 or 503", i, resp.Status)
		}
	}
	unrecorded := map[string]bool{}
	for _, e := range g.guardLogs(mark, logWant{Outcome: "unrecorded"}) {
		unrecorded[e.Field("event_id")] = true
	}
	t.Logf("full disk: %d events accepted (%d of them unrecorded at first), then %d refused", len(accepted), len(unrecorded), refused)
	if len(accepted) == 0 {
		t.Fatal("no event accepted before the disk was full")
	}
	before := up.Count()
	for _, ev := range accepted {
		resp := g.post("/ivy", signIvy(secret, ev.body), ev.body)
		if unrecorded[ev.id] {
			expectStatus(t, "copy of the unrecorded "+ev.id, resp, http.StatusConflict)
			continue
		}
		expectDropped(t, "replay of "+ev.id+" on the full disk", resp, "duplicate")
	}
	expectNotForwarded(t, "replays on the full disk", up, before)

	// Room again: the ledger says so and takes new events; the unrecorded commits land.
	mark = g.LogMark()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for id := range unrecorded {
		g.WaitLogSince(t, mark, func(e testkit.LogEntry) bool {
			return e.Msg == "replay store: delivered event remembered after a retry" && e.Field("event_id") == id
		})
	}
	fresh := eventBody(newID(t, "evt_room_"), "payment.succeeded")
	for attempt := 1; ; attempt++ {
		mark = g.LogMark()
		resp := g.post("/ivy", signIvy(secret, fresh), fresh)
		if resp.Status == http.StatusOK {
			break
		}
		expectStatus(t, "an event once room is freed, refused while the ledger tries again", resp, http.StatusServiceUnavailable)
		if attempt == 3 {
			t.Fatal("the ledger did not take events again once room was freed")
		}
		g.WaitLogSince(t, mark, func(e testkit.LogEntry) bool {
			return e.Logger == guardLogger+".stores.file" && strings.Contains(e.Msg, "ledger writable again")
		})
	}
	expectForwarded(t, "an event once room is freed", up, before, fresh)

	// Everything answered 200 survives a restart.
	g.Stop()
	g = startGuardIn(t, dir, cfg, env)
	before = up.Count()
	for _, ev := range append(accepted, sent{"evt_room", fresh}) {
		expectDropped(t, "replay of "+ev.id+" after a restart", g.post("/ivy", signIvy(secret, ev.body), ev.body), "duplicate")
	}
	expectNotForwarded(t, "replays after a restart", up, before)
}

// TestLedgerMaxEventsReload proves that a reload applies a changed max_events of the file store at
// once (the ledger stays open across it), and that two handlers of one configuration giving one
// ledger different limits fail the load naming the option and the ledger.
func TestLedgerMaxEventsReload(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	env := map[string]string{"IVY_SECRET": secret}
	withMax := func(n int) string {
		return ledgerIvySite(up, " store file {\n max_events "+strconv.Itoa(n)+"\n }\n")
	}
	g := startGuard(t, withMax(3), env)
	send := func(what string, want int) {
		t.Helper()
		body := eventBody(newID(t, "evt_max_"), "payment.succeeded")
		expectStatus(t, what, g.post("/ivy", signIvy(secret, body), body), want)
	}
	for i := range 3 {
		send("event "+strconv.Itoa(i+1)+" of max_events 3", http.StatusOK)
	}
	send("event 4 of max_events 3", http.StatusServiceUnavailable)

	g.Reload(t, withMax(5))
	send("event 4 after the reload to max_events 5", http.StatusOK)
	send("event 5 after the reload to max_events 5", http.StatusOK)
	send("event 6 after the reload to max_events 5", http.StatusServiceUnavailable)

	g.Reload(t, withMax(4))
	send("an event after the reload to max_events 4 (5 remembered)", http.StatusServiceUnavailable)

	// One ledger, two limits in one configuration: the load fails.
	two := globalOptions() + site(
		guardRoute("/a", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n store file {\n max_events 50\n }\n}", up.Addr(), ""),
		guardRoute("/b", "ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n scope b\n store file {\n max_events 70\n }\n}", up.Addr(), ""),
	)
	out := testkit.Validate(t, two, "IVY_SECRET="+secret)
	for _, want := range []string{"max_events 70", "max_events 50", "ledger.db", "same max_events"} {
		if !strings.Contains(out, want) {
			t.Errorf("two limits for one ledger: the output lacks %q:\n%s", want, out)
		}
	}
}

// TestLedgerJournalMetrics proves the ledger's journal is measured: after events are forwarded
// through the default ledger, /metrics has the journal's sync durations and group sizes (as many
// records as there were commits), its checkpoint lag (back to 0 once applied) and no fsync error.
func TestLedgerJournalMetrics(t *testing.T) {
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	g := startGuard(t, ledgerIvySite(up, ""), map[string]string{"IVY_SECRET": secret})
	const events = 20
	for i := range events {
		body := eventBody(newID(t, "evt_metric_"), "payment.succeeded")
		expectStatus(t, "event "+strconv.Itoa(i+1), g.post("/ivy", signIvy(secret, body), body), http.StatusOK)
	}
	status, body := g.AdminGet(t, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("admin GET /metrics: %d", status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	metric := func(name string) *dto.Metric {
		t.Helper()
		mf, ok := families[name]
		if !ok || len(mf.GetMetric()) != 1 {
			t.Fatalf("/metrics has no single %s", name)
		}
		return mf.GetMetric()[0]
	}
	if n := metric("caddy_webhook_guard_journal_sync_seconds").GetHistogram().GetSampleCount(); n == 0 || n > events {
		t.Errorf("journal_sync_seconds counts %d syncs for %d commits", n, events)
	}
	if sum := metric("caddy_webhook_guard_journal_group_records").GetHistogram().GetSampleSum(); sum != events {
		t.Errorf("journal_group_records sums %v records, want the %d commits", sum, events)
	}
	if v := metric("caddy_webhook_guard_journal_fsync_errors_total").GetCounter().GetValue(); v != 0 {
		t.Errorf("journal_fsync_errors_total = %v, want 0", v)
	}
	for _, name := range []string{"caddy_webhook_guard_journal_checkpoint_lag_records", "caddy_webhook_guard_journal_checkpoint_lag_seconds"} {
		if v := metric(name).GetGauge().GetValue(); v < 0 {
			t.Errorf("%s = %v", name, v)
		}
	}
	// The journal's files: at least the segment in use, and their size.
	if n, size := metric("caddy_webhook_guard_journal_segments").GetGauge().GetValue(), metric("caddy_webhook_guard_journal_segment_bytes").GetGauge().GetValue(); n < 1 || size < n*4096 {
		t.Errorf("journal_segments = %v, journal_segment_bytes = %v", n, size)
	}
}
