package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
)

// newTestFile opens a file store with a fake clock, in a temporary folder
// unless cfg.Path is set, closed when the test ends.
func newTestFile(t testing.TB, cfg Config) (*Ledger, *dedupetest.FakeClock) {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "webhook_guard", "ledger.db")
	}
	if cfg.SweepEvery == 0 {
		cfg.SweepEvery = time.Hour // the tests sweep by hand
	}
	clock := &dedupetest.FakeClock{}
	s, err := open(cfg, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, clock
}

// claimCommit claims key fresh and commits it for window.
func claimCommit(t testing.TB, s dedupe.Store, key string, window time.Duration) {
	t.Helper()
	c := dedupetest.MustClaim(t, s, key, time.Minute, dedupe.Fresh)
	if err := s.Commit(context.Background(), c, window); err != nil {
		t.Fatalf("Commit(%q): %v", key, err)
	}
}

// commitMany claims and commits keys from 32 goroutines, so that the
// commits share transactions, as under load.
func commitMany(t testing.TB, s dedupe.Store, keys []string, window time.Duration) {
	t.Helper()
	next := make(chan string)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for key := range next {
				c, err := s.Claim(context.Background(), key, time.Minute)
				if err == nil && c.State != dedupe.Fresh {
					err = fmt.Errorf("claim %v", c.State)
				}
				if err == nil {
					err = s.Commit(context.Background(), c, window)
				}
				if err != nil {
					t.Errorf("%s: %v", key, err)
				}
			}
		})
	}
	for _, key := range keys {
		next <- key
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// keys returns n keys named prefix and a number.
func keys(prefix string, n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = prefix + strconv.Itoa(i)
	}
	return ks
}

// A committed id is in the file: closed and reopened, the store answers
// dedupe.Delivered; a claim in flight is not (a restart ends its delivery).
func TestFileSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	commitMany(t, s, keys("evt_", 100), time.Hour)
	dedupetest.MustClaim(t, s, dedupe.Key("shop", "ivy", "in_flight"), time.Minute, dedupe.Fresh)
	if s.Path() != path {
		t.Fatalf("Path() = %q, want %q", s.Path(), path)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Claim(context.Background(), "k", time.Minute); !errors.Is(err, dedupe.ErrUnavailable) {
		t.Fatalf("Claim after Close = %v, want ErrUnavailable", err)
	}
	if err := s.Commit(context.Background(), dedupe.Claim{Key: "k", State: dedupe.Fresh, Token: "x"}, time.Minute); !errors.Is(err, dedupe.ErrUnavailable) {
		t.Fatalf("Commit after Close = %v, want ErrUnavailable", err)
	}

	s2, err := Open(Config{Path: path})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if n, c := s2.Usage(); n != 100 || c != DefaultMaxEvents {
		t.Fatalf("Usage() after reopen = %d, %d; want 100, %d", n, c, DefaultMaxEvents)
	}
	for _, key := range keys("evt_", 100) {
		dedupetest.MustClaim(t, s2, key, time.Minute, dedupe.Delivered)
	}
	dedupetest.MustClaim(t, s2, dedupe.Key("shop", "ivy", "in_flight"), time.Minute, dedupe.Fresh)
}

// ledgerChildEnv makes the test binary a process that commits ids to the
// ledger at its value, printing each id once Commit returned, until killed.
const ledgerChildEnv = "DEDUPE_TEST_LEDGER_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(ledgerChildEnv); path != "" {
		runLedgerChild(path)
		return
	}
	os.Exit(m.Run())
}

