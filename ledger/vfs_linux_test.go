package ledger

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// On a file system that takes O_DIRECT (ext4, xfs: where the tests run
// in CI) a segment is opened with it; elsewhere it falls back.
func TestOpenSegmentDirect(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	const ext4, xfs = 0xEF53, 0x58465342
	path := filepath.Join(dir, "seg")
	if err := os.WriteFile(path, make([]byte, blockSize), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := openSegment(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	direct := flags&unix.O_DIRECT != 0
	t.Logf("file system magic %#x, O_DIRECT %v", st.Type, direct)
	if (st.Type == ext4 || st.Type == xfs) && !direct {
		t.Fatalf("segment on ext4/xfs opened without O_DIRECT (flags %#x)", flags)
	}
	if flags&unix.O_ACCMODE != unix.O_RDWR {
		t.Fatalf("segment opened with flags %#x, want read-write", flags)
	}
}
