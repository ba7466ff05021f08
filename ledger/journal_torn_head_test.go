package ledger

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

// A group that rotated to a segment made by the writer (the allocator's
// spare, made earlier, has a lower id) is torn at the power loss: only its
// first block (segment header + the start of its first record) reached the
// disk. Recovery truncates there (never acknowledged) and activates the
// spare, whose id is lower, at the same base. Commits are acknowledged into
// it; a second power loss before the checkpoint has recycled the torn
// segment must not make the ledger refuse to open (an adversarial review
// found it refusing, both segments at one base).
func TestJournalTornSegmentHeadThenSpare(t *testing.T) {
	fs := newMemFS()
	s, cfg := openSmallSegments(t, fs)
	ctx := context.Background()
	for i := range 3 { // acknowledged, not yet checkpointed
		key := "before" + strings.Repeat("x", i)
		c, err := s.Claim(ctx, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, c, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	body := make([]byte, 3*minSegmentSize/2)
	for i := range body {
		body[i] = byte(i)
	}
	rec := &spool.Record{Scope: "s", Provider: "ivy", EventID: "big", ReceivedAt: time.Now(), Method: "POST", Body: body}
	if _, err := s.Ingest(ctx, "big", rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	s.j.mu.Lock()
	var torn *segment
	for _, sg := range s.j.segs {
		t.Logf("activated: id %d base %d last %d size %d", sg.id, sg.base, sg.last, sg.size)
		torn = sg
	}
	for _, sg := range s.j.spares {
		t.Logf("spare: id %d size %d", sg.id, sg.size)
	}
	s.j.mu.Unlock()
	fs.crash()
	_ = s.Close()
	fs.restart()
	// The power loss kept only the first block of the big group's write
	// (its sync never returned: the ingest was not acknowledged).
	fs.mu.Lock()
	n := fs.files[torn.path]
	for i := blockSize; i < len(n.synced); i++ {
		n.synced[i], n.data[i] = 0, 0
	}
	fs.mu.Unlock()

	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen after the torn group: %v", err)
	}
	s.j.mu.Lock()
	for _, sg := range s.j.segs {
		t.Logf("after recovery, activated: id %d base %d last %d", sg.id, sg.base, sg.last)
	}
	s.j.mu.Unlock()
	for i := range 3 {
		key := "after" + strings.Repeat("x", i)
		c, err := s.Claim(ctx, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, c, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	fs.crash()
	_ = s.Close()
	fs.restart()
	s, err = Open(cfg)
	if err != nil {
		t.Fatalf("reopen after acknowledged commits: %v", err)
	}
	s.Close()
}
