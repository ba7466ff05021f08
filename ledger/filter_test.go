package ledger

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
)

// The filter holds every digest added, and few others.
func TestReplayFilterHoldsWhatWasAdded(t *testing.T) {
	f := newReplayFilter(minFilterKeys)
	d := func(prefix string, i int) *digest {
		x := digest(sha256.Sum256(fmt.Appendf(nil, "%s%d", prefix, i)))
		return &x
	}
	for i := range minFilterKeys {
		f.add(d("in", i))
	}
	for i := range minFilterKeys {
		if !f.mayHold(d("in", i)) {
			t.Fatalf("digest %d was added and is not held", i)
		}
	}
	if f.saturated() {
		t.Fatalf("%d keys added to a filter sized for %d: saturated", minFilterKeys, f.sized)
	}
	f.add(d("in", -1))
	if !f.saturated() {
		t.Fatal("one key more than it was sized for: not saturated")
	}
	var fp int
	const others = 100_000
	for i := range others {
		if f.mayHold(d("out", i)) {
			fp++
		}
	}
	if rate := float64(fp) / others; rate > 0.02 {
		t.Fatalf("false positives %.2f %%, want about 1 %%", 100*rate)
	}
}

// openFiltered opens a ledger and waits for its first replay filter; built
// receives the later ones.
func openFiltered(t *testing.T, path string) (s *Ledger, built <-chan *replayFilter) {
	t.Helper()
	ch := make(chan *replayFilter, 1)
	s, _ = newTestFile(t, Config{Path: path, filterBuilt: ch})
	<-ch
	return s, ch
}

// commitToFile commits keys and checkpoints them: the file holds them, the
// overlay no longer does.
func commitToFile(t *testing.T, s *Ledger, keys []string) {
	t.Helper()
	commitMany(t, s, keys, time.Hour)
	if err := s.checkpointAll(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if d := digest(sha256.Sum256([]byte(k))); s.inOverlay(d[:]) {
			t.Fatalf("%s is still in the overlay after the checkpoint", k)
		}
	}
}

