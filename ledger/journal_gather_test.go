package ledger

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// openGathering opens a ledger whose groups wait up to wait for the
// deliveries in flight, and returns it with the sizes of the groups synced.
func openGathering(t *testing.T, wait time.Duration) (*Ledger, func() []int) {
	t.Helper()
	var mu sync.Mutex
	var groups []int
	s, err := Open(Config{
		Path: filepath.Join(t.TempDir(), "ledger.db"), SweepEvery: time.Hour, GroupWait: wait,
		OnSync: func(_ time.Duration, records int) {
			mu.Lock()
			groups = append(groups, records)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), groups...)
	}
}

// claimFresh claims n new keys.
func claimFresh(t *testing.T, s *Ledger, n int) []dedupe.Claim {
	t.Helper()
	claims := make([]dedupe.Claim, n)
	for i := range claims {
		c, err := s.Claim(context.Background(), fmt.Sprintf("shop|ivy|evt_%d", i), time.Hour)
		if err != nil || c.State != dedupe.Fresh {
			t.Fatalf("claim %d: %+v, %v", i, c, err)
		}
		claims[i] = c
	}
	return claims
}

// The commits of deliveries in flight together go to the disk in one group,
// one fdatasync: the group waits for them (here without bound, so the
// test hangs if the wait does not end once every delivery in flight has
// joined).
func TestJournalGroupWaitsForDeliveriesInFlight(t *testing.T) {
	s, groups := openGathering(t, time.Hour)
	claims := claimFresh(t, s, 3)
	errs := make(chan error, len(claims))
	for _, c := range claims[:2] {
		go func() { errs <- s.Commit(context.Background(), c, time.Hour) }()
	}
	errs <- s.Commit(context.Background(), claims[2], time.Hour)
	for range claims {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := groups(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("groups synced %v, want one of 3 records", got)
	}
	for _, c := range claims {
		if c, _ := s.Claim(context.Background(), c.Key, time.Hour); c.State != dedupe.Delivered {
			t.Fatalf("%s after its commit: %s, want delivered", c.Key, c.State)
		}
	}
}

// A delivery with none other in flight is written at once: with a wait of
// an hour the test would hang otherwise.
func TestJournalLoneCommitDoesNotWait(t *testing.T) {
	s, groups := openGathering(t, time.Hour)
	for i := range 2 {
		c, err := s.Claim(context.Background(), fmt.Sprintf("shop|ivy|evt_%d", i), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(context.Background(), c, time.Hour); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
	if got := groups(); len(got) != 2 || got[0] != 1 || got[1] != 1 {
		t.Fatalf("groups synced %v, want two of one record", got)
	}
}

// A delivery in flight that never commits holds a group back no longer
// than GroupWait.
func TestJournalGroupWaitIsBounded(t *testing.T) {
	s, groups := openGathering(t, 20*time.Millisecond)
	claims := claimFresh(t, s, 2) // the second stays in flight
	if err := s.Commit(context.Background(), claims[0], time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := groups(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("groups synced %v, want one of one record", got)
	}
}

// A negative GroupWait never waits, whatever is in flight.
func TestJournalGroupWaitOff(t *testing.T) {
	s, groups := openGathering(t, -1)
	claims := claimFresh(t, s, 2)
	if err := s.Commit(context.Background(), claims[0], time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := groups(); len(got) != 1 {
		t.Fatalf("groups synced %v, want one", got)
	}
}

// The writer's groups are whole blocks of aligned memory, as O_DIRECT
// wants (memFS's OpenSegment refuses any other write, so every memFS test
// checks it too).
func TestAlignedBlocks(t *testing.T) {
	for _, n := range []int{0, 1, 100, blockSize - 1, blockSize, blockSize + 1, 5*blockSize + 7, 1 << 20} {
		b := alignedBlocks(n)
		if len(b) < n || len(b)%blockSize != 0 || len(b) >= n+blockSize && n > 0 || cap(b) != len(b) {
			t.Fatalf("alignedBlocks(%d): len %d cap %d", n, len(b), cap(b))
		}
		if len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%blockSize != 0 {
			t.Fatalf("alignedBlocks(%d) starts at %p", n, &b[0])
		}
		for i, c := range b {
			if c != 0 {
				t.Fatalf("alignedBlocks(%d)[%d] = %d", n, i, c)
			}
		}
	}
}

// A group's buffer, reused by a later group, holds only that group's
// frames: its stale bytes are zeroed, as the reader of a segment expects
// after a group's last frame.
func TestGroupBufferReuse(t *testing.T) {
	recs := []jrecord{{seq: 7, muts: []mutation{{kind: mPause, scope: "payments", paused: true}}}}
	fresh := &Ledger{groupBufs: make(chan []byte, 2)}
	want := fresh.encodeGroup(&segment{id: 3}, recs, true)

	s := &Ledger{groupBufs: make(chan []byte, 2)}
	old := s.groupBuffer(3 * blockSize)
	for i := range old {
		old[i] = 0xff
	}
	s.keepGroupBuffer(old)
	got := s.encodeGroup(&segment{id: 3}, recs, true)
	if &got[0] != &old[0] {
		t.Fatal("the buffer kept was not reused")
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("a reused buffer encodes %d bytes unlike a new one's %d", len(got), len(want))
	}
	if uintptr(unsafe.Pointer(&got[0]))%blockSize != 0 || len(got)%blockSize != 0 {
		t.Fatalf("reused buffer of %d bytes at %p: not whole aligned blocks", len(got), &got[0])
	}

	// A buffer too small for the group is not used; one too large is not
	// kept.
	s.keepGroupBuffer(s.groupBuffer(blockSize)[:blockSize:blockSize])
	if b := s.groupBuffer(2 * blockSize); len(b) != 2*blockSize {
		t.Fatalf("groupBuffer(2 blocks): %d bytes", len(b))
	}
	s.keepGroupBuffer(alignedBlocks(maxKeptGroupBuf + blockSize))
	if len(s.groupBufs) != 0 {
		t.Fatalf("%d buffers kept, want none larger than maxKeptGroupBuf", len(s.groupBufs))
	}
}

// On the OS's file system a segment takes the writer's aligned groups
// (with O_DIRECT where it can) and reads them back.
func TestOSSegmentWritesAlignedBlocks(t *testing.T) {
	path := zeroSegment(t, 4)
	f, err := osFS{}.OpenSegment(path)
	if err != nil {
		t.Fatal(err)
	}
	b := alignedBlocks(blockSize + 10)
	copy(b, "group")
	if _, err := f.WriteAt(b, blockSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Datasync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data[blockSize:blockSize+5]) != "group" || len(data) != 4*blockSize {
		t.Fatalf("segment reads back %q… (%d bytes)", data[blockSize:blockSize+5], len(data))
	}
}

// zeroSegment makes a segment file of blocks zeroed blocks in a new
// folder of the test's and returns its path.
func zeroSegment(t *testing.T, blocks int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seg")
	if err := os.WriteFile(path, make([]byte, blocks*blockSize), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
