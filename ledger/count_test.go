package ledger

import (
	"context"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
)

// A sweep that deletes an expired record between a commit's evaluation
// (which found the record, so did not count the id as new) and its
// publication leaves the count of remembered ids right: the checkpoint
// counts what the file really gained. Before, the count drifted one low
// (and the ledger could hold more than max_events).
func TestCountHoldsWhenTheSweepRacesACommit(t *testing.T) {
	s, clock := newTestFile(t, Config{})
	const key = "shop|ivy|evt_1"
	claimCommit(t, s, key, time.Minute)
	if err := s.checkpointAll(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute) // its window ended; the record stays until swept
	c := dedupetest.MustClaim(t, s, key, time.Minute, dedupe.Fresh)
	clock.Advance(2 * time.Minute) // the lease ended too: the delivery is slow
	s.forgetLeases()
	var swept int
	crashPoint = func(point string) {
		if point == "after-write" && swept == 0 {
			n, err := s.sweepOnce(context.Background())
			if err != nil {
				t.Error(err)
			}
			swept = n + 1
		}
	}
	t.Cleanup(func() { crashPoint = nil })
	if err := s.Commit(context.Background(), c, time.Hour); err != nil {
		t.Fatal(err)
	}
	crashPoint = nil
	if swept != 2 {
		t.Fatalf("the sweep between the commit's write and its publication deleted %d records, want 1", swept-1)
	}
	if err := s.checkpointAll(); err != nil {
		t.Fatal(err)
	}
	dedupetest.MustClaim(t, s, key, time.Minute, dedupe.Delivered)
	wantCounted(t, s, 1)
}

// A batch the file applied although its transaction reported a failure
// (bbolt's final fdatasync failing after the meta page reached the page
// cache makes the transaction visible all the same) is applied again by the
// next checkpoint: the count of remembered ids stays right. The test stops
// the checkpoint just after its commit, where such a failure returns.
func TestCountHoldsWhenABatchIsAppliedTwice(t *testing.T) {
	s, _ := newTestFile(t, Config{manualCheckpoint: true})
	ids := keys("shop|ivy|evt_", 3)
	for _, k := range ids {
		claimCommit(t, s, k, time.Hour)
	}
	type stopped struct{}
	crashPoint = func(point string) {
		if point == "checkpoint-after-commit" {
			panic(stopped{})
		}
	}
	t.Cleanup(func() { crashPoint = nil })
	func() {
		defer func() {
			if r := recover(); r != (stopped{}) {
				panic(r)
			}
		}()
		_ = s.checkpointAll()
	}()
	crashPoint = nil
	if err := s.checkpointAll(); err != nil { // the same records again
		t.Fatal(err)
	}
	wantCounted(t, s, int64(len(ids)))
	for _, k := range ids {
		dedupetest.MustClaim(t, s, k, time.Minute, dedupe.Delivered)
	}
}

// wantCounted checks that the ledger counts want remembered ids, as many as
// its file holds.
func wantCounted(t *testing.T, s *Ledger, want int64) {
	t.Helper()
	var inFile int64
	if err := s.view(func(tx *bolt.Tx) error {
		inFile = int64(tx.Bucket(bucketReplay).Stats().KeyN)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Usage(); n != inFile || n != want {
		t.Fatalf("the ledger counts %d remembered ids, the file holds %d, want %d", n, inFile, want)
	}
}
