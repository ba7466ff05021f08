package dedupe

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func newTestMemory(t testing.TB, cfg MemoryConfig) (*Memory, *fakeClock) {
	t.Helper()
	clock := &fakeClock{}
	s, err := newMemory(cfg, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, clock
}

func TestMemoryConfig(t *testing.T) {
	if _, err := NewMemory(MemoryConfig{MaxEvents: -1}); err == nil {
		t.Fatal("MaxEvents -1: no error")
	}
	s, err := NewMemory(MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, c := s.Usage(); n != 0 || c != DefaultMaxEvents {
		t.Fatalf("Usage() = %d, %d; want 0, %d", n, c, DefaultMaxEvents)
	}
	if _, err := s.Claim(context.Background(), "k", 0); err == nil {
		t.Fatal("lease 0: no error")
	}
}

// The sweep forgets expired ids, and only those, and gives their places
// back.
func TestMemorySweep(t *testing.T) {
	ctx := context.Background()
	s, clock := newTestMemory(t, MemoryConfig{MaxEvents: 100})
	for i := range 10 {
		c := mustClaim(t, s, "short_"+strconv.Itoa(i), time.Minute, Fresh)
		if err := s.Commit(ctx, c, time.Minute); err != nil {
			t.Fatal(err)
		}
		c = mustClaim(t, s, "long_"+strconv.Itoa(i), time.Minute, Fresh)
		if err := s.Commit(ctx, c, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	mustClaim(t, s, "lease", 30*time.Second, Fresh)
	if n, _ := s.Usage(); n != 21 {
		t.Fatalf("Usage() = %d, want 21", n)
	}
	if n := s.sweep(); n != 0 {
		t.Fatalf("sweep before any expiry forgot %d", n)
	}
	clock.advance(2 * time.Minute)
	if n := s.sweep(); n != 11 {
		t.Fatalf("sweep forgot %d ids, want 11 (10 windows, 1 lease)", n)
	}
	if n, _ := s.Usage(); n != 10 {
		t.Fatalf("Usage() after the sweep = %d, want 10", n)
	}
	for i := range 10 {
		mustClaim(t, s, "long_"+strconv.Itoa(i), time.Minute, Delivered)
	}
}

// At capacity, a claim forgets the expired ids itself: room comes back the
// moment a window ends, not at the next sweep.
func TestMemoryFullMakesRoomFromExpired(t *testing.T) {
	ctx := context.Background()
	s, clock := newTestMemory(t, MemoryConfig{MaxEvents: 3})
	for i := range 3 {
		c := mustClaim(t, s, "k"+strconv.Itoa(i), time.Minute, Fresh)
		if err := s.Commit(ctx, c, time.Duration(i+1)*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Claim(ctx, "new", time.Minute); !errors.Is(err, ErrFull) {
		t.Fatalf("Claim at capacity = %v, want ErrFull", err)
	}
	clock.advance(time.Minute + time.Second) // k0's window ended
	mustClaim(t, s, "new", time.Minute, Fresh)
	if _, err := s.Claim(ctx, "new2", time.Minute); !errors.Is(err, ErrFull) {
		t.Fatalf("Claim at capacity = %v, want ErrFull", err)
	}
	mustClaim(t, s, "k1", time.Minute, Delivered)
	mustClaim(t, s, "k2", time.Minute, Delivered)
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
	s, _ := newTestMemory(b, MemoryConfig{MaxEvents: 1 << 40})
	var seq atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := Key("", "standard", "msg_"+strconv.FormatUint(seq.Add(1), 10))
			c, err := s.Claim(ctx, key, time.Minute)
			if err != nil {
				b.Error(err)
				return
			}
			if err := s.Commit(ctx, c, time.Hour); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMemoryBytesPerEvent remembers one million events and reports the
// live heap the store holds per event. Run it with -benchtime 1x: one
// iteration is a million commits.
func BenchmarkMemoryBytesPerEvent(b *testing.B) {
	ctx := context.Background()
	const n = 1_000_000
	keys := make([]string, n) // built beforehand: not the store's memory
	for i := range keys {
		keys[i] = Key("", "standard", "msg_"+strconv.Itoa(i))
	}
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		s, err := NewMemory(MemoryConfig{MaxEvents: n})
		if err != nil {
			b.Fatal(err)
		}
		for _, key := range keys {
			c, err := s.Claim(ctx, key, time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Commit(ctx, c, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		b.ReportMetric(float64(grown)/n, "B/id")
		runtime.KeepAlive(keys)
		_ = s.Close()
		b.StartTimer()
	}
}
