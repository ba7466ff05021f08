package ledger

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

// pipeHold holds the flusher in a group's sync, made to fail, while the
// syncer takes the next group: Run hands the next group to the ledger (op2)
// from inside the failed sync, and returns once the syncer has written it,
// or waits to write it until the sync before it is over (the point
// "write-waits-sync"); then the file system loses power, with what the
// test says the disk holds (atCrash). Nothing in the failed group is
// durable.
type pipeHold struct {
	fs      *memFS
	s       *Ledger
	failIn  string // the segment whose sync fails, once armed
	armed   atomic.Bool
	watch   atomic.Bool
	op2     func() error
	op2err  chan error
	written chan struct{} // the next group was written
	waits   chan struct{} // the next group waits for the sync before it
	once    [2]sync.Once
	// atCrash runs just before the power loss (fs.mu not held); wrote
	// says whether the next group was written.
	atCrash func(wrote bool)
}

func newPipeHold(t *testing.T, fs *memFS) *pipeHold {
	h := &pipeHold{fs: fs, op2err: make(chan error, 1), written: make(chan struct{}), waits: make(chan struct{})}
	crashPoint = func(p string) {
		if !h.watch.Load() {
			return
		}
		switch p {
		case "after-write":
			h.once[0].Do(func() { close(h.written) })
		case "write-waits-sync":
			h.once[1].Do(func() { close(h.waits) })
		}
	}
	t.Cleanup(func() { crashPoint = nil })
	fs.failSync = func(name string, _ int) error {
		if h.armed.Load() && name == h.failIn {
			return errors.New("memfs: injected EIO")
		}
		return nil
	}
	return h
}

// onSync is the ledger's Config.OnSync.
func (h *pipeHold) onSync(time.Duration, int) {
	if !h.armed.CompareAndSwap(true, false) {
		return
	}
	h.watch.Store(true)
	go func() { h.op2err <- h.op2() }()
	wrote := false
	select {
	case <-h.written:
		wrote = true
	case <-h.waits:
	}
	h.atCrash(wrote)
	h.fs.crash()
}

// openPipeHold opens a ledger of small segments, checkpointed by hand, on
// a new memFS, with a pipeHold on its syncs.
func openPipeHold(t *testing.T) (*memFS, *pipeHold, Config, *Ledger) {
	t.Helper()
	fs := newMemFS()
	h := newPipeHold(t, fs)
	cfg := Config{Path: filepath.Join(t.TempDir(), "ledger.db"), SweepEvery: time.Hour, SegmentSize: minSegmentSize, fs: fs, manualCheckpoint: true, OnSync: h.onSync}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	return fs, h, cfg, s
}

// spoolRec is a spooled event of body n bytes.
func spoolRec(id string, n int) *spool.Record {
	body := make([]byte, n)
	for i := range body {
		body[i] = byte(i * 7)
	}
	return &spool.Record{Scope: "s", Provider: "ivy", EventID: id, ReceivedAt: time.Now(), Method: "POST", Body: body}
}

