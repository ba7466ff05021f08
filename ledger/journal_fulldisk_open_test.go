package ledger

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// The disk fills up: the spare was taken, no new one could be made. The
// process restarts (or the journal reopens after a failed sync): recovery
// cannot activate a new segment, the ledger opens (new events to be
// refused). The writer's next group must not go to the last segment read
// back (its file is not open, its offset 0: an adversarial review found a
// nil dereference there): it is refused store_full, and once the disk has
// room again the next write makes a segment of its own.
func TestJournalOpenOnFullDiskWithoutSpare(t *testing.T) {
	fs := newMemFS()
	s, cfg := openManual(t, fs, 0)
	path := cfg.Path
	ctx := context.Background()
	for i := range 5 {
		claimCommit(t, s, "k"+strconv.Itoa(i), time.Hour)
	}
	fs.crash()
	_ = s.Close()
	fs.restart()
	// The spare was used up before the disk filled: remove the unused ones.
	s2j := &journal{fs: fs, dir: filepath.Dir(path), name: filepath.Base(path)}
	for _, name := range fs.names() {
		id, _, ok := s2j.segmentID(filepath.Base(name))
		if !ok {
			continue
		}
		data, _ := readSegmentFile(fs, name, false)
		if _, act := readSegmentFrame(data, id); !act {
			_ = fs.Remove(name)
		}
	}
	_ = fs.SyncDir(filepath.Dir(path))
	fs.full = true
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open on a full disk: %v", err)
	}
	t.Logf("Writable: %v", s.Writable())
	s.j.mu.Lock()
	for _, sg := range s.j.segs {
		t.Logf("activated: id %d base %d last %d off %d open %v", sg.id, sg.base, sg.last, sg.off, sg.f != nil)
	}
	s.j.mu.Unlock()
	c, err := s.Claim(ctx, "after", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err = s.Commit(ctx, c, time.Hour); !errors.Is(err, dedupe.ErrFull) {
		t.Fatalf("commit on the full disk: %v, want a store_full refusal (and no crash)", err)
	}
	// Room again: the next write makes a segment of its own and is durable.
	fs.mu.Lock()
	fs.full = false
	fs.mu.Unlock()
	c, err = s.Claim(ctx, "after-room", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatalf("commit once the disk has room: %v", err)
	}
	_ = s.Close()
}
