//go:build !linux

package ledger

import "os"

// datasync is fsync where fdatasync is not available.
func datasync(f *os.File) error { return f.Sync() }

// dropCache does nothing where posix_fadvise is not available.
func dropCache(*os.File) error { return nil }

// openSegment opens a journal segment for writing.
func openSegment(name string) (*os.File, bool, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	return f, false, err
}
