package ledger

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// errCrashed is the error of every operation of a memFS after its crash.
var errCrashed = errors.New("memfs: crashed")

// memFS is a strict in-memory file system, for the journal: what was not
// made durable is lost when it crashes — file data not fdatasynced, and the
// creation, rename or removal of a file not followed by a SyncDir of its
// folder (as pebble's vfs.NewStrictMem). Every mutating operation counts;
// at crashAt (when set) it crashes, that operation and the ones after it
// failing. A Datasync can be made to fail (failSync): the file then reads,
// after DropCache or a crash, as of its last successful one.
type memFS struct {
	mu      sync.Mutex
	files   map[string]*memNode // the names as they are
	durable map[string]*memNode // the names as of the last SyncDir
	crashed bool
	ops     int
	crashAt int
	// crashAtSync, when set, crashes the FS at that Datasync (counting
	// syncs, failed ones too), which fails.
	crashAtSync int
	// failSync, when set, is asked at each Datasync whether it fails.
	failSync func(name string, n int) error
	syncs    int
	// noDrop: DropCache keeps the cached (unsynced) data, as on systems
	// without posix_fadvise (vfs_other.go) or pages the kernel keeps dirty.
	noDrop bool
	// full: writes to a file being made (.tmp) fail with ENOSPC.
	full bool
	// loose, when set, makes the FS lose less at a crash, as a real disk
	// may: the kernel or the device wrote some of it back before the power
	// loss. Each 4 KiB block of a file written since its last Datasync
	// keeps its new content with probability keep, independently (a file
	// grown since keeps its new size with that probability, the blocks not
	// kept reading as before or as zeros); each creation, rename and removal
	// not followed by a SyncDir is kept with that probability, independently
	// too (one whose file is no longer under the name it used is dropped).
	// The draws come from loose, in a fixed order, so a seed reproduces
	// them for the same operations.
	loose *rand.Rand
	keep  float64
	// dirOps are the creations, renames and removals since the last SyncDir.
	dirOps []memDirOp
	// lastCrash says what the last restart kept of what was not durable.
	lastCrash []string
}

// memDirOp is a creation (old ""), rename or removal (new "") of the file n.
type memDirOp struct {
	old, new string
	n        *memNode
}

func (o memDirOp) String() string {
	switch {
	case o.old == "":
		return "create " + filepath.Base(o.new)
	case o.new == "":
		return "remove " + filepath.Base(o.old)
	}
	return "rename " + filepath.Base(o.old) + " to " + filepath.Base(o.new)
}

// memNode is a file: its data as read, and as of its last Datasync.
type memNode struct {
	data   []byte
	synced []byte
}

func newMemFS() *memFS {
	return &memFS{files: map[string]*memNode{}, durable: map[string]*memNode{}}
}

// op counts a mutating operation and reports whether the FS has crashed.
// fs.mu is held.
func (fs *memFS) op() error {
	if fs.crashed {
		return errCrashed
	}
	fs.ops++
	if fs.crashAt > 0 && fs.ops >= fs.crashAt {
		fs.crashed = true
		return errCrashed
	}
	return nil
}

// crash makes the FS crash now.
func (fs *memFS) crash() {
	fs.mu.Lock()
	fs.crashed = true
	fs.mu.Unlock()
}

// restart returns the FS as a restarted machine finds it: the durable
// names, each file with its synced data (loose: and what the crash kept of
// the rest); it works again.
func (fs *memFS) restart() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	durable := fs.durable
	fs.lastCrash = nil
	if fs.loose != nil {
		durable = fs.keepDirOps()
	}
	names := make([]string, 0, len(durable))
	for name := range durable {
		names = append(names, name)
	}
	sort.Strings(names) // the draws in a fixed order
	files := map[string]*memNode{}
	for _, name := range names {
		n := durable[name]
		data := n.synced
		if fs.loose != nil {
			data = fs.keepBlocks(name, n)
		}
		files[name] = &memNode{data: append([]byte(nil), data...), synced: append([]byte(nil), data...)}
	}
	fs.files = files
	fs.dirOps = nil
	fs.durable = map[string]*memNode{}
	for name, n := range files {
		fs.durable[name] = n
	}
	fs.crashed, fs.crashAt, fs.crashAtSync, fs.ops = false, 0, 0, 0
}

