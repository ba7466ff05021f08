package ledger

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// recycleFS is a memFS whose SyncDir after the rename of a segment (a
// recycle) says so on syncing and waits for release.
type recycleFS struct {
	*memFS
	mu      sync.Mutex
	renamed bool
	syncing chan struct{}
	release chan struct{}
}

func (g *recycleFS) Rename(o, n string) error {
	err := g.memFS.Rename(o, n)
	if err == nil && !strings.HasSuffix(o, ".tmp") {
		g.mu.Lock()
		g.renamed = true
		g.mu.Unlock()
	}
	return err
}

func (g *recycleFS) SyncDir(dir string) error {
	g.mu.Lock()
	gate := g.renamed
	g.renamed = false
	g.mu.Unlock()
	if gate {
		close(g.syncing)
		<-g.release
	}
	return g.memFS.SyncDir(dir)
}

// On a full disk spares come from recycling applied segments: a recycled
// segment is renamed, and the rename is synced before the writer may use it
// (an adversarial review found records acknowledged in a recycled segment
// lost at a power loss before the folder's sync). The spare is not offered
// while its rename waits for the sync; once offered and written, a crash
// keeps every acknowledged commit.
func TestJournalRecycledSegmentSyncedBeforeUse(t *testing.T) {
	fs := &recycleFS{memFS: newMemFS(), syncing: make(chan struct{}), release: make(chan struct{})}
	s, cfg := openSmallSegments(t, fs)
	ctx := context.Background()
	spares := func() int {
		s.j.mu.Lock()
		defer s.j.mu.Unlock()
		return len(s.j.spares)
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s", what)
			}
		}
	}
	fs.memFS.mu.Lock()
	fs.memFS.full = true // a full disk: spares come from recycling
	fs.memFS.mu.Unlock()
	n := 0
	commit := func() string {
		key := fmt.Sprintf("k%d", n)
		n++
		c, err := s.Claim(ctx, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, c, time.Hour); err != nil {
			t.Fatalf("commit %s: %v", key, err)
		}
		return key
	}
	first := s.j.active().id
	for s.j.active().id == first { // into the spare
		commit()
	}
	if err := s.checkpointAll(); err != nil { // the first segment is applied: it is recycled
		t.Fatal(err)
	}
	<-fs.syncing // renamed, its folder sync held
	if n := spares(); n != 0 {
		t.Fatalf("%d spare offered to the writer before its rename was synced", n)
	}
	close(fs.release)
	waitUntil("the recycled spare offered", func() bool { return spares() == 1 })
	second := s.j.active().id
	for s.j.active().id == second { // into the recycled segment
		commit()
	}
	var acked []string
	for range 5 {
		acked = append(acked, commit())
	}
	fs.crash()
	_ = s.Close()
	fs.restart()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	for _, key := range acked {
		if c, err := s.Claim(ctx, key, time.Minute); err != nil || c.State == dedupe.Fresh {
			t.Errorf("acknowledged commit %s: %v %v after the crash, want it remembered", key, c.State, err)
		}
	}
}
