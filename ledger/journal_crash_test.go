package ledger

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// crashLoad is what a load on a ledger did, as its callers saw it: the
// operations acknowledged (returned nil) and the ones issued (called),
// acknowledged or not.
type crashLoad struct {
	mu sync.Mutex
	// commits acknowledged, and keys claimed and released, never committed.
	committed, released []string
	// events: ingests acknowledged, by key.
	ingested map[string]crashEvent
	// deliveries issued and acknowledged, by key of the ingested event.
	deliverIssued, delivered map[string]bool
	// pauses: the last value acknowledged by scope, and whether one was
	// issued after it.
	paused        map[string]bool
	pauseInFlight map[string]bool
	// every event id ingested or issued
	issuedEvents map[string]bool
	// maxBody bounds the events' bodies (0: 2 KiB).
	maxBody int
}

type crashEvent struct {
	seq  uint64
	body []byte
}

func newCrashLoad() *crashLoad {
	return &crashLoad{
		ingested: map[string]crashEvent{}, deliverIssued: map[string]bool{}, delivered: map[string]bool{},
		paused: map[string]bool{}, pauseInFlight: map[string]bool{}, issuedEvents: map[string]bool{},
	}
}

// run drives s from goroutines goroutines until an operation fails (the
// file system crashed) or each has made max operations.
func (l *crashLoad) run(s *Ledger, rnd *rand.Rand, tag string, goroutines, max int) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range goroutines {
		seed := rnd.Uint64()
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(g)))
			scope := fmt.Sprintf("scope_%s_%d", tag, g)
			var mine []string // this goroutine's ingested keys
			for i := range max {
				key := fmt.Sprintf("%s_%d_%d", tag, g, i)
				var err error
				switch op := r.IntN(10); {
				case op < 4: // a delivered event
					var c dedupe.Claim
					if c, err = s.Claim(ctx, key, time.Minute); err == nil {
						if err = s.Commit(ctx, c, time.Hour); err == nil {
							l.mu.Lock()
							l.committed = append(l.committed, key)
							l.mu.Unlock()
						}
					}
				case op < 5: // a claim released: never delivered
					var c dedupe.Claim
					if c, err = s.Claim(ctx, key, time.Minute); err == nil {
						_ = s.Release(ctx, c)
						l.mu.Lock()
						l.released = append(l.released, key)
						l.mu.Unlock()
					}
				case op < 8: // a spooled event
					body := make([]byte, r.IntN(cmp.Or(l.maxBody, 2048)))
					for j := range body {
						body[j] = byte(r.Uint32())
					}
					rec := &spool.Record{Scope: scope, Provider: "ivy", EventID: key, ReceivedAt: time.Now(), Method: "POST", Body: body}
					l.mu.Lock()
					l.issuedEvents[key] = true
					l.mu.Unlock()
					var dup bool
					if dup, err = s.Ingest(ctx, key, rec, time.Hour); err == nil && !dup {
						l.mu.Lock()
						l.ingested[key] = crashEvent{seq: rec.ID, body: body}
						l.mu.Unlock()
						mine = append(mine, key)
					}
				case op < 9: // a spooled event delivered
					if len(mine) == 0 {
						continue
					}
					k := mine[r.IntN(len(mine))]
					l.mu.Lock()
					ev := l.ingested[k]
					l.deliverIssued[k] = true
					l.mu.Unlock()
					if err = s.Delivered(ctx, ev.seq, time.Hour); err == nil || errors.Is(err, spool.ErrNotFound) {
						err = nil
						l.mu.Lock()
						l.delivered[k] = true
						l.mu.Unlock()
					}
				default: // a pause or resume
					p := r.IntN(2) == 0
					l.mu.Lock()
					l.pauseInFlight[scope] = true
					l.mu.Unlock()
					if err = s.SetPaused(ctx, scope, p); err == nil {
						l.mu.Lock()
						l.paused[scope], l.pauseInFlight[scope] = p, false
						l.mu.Unlock()
					}
				}
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
}

// check verifies that s holds everything l acknowledged and nothing it
// did not issue.
func (l *crashLoad) check(t *testing.T, s *Ledger, what string) {
	t.Helper()
	ctx := context.Background()
	for _, key := range l.committed {
		if c, err := s.Claim(ctx, key, time.Minute); err != nil || c.State != dedupe.Delivered {
			t.Fatalf("%s: committed %s is %v (%v), want delivered", what, key, c.State, err)
		}
	}
	for _, key := range l.released {
		c, err := s.Claim(ctx, key, time.Minute)
		if err != nil || c.State != dedupe.Fresh {
			t.Fatalf("%s: %s, never committed, is %v (%v), want fresh", what, key, c.State, err)
		}
		_ = s.Release(ctx, c)
	}
	for key, ev := range l.ingested {
		if c, err := s.Claim(ctx, key, time.Minute); err != nil || c.State != dedupe.Delivered {
			t.Fatalf("%s: spooled %s: its key is %v (%v), want remembered", what, key, c.State, err)
		}
		rec, ok, err := s.Get(ctx, ev.seq)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case l.delivered[key] && ok:
			t.Fatalf("%s: %s delivered (acknowledged) is still spooled", what, key)
		case !ok && !l.deliverIssued[key]:
			t.Fatalf("%s: spooled %s (seq %d) is gone", what, key, ev.seq)
		case ok && (rec.EventID != key || !bytes.Equal(rec.Body, ev.body)):
			t.Fatalf("%s: spooled %s (seq %d) reads back as %s with %d bytes, want %d", what, key, ev.seq, rec.EventID, len(rec.Body), len(ev.body))
		}
	}
	all, err := listAll(t, s, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range all {
		if !l.issuedEvents[rec.EventID] {
			t.Fatalf("%s: the spool holds %s, never ingested", what, rec.EventID)
		}
	}
	paused, _ := s.Paused(ctx)
	for scope, p := range l.paused {
		if !l.pauseInFlight[scope] && paused[scope] != p {
			t.Fatalf("%s: scope %s paused %v, want %v", what, scope, paused[scope], p)
		}
	}
	if n, _ := s.Usage(); n < int64(len(l.committed)) {
		t.Fatalf("%s: Usage() = %d, below the %d ids committed", what, n, len(l.committed))
	}
}

