package ledger

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// After a failed fdatasync, where dropping the cache does not make reads
// return what the disk holds (no posix_fadvise: vfs_other.go's dropCache is
// a no-op), the reopen reads the failed group back as if durable, and the
// next segment began after it (an adversarial review found it so): a power
// loss then dropped the failed group from the old segment, a gap, and the
// ledger refused to open. The reopen now reads up to the last durable record
// only, and the failed commit is not remembered.
func TestJournalReopenIgnoresFailedGroupInCache(t *testing.T) {
	fs := newMemFS()
	fs.noDrop = true
	var fail atomic.Int64
	fail.Store(5)
	fs.failSync = func(name string, n int) error {
		if strings.Contains(name, journalSuffix) && !strings.HasSuffix(name, ".tmp") && fail.Add(-1) == 0 {
			return syscall.EIO
		}
		return nil
	}
	s, cfg := openManual(t, fs, 0)
	ctx := context.Background()
	var acked, failed []string
	for i := range 10 {
		key := "k" + strconv.Itoa(i)
		c, err := s.Claim(ctx, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, c, time.Hour); err != nil {
			failed = append(failed, key)
			_ = s.Release(ctx, c)
			continue
		}
		acked = append(acked, key)
	}
	t.Logf("acked %v, failed %v", acked, failed)
	for _, key := range failed {
		c, err := s.Claim(ctx, key, time.Minute)
		t.Logf("after the reopen, failed commit %s reads as %v (%v)", key, c.State, err)
		if err == nil && c.State == dedupe.Fresh {
			_ = s.Release(ctx, c)
		}
	}
	fs.crash()
	_ = s.Close()
	fs.restart()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open after a power loss, every acknowledged commit synced: %v", err)
	}
	defer s.Close()
	for _, key := range acked {
		if c, err := s.Claim(ctx, key, time.Minute); err != nil || c.State != dedupe.Delivered {
			t.Errorf("acknowledged %s: %v %v", key, c.State, err)
		}
	}
}
