package dedupe

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand; safe for the sweeper to read.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func newTestMemory(t testing.TB, cfg MemoryConfig) (*Memory, *fakeClock) {
	t.Helper()
	clock := &fakeClock{}
	s, err := newMemory(cfg, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clock
}

func TestMemoryClaimCommitRelease(t *testing.T) {
	ctx := context.Background()
	s, clock := newTestMemory(t, MemoryConfig{})
	key := Key("", "ivy", "evt_1")

	c, err := s.Claim(ctx, key, time.Minute)
	if err != nil || c.State != Fresh || c.Token == "" {
		t.Fatalf("first claim = %+v, %v; want fresh with a token", c, err)
	}
	if c2, _ := s.Claim(ctx, key, time.Minute); c2.State != InFlight {
		t.Fatalf("second claim = %v, want in_flight", c2.State)
	}
	if err := s.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	c, _ = s.Claim(ctx, key, time.Minute)
	if c.State != Fresh {
		t.Fatalf("claim after release = %v, want fresh", c.State)
	}
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	if c2, _ := s.Claim(ctx, key, time.Minute); c2.State != Delivered {
		t.Fatalf("claim right after commit = %v, want delivered", c2.State)
	}
	// After the exact record has handed the key to ristretto, it is still
	// delivered.
	s.cache.Wait()
	clock.advance(2 * settleTime)
	s.settle()
	if st := s.Stats(); st.Pending != 0 {
		t.Fatalf("exact record still holds %d keys after settling", st.Pending)
	}
	if c2, _ := s.Claim(ctx, key, time.Minute); c2.State != Delivered {
		t.Fatalf("claim after settle = %v, want delivered", c2.State)
	}
	// Releasing a committed claim does not free it.
	if err := s.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	if c2, _ := s.Claim(ctx, key, time.Minute); c2.State != Delivered {
		t.Fatalf("claim after late release = %v, want delivered", c2.State)
	}
}

func TestMemoryLeaseExpiry(t *testing.T) {
	ctx := context.Background()
	s, clock := newTestMemory(t, MemoryConfig{})
	a, _ := s.Claim(ctx, "k", 30*time.Second)
	if a.State != Fresh {
		t.Fatal("want fresh")
	}
	clock.advance(29 * time.Second)
	if c, _ := s.Claim(ctx, "k", 30*time.Second); c.State != InFlight {
		t.Fatalf("claim inside the lease = %v, want in_flight", c.State)
	}
	clock.advance(2 * time.Second)
	b, _ := s.Claim(ctx, "k", 30*time.Second)
	if b.State != Fresh {
		t.Fatalf("claim after the lease = %v, want fresh", b.State)
	}
	// The first holder's late release must not free the second's claim.
	if err := s.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Claim(ctx, "k", 30*time.Second); c.State != InFlight {
		t.Fatalf("after a stale release = %v, want in_flight", c.State)
	}
}

func TestMemoryConcurrentClaims(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestMemory(t, MemoryConfig{})
	for round := range 50 {
		key := Key("", "standard", fmt.Sprint("msg_", round))
		var fresh atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c, err := s.Claim(ctx, key, time.Minute)
				if err != nil {
					t.Error(err)
				}
				if c.State == Fresh {
					fresh.Add(1)
					s.Commit(ctx, c, time.Hour)
				}
			}()
		}
		close(start)
		wg.Wait()
		if n := fresh.Load(); n != 1 {
			t.Fatalf("round %d: %d fresh claims, want exactly 1", round, n)
		}
	}
}

func TestMemoryWindowExpiry(t *testing.T) {
	ctx := context.Background()
	s, clock := newTestMemory(t, MemoryConfig{})
	c, _ := s.Claim(ctx, "k", time.Minute)
	s.Commit(ctx, c, 10*time.Second)
	clock.advance(11 * time.Second)
	// The exact record has expired; ristretto's own TTL uses the real clock,
	// so drop the key from it as its cleanup would.
	s.cache.Del("k")
	s.cache.Wait()
	if c, _ := s.Claim(ctx, "k", time.Minute); c.State != Fresh {
		t.Fatalf("claim after the window = %v, want fresh", c.State)
	}
}

