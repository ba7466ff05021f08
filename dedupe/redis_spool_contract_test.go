package dedupe_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
	"github.com/hookguard/caddy-webhook-guard/spool"
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

// A Redis Cluster of three primaries keeps both contracts: every key of a
// prefix is in one slot, and the scripts run there (with WAITAOF on the
// node that holds it).
func TestClusterContracts(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a test that starts a cluster")
	}
	t.Parallel()
	nodes := testkit.StartCluster(t, 3, testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"})
	seeds := []string{nodes[0].Addr, nodes[1].Addr}
	var n atomic.Int64
	open := func(t *testing.T, maxEvents int64) *dedupe.Redis {
		s, err := dedupe.NewRedis(dedupe.RedisConfig{ClusterAddrs: seeds, Prefix: "cluster" + strconv.FormatInt(n.Add(1), 10) + ":", MaxEvents: maxEvents})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	t.Run("spool", func(t *testing.T) {
		spooltest.Contract(t, 500*time.Millisecond, func(t *testing.T) spooltest.ContractStore {
			s := open(t, 0)
			if p, err := s.CheckSpool(context.Background(), dedupe.SpoolOptions{}); err != nil || !p.WaitAOF {
				t.Fatalf("CheckSpool: %+v, %v", p, err)
			}
			return spooltest.ContractStore{Store: s, Now: time.Now, Advance: time.Sleep}
		})
	})
	t.Run("replay", func(t *testing.T) {
		dedupetest.Contract(t, 500*time.Millisecond, func(t *testing.T, maxEvents int64) dedupetest.ContractStore {
			return dedupetest.ContractStore{Store: open(t, maxEvents), Advance: time.Sleep}
		})
	})
}

// Through Sentinel, the store finds the primary, and after a failover the
// new one: an event spooled (and confirmed on the replica with replicas 1)
// before the primary is killed is there after.
func TestSentinelSpoolFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a test that starts a sentinel")
	}
	t.Parallel()
	o := testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"}
	primary := testkit.StartRedisWith(t, o)
	host, port, _ := strings.Cut(primary.Addr, ":")
	ro := o
	ro.Args = []string{"--replicaof", host, port}
	replica := testkit.StartRedisWith(t, ro)
	replica.WaitReplicaInSync()
	sentinel := testkit.StartSentinel(t, "mymaster", primary, 500*time.Millisecond, o)
	sentinel.WaitSentinelPrimary("mymaster", primary.Addr, 1)
	ctx := context.Background()
	s, err := dedupe.NewRedis(dedupe.RedisConfig{MasterName: "mymaster", SentinelAddrs: []string{sentinel.Addr}, Replicas: 1,
		// The replica fsyncs its append-only file every second, and a
		// loaded machine can take longer: the test is not about the bound.
		WaitTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CheckSpool(ctx, dedupe.SpoolOptions{}); err != nil {
		t.Fatalf("CheckSpool: %v", err)
	}
	var ids []uint64
	for i := range 5 {
		rec := &spool.Record{Target: "shop/t", Scope: "shop", Provider: "ivy", EventID: "e" + strconv.Itoa(i), ReceivedAt: time.Now(), Body: []byte("b")}
		if dup, err := s.Ingest(ctx, dedupe.Key("shop", "ivy", rec.EventID), rec, time.Hour); err != nil || dup {
			t.Fatalf("Ingest: %v %v", dup, err)
		}
		ids = append(ids, rec.ID)
	}
	primary.Kill()
	sentinel.WaitSentinelPrimary("mymaster", replica.Addr, 0)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := s.IDs(ctx, spool.Pending, "shop")
		if err == nil {
			slices.Sort(got)
			if !slices.Equal(got, ids) {
				t.Fatalf("after the failover the spool holds %v, want %v", got, ids)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer from the new primary within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