// runLedgerChild is the process that TestFileSurvivesKill kills.
func runLedgerChild(path string) {
	s, err := Open(Config{Path: path})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := dedupe.Key("kill", "ivy", strconv.Itoa(g)+"_"+strconv.Itoa(i))
				c, err := s.Claim(context.Background(), key, time.Minute)
				if err == nil {
					err = s.Commit(context.Background(), c, time.Hour)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintln(out, key)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// A process killed (SIGKILL) while committing leaves a ledger that holds
// every id whose Commit returned.
func TestFileSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a test that runs and kills a child process")
	}
	path := filepath.Join(t.TempDir(), "ledger.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), ledgerChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var committed []string
	lines := bufio.NewScanner(stdout)
	for len(committed) < 500 && lines.Scan() {
		committed = append(committed, lines.Text())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Ids printed before the kill were committed too.
	for lines.Scan() {
		committed = append(committed, lines.Text())
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v; stderr: %s", err, stderr.String())
	}
	if len(committed) < 500 {
		t.Fatalf("child committed %d ids before dying; stderr: %s", len(committed), stderr.String())
	}

	s, err := Open(Config{Path: path})
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer s.Close()
	for _, key := range committed {
		dedupetest.MustClaim(t, s, key, time.Minute, dedupe.Delivered)
	}
	if n, _ := s.Usage(); n < int64(len(committed)) {
		t.Fatalf("Usage() = %d, fewer than the %d ids committed", n, len(committed))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkLedger(t, path)
	t.Logf("%d ids committed before SIGKILL, all delivered after reopening", len(committed))
}

// checkLedger runs bbolt's consistency check on the (closed) file at path.
func checkLedger(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("bolt.Open(%s): %v", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Fatalf("ledger %s fails bbolt's check: %v", path, err)
	}
}

// The file and its folder are created private; the file holds no event id
// in clear.
func TestFileModeAndContents(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "webhook_guard")
	path := filepath.Join(dir, "ledger.db")
	s, _ := newTestFile(t, Config{Path: path})
	const secretID = "evt_VISIBLE_EVENT_ID_42"
	claimCommit(t, s, dedupe.Key("tenant_scope", "stripe", secretID), time.Hour)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("ledger mode %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("ledger folder mode %v, want 0700", di.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, clear := range []string{secretID, "tenant_scope", "stripe"} {
		if bytes.Contains(data, []byte(clear)) {
			t.Fatalf("the ledger file holds %q in clear", clear)
		}
	}
	checkLedger(t, path)
}

// wantOpenError opens path and checks the error names the path and says
// every one of want; the file must be left as it was.
func wantOpenError(t *testing.T, path string, want ...string) {
	t.Helper()
	before, _ := os.ReadFile(path)
	s, err := Open(Config{Path: path})
	if err == nil {
		s.Close()
		t.Fatalf("Open(%s): no error", path)
	}
	msg := err.Error()
	for _, w := range append([]string{path}, want...) {
		if !strings.Contains(msg, w) {
			t.Fatalf("OpenFile error %q does not say %q", msg, w)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatalf("OpenFile changed %s though it refused it", path)
	}
	t.Logf("%v", err)
}

func TestFileLockedByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, _ := newTestFile(t, Config{Path: path})
	claimCommit(t, s, "k", time.Hour)
	_, err := Open(Config{Path: path})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second OpenFile = %v, want ErrInUse", err)
	}
	wantOpenError(t, path, "in use by another process", "another Caddy")
	dedupetest.MustClaim(t, s, "k", time.Minute, dedupe.Delivered)
}

func TestFileGarbage(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(rand.Text()+strings.Repeat("garbage", 3000)), 0o600); err != nil {
		t.Fatal(err)
	}
	wantOpenError(t, garbage, "corrupt")

	// A valid bbolt file whose pages were overwritten.
	damaged := filepath.Join(dir, "damaged.db")
	s, _ := newTestFile(t, Config{Path: damaged})
	commitMany(t, s, keys("k", 2000), time.Hour)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(damaged)
	if err != nil {
		t.Fatal(err)
	}
	for i := 16384; i < len(data); i++ { // keep the two meta pages
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(damaged, data, 0o600); err != nil {
		t.Fatal(err)
	}
	wantOpenError(t, damaged, "corrupt")

	// A ledger cut short (a copy interrupted, a full disk on another
	// system).
	truncated := filepath.Join(dir, "truncated.db")
	s, _ = newTestFile(t, Config{Path: truncated})
	commitMany(t, s, keys("k", 3000), time.Hour)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if data, err = os.ReadFile(truncated); err != nil {
		t.Fatal(err)
	}
	// Cut inside the pages in use: the file also has room bbolt allocated
	// ahead, whose loss would cost nothing.
	var used int64
	ro, err := bolt.Open(truncated, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = ro.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
	ro.Close()
	if err := os.WriteFile(truncated, data[:used/2], 0o600); err != nil {
		t.Fatal(err)
	}
	wantOpenError(t, truncated, "corrupt")

	// A bbolt file of another program.
	other := filepath.Join(dir, "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("certificates")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	wantOpenError(t, other, "not a webhook_guard ledger")
}

func TestFileNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, _ := newTestFile(t, Config{Path: path})
	claimCommit(t, s, "k", time.Hour)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, Schema+1))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	wantOpenError(t, path, "schema version 2 is newer")
}

