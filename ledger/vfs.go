package ledger

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// fileSystem is what the journal needs of a file system: the OS's
// (osFS), or in tests a strict in-memory one that loses what was not
// synced when it "crashes".
type fileSystem interface {
	// OpenFile opens name as os.OpenFile does.
	OpenFile(name string, flag int, perm os.FileMode) (journalFile, error)
	// OpenSegment opens the segment name for the writer, which writes it
	// only in whole blocks of blockSize, from memory aligned to blockSize,
	// at offsets aligned to it (alignedBlocks): on Linux it bypasses the
	// page cache (O_DIRECT) where the file system can.
	OpenSegment(name string) (journalFile, error)
	// Remove and Rename are os.Remove and os.Rename; neither is durable
	// until SyncDir of the folder.
	Remove(name string) error
	Rename(oldName, newName string) error
	// ReadDir lists the names in dir.
	ReadDir(dir string) ([]string, error)
	// SyncDir makes the creations, renames and removals in dir durable.
	SyncDir(dir string) error
}

// journalFile is an open segment file.
type journalFile interface {
	io.ReaderAt
	io.WriterAt
	// Datasync flushes the file's data (fdatasync): what was written is
	// durable when it returns nil. After an error nothing written since
	// the last successful Datasync may be assumed durable, and a retry
	// proves nothing.
	Datasync() error
	// Size is the file's size.
	Size() (int64, error)
	// DropCache asks the kernel to forget the file's cached pages, so that
	// what is read next is what the disk holds.
	DropCache() error
	Close() error
}

// osFS is the operating system's file system.
type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (journalFile, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) OpenSegment(name string) (journalFile, error) {
	f, direct, err := openSegment(name)
	if err != nil {
		return nil, err
	}
	if direct {
		return &directFile{osFile: osFile{f}, name: name}, nil
	}
	return osFile{f}, nil
}

// directFile is a segment opened with O_DIRECT. A write the file system
// refuses for its alignment (EINVAL: it wants blocks larger than
// blockSize) reopens the file without O_DIRECT and is tried again: a
// refused write wrote nothing, and every later write goes through the page
// cache, each still followed by its Datasync. Only the syncer writes a
// segment, but the flusher syncs it meanwhile (writer.go): mu, held for
// writing while the file is swapped, keeps a sync off the file being
// closed.
type directFile struct {
	osFile
	name string
	mu   sync.RWMutex
}

func (f *directFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.RLock()
	cur := f.File
	n, err := cur.WriteAt(p, off)
	f.mu.RUnlock()
	if n != 0 || !errors.Is(err, syscall.EINVAL) {
		return n, err
	}
	g, oerr := os.OpenFile(f.name, os.O_RDWR, 0)
	if oerr != nil {
		return 0, err
	}
	f.mu.Lock()
	f.File = g
	f.mu.Unlock()
	_ = cur.Close()
	return g.WriteAt(p, off)
}

// Datasync, Size, DropCache, ReadAt and Close use the file under mu.

func (f *directFile) Datasync() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.osFile.Datasync()
}

func (f *directFile) Size() (int64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.osFile.Size()
}

func (f *directFile) DropCache() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.osFile.DropCache()
}

func (f *directFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.File.ReadAt(p, off)
}

func (f *directFile) Close() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.File.Close()
}

func (osFS) Remove(name string) error             { return os.Remove(name) }
func (osFS) Rename(oldName, newName string) error { return os.Rename(oldName, newName) }

func (osFS) ReadDir(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some systems cannot sync a folder (Windows); their renames are
	// durable as they are.
	if errors.Is(err, os.ErrInvalid) || errors.Is(err, errors.ErrUnsupported) {
		return nil
	}
	return err
}

// osFile is a segment file of the OS.
type osFile struct{ *os.File }

func (f osFile) Datasync() error { return datasync(f.File) }

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (f osFile) DropCache() error { return dropCache(f.File) }
