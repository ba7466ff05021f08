package dedupe_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
	"github.com/hookguard/caddy-webhook-guard/spool/spooltest"
)

// redisSpoolContract runs the spool store contract on stores of one server
// started with o, each with a prefix of its own.
func redisSpoolContract(t *testing.T, o testkit.RedisOptions) {
	if testing.Short() {
		t.Skip("-short: skipping a test that starts redis-server")
	}
	t.Parallel()
	srv := testkit.StartRedisWith(t, o)
	var n atomic.Int64
	spooltest.Contract(t, 500*time.Millisecond, func(t *testing.T) spooltest.ContractStore {
		s, err := dedupe.NewRedis(dedupe.RedisConfig{URL: srv.URL(), Prefix: "spool" + strconv.FormatInt(n.Add(1), 10) + ":"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if _, err := s.CheckSpool(context.Background(), dedupe.SpoolOptions{}); err != nil {
			t.Fatalf("CheckSpool: %v", err)
		}
		return spooltest.ContractStore{Store: s, Now: time.Now, Advance: time.Sleep}
	})
}

// Redis 7.0 with appendfsync always (no WAITAOF) keeps the contract.
func TestRedisSpoolContract(t *testing.T) {
	redisSpoolContract(t, testkit.RedisOptions{AppendFsync: "always"})
}

// Valkey with WAITAOF (appendfsync everysec) keeps the contract.
func TestValkeySpoolContract(t *testing.T) {
	redisSpoolContract(t, testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"})
}

// The replay contract holds on Valkey too (commits wait for WAITAOF).
func TestValkeyContract(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a test that starts valkey-server")
	}
	t.Parallel()
	srv := testkit.StartRedisWith(t, testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"})
	var n atomic.Int64
	dedupetest.Contract(t, 500*time.Millisecond, func(t *testing.T, maxEvents int64) dedupetest.ContractStore {
		s, err := dedupe.NewRedis(dedupe.RedisConfig{URL: srv.URL(), Prefix: "contract" + strconv.FormatInt(n.Add(1), 10) + ":", MaxEvents: maxEvents})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return dedupetest.ContractStore{Store: s, Advance: time.Sleep}
	})
}
