package ledger

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
)

// tailJournal is a journal laid out for the tail tests: one segment whose
// groups are firstGroups of one commit each, then one of lastGroup
// commits; key i is the i-th committed, in journal order.
type tailJournal struct {
	dir, path, segPath string
	data               []byte // the segment, up to the end of its last group's block
	keys               []string
	recs               []jrecord // in journal order, with their frames' offsets
	lastGroupStart     int64
	lastGroupEnd       int64
}

const firstGroups, lastGroup = 5, 12

var (
	tailOnce sync.Once
	tailRef  *tailJournal
	tailErr  error
)

// tailReference builds the tail journal once.
func tailReference(t testing.TB) *tailJournal {
	t.Helper()
	tailOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ledger-tail-")
		if err != nil {
			tailErr = err
			return
		}
		tj := &tailJournal{dir: dir, path: filepath.Join(dir, "ledger.db")}
		tailErr = tj.build()
		tailRef = tj
	})
	if tailErr != nil {
		t.Fatal(tailErr)
	}
	return tailRef
}

func (tj *tailJournal) build() error {
	// Laid out as the writer lays out groups (encodeGroup), by hand, so
	// that the last group holds exactly lastGroup records.
	const id = 7
	j := &journal{dir: tj.dir, name: filepath.Base(tj.path)}
	tj.segPath = j.segmentPath(id)
	s := &Ledger{}
	exp := time.Now().Add(time.Hour).UnixNano()
	rec := func(i int) jrecord {
		key := "tail_" + strconv.Itoa(i)
		tj.keys = append(tj.keys, key)
		d := digest(sha256.Sum256([]byte(key)))
		return jrecord{seq: uint64(i + 1), muts: []mutation{{kind: mPutReplay, flag: true, digest: d, replay: replayRecord{state: recordDelivered, expires: exp}}}}
	}
	sg := &segment{id: id}
	var data []byte
	for i := range firstGroups {
		data = append(data, s.encodeGroup(sg, []jrecord{rec(i)}, i == 0)...)
	}
	var last []jrecord
	for i := range lastGroup {
		last = append(last, rec(firstGroups+i))
	}
	data = append(data, s.encodeGroup(sg, last, false)...)
	data = append(data, make([]byte, minSegmentSize-len(data))...) // zero-filled ahead of use
	sc := scanSegment(data, id, func(uint64) bool { return true })
	if sc.end != endClean || len(sc.records) != firstGroups+lastGroup {
		return errors.New("tail reference: unexpected layout")
	}
	for _, r := range sc.records {
		r.muts = cloneMutations(r.muts)
		tj.recs = append(tj.recs, r)
	}
	first := tj.recs[len(tj.recs)-lastGroup]
	tj.lastGroupStart = first.start &^ (blockSize - 1)
	tj.lastGroupEnd = alignUp(tj.recs[len(tj.recs)-1].end, blockSize)
	tj.data = append([]byte(nil), data[:tj.lastGroupEnd]...)
	return nil
}

// recoverTail reads back a journal whose segment holds data: the keys
// recovered, in order.
func (tj *tailJournal) recoverTail(t testing.TB, data []byte) []string {
	t.Helper()
	fs := newMemFS()
	fs.put(tj.segPath, data)
	j := &journal{fs: fs, dir: filepath.Dir(tj.path), name: filepath.Base(tj.path), maxSize: DefaultSegmentSize}
	rd, err := readJournal(fs, j, tj.path, 0, math.MaxUint64, false)
	if err != nil {
		t.Fatalf("recovery of a damaged tail failed: %v", err)
	}
	var out []string
	for i, r := range rd.recs {
		if i >= len(tj.recs) || r.seq != tj.recs[i].seq || len(r.muts) != 1 || r.muts[0].digest != tj.recs[i].muts[0].digest {
			t.Fatalf("recovered record %d (seq %d) is not the %d-th written", i, r.seq, i)
		}
		out = append(out, tj.keys[i])
	}
	return out
}

// damage returns the reference with its byte at off xored with x (x != 0),
// or cut at off (x == 0): what a torn or garbled last write leaves.
func (tj *tailJournal) damage(off int64, x byte) []byte {
	if x == 0 {
		return append([]byte(nil), tj.data[:off]...)
	}
	data := append([]byte(nil), tj.data...)
	data[off] ^= x
	return data
}

