package ledger

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync is fdatasync(2): the data and the metadata needed to read it
// back (the size), not the times.
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// dropCache is posix_fadvise(POSIX_FADV_DONTNEED) on the whole file: after
// a failed fdatasync the kernel may keep pages it could not write, marked
// clean; dropping them makes a read return what the disk holds.
func dropCache(f *os.File) error {
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