// The last group of a segment fails its sync (nothing of it durable) while
// the syncer writes the next group, the first of a new segment, and the
// disk gets that one (the kernel wrote it back, or O_DIRECT sent it) before
// the power loss. Recovery must open the ledger with every acknowledged
// record: the new segment's group followed one never made durable, so it
// was never acknowledged. Before, the syncer wrote into the new segment
// while the sync of the old one's last group ran, and the next Open failed
// ("its records end at N, but the next segment begins at N+2").
func TestJournalRotationWhileTheSyncBeforeFails(t *testing.T) {
	fs, h, cfg, s := openPipeHold(t)
	var err error
	ctx := context.Background()
	const body = 200 << 10
	// Acknowledged events, until the segment has room for one more group
	// of this size, not two.
	var acked []*spool.Record
	var first *segment
	for i := 0; ; i++ {
		sg := s.j.active()
		if first == nil {
			first = sg
		}
		if sg != first {
			t.Fatal("rotated while filling the first segment")
		}
		if i > 0 {
			gsz := sg.off / int64(i) // about; the first group holds the header
			if sg.size-sg.off < 2*gsz {
				break
			}
		}
		rec := spoolRec(fmt.Sprintf("fill_%03d", i), body)
		if _, err := s.Ingest(ctx, rec.EventID, rec, time.Hour); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, rec)
	}
	h.failIn = first.path
	rec2 := spoolRec("next_002", body)
	h.op2 = func() error { _, err := s.Ingest(ctx, rec2.EventID, rec2, time.Hour); return err }
	var next *segment
	h.atCrash = func(wrote bool) {
		// The disk holds the new segment's group (the active segment is
		// the new one: the writer rotated before handing the group over).
		next = s.j.active()
		fs.mu.Lock()
		if n := fs.files[next.path]; n != nil {
			n.synced = append(n.synced[:0], n.data...)
		}
		fs.mu.Unlock()
		t.Logf("the next group written before the sync before it failed: %v", wrote)
	}
	h.armed.Store(true)
	rec1 := spoolRec("last_001", body)
	if _, err := s.Ingest(ctx, rec1.EventID, rec1, time.Hour); err == nil {
		t.Fatal("the group whose sync failed was acknowledged")
	}
	if err := <-h.op2err; err == nil {
		t.Fatal("the group after a failed sync was acknowledged")
	}
	if next == first {
		t.Fatal("the next group did not go to a new segment")
	}
	_ = s.Close()
	fs.restart()
	s, err = Open(cfg)
	if err != nil {
		t.Fatalf("reopen after the power loss: %v", err)
	}
	defer s.Close()
	for _, rec := range acked {
		got, ok, err := s.Get(ctx, rec.ID)
		if err != nil || !ok || got.EventID != rec.EventID || len(got.Body) != body {
			t.Fatalf("acknowledged %s (seq %d): %v %v", rec.EventID, rec.ID, ok, err)
		}
	}
}

// A new segment's first group (its first frame, the segment header, with
// it) fails its sync while the syncer writes the next group into the same
// segment, and the disk gets that one before the power loss. Back up, the
// segment has no header: a spare, with a frame of its own id in its second
// block. Activated again at the same base, its first group acknowledged
// (an event spooled at the same spool seq), and another power loss: the
// stale frame, the delivery of the first life's event, follows that group
// with the seq due and was read as the journal's, deleting the event
// acknowledged. The syncer must not write after a segment's first group
// until that group is durable.
func TestJournalNoWriteAfterAFreshSegmentsFirstGroupUntilSynced(t *testing.T) {
	fs, h, cfg, s := openPipeHold(t)
	var err error
	ctx := context.Background()
	seg := s.j.active()
	if seg == nil || seg.off != 0 {
		t.Fatal("a new ledger has no fresh segment")
	}
	h.failIn = seg.path
	rec1 := spoolRec("evt_one", 100) // header and record: one block
	h.op2 = func() error { return s.Delivered(ctx, rec1.ID, time.Hour) }
	h.atCrash = func(wrote bool) {
		// The disk got every block but the first group's (block 0).
		fs.mu.Lock()
		defer fs.mu.Unlock()
		n := fs.files[seg.path]
		if wrote && isZero(n.data[blockSize:2*blockSize]) {
			t.Error("the second group is not in the segment's second block")
		}
		copy(n.synced[blockSize:], n.data[blockSize:])
		t.Logf("the second group written before the first was synced: %v", wrote)
	}
	h.armed.Store(true)
	if _, err := s.Ingest(ctx, rec1.EventID, rec1, time.Hour); err == nil {
		t.Fatal("the group whose sync failed was acknowledged")
	}
	if err := <-h.op2err; err == nil {
		t.Fatal("the group after a failed sync was acknowledged")
	}
	_ = s.Close()
	fs.restart()

	// Second life: an event spooled (same size, same spool seq) and
	// acknowledged, then a power loss.
	if s, err = Open(cfg); err != nil {
		t.Fatalf("reopen after the first power loss: %v", err)
	}
	rec2 := spoolRec("evt_two", 100)
	if _, err := s.Ingest(ctx, rec2.EventID, rec2, time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Logf("first life's event at spool seq %d, second's at %d", rec1.ID, rec2.ID)
	fs.crash()
	_ = s.Close()
	fs.restart()

	if s, err = Open(cfg); err != nil {
		t.Fatalf("reopen after the second power loss: %v", err)
	}
	defer s.Close()
	got, ok, err := s.Get(ctx, rec2.ID)
	if err != nil || !ok || got.EventID != rec2.EventID {
		t.Fatalf("acknowledged %s (spool seq %d) after the second power loss: found %v (%v), want it spooled", rec2.EventID, rec2.ID, ok, err)
	}
}
