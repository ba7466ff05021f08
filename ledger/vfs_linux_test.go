package ledger

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// On a file system that takes O_DIRECT (ext4, xfs: where the tests run
// in CI) a segment is opened with it; elsewhere it falls back.
func TestOpenSegmentDirect(t *testing.T) {
	path := zeroSegment(t, 1)
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	const ext4, xfs = 0xEF53, 0x58465342
	f, direct0, err := openSegment(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	direct := flags&unix.O_DIRECT != 0
	if direct != direct0 {
		t.Fatalf("openSegment says direct %v, the flags %#x", direct0, flags)
	}
	t.Logf("file system magic %#x, O_DIRECT %v", st.Type, direct)
	if (st.Type == ext4 || st.Type == xfs) && !direct {
		t.Fatalf("segment on ext4/xfs opened without O_DIRECT (flags %#x)", flags)
	}
	if flags&unix.O_ACCMODE != unix.O_RDWR {
		t.Fatalf("segment opened with flags %#x, want read-write", flags)
	}
}

// A write that O_DIRECT refuses for its alignment (as a file system with
// blocks larger than 4 KiB would refuse the journal's) goes through the page
// cache instead: the segment is reopened without O_DIRECT, the write
// succeeds, and so do the next ones.
func TestDirectSegmentFallsBackOnRefusedWrite(t *testing.T) {
	path, f := directSegment(t)
	if _, err := f.WriteAt([]byte("unaligned"), 100); err != nil { // EINVAL with O_DIRECT
		t.Fatalf("unaligned write: %v", err)
	}
	if _, err := f.WriteAt([]byte("again"), 200); err != nil {
		t.Fatalf("next write: %v", err)
	}
	if err := f.Datasync(); err != nil {
		t.Fatal(err)
	}
	flags, err := unix.FcntlInt(f.(*directFile).Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_DIRECT != 0 {
		t.Fatalf("still O_DIRECT after a refused write (flags %#x)", flags)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data[100:109]) != "unaligned" || string(data[200:205]) != "again" {
		t.Fatalf("segment reads %q, %q", data[100:109], data[200:205])
	}
}

// The flusher syncs a segment while the syncer writes the next group to it
// (writer.go): a write O_DIRECT refuses, which reopens the file, must not
// race with that sync (before, the sync could read the file being swapped,
// and fdatasync a descriptor just closed). The race detector tells.
func TestDirectSegmentFallbackWhileSyncing(t *testing.T) {
	if !raceEnabled {
		t.Skip("the race detector tells")
	}
	_, f := directSegment(t)
	synced := make(chan error, 1)
	go func() { synced <- f.Datasync() }()
	if _, err := f.WriteAt([]byte("unaligned"), 100); err != nil { // EINVAL with O_DIRECT: reopened
		t.Fatalf("unaligned write: %v", err)
	}
	if err := <-synced; err != nil {
		t.Fatalf("the sync during the write: %v", err)
	}
	if err := f.Datasync(); err != nil {
		t.Fatal(err)
	}
}

// directSegment opens a zeroed segment of two blocks with O_DIRECT (the
// test is skipped where the file system has none) and returns its path;
// it is closed when the test ends.
func directSegment(t *testing.T) (string, journalFile) {
	t.Helper()
	path := zeroSegment(t, 2)
	f, err := osFS{}.OpenSegment(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if _, ok := f.(*directFile); !ok {
		t.Skipf("no O_DIRECT on this file system (%T)", f)
	}
	return path, f
}