// TestMemoryOverflowCounted fills a small store far past max_events and checks
// that what it forgot is counted and reported, never silent.
func TestMemoryOverflowCounted(t *testing.T) {
	ctx := context.Background()
	var reported atomic.Int64
	s, _ := newTestMemory(t, MemoryConfig{MaxEvents: 100, OnPressure: func(Pressure) { reported.Add(1) }})
	const n = 5000
	for i := range n {
		c, _ := s.Claim(ctx, fmt.Sprint("evt_", i), time.Minute)
		if c.State != Fresh {
			t.Fatalf("event %d: %v, want fresh", i, c.State)
		}
		s.Commit(ctx, c, time.Hour)
	}
	s.cache.Wait()
	st := s.Stats()
	lost := st.Evicted + st.Rejected
	if lost < n-100-int64(n/10) {
		t.Fatalf("stats %+v: only %d of %d overflowing events counted", st, lost, n-100)
	}
	if reported.Load() != lost {
		t.Fatalf("reported %d, counted %d", reported.Load(), lost)
	}
	// Those just committed are still in the exact record and so still
	// refused, whatever ristretto did with them.
	if c, _ := s.Claim(ctx, fmt.Sprint("evt_", n-1), time.Minute); c.State != Delivered {
		t.Fatalf("last event = %v, want delivered", c.State)
	}
}

// TestMemoryCommitVisibleUnderLoad checks the exact record in front of
// ristretto: a committed id is Delivered to the very next Claim, from the
// committing goroutine and from another one, while many other sets are in
// flight in ristretto's buffers (and some dropped by them).
func TestMemoryCommitVisibleUnderLoad(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestMemory(t, MemoryConfig{MaxEvents: 1_000_000})
	const workers, perWorker = 8, 20_000
	committed := make(chan string, 1024)
	var checked atomic.Int64
	checker := make(chan struct{})
	go func() {
		defer close(checker)
		for key := range committed {
			if c, _ := s.Claim(ctx, key, time.Minute); c.State != Delivered {
				t.Errorf("%s claimed from another goroutine just after its commit: %v, want delivered", key, c.State)
			}
			checked.Add(1)
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				key := Key("", "ivy", fmt.Sprint("evt_", w, "_", i))
				c, err := s.Claim(ctx, key, time.Minute)
				if err != nil || c.State != Fresh {
					t.Errorf("%s: first claim %v, %v; want fresh", key, c.State, err)
					return
				}
				if err := s.Commit(ctx, c, time.Hour); err != nil {
					t.Errorf("%s: commit: %v", key, err)
					return
				}
				if c, _ := s.Claim(ctx, key, time.Minute); c.State != Delivered {
					t.Errorf("%s claimed just after its commit: %v, want delivered", key, c.State)
					return
				}
				if i%16 == 0 {
					committed <- key
				}
			}
		}()
	}
	wg.Wait()
	close(committed)
	<-checker
	if want := int64(workers * perWorker / 16); checked.Load() != want {
		t.Fatalf("checked %d keys from another goroutine, want %d", checked.Load(), want)
	}
	t.Logf("stats after %d commits: %+v", workers*perWorker, s.Stats())
}