// survivors is how many records must survive damage at off: every record
// before the first whose frame the damage reaches.
func (tj *tailJournal) survivors(off int64, x byte) int {
	for i, r := range tj.recs {
		if x == 0 && r.end > off || x != 0 && r.start <= off && off < r.end {
			return i
		}
	}
	return len(tj.recs)
}

// checkTail damages the reference at off and checks that the recovery
// yields exactly the records before the damage, in order.
func (tj *tailJournal) checkTail(t testing.TB, off int64, x byte) {
	t.Helper()
	got := tj.recoverTail(t, tj.damage(off, x))
	if want := tj.survivors(off, x); len(got) != want {
		t.Fatalf("damage (xor %#x) at byte %d of the last group: %d records recovered, want the %d before it", x, off-tj.lastGroupStart, len(got), want)
	}
}

// The last segment's last group cut, or one of its bytes garbled, at every
// byte offset: recovery yields exactly the records before the damage (a
// prefix of the acknowledged operations), never a record after it, never a
// failure. Every 256th offset the whole ledger is opened on it, and answers
// for every key as the prefix says.
func TestJournalTornTail(t *testing.T) {
	tj := tailReference(t)
	xors := []byte{0, 0x01, 0x80, 0xff} // 0: cut there
	if testing.Short() {
		xors = []byte{0, 0xff}
	}
	for off := tj.lastGroupStart; off < tj.lastGroupEnd; off++ {
		for _, x := range xors {
			tj.checkTail(t, off, x)
		}
		if (off-tj.lastGroupStart)%256 != 0 {
			continue
		}
		for _, x := range []byte{0, 0x55} {
			fs := newMemFS()
			path := filepath.Join(t.TempDir(), "ledger.db")
			fs.put(filepath.Join(filepath.Dir(path), filepath.Base(tj.segPath)), tj.damage(off, x))
			s, err := Open(Config{Path: path, fs: fs, SweepEvery: time.Hour})
			if err != nil {
				t.Fatalf("open with the last group damaged at %d: %v", off-tj.lastGroupStart, err)
			}
			n := tj.survivors(off, x)
			for i, key := range tj.keys {
				want := dedupe.Delivered
				if i >= n {
					want = dedupe.Fresh
				}
				c := dedupetest.MustClaim(t, s, key, time.Minute, want)
				_ = s.Release(context.Background(), c)
			}
			_ = s.Close()
		}
	}
}

// FuzzJournalTail garbles or cuts the last group of the last segment at any
// offset: recovery yields exactly the records before the damage.
func FuzzJournalTail(f *testing.F) {
	for _, off := range []uint16{0, 1, 31, 32, 33, 80, 100, 511, 1000, 4095} {
		f.Add(off, byte(0))
		f.Add(off, byte(0x20))
	}
	f.Fuzz(func(t *testing.T, off uint16, x byte) {
		tj := tailReference(t)
		tj.checkTail(t, tj.lastGroupStart+int64(off)%(tj.lastGroupEnd-tj.lastGroupStart), x)
	})
}

// FuzzDecodeMutations feeds arbitrary payloads to the journal record
// decoder, which reads what the disk holds: it errs or decodes, never
// panics, and what it decodes encodes to bytes that decode to the same.
func FuzzDecodeMutations(f *testing.F) {
	f.Add(appendMutations(nil, []mutation{{kind: mPutReplay, flag: true, replay: replayRecord{state: recordDelivered, expires: 42}}}))
	f.Add(appendMutations(nil, []mutation{
		{kind: mPutSpool, spoolChange: &spoolChange{seq: 7, idx: indexEntry{bucket: idxDue, value: []byte("v")}, enc: []byte("record")}},
		{kind: mDelSpool, spoolChange: &spoolChange{seq: 7, oldIdx: indexEntry{bucket: idxDead}}},
		{kind: mDelReplay, flag: true},
		{kind: mPause, scope: "shop", paused: true},
	}))
	f.Fuzz(func(t *testing.T, payload []byte) {
		muts, err := decodeMutations(payload)
		if err != nil {
			return
		}
		enc := appendMutations(nil, muts)
		again, err := decodeMutations(enc)
		if err != nil {
			t.Fatalf("decoded %x, encoded as %x, which does not decode: %v", payload, enc, err)
		}
		if got := appendMutations(nil, again); string(got) != string(enc) {
			t.Fatalf("decoded %x, encoded as %x, then as %x", payload, enc, got)
		}
	})
}

