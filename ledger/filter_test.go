package ledger

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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

// errInjectedRead is the failure filterFaults makes a build read.
var errInjectedRead = errors.New("injected read failure")

// filterFaults makes a ledger's builds of the replay filter fail on demand
// and holds the pause after a failed build until the test ends it.
type filterFaults struct {
	// fail makes the next build fail at its chunk failAt (once).
	fail   atomic.Bool
	failAt int
	// errs receives OnBackgroundError's errors; pausing the pause of each
	// failed build, when it begins; a send on retry ends it.
	errs    chan error
	pausing chan time.Duration
	retry   chan time.Time
}

func newFilterFaults(failAt int) *filterFaults {
	return &filterFaults{
		failAt:  failAt,
		errs:    make(chan error, 16),
		pausing: make(chan time.Duration, 16),
		retry:   make(chan time.Time),
	}
}

// config returns cfg with ff's hooks. They never block the filterer: a
// test that fails leaves Close able to stop it.
func (ff *filterFaults) config(cfg Config) Config {
	cfg.OnBackgroundError = func(err error) {
		select {
		case ff.errs <- err:
		default:
		}
	}
	cfg.filterChunkRead = func(chunk int) error {
		if chunk == ff.failAt && ff.fail.CompareAndSwap(true, false) {
			return errInjectedRead
		}
		return nil
	}
	cfg.filterRetryAfter = func(d time.Duration) <-chan time.Time {
		select {
		case ff.pausing <- d:
		default:
		}
		return ff.retry
	}
	return cfg
}

// failed waits for the error of a failed build and the pause after it.
func (ff *filterFaults) failed(t *testing.T) {
	t.Helper()
	err := await(t, ff.errs, "OnBackgroundError of the failed build")
	if !strings.Contains(err.Error(), "replay filter") || !errors.Is(err, errInjectedRead) {
		t.Fatalf("OnBackgroundError(%q): want it to say replay filter and wrap the read's error", err)
	}
	if d := await(t, ff.pausing, "the pause after the failed build"); d != filterRetry {
		t.Fatalf("the pause after a failed build is %v, want %v", d, filterRetry)
	}
}

// endPause ends the filterer's pause after a failed build; it waits for
// the filterer to take it.
func (ff *filterFaults) endPause(t *testing.T) {
	t.Helper()
	select {
	case ff.retry <- time.Time{}:
	case <-time.After(hangGuard):
		t.Fatalf("the filterer did not wait for the end of its pause within %v", hangGuard)
	}
}

// noMoreErrors fails if OnBackgroundError was told of another error.
func (ff *filterFaults) noMoreErrors(t *testing.T) {
	t.Helper()
	select {
	case err := <-ff.errs:
		t.Fatalf("OnBackgroundError(%q): want no other error", err)
	default:
	}
}

// hangGuard bounds a wait for what happens at once: it only turns a hang
// into a failure.
const hangGuard = 30 * time.Second

// await receives from ch; the wait is bounded by hangGuard only.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangGuard):
		t.Fatalf("%s: none within %v", what, hangGuard)
		panic("unreachable")
	}
}

// currentFilter returns the replay filter claims use.
func currentFilter(s *Ledger) *replayFilter {
	s.ov.mu.RLock()
	defer s.ov.mu.RUnlock()
	return s.ov.filter
}

// A build at open that fails is told to OnBackgroundError; meanwhile
// every claim reads the file and answers right; after the pause the build
// is tried again, and from then on a claim of a new id skips the file.
func TestReplayFilterBuildFailsAtOpenAndIsRetried(t *testing.T) {
	defer func(n int) { filterScanChunk = n }(filterScanChunk)
	s, old, ff, built := reopenWithFailingFilter(t, 300)
	fresh := keys("shop|ivy|new_", 100)
	if n := claimAll(t, s, fresh, dedupe.Fresh); n != int64(len(fresh)) {
		t.Fatalf("with no filter, %d claims of new ids read the file %d times, want each", len(fresh), n)
	}
	during := keys("shop|ivy|during_", 50) // publishes: kicks the next build
	commitToFile(t, s, during)
	if n := claimAll(t, s, during, dedupe.Delivered); n != int64(len(during)) {
		t.Fatalf("with no filter, %d claims of ids committed meanwhile read the file %d times", len(during), n)
	}
	if f := currentFilter(s); f != nil {
		t.Fatal("a filter is in place though its build failed")
	}

	ff.endPause(t)
	f := await(t, built, "the filter built on the retry")
	if currentFilter(s) != f {
		t.Fatal("the filter built on the retry is not in place")
	}
	committed := append(old, during...)
	if n := claimAll(t, s, committed, dedupe.Delivered); n != int64(len(committed)) {
		t.Fatalf("%d claims of delivered ids read the file %d times", len(committed), n)
	}
	if n := claimAll(t, s, keys("shop|ivy|later_", 1000), dedupe.Fresh); n > 30 {
		t.Fatalf("once the retry built the filter, 1000 claims of new ids read the file %d times, want few", n)
	}
	ff.noMoreErrors(t)
}