// TestMemoryBurstForgetsNothing commits a burst of distinct events far below
// max_events, faster than ristretto applies sets (its buffer drops some),
// and checks that once everything has settled into ristretto every event is
// still delivered: a burst is not capacity.
func TestMemoryBurstForgetsNothing(t *testing.T) {
	ctx := context.Background()
	s, clock := newTestMemory(t, MemoryConfig{MaxEvents: 1_000_000})
	const workers, perWorker = 8, 40_000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				c, _ := s.Claim(ctx, fmt.Sprint("evt_", w, "_", i), time.Minute)
				s.Commit(ctx, c, time.Hour)
			}
		}()
	}
	wg.Wait()
	dropped := s.Stats().Dropped
	// Each round hands the dropped sets over again; a handed-over key leaves
	// the exact record one round later.
	for round := 0; s.Stats().Pending > 0; round++ {
		if round == 50 {
			t.Fatalf("exact record still holds %d keys after %d settle rounds", s.Stats().Pending, round)
		}
		clock.advance(2 * settleTime)
		s.settle()
	}
	st := s.Stats()
	if st.Evicted+st.Rejected != 0 {
		t.Fatalf("stats %+v: events forgotten below capacity", st)
	}
	forgotten := 0
	for w := range workers {
		for i := range perWorker {
			if c, _ := s.Claim(ctx, fmt.Sprint("evt_", w, "_", i), time.Minute); c.State != Delivered {
				forgotten++
			}
		}
	}
	if forgotten > 0 {
		t.Fatalf("%d of %d delivered events forgotten after settling (%d sets dropped by ristretto's buffer)",
			forgotten, workers*perWorker, dropped)
	}
	t.Logf("%d events, %d sets dropped by ristretto's buffer and handed over again", workers*perWorker, dropped)
}

func TestKeyNoCollisions(t *testing.T) {
	seen := map[string][3]string{}
	parts := []string{"", "a", "b", "ab", "1:a", ":", "1"}
	for _, a := range parts {
		for _, b := range parts {
			for _, c := range parts {
				k := Key(a, b, c)
				if prev, ok := seen[k]; ok {
					t.Fatalf("Key%v == Key%v", prev, [3]string{a, b, c})
				}
				seen[k] = [3]string{a, b, c}
			}
		}
	}
}

// BenchmarkMemoryClaimCommit measures a fresh Claim followed by Commit, the
// cost the guard adds per forwarded event, under parallel load.
func BenchmarkMemoryClaimCommit(b *testing.B) {
	ctx := context.Background()
	s, _ := newTestMemory(b, MemoryConfig{})
	var seq atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer() // not the cache's construction (10 million counters)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := Key("", "standard", "msg_"+strconv.FormatUint(seq.Add(1), 10))
			c, _ := s.Claim(ctx, key, time.Minute)
			s.Commit(ctx, c, time.Hour)
		}
	})
}

// BenchmarkMemoryBytesPerEvent remembers one million events (a store sized
// for them, as max_events 1000000) and reports the live heap the store holds
// once every event has settled into ristretto, per event, the cache's fixed
// structures (counters, buffers: about 50 MB) included. The sweeper settles
// every 10,000 commits, as it would every second at 10,000 events/s, so the
// exact record stays as small as in service (a Go map keeps its size after a
// burst). Run it with -benchtime 1x: one iteration is a million commits.
func BenchmarkMemoryBytesPerEvent(b *testing.B) {
	ctx := context.Background()
	const n = 1_000_000
	keys := make([]string, n) // built beforehand: not the store's memory
	for i := range keys {
		keys[i] = Key("", "standard", "msg_"+strconv.Itoa(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		clock := &fakeClock{}
		s, err := newMemory(MemoryConfig{MaxEvents: n}, clock.now)
		if err != nil {
			b.Fatal(err)
		}
		for i, key := range keys {
			c, _ := s.Claim(ctx, key, time.Minute)
			s.Commit(ctx, c, time.Hour)
			if i%10_000 == 9_999 {
				clock.advance(2 * settleTime)
				s.settle()
			}
		}
		for round := 0; s.Stats().Pending > 0; round++ {
			if round == 50 {
				b.Fatalf("exact record still holds %d keys after %d settle rounds", s.Stats().Pending, round)
			}
			clock.advance(2 * settleTime)
			s.settle()
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		st := s.Stats()
		// Signed: HeapAlloc may shrink between the two reads when garbage of
		// an earlier iteration is collected.
		grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		b.ReportMetric(float64(grown)/n, "bytes/event")
		b.ReportMetric(float64(st.Evicted+st.Rejected), "lost")
		runtime.KeepAlive(keys)
		s.Close()
		b.StartTimer()
	}
}