// Garbage in a segment that is not the last — its records cut short — fails
// the load with the segment's path and what to do, and leaves the files as
// they were.
func TestJournalDamageFailsLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	s, _ := newTestFile(t, Config{Path: path, manualCheckpoint: true})
	// 300 commits, one per group: the first 1 MiB segment fills up and the
	// journal goes on in a second one.
	for i := range 300 {
		claimCommit(t, s, "k"+strconv.Itoa(i), time.Hour)
	}
	segs := s.j.segs
	if len(segs) < 2 {
		t.Fatalf("%d segments, want two at least", len(segs))
	}
	first := segs[0].path
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	for i := 100 * blockSize; i < 100*blockSize+64; i++ { // inside the 100th group
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(first, data, 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	_, err = Open(Config{Path: path})
	if err == nil {
		t.Fatal("a damaged segment that is not the last: the ledger opened")
	}
	for _, want := range []string{first, "damaged", "move its segments", "backup"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("the refused open changed the ledger file")
	}
	t.Log(err)
}

// An fdatasync of the journal that fails is fatal to the journal as it
// was, never retried: the operations of its group fail (dedupe.ErrUnavailable,
// a 503), the ledger says it is not writable, counts and reports the error,
// reopens its journal from what the disk holds, and takes writes again;
// after a crash, everything acknowledged is there.
func TestJournalSyncError(t *testing.T) {
	fs := newMemFS()
	var fail atomic.Int64
	fail.Store(40) // the 40th sync of a segment fails
	fs.failSync = func(name string, n int) error {
		if strings.Contains(name, journalSuffix) && !strings.HasSuffix(name, ".tmp") && fail.Add(-1) == 0 {
			return syscall.EIO
		}
		return nil
	}
	var mu sync.Mutex
	var health []error
	var journalErrs []error
	path := filepath.Join(t.TempDir(), "ledger.db")
	cfg := Config{Path: path, fs: fs, SweepEvery: time.Hour,
		OnWritable: func(err error) { mu.Lock(); health = append(health, err); mu.Unlock() },
		OnJournalError: func(kind string, err error) {
			mu.Lock()
			journalErrs = append(journalErrs, fmt.Errorf("%s: %w", kind, err))
			mu.Unlock()
		},
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var acked, failed []string
	var amu sync.Mutex
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				key := "sync_" + strconv.Itoa(g) + "_" + strconv.Itoa(i)
				c, err := s.Claim(ctx, key, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				err = s.Commit(ctx, c, time.Hour)
				amu.Lock()
				if err == nil {
					acked = append(acked, key)
				} else {
					if !errors.Is(err, dedupe.ErrUnavailable) || !strings.Contains(err.Error(), "journal write failed") {
						t.Errorf("commit in the failed group: %v, want ErrUnavailable saying the journal write failed", err)
					}
					failed = append(failed, key)
				}
				amu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) == 0 {
		t.Fatal("no commit failed with the sync")
	}
	if err := s.Writable(); err != nil {
		t.Fatalf("Writable after the journal reopened: %v", err)
	}
	mu.Lock()
	if len(health) != 2 || health[0] == nil || health[1] != nil {
		t.Errorf("OnWritable told %v, want the failure then nil", health)
	}
	if len(journalErrs) != 1 || !strings.Contains(journalErrs[0].Error(), "sync: ") || !strings.Contains(journalErrs[0].Error(), "input/output error") {
		t.Errorf("OnJournalError told %v, want the failed sync once", journalErrs)
	}
	mu.Unlock()
	if st := s.JournalStats(); st.FsyncErrors != 1 {
		t.Errorf("FsyncErrors = %d, want 1", st.FsyncErrors)
	}
	// Writes go on after the reopening.
	claimCommit(t, s, "after_the_failure", time.Hour)
	acked = append(acked, "after_the_failure")
	fs.crash()
	_ = s.Close()
	fs.restart()
	s2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, key := range acked {
		dedupetest.MustClaim(t, s2, key, time.Minute, dedupe.Delivered)
	}
	t.Logf("%d commits acknowledged, %d failed with the sync; all acknowledged there after a crash", len(acked), len(failed))
}