// reopenWithFailingFilter makes a ledger file of n delivered ids and
// opens it again with its filter's build failing half way (at its second
// chunk of 7 keys; the caller restores filterScanChunk); meanwhile, with no
// filter, each claim of those ids reads the file.
func reopenWithFailingFilter(t *testing.T, n int) (*Ledger, []string, *filterFaults, chan *replayFilter) {
	t.Helper()
	filterScanChunk = 7
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, _ := openFiltered(t, path)
	old := keys("shop|ivy|old_", n)
	commitToFile(t, s, old)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ff := newFilterFaults(2)
	ff.fail.Store(true)
	built := make(chan *replayFilter, 1)
	s, _ = newTestFile(t, ff.config(Config{Path: path, filterBuilt: built}))
	ff.failed(t)
	if reads := claimAll(t, s, old, dedupe.Delivered); reads != int64(len(old)) {
		t.Fatalf("with no filter, %d claims of delivered ids read the file %d times", len(old), reads)
	}
	return s, old, ff, built
}

// TestReplayFilterRetryNeedsNoCommit: a ledger that only answers claims
// after a failed build at open still gets its filter: the retry comes after
// the pause, not with the next commit.
func TestReplayFilterRetryNeedsNoCommit(t *testing.T) {
	defer func(n int) { filterScanChunk = n }(filterScanChunk)
	s, old, ff, built := reopenWithFailingFilter(t, 30)
	ff.endPause(t)
	f := await(t, built, "the filter built on the retry, with no commit since the failure")
	if currentFilter(s) != f {
		t.Fatal("the filter built on the retry is not in place")
	}
	if n := claimAll(t, s, old, dedupe.Delivered); n != int64(len(old)) {
		t.Fatalf("%d claims of delivered ids read the file %d times", len(old), n)
	}
	ff.noMoreErrors(t)
}

// A rebuild of a saturated filter that fails leaves the old filter in
// place: claims of new ids still skip the file, and every id committed,
// before or meanwhile, is delivered. After the pause the rebuild is tried
// again and replaces it.
func TestReplayFilterRebuildFailsAndIsRetried(t *testing.T) {
	defer func(n int) { filterScanChunk = n }(filterScanChunk)
	filterScanChunk = 7 // the rebuild fails half way, at its second chunk
	ff := newFilterFaults(2)
	built := make(chan *replayFilter, 1)
	s, _ := newTestFile(t, ff.config(Config{filterBuilt: built}))
	await(t, built, "the filter built at open")
	committed := keys("shop|ivy|file_", 300)
	commitToFile(t, s, committed)

	ff.fail.Store(true)
	old := saturate(s)
	claimCommit(t, s, "shop|ivy|kick", time.Hour) // publishes: kicks the rebuild
	committed = append(committed, "shop|ivy|kick")
	ff.failed(t)
	// Meanwhile: the old filter, and the ids committed go to it.
	during := keys("shop|ivy|during_", 100)
	commitToFile(t, s, during[:50])
	commitMany(t, s, during[50:], time.Hour) // in the overlay
	committed = append(committed, during...)
	claimAll(t, s, committed, dedupe.Delivered)
	if n := claimAll(t, s, keys("shop|ivy|new_", 1000), dedupe.Fresh); n > 30 {
		t.Fatalf("after a failed rebuild, 1000 claims of new ids read the file %d times: the old filter is not in use", n)
	}
	if currentFilter(s) != old {
		t.Fatal("the failed rebuild replaced the filter")
	}

	ff.endPause(t)
	f := await(t, built, "the filter rebuilt on the retry")
	if f == old || f.saturated() || currentFilter(s) != f {
		t.Fatalf("after the retry: the old filter (%v), saturated (%v), not in place (%v)", f == old, f.saturated(), currentFilter(s) != f)
	}
	for _, k := range committed {
		if d := digest(sha256.Sum256([]byte(k))); !f.mayHold(&d) {
			t.Fatalf("the rebuilt filter lacks %s", k)
		}
	}
	if err := s.checkpointAll(); err != nil {
		t.Fatal(err)
	}
	claimAll(t, s, committed, dedupe.Delivered)
	if n := claimAll(t, s, keys("shop|ivy|later_", 1000), dedupe.Fresh); n > 30 {
		t.Fatalf("1000 claims of new ids read the file %d times", n)
	}
	ff.noMoreErrors(t)
}

// Close during the pause after a failed build (here one that never ends)
// returns, and the filterer with it.
func TestReplayFilterCloseDuringRetryPause(t *testing.T) {
	ff := newFilterFaults(1)
	ff.fail.Store(true)
	s, _ := newTestFile(t, ff.config(Config{}))
	ff.failed(t) // no send on ff.retry: the pause never ends
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hangGuard):
		t.Errorf("Close waited for the pause after a failed build of the replay filter")
		select { // end the pause, so that Close, and the test, end
		case ff.retry <- time.Time{}:
		case <-closed:
		}
		return
	}
	select {
	case <-s.filterDone:
	default:
		t.Fatal("Close returned with the filterer running")
	}
}
