package ledger

import (
	"errors"
	"io"
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
	// failSync, when set, is asked at each Datasync whether it fails.
	failSync func(name string, n int) error
	syncs    int
	// noDrop: DropCache keeps the cached (unsynced) data, as on systems
	// without posix_fadvise (vfs_other.go) or pages the kernel keeps dirty.
	noDrop bool
	// full: writes to a file being made (.tmp) fail with ENOSPC.
	full bool
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
// names, each file with its synced data; it works again.
func (fs *memFS) restart() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	files := map[string]*memNode{}
	for name, n := range fs.durable {
		files[name] = &memNode{data: append([]byte(nil), n.synced...), synced: append([]byte(nil), n.synced...)}
	}
	fs.files = files
	fs.durable = map[string]*memNode{}
	for name, n := range files {
		fs.durable[name] = n
	}
	fs.crashed, fs.crashAt, fs.ops = false, 0, 0
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
	if _, ok := fs.files[name]; !ok {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(fs.files, name)
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