// keepDirOps returns the names as a loose crash leaves them: the durable
// ones, with each operation since the last SyncDir applied with
// probability keep, in the order made. fs.mu is held.
func (fs *memFS) keepDirOps() map[string]*memNode {
	out := make(map[string]*memNode, len(fs.durable))
	for name, n := range fs.durable {
		out[name] = n
	}
	for _, o := range fs.dirOps {
		if fs.loose.Float64() >= fs.keep {
			fs.lastCrash = append(fs.lastCrash, "lost: "+o.String())
			continue
		}
		applied := false
		switch {
		case o.old == "": // not over a file whose removal was lost
			if _, ok := out[o.new]; !ok {
				out[o.new], applied = o.n, true
			}
		case out[o.old] == o.n: // its file under the name it renames or removes
			delete(out, o.old)
			if o.new != "" {
				out[o.new] = o.n
			}
			applied = true
		}
		if applied {
			fs.lastCrash = append(fs.lastCrash, "kept: "+o.String())
		} else {
			fs.lastCrash = append(fs.lastCrash, "moot: "+o.String())
		}
	}
	return out
}

// keepBlocks returns the data of n as a loose crash leaves it: its synced
// data, each block written since kept with probability keep. fs.mu is held.
func (fs *memFS) keepBlocks(name string, n *memNode) []byte {
	old, cur := n.synced, n.data
	size := len(old)
	if len(cur) > len(old) && fs.loose.Float64() < fs.keep {
		size = len(cur)
	}
	out := make([]byte, size)
	copy(out, old)
	var kept, lost []int
	for off := 0; off < size; off += blockSize {
		end := min(off+blockSize, size)
		was := out[off:end]
		var now []byte
		if off < len(cur) {
			now = cur[off:min(end, len(cur))]
		}
		if bytesEqualPadded(was, now) {
			continue
		}
		if fs.loose.Float64() < fs.keep {
			copy(was, now)
			clear(was[len(now):])
			kept = append(kept, off/blockSize)
		} else {
			lost = append(lost, off/blockSize)
		}
	}
	if len(kept)+len(lost) > 0 || size != len(old) {
		fs.lastCrash = append(fs.lastCrash, fmt.Sprintf("%s: %d bytes synced, %d written, %d kept; blocks kept %v, lost %v", filepath.Base(name), len(old), len(cur), size, kept, lost))
	}
	return out
}

// bytesEqualPadded says whether a equals b followed by zeros.
func bytesEqualPadded(a, b []byte) bool {
	return string(a[:len(b)]) == string(b) && isZero(a[len(b):])
}

func (fs *memFS) OpenFile(name string, flag int, _ os.FileMode) (journalFile, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.crashed {
		return nil, errCrashed
	}
	n, ok := fs.files[name]
	switch {
	case ok && flag&os.O_EXCL != 0:
		return nil, os.ErrExist
	case !ok && flag&os.O_CREATE == 0:
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	case !ok:
		if err := fs.op(); err != nil {
			return nil, err
		}
		n = &memNode{}
		fs.files[name] = n
		fs.dirOps = append(fs.dirOps, memDirOp{new: name, n: n})
	}
	return &memFile{fs: fs, name: name, n: n}, nil
}

// OpenSegment opens name as O_DIRECT does on Linux: a write that is not
// whole blocks from aligned memory at an aligned offset fails with EINVAL.
func (fs *memFS) OpenSegment(name string) (journalFile, error) {
	f, err := fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	f.(*memFile).direct = true
	return f, nil
}

