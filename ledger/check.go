package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// boltMagic and boltVersion are the magic number and format version of
// bbolt's meta pages (bbolt's internal/common: Magic, Version).
const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2
)

// Check looks at the ledger at path without opening it for writing, taking
// its lock or writing anything — beside a running Caddy that holds it, for
// `caddy validate`. A missing file is fine (it will be created) when the
// folders above it are folders or missing; an existing one must be a
// regular file (a symbolic link is followed, and must lead to one) that
// starts as a bbolt file does. It does not read the whole file: a file
// that passes may still fail to open.
func Check(path string) error {
	fi, err := os.Lstat(path)
	if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := os.Readlink(path)
		if fi, err = os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ledger %s: a symbolic link to %s, which does not exist: point it at a ledger, or remove it", path, target)
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return checkParents(path)
	case err != nil:
		return fmt.Errorf("ledger %s: %w", path, err)
	case fi.IsDir():
		return fmt.Errorf("ledger %s: is a directory, not a file", path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("ledger %s: not a regular file (%s)", path, fi.Mode().Type())
	case fi.Size() == 0:
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("ledger %s: %w", path, err)
	}
	defer f.Close()
	var head [32]byte
	if _, err := io.ReadFull(f, head[:]); err != nil {
		return fmt.Errorf("ledger %s: corrupt file or not a ledger (%d bytes: too short for a ledger); move it away to start an empty ledger", path, fi.Size())
	}
	// The first page: a 16-byte page header, then the meta: magic, version.
	magic, version := binary.LittleEndian.Uint32(head[16:]), binary.LittleEndian.Uint32(head[20:])
	if magic != boltMagic || version != boltVersion {
		return fmt.Errorf("ledger %s: corrupt file or not a ledger (it does not start as a bbolt file of version %d); move it away to start an empty ledger", path, boltVersion)
	}
	return nil
}

// checkParents checks that the folders above path are folders or missing.
func checkParents(path string) error {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("ledger %s: %s is not a folder", path, dir)
		case err == nil:
			return nil
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return fmt.Errorf("ledger %s: %w", path, err)
		}
		if parent := filepath.Dir(dir); parent == dir {
			return nil
		}
	}
}
