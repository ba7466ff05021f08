package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// Inspect reads a ledger no one holds directly, and one a running ledger
// holds from a consistent copy, never waiting for the lock or writing.
func TestInspect(t *testing.T) {
	path := copyGolden(t)
	r, err := Inspect(path, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r.Snapshot || r.Schema != Schema || r.Delivered != 3 || r.Accepted != 4 || r.Expired != 0 ||
		len(r.Paused) != 1 || r.Paused[0] != "orders" {
		t.Errorf("report %+v", r)
	}
	if c := r.Counts["shop"]; c.Pending != 2 || c.Dead != 0 {
		t.Errorf("shop %+v", c)
	}
	if c := r.Counts["orders"]; c.Pending != 1 || c.Dead != 1 {
		t.Errorf("orders %+v", c)
	}
	if len(r.Events) != 2 || r.Events[0].ID != 4 || r.Events[1].ID != 3 || r.Events[0].Body != nil || r.Events[0].Header != nil {
		t.Errorf("events %+v", r.Events)
	}

	l, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rec := &spool.Record{Scope: "shop", Provider: "ivy", EventID: "evt_held", ReceivedAt: time.Now(), Method: "POST", Body: []byte("b")}
	if _, err := l.Ingest(context.Background(), dedupe.Key("shop", "ivy", "evt_held"), rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	r, err = Inspect(path, 1) // bbolt's read-only open would wait for the lock
	if err != nil {
		t.Fatalf("Inspect of a held ledger: %v", err)
	}
	if !r.Snapshot || r.Accepted != 5 || r.Counts["shop"].Pending != 3 || len(r.Events) != 1 || r.Events[0].EventID != "evt_held" {
		t.Errorf("report of the held ledger %+v", r)
	}
}