// claimAll claims keys and wants each in state want; it returns how many
// claims read the file.
func claimAll(t *testing.T, s *Ledger, keys []string, want dedupe.State) int64 {
	t.Helper()
	before := s.fileReads.Load()
	for _, k := range keys {
		c := dedupetest.MustClaim(t, s, k, time.Minute, want)
		if want == dedupe.Fresh {
			if err := s.Release(context.Background(), c); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s.fileReads.Load() - before
}

// A claim of a new id does not read the file; one of an id the file holds
// does, and finds it delivered.
func TestClaimOfNewIDSkipsTheFile(t *testing.T) {
	s, _ := openFiltered(t, "")
	old := keys("shop|ivy|old_", 200)
	commitToFile(t, s, old)
	if n := claimAll(t, s, keys("shop|ivy|new_", 1000), dedupe.Fresh); n > 30 {
		t.Fatalf("1000 claims of new ids read the file %d times, want few (false positives)", n)
	}
	if n := claimAll(t, s, old, dedupe.Delivered); n != int64(len(old)) {
		t.Fatalf("%d claims of delivered ids read the file %d times", len(old), n)
	}
}

// Reopened, the ledger builds its filter from the file, a chunk of keys
// per read transaction (here 7): what it holds is delivered, and a new id
// still skips the file.
func TestReplayFilterBuiltFromTheFile(t *testing.T) {
	defer func(n int) { filterScanChunk = n }(filterScanChunk)
	filterScanChunk = 7
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, _ := openFiltered(t, path)
	old := keys("shop|ivy|old_", 300)
	commitToFile(t, s, old)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, _ = openFiltered(t, path)
	if n := claimAll(t, s, old, dedupe.Delivered); n != int64(len(old)) {
		t.Fatalf("%d claims of delivered ids read the file %d times", len(old), n)
	}
	if n := claimAll(t, s, keys("shop|ivy|new_", 1000), dedupe.Fresh); n > 30 {
		t.Fatalf("1000 claims of new ids read the file %d times", n)
	}
}

// saturate makes s's filter saturated, as if it had taken more keys than
// it was sized for, and returns it.
func saturate(s *Ledger) *replayFilter {
	s.ov.mu.RLock()
	defer s.ov.mu.RUnlock()
	s.ov.filter.added.Store(s.ov.filter.sized + 1)
	return s.ov.filter
}

// A saturated filter is replaced by one built from the overlay and the
// file, once a group is published.
func TestReplayFilterRebuiltWhenSaturated(t *testing.T) {
	s, built := openFiltered(t, "")
	inFile := keys("shop|ivy|file_", 100)
	commitToFile(t, s, inFile)
	inOverlay := keys("shop|ivy|overlay_", 100)
	commitMany(t, s, inOverlay, time.Hour)
	old := saturate(s)
	claimCommit(t, s, "shop|ivy|after", time.Hour) // publishes: kicks the rebuild
	f := <-built
	if f == old || f.saturated() {
		t.Fatalf("the new filter is the old one (%v) or saturated (%v)", f == old, f.saturated())
	}
	for _, k := range append(append(inFile, inOverlay...), "shop|ivy|after") {
		if d := digest(sha256.Sum256([]byte(k))); !f.mayHold(&d) {
			t.Fatalf("the rebuilt filter lacks %s", k)
		}
	}
	if err := s.checkpointAll(); err != nil {
		t.Fatal(err)
	}
	claimAll(t, s, append(inFile, inOverlay...), dedupe.Delivered)
}

// Under concurrent commits, checkpoints and rebuilds of the filter, a
// claim of an id whose commit returned always finds it delivered: the
// filter never hides an id the file holds (run it with -race).
func TestReplayFilterNeverHidesADeliveredID(t *testing.T) {
	s, built := openFiltered(t, "")
	const n = 3000
	committed := make(chan string, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // commits
		defer close(committed)
		for i := range n {
			k := fmt.Sprintf("shop|ivy|evt_%d", i)
			c, err := s.Claim(context.Background(), k, time.Minute)
			if err == nil {
				err = s.Commit(context.Background(), c, time.Hour)
			}
			if err != nil {
				t.Errorf("%s: %v", k, err)
				return
			}
			committed <- k
		}
	})
	wg.Go(func() { // checkpoints
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.checkpointAll(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() { // rebuilds
		for {
			saturate(s)
			s.kickFilter()
			select {
			case <-stop:
				return
			case <-built:
			}
		}
	})
	for k := range committed {
		c, err := s.Claim(context.Background(), k, time.Minute)
		if err != nil || c.State != dedupe.Delivered {
			t.Errorf("claim of %s after its commit: %v, %v; want delivered", k, c.State, err)
			break
		}
	}
	close(stop)
	wg.Wait()
}

// Ids the journal holds and the file does not yet (the ledger closed, or
// crashed, before its checkpoint) are read back into the overlay at open,
// before the filter is built: once the checkpoint moves them to the file
// they are still delivered.
func TestReplayFilterHoldsWhatTheJournalReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	ch := make(chan *replayFilter, 1)
	s, _ := newTestFile(t, Config{Path: path, manualCheckpoint: true, filterBuilt: ch})
	<-ch
	journaled := keys("shop|ivy|journaled_", 200)
	commitMany(t, s, journaled, time.Hour)
	if err := s.Close(); err != nil { // manualCheckpoint: the journal stays as it is
		t.Fatal(err)
	}
	s, _ = newTestFile(t, Config{Path: path, manualCheckpoint: true, filterBuilt: ch})
	<-ch
	commitToFile(t, s, nil) // the checkpoint: the file has them, the overlay no longer
	if n := claimAll(t, s, journaled, dedupe.Delivered); n != int64(len(journaled)) {
		t.Fatalf("%d claims of ids read back from the journal read the file %d times", len(journaled), n)
	}
}
