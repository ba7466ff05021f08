package ledger

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// A segment whose first group a power loss tore, its first block (the
// header) lost and a later one kept, reads back as a spare holding a frame
// of its own id. Activated again under that id, the old frame (here the
// delivery of an id this life never saw, at the seq due after the new
// first group) followed the new first group and was read as the journal's
// after the next power loss: a phantom "delivered" that would drop the
// event's first real copy as a duplicate. Spares read back get new ids.
func TestJournalSpareWithOwnStaleFrame(t *testing.T) {
	fs := newMemFS()
	path := filepath.Join(t.TempDir(), "ledger.db")
	j := &journal{dir: filepath.Dir(path), name: filepath.Base(path)}
	const id = 5
	ghost := digest(sha256.Sum256([]byte("evt_ghost")))
	stale := (&Ledger{groupBufs: make(chan []byte, 1)}).encodeGroup(&segment{id: id}, []jrecord{{seq: 2, muts: []mutation{{
		kind: mPutReplay, flag: true, digest: ghost,
		replay: replayRecord{state: recordDelivered, expires: time.Now().Add(24 * time.Hour).UnixNano()},
	}}}}, false)
	data := make([]byte, minSegmentSize)
	copy(data[blockSize:], stale) // block 0, the header, lost
	fs.put(j.segmentPath(id), data)

	cfg := Config{Path: path, SweepEvery: time.Hour, SegmentSize: minSegmentSize, fs: fs, manualCheckpoint: true}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a := s.j.active(); a == nil || a.id == id {
		t.Errorf("the spare read back is activated under its old id %d", id)
	}
	ctx := context.Background()
	c, err := s.Claim(ctx, "evt_first", time.Minute)
	if err != nil || c.State != dedupe.Fresh {
		t.Fatalf("claim: %v %v", c.State, err)
	}
	if err := s.Commit(ctx, c, time.Hour); err != nil { // seq 1: the new first group
		t.Fatal(err)
	}
	fs.crash()
	_ = s.Close()
	fs.restart()
	for _, name := range fs.names() {
		if name == j.segmentPath(id) {
			t.Errorf("after a power loss, the segment is back under its old name %s", name)
		}
	}

	if s, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if c, err := s.Claim(ctx, "evt_first", time.Minute); err != nil || c.State != dedupe.Delivered {
		t.Fatalf("the id committed: %v %v, want delivered", c.State, err)
	}
	if c, err := s.Claim(ctx, "evt_ghost", time.Minute); err != nil || c.State != dedupe.Fresh {
		t.Fatalf("an id never committed in this life: %v %v, want fresh (the stale frame was read as the journal's)", c.State, err)
	}
}
