package ledger

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
)

// BenchmarkFileClaimCommit is the cost of a forwarded event's dedupe.Claim and
// durable Commit on the file store, from 1 and from 32 goroutines (group
// commit: one fsync per transaction).
func BenchmarkFileClaimCommit(b *testing.B) {
	for _, g := range []int{1, 32} {
		b.Run("goroutines="+strconv.Itoa(g), func(b *testing.B) {
			s, err := Open(Config{Path: filepath.Join(b.TempDir(), "ledger.db")})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			dedupetest.BenchClaimCommit(b, s, g)
		})
	}
}

// BenchmarkFileBytesPerID fills a ledger with 1,000,000 ids through dedupe.Claim
// and Commit (256 committers) and reports its size on disk per id: B/id
// (file size) and B/id-allocated (blocks the file system allocated), and
// the time OpenFile then takes (ms-reopen, page cache warm). It is
// skipped under -short; run it alone with -benchtime 1x:
//
//	go test -run '^$' -bench BenchmarkFileBytesPerID -benchtime 1x ./ledger/
func BenchmarkFileBytesPerID(b *testing.B) {
	if testing.Short() {
		b.Skip("-short: skipping filling a ledger with a million ids")
	}
	const n = 1_000_000
	for b.Loop() {
		path := filepath.Join(b.TempDir(), "ledger.db")
		s, err := Open(Config{Path: path})
		if err != nil {
			b.Fatal(err)
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		ctx := context.Background()
		for range 256 {
			wg.Go(func() {
				for i := next.Add(1); i <= n; i = next.Add(1) {
					key := dedupe.Key("scope", "standard", "msg_2vYCZ4kPq"+strconv.FormatInt(i, 10))
					c, err := s.Claim(ctx, key, time.Minute)
					if err == nil {
						err = s.Commit(ctx, c, 24*time.Hour)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if used, _ := s.Usage(); used != n {
			b.Fatalf("Usage() = %d, want %d", used, n)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fi.Size())/n, "B/id")
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			b.ReportMetric(float64(st.Blocks*512)/n, "B/id-allocated")
		}
		// Opening reads every page once (check and count).
		start := time.Now()
		s, err = Open(Config{Path: path})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-reopen")
		if used, _ := s.Usage(); used != n {
			b.Fatalf("Usage() after reopening = %d, want %d", used, n)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDuplicateClaim is the claim of an event already delivered (a
// provider's retry, a replay): from the file (a read transaction) and
// through the cache in front of it.
func BenchmarkDuplicateClaim(b *testing.B) {
	ctx := context.Background()
	f, err := Open(Config{Path: filepath.Join(b.TempDir(), "ledger.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const n = 10_000
	ks := make([]string, n)
	for i := range ks {
		ks[i] = dedupe.Key("bench", "standard", "msg_"+strconv.Itoa(i))
	}
	cached := dedupe.NewCached(f, n, nil)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := g; i < n; i += 32 {
				c, err := cached.Claim(ctx, ks[i], time.Minute)
				if err == nil {
					err = cached.Commit(ctx, c, time.Hour)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, s := range []struct {
		name  string
		store dedupe.Store
	}{{"file", f}, {"cached-file", cached}} {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			var i atomic.Uint64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, err := s.store.Claim(ctx, ks[i.Add(1)%n], time.Minute)
					if err != nil || c.State != dedupe.Delivered {
						b.Errorf("Claim = %v, %v; want Delivered", c.State, err)
						return
					}
				}
			})
		})
	}
}
