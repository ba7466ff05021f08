package dedupe_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

func TestMemoryContract(t *testing.T) {
	dedupetest.Contract(t, time.Second, func(t *testing.T, maxEvents int64) dedupetest.ContractStore {
		clock := &dedupetest.FakeClock{}
		s, err := dedupe.NewMemoryWithClock(dedupe.MemoryConfig{MaxEvents: maxEvents}, clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return dedupetest.ContractStore{Store: s, Advance: clock.Advance}
	})
}

// redisContract runs the contract on stores of one redis-server, each with
// a prefix of its own, wrapped by wrap.
func redisContract(t *testing.T, wrap func(dedupe.Store) dedupe.Store) {
	if testing.Short() {
		t.Skip("-short: skipping a test that starts redis-server")
	}
	t.Parallel()
	srv := testkit.StartRedis(t)
	var n atomic.Int64
	dedupetest.Contract(t, 500*time.Millisecond, func(t *testing.T, maxEvents int64) dedupetest.ContractStore {
		s, err := dedupe.NewRedis(dedupe.RedisConfig{URL: srv.URL(), Prefix: "contract" + strconv.FormatInt(n.Add(1), 10) + ":", MaxEvents: maxEvents})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return dedupetest.ContractStore{Store: wrap(s), Advance: time.Sleep}
	})
}

func TestRedisContract(t *testing.T) {
	redisContract(t, func(s dedupe.Store) dedupe.Store { return s })
}

func TestCachedRedisContract(t *testing.T) {
	redisContract(t, func(s dedupe.Store) dedupe.Store { return dedupe.NewCached(s, 1000, nil) })
}

// BenchmarkMemoryClaimCommitGoroutines is BenchmarkFileClaimCommit for the
// memory store.
func BenchmarkMemoryClaimCommitGoroutines(b *testing.B) {
	for _, g := range []int{1, 32} {
		b.Run("goroutines="+strconv.Itoa(g), func(b *testing.B) {
			s, err := dedupe.NewMemory(dedupe.MemoryConfig{MaxEvents: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			dedupetest.BenchClaimCommit(b, s, g)
		})
	}
}