// TestJournalStrictCrashes crashes a strict in-memory file system under the
// journal at random points of a concurrent load of commits, claims
// released, ingests, spool deliveries and pauses — 300 times (25 under
// -short, 15 with the race detector, which slows it tenfold), with
// the crash at any write, sync, creation, rename or removal (segments made,
// activated, recycled) and checkpoints running meanwhile. After each crash
// the ledger reopens on what the file system kept: every acknowledged id
// and event is there, nothing unacknowledged is delivered, nothing never
// ingested is spooled; and once closed cleanly and reopened, again.
func TestJournalStrictCrashes(t *testing.T) {
	rounds := 300
	switch {
	case testing.Short():
		rounds = 25
	case raceEnabled:
		rounds = 15
	}
	crashRounds(t, rounds, false)
}

// TestJournalLooseCrashes is TestJournalStrictCrashes on a file system that
// keeps part of what was not durable at each crash, as a real disk may
// (the kernel or the device wrote it back before the power loss): each
// 4 KiB block written since its file's last sync keeps its new content at
// random, independently of the others, and so does each creation, rename
// and removal not followed by a sync of the folder (memFS.loose), with a
// probability drawn for each crash; half the crashes come at a sync, and
// half the rounds spool events of up to 48 KiB (groups of many blocks,
// segments filled sooner). The same must hold, and the ledger must open
// after every such crash: 200 rounds (20 under -short, 10 with the race
// detector). LEDGER_CRASH_SEED=n replays the draws of a logged seed (not
// the load's interleaving).
func TestJournalLooseCrashes(t *testing.T) {
	rounds := 200
	switch {
	case testing.Short():
		rounds = 20
	case raceEnabled:
		rounds = 10
	}
	crashRounds(t, rounds, true)
}

// crashRounds runs rounds of the crash test; loose: on a memFS that keeps
// part of what was not durable (memFS.loose), drawn from the seed logged.
// The load's interleaving is not drawn from the seed: a failure logs what
// the crash kept.
func crashRounds(t *testing.T, rounds int, loose bool) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("LEDGER_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(uint64(seed), 1))
	var kept []string // what the crashes of the round kept, for a failure
	t.Cleanup(func() {
		if t.Failed() && len(kept) > 0 {
			t.Logf("what the crashes kept of what was not durable:\n%s", strings.Join(kept, "\n"))
		}
	})
	for round := range rounds {
		kept = kept[:0]
		fs := newMemFS()
		if loose {
			fs.loose = rand.New(rand.NewPCG(rnd.Uint64(), 2))
		}
		path := filepath.Join(t.TempDir(), "ledger.db")
		cfg := Config{Path: path, SweepEvery: time.Hour, CheckpointEvery: time.Duration(1+rnd.IntN(20)) * time.Millisecond, fs: fs}
		load := newCrashLoad()
		if loose && rnd.IntN(2) == 0 {
			// Events of up to 12 blocks: groups of many blocks, torn at
			// random, and segments filled (rotations) more often.
			load.maxBody = 48 << 10
		}
		// One or two lives before the crash, the ledger reopened between.
		for life := range 1 + rnd.IntN(2) {
			s, err := Open(cfg)
			if err != nil {
				t.Fatalf("round %d: open: %v", round, err)
			}
			fs.mu.Lock()
			if loose && rnd.IntN(2) == 0 {
				// At a sync: what is written meanwhile (the group after,
				// perhaps the first of the next segment) is not durable.
				fs.crashAtSync = fs.syncs + 1 + rnd.IntN(600)
			} else {
				fs.crashAt = fs.ops + 1 + rnd.IntN(1500)
			}
			if loose {
				fs.keep = rnd.Float64()
			}
			fs.mu.Unlock()
			load.run(s, rnd, "r"+strconv.Itoa(round)+"l"+strconv.Itoa(life), 4, 300)
			fs.crash()
			_ = s.Close()
			fs.restart()
			if loose {
				kept = append(kept, fmt.Sprintf("life %d (keep %.2f):", life, fs.keep))
				kept = append(kept, fs.lastCrash...)
			}
		}
		// The checks claim once the replay filter is built, so that it
		// answers for the ids the file holds.
		built := make(chan *replayFilter, 1)
		checked := cfg
		checked.filterBuilt = built
		s, err := Open(checked)
		if err != nil {
			t.Fatalf("round %d: reopen after the crash: %v", round, err)
		}
		<-built
		load.check(t, s, "round "+strconv.Itoa(round)+" after the crash")
		if err := s.Close(); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
		checkLedger(t, path)
		if names := fs.names(); len(names) != 0 {
			t.Fatalf("round %d: a ledger closed cleanly left %v", round, names)
		}
		s, err = Open(checked)
		if err != nil {
			t.Fatalf("round %d: reopen after a clean close: %v", round, err)
		}
		<-built
		load.check(t, s, "round "+strconv.Itoa(round)+" after a clean close")
		_ = s.Close()
	}
}