func TestFileUnreadable(t *testing.T) {
	dir := t.TempDir()
	// A folder where the file should be.
	folder := filepath.Join(dir, "ledger.db")
	if err := os.Mkdir(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	wantOpenError(t, folder, "is a directory")
	// A file where the folder should be.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wantOpenError(t, filepath.Join(file, "ledger.db"), "not a directory")

	if os.Geteuid() == 0 {
		t.Log("running as root: permissions do not stop root from reading; checked a folder instead")
		return
	}
	path := filepath.Join(dir, "private.db")
	s, _ := newTestFile(t, Config{Path: path})
	s.Close()
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	wantOpenError(t, path, "permission denied")
}

// A full disk (here MaxSize) refuses the commit with an error matching
// ErrDiskFull and dedupe.ErrFull, writes no partial record, and loses none of
// the earlier ones.
func TestFileDiskFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, clock := newTestFile(t, Config{Path: path, MaxSize: 128 << 10})
	ctx := context.Background()
	var committed []string
	var full dedupe.Claim
	for i := 0; ; i++ {
		if i == 100_000 {
			t.Fatal("100,000 commits did not fill 128 KiB")
		}
		key := dedupe.Key("disk", "ivy", "evt_"+strconv.Itoa(i))
		c := dedupetest.MustClaim(t, s, key, time.Minute, dedupe.Fresh)
		err := s.Commit(ctx, c, time.Hour)
		if err == nil {
			committed = append(committed, key)
			continue
		}
		if !errors.Is(err, ErrDiskFull) || !errors.Is(err, dedupe.ErrFull) || !strings.Contains(err.Error(), path) {
			t.Fatalf("Commit on a full disk = %v, want ErrDiskFull (and dedupe.ErrFull) naming the path", err)
		}
		full = c
		break
	}
	// The failed commit's claim is still in flight: no duplicate gets
	// through while the guard retries the commit or the lease runs out.
	dedupetest.MustClaim(t, s, full.Key, time.Minute, dedupe.InFlight)
	for _, key := range committed {
		dedupetest.MustClaim(t, s, key, time.Minute, dedupe.Delivered)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkLedger(t, path)
	s2, err := open(Config{Path: path, MaxSize: 128 << 10, SweepEvery: time.Hour}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	dedupetest.MustClaim(t, s2, full.Key, time.Minute, dedupe.Fresh)
	for _, key := range committed {
		dedupetest.MustClaim(t, s2, key, time.Minute, dedupe.Delivered)
	}
	t.Logf("%d ids committed before the disk was full", len(committed))

	// Once windows end, the sweep frees pages and commits land again.
	// (One at a time: bbolt reuses a freed page only once no read
	// transaction older than its freeing is open, so commits racing with
	// claims right after the sweep could still find no page free.)
	clock.Advance(2 * time.Hour)
	for {
		n, err := s2.sweepOnce(ctx)
		if err != nil {
			t.Fatalf("sweep of a full ledger: %v", err)
		}
		if n == 0 {
			break
		}
	}
	for _, key := range keys("after_", len(committed)/2) {
		claimCommit(t, s2, key, time.Hour)
	}
}

// The sweep deletes expired ids from the file, in bounded batches, and
// gives their places back.
func TestFileSweep(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, clock := newTestFile(t, Config{Path: path, MaxEvents: 10_000})
	const short, long = sweepBatch*2 + 10, 5
	commitMany(t, s, keys("short_", short), time.Minute)
	commitMany(t, s, keys("long_", long), time.Hour)
	// Committed again: one record, its old expiry dropped from the index.
	claimCommitAfterExpiry := func(key string) {
		clock.Advance(2 * time.Minute)
		claimCommit(t, s, key, time.Hour)
	}
	claimCommitAfterExpiry("short_0")
	if n, _ := s.Usage(); n != short+long {
		t.Fatalf("Usage() = %d, want %d", n, short+long)
	}
	var swept int
	for {
		n, err := s.sweepOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n > sweepBatch {
			t.Fatalf("one sweep deleted %d ids, more than the batch of %d", n, sweepBatch)
		}
		swept += n
		if n == 0 {
			break
		}
	}
	if swept != short-1 {
		t.Fatalf("sweep deleted %d ids, want %d", swept, short-1)
	}
	if n, _ := s.Usage(); n != long+1 {
		t.Fatalf("Usage() after the sweep = %d, want %d", n, long+1)
	}
	dedupetest.MustClaim(t, s, "short_0", time.Minute, dedupe.Delivered)
	for i := range long {
		dedupetest.MustClaim(t, s, "long_"+strconv.Itoa(i), time.Minute, dedupe.Delivered)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketReplay).Stats().KeyN; n != long+1 {
			return fmt.Errorf("replay bucket holds %d records, want %d", n, long+1)
		}
		if n := tx.Bucket(bucketExpiry).Stats().KeyN; n != long+1 {
			return fmt.Errorf("expiry index holds %d entries, want %d", n, long+1)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The background sweep runs on its own.
func TestFileBackgroundSweep(t *testing.T) {
	s, clock := newTestFile(t, Config{SweepEvery: 5 * time.Millisecond})
	for i := range 50 {
		claimCommit(t, s, "k"+strconv.Itoa(i), time.Minute)
	}
	dedupetest.MustClaim(t, s, "lease", time.Minute, dedupe.Fresh)
	clock.Advance(2 * time.Minute)
	dedupetest.WaitUntil(t, 10*time.Second, "background sweep", func() bool {
		n, _ := s.Usage()
		return n == 0
	})
}

// An operation that fails inside a group does not fail the others, and
// leaves nothing in the file.
func TestFileGroupIsolatesFailures(t *testing.T) {
	s, _ := newTestFile(t, Config{})
	ctx := context.Background()
	// Hold the writer so that the operations below queue into one group.
	hold, held := make(chan struct{}), make(chan struct{})
	go s.queue(ctx, &writeOp{fn: func(*bolt.Tx) error {
		select {
		case <-held:
		default:
			close(held)
		}
		<-hold
		return nil
	}})
	<-held
	const n = 50
	errs := make([]error, n)
	var queued, done sync.WaitGroup
	for i := range n {
		queued.Add(1)
		done.Go(func() {
			key := []byte("op_" + strconv.Itoa(i))
			op := &writeOp{fn: func(tx *bolt.Tx) error {
				if err := tx.Bucket(bucketMeta).Put(key, []byte("x")); err != nil {
					return err
				}
				if i%10 == 3 {
					return errors.New("op " + strconv.Itoa(i) + " fails")
				}
				return nil
			}}
			queued.Done()
			errs[i] = s.queue(ctx, op)
		})
	}
	queued.Wait()
	dedupetest.WaitUntil(t, 10*time.Second, "operations queued", func() bool { return len(s.writes) == n })
	close(hold)
	done.Wait()
	err := s.db.View(func(tx *bolt.Tx) error {
		for i := range n {
			v := tx.Bucket(bucketMeta).Get([]byte("op_" + strconv.Itoa(i)))
			switch {
			case i%10 == 3 && (errs[i] == nil || v != nil):
				return fmt.Errorf("failing op %d: error %v, record %q", i, errs[i], v)
			case i%10 != 3 && (errs[i] != nil || v == nil):
				return fmt.Errorf("op %d: error %v, record %q", i, errs[i], v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestConfig(t *testing.T) {
	if _, err := Open(Config{}); err == nil {
		t.Fatal("empty path: no error")
	}
	if _, err := Open(Config{Path: filepath.Join(t.TempDir(), "l.db"), MaxEvents: -1}); err == nil {
		t.Fatal("MaxEvents -1: no error")
	}
}

func TestLedgerContract(t *testing.T) {
	dedupetest.Contract(t, time.Second, func(t *testing.T, maxEvents int64) dedupetest.ContractStore {
		s, clock := newTestFile(t, Config{MaxEvents: maxEvents})
		return dedupetest.ContractStore{Store: s, Advance: clock.Advance}
	})
}

func TestCachedLedgerContract(t *testing.T) {
	dedupetest.Contract(t, time.Second, func(t *testing.T, maxEvents int64) dedupetest.ContractStore {
		s, clock := newTestFile(t, Config{MaxEvents: maxEvents})
		return dedupetest.ContractStore{Store: dedupe.NewCached(s, 1000, clock.Now), Advance: clock.Advance}
	})
}
