package ledger

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// goldenLedger is a ledger written by release 0.1.0 (see TestGoldenLedger):
// three delivered ids; in scope shop, two pending ivy events (one with two
// failed attempts); in scope orders, a dead ivpay event and a pending one
// with a binary body; scope orders paused. Every window runs 50 years.
const goldenLedger = "../testdata/ledger-0.1.0.db"

// copyGolden copies the golden ledger into a temporary folder.
func copyGolden(t *testing.T) string {
	t.Helper()
	src, err := os.Open(goldenLedger)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(t.TempDir(), "ledger.db")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// An upgraded build reads every remembered id and every spooled event of a
// ledger written by 0.1.0, and the on-disk format is unchanged.
func TestGoldenLedger(t *testing.T) {
	s, _ := newTestFile(t, Config{Path: copyGolden(t)})
	for _, id := range []string{"evt_delivered_1", "evt_delivered_2", "evt_delivered_3"} {
		dedupetest.MustClaim(t, s, dedupe.Key("ivy", "ivy", id), time.Minute, dedupe.Delivered)
	}
	for _, k := range []string{dedupe.Key("shop", "ivy", "evt_pending_1"), dedupe.Key("shop", "ivy", "evt_failed_1"),
		dedupe.Key("orders", "ivpay", "evt_dead_1"), dedupe.Key("orders", "ivpay", "evt_binary_1")} {
		dedupetest.MustClaim(t, s, k, time.Minute, dedupe.Delivered) // accepted
	}
	dedupetest.MustClaim(t, s, dedupe.Key("ivy", "ivy", "evt_new"), time.Minute, dedupe.Fresh)
	if n, _ := s.Usage(); n != 8 { // 7 records and the claim just made
		t.Errorf("usage %d, want 8", n)
	}

	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	pending, err := listAll(t, s, spool.Pending, "")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		seq       uint64
		scope, id string
		state     spool.State
		attempts  int
		lastError string
		nextAt    time.Time
	}
	var got []row
	for _, r := range pending {
		got = append(got, row{r.ID, r.Scope, r.EventID, r.State, r.Attempts, r.LastError, r.NextAt})
	}
	want := []row{ // newest first
		{4, "orders", "evt_binary_1", spool.Pending, 0, "", base},
		{2, "shop", "evt_failed_1", spool.Pending, 2, "status 503", base.Add(30 * time.Second)},
		{1, "shop", "evt_pending_1", spool.Pending, 0, "", base},
	}
	if len(got) != len(want) {
		t.Fatalf("pending = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].seq != want[i].seq || got[i].scope != want[i].scope || got[i].id != want[i].id || got[i].state != want[i].state ||
			got[i].attempts != want[i].attempts || got[i].lastError != want[i].lastError || !got[i].nextAt.Equal(want[i].nextAt) {
			t.Errorf("pending[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	dead, err := listAll(t, s, spool.Dead, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].ID != 3 || dead[0].EventID != "evt_dead_1" || dead[0].Provider != "ivpay" ||
		dead[0].Attempts != 25 || dead[0].LastError != "status 500" || !dead[0].DiedAt.Equal(base) {
		t.Fatalf("dead = %+v", dead)
	}
	ctx := context.Background()
	rec, ok, err := s.Get(ctx, 1)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if string(rec.Body) != `{"id":"evt_pending_1","type":"order_updated","amount":100}` || rec.EventType != "order_updated" ||
		rec.Method != "POST" || rec.Path != "/hooks/ivy" || rec.Query != "tenant=7" || rec.ClientIP != "192.0.2.10" ||
		!rec.ReceivedAt.Equal(base) || rec.Header["X-Ivy-Signature"][0] != "0011aabb" || rec.Header["Content-Type"][0] != "application/json" {
		t.Fatalf("record 1 = %+v", rec)
	}
	if rec, _, _ := s.Get(ctx, 4); string(rec.Body) != "\x00\xff binary" {
		t.Fatalf("record 4 body = %q", rec.Body)
	}
	paused, err := s.Paused(ctx)
	if err != nil || len(paused) != 1 || !paused["orders"] {
		t.Fatalf("paused = %v, %v", paused, err)
	}
	// The due order is the old one (scope orders paused, then not).
	if due := dueOrder(t, s, base.Add(time.Minute)); len(due) != 2 || due[0] != 1 || due[1] != 2 {
		t.Errorf("due order %v, want 1 2 (orders paused)", due)
	}
	if err := s.SetPaused(ctx, "orders", false); err != nil {
		t.Fatal(err)
	}
	if due := dueOrder(t, s, base.Add(time.Minute)); len(due) != 3 || due[0] != 1 || due[1] != 4 || due[2] != 2 {
		t.Errorf("due order %v, want 1 4 2", due)
	}
	// It stays writable: a pending event delivered is gone, its id delivered.
	if err := s.Delivered(ctx, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(ctx, 1); ok {
		t.Fatal("record 1 still there after delivery")
	}
}
