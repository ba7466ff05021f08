package dedupe

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// After FLUSHALL the id counter restarts: an attempt of an old event still in
// flight on instance A ends with a 2xx, and A's Delivered (its lease entry
// forgotten when it saw the loss) deletes the NEW event that got the same id,
// acknowledged after the flush, and marks its replay key delivered: so an
// adversarial review found. A result without the lease's token now needs the
// event pending and leased by this instance.
func TestRedisFlushAllIDReuseKeepsNewEvent(t *testing.T) {
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	a := newSpoolRedis(t, srv, "reuse:", time.Minute)
	b := newSpoolRedis(t, srv, "reuse:", time.Minute)
	old := mustSpool(t, a, "shop", "evt_old")
	if got := leaseAll(t, a, "shop", 10); len(got) != 1 || got[0].ID != old.ID {
		t.Fatalf("leased %+v", got)
	}
	// A's attempt of evt_old is in flight. Redis loses its data.
	if err := a.client.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// B acknowledges a new event: the counter restarted, same id.
	fresh := mustSpool(t, b, "shop", "evt_new")
	if fresh.ID != old.ID {
		t.Skipf("ids differ: %d %d", fresh.ID, old.ID)
	}
	// A's worker looks (the loss is reported, its leases forgotten).
	a.spool.mu.Lock()
	a.spool.epochAt = time.Time{}
	a.spool.mu.Unlock()
	_, err := a.Lease(ctx, time.Now(), []spool.Opening{{Target: "shop/t", Scope: "shop", Free: 0}}, func(spool.Due) spool.Verdict { return spool.Take })
	if !errors.Is(err, ErrDataLost) {
		t.Fatalf("Lease = %v", err)
	}
	// A's attempt of evt_old ends with a 2xx.
	_ = a.Delivered(ctx, old.ID, time.Hour)
	got, ok, err := b.Get(ctx, fresh.ID)
	if err != nil || !ok || string(got.Body) != "body of evt_new" {
		t.Fatalf("evt_new, acknowledged after the flush and never attempted, is gone: ok=%v err=%v", ok, err)
	}
}

// Same without any epoch look: A's Lease offers the new event with the id A
// has in flight; the worker skips it (inflight), putBack forgets A's lease
// entry, and A's late Delivered then has no token.
func TestRedisFlushAllIDReuseViaSkipKeepsNewEvent(t *testing.T) {
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	a := newSpoolRedis(t, srv, "reuse2:", time.Minute)
	old := mustSpool(t, a, "shop", "evt_old")
	if got := leaseAll(t, a, "shop", 10); len(got) != 1 {
		t.Fatalf("leased %+v", got)
	}
	if err := a.client.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := mustSpool(t, a, "shop", "evt_new")
	if fresh.ID != old.ID {
		t.Skipf("ids differ")
	}
	// the worker: old.ID is in flight → Skip
	_, _ = a.Lease(ctx, time.Now(), []spool.Opening{{Target: "shop/t", Scope: "shop", Free: 1}}, func(d spool.Due) spool.Verdict { return spool.Skip })
	_ = a.Delivered(ctx, old.ID, time.Hour)
	if _, ok, err := a.Get(ctx, fresh.ID); err != nil || !ok {
		t.Fatalf("evt_new deleted by the late Delivered of evt_old: ok=%v err=%v", ok, err)
	}
}

// replicas 1, WAITAOF cannot confirm: the first ingest is 503, but the
// provider's retry is answered as a duplicate (200) although the event is
// still not on a replica: an acknowledgement without the durability asked
// (found by an adversarial review). The duplicate branch now writes, so its
// WAITAOF covers the earlier copy, and the retry is refused until confirmed.
func TestRedisDuplicateOfUnconfirmedRefused(t *testing.T) {
	srv := startRedisWith(t, testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"})
	ctx := context.Background()
	s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Replicas: 1, WaitTimeout: 100 * time.Millisecond})
	if _, err := s.CheckSpool(ctx, SpoolOptions{}); err != nil {
		t.Fatal(err)
	}
	key := Key("shop", "ivy", "evt_1")
	if _, err := s.Ingest(ctx, key, spoolRec("shop", "evt_1"), time.Hour); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first Ingest = %v", err)
	}
	// WAITAOF still cannot confirm anything on a replica:
	if got, err := s.client.(waitAOFer).WaitAOF(ctx, 1, 1, 100*time.Millisecond).Result(); err != nil || got[1] != 0 {
		t.Fatalf("WAITAOF = %v %v", got, err)
	}
	dup, err := s.Ingest(ctx, key, spoolRec("shop", "evt_1"), time.Hour)
	if err == nil && dup {
		t.Fatalf("the provider's retry is acknowledged (duplicate, nil) while the event is on no replica (replicas 1)")
	}
	if err != nil && !strings.Contains(err.Error(), "WAITAOF") {
		t.Fatal(err)
	}
}

// The index of the keys held (max_events) drops the keys whose end passed
// whenever a key is added to it: by a claim, a commit, a spooled event, a
// delivery of the spool. Before, only a claim did, so an index written by
// the spool alone grew without end.
func TestRedisIndexTrimmedByEveryWriter(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: "trim:", MaxEvents: 100})
	if _, err := s.CheckSpool(ctx, SpoolOptions{Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// stale puts in the index a key whose end passed long ago; trimmed
	// checks that what ran since dropped it.
	stale := func(name string) string {
		t.Helper()
		member := "{trim:}" + name
		if err := s.client.ZAdd(ctx, s.index, redis.Z{Score: 1, Member: member}).Err(); err != nil {
			t.Fatal(err)
		}
		return member
	}
	trimmed := func(member, by string) {
		t.Helper()
		if err := s.client.ZScore(ctx, s.index, member).Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("after %s the index still holds the expired %s (%v)", by, member, err)
		}
	}
	old := stale("spooled")
	rec := mustSpool(t, s, "shop", "evt_1")
	trimmed(old, "a spooled event")

	if got := leaseAll(t, s, "shop", 10); len(got) != 1 || got[0].ID != rec.ID {
		t.Fatalf("leased %+v", got)
	}
	old = stale("delivered")
	if err := s.Delivered(ctx, rec.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	trimmed(old, "a delivery of the spool")

	c := mustClaim(t, s, Key("shop", "ivy", "evt_2"), time.Minute, Fresh)
	old = stale("committed")
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	trimmed(old, "a commit")
	if n := s.client.ZCard(ctx, s.index).Val(); n != 2 {
		t.Fatalf("index holds %d keys, want the 2 events' ids", n)
	}
}