func (fs *memFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.op(); err != nil {
		return err
	}
	n, ok := fs.files[name]
	if !ok {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(fs.files, name)
	fs.dirOps = append(fs.dirOps, memDirOp{old: name, n: n})
	return nil
}

func (fs *memFS) Rename(oldName, newName string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.op(); err != nil {
		return err
	}
	n, ok := fs.files[oldName]
	if !ok {
		return &os.PathError{Op: "rename", Path: oldName, Err: os.ErrNotExist}
	}
	delete(fs.files, oldName)
	fs.files[newName] = n
	fs.dirOps = append(fs.dirOps, memDirOp{old: oldName, new: newName, n: n})
	return nil
}

func (fs *memFS) ReadDir(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.crashed {
		return nil, errCrashed
	}
	var names []string
	for name := range fs.files {
		if filepath.Dir(name) == filepath.Clean(dir) {
			names = append(names, filepath.Base(name))
		}
	}
	sort.Strings(names)
	return names, nil
}

func (fs *memFS) SyncDir(string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.op(); err != nil {
		return err
	}
	fs.durable = map[string]*memNode{}
	for name, n := range fs.files {
		fs.durable[name] = n
	}
	fs.dirOps = nil
	return nil
}

// put writes a durable file (tests that lay out a journal by hand).
func (fs *memFS) put(name string, data []byte) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := &memNode{data: append([]byte(nil), data...), synced: append([]byte(nil), data...)}
	fs.files[name] = n
	fs.durable[name] = n
}

// names lists the files.
func (fs *memFS) names() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []string
	for name := range fs.files {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// memFile is an open memFS file.
type memFile struct {
	fs     *memFS
	name   string
	n      *memNode
	direct bool // opened by OpenSegment: aligned whole blocks only
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.crashed {
		return 0, errCrashed
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.op(); err != nil {
		return 0, err
	}
	if f.fs.full && strings.HasSuffix(f.name, ".tmp") {
		return 0, syscall.ENOSPC
	}
	if f.direct && (off%blockSize != 0 || len(p)%blockSize != 0 || (len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))%blockSize != 0)) {
		return 0, syscall.EINVAL
	}
	if end := off + int64(len(p)); end > int64(len(f.n.data)) {
		f.n.data = append(f.n.data, make([]byte, end-int64(len(f.n.data)))...)
	}
	return copy(f.n.data[off:], p), nil
}

func (f *memFile) Datasync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.op(); err != nil {
		return err
	}
	f.fs.syncs++
	if f.fs.crashAtSync > 0 && f.fs.syncs >= f.fs.crashAtSync {
		f.fs.crashed = true
		return errCrashed
	}
	if f.fs.failSync != nil {
		if err := f.fs.failSync(f.name, f.fs.syncs); err != nil {
			return err // the data stays unsynced: lost at a crash or DropCache
		}
	}
	f.n.synced = append(f.n.synced[:0], f.n.data...)
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.crashed {
		return 0, errCrashed
	}
	return int64(len(f.n.data)), nil
}

func (f *memFile) DropCache() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.crashed {
		return errCrashed
	}
	if !f.fs.noDrop {
		f.n.data = append(f.n.data[:0:0], f.n.synced...)
	}
	return nil
}

func (f *memFile) Close() error { return nil }

// openManual opens a ledger on fs, with segments of segmentSize (0: the
// default) and the checkpoint run by the test only; cfg opens it again.
func openManual(t *testing.T, fs fileSystem, segmentSize int64) (s *Ledger, cfg Config) {
	t.Helper()
	cfg = Config{Path: filepath.Join(t.TempDir(), "ledger.db"), SweepEvery: time.Hour, SegmentSize: segmentSize, fs: fs, manualCheckpoint: true}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

// openSmallSegments opens a ledger on fs with the smallest segments and
// the checkpoint run by the test only, and waits until the allocator has
// made the spare segment the writer rotates into.
func openSmallSegments(t *testing.T, fs fileSystem) (*Ledger, Config) {
	t.Helper()
	s, cfg := openManual(t, fs, minSegmentSize)
	for deadline := time.Now().Add(5 * time.Second); s.JournalStats().Segments < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no spare segment made within 5s")
		}
	}
	return s, cfg
}
