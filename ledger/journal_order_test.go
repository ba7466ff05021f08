package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// A spare made before a larger segment (a big group did not fit it) is
// activated after that segment, so its id is lower than that of the segment
// written before it: recovery reads the segments in the order of their
// records, not of their ids, and every acknowledged commit is there after a
// crash (an adversarial review found the ledger refusing to open).
func TestJournalSegmentsInRecordOrder(t *testing.T) {
	fs := newMemFS()
	s, cfg := openSmallSegments(t, fs)
	ctx := context.Background()
	body := make([]byte, 3*minSegmentSize/2)
	rec := &spool.Record{Scope: "s", Provider: "ivy", EventID: "big", ReceivedAt: time.Now(), Method: "POST", Body: body}
	if _, err := s.Ingest(ctx, "big", rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := range 3 {
		key := "k" + string(rune('a'+i))
		c, err := s.Claim(ctx, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, c, time.Hour); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	s.j.mu.Lock()
	for _, sg := range s.j.segs {
		t.Logf("activated, in order: id %d base %d last %d size %d", sg.id, sg.base, sg.last, sg.size)
	}
	s.j.mu.Unlock()
	fs.crash()
	_ = s.Close()
	fs.restart()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen after every write was acknowledged: %v", err)
	}
	defer s.Close()
	for _, key := range keys {
		c, err := s.Claim(ctx, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if c.State == dedupe.Fresh {
			t.Errorf("acknowledged commit %s lost", key)
		}
	}
}
