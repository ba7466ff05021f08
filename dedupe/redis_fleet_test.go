package dedupe

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// spoolRec is a spool record of scope for the tests.
func spoolRec(scope, id string) *spool.Record {
	return &spool.Record{Target: scope + "/t", Scope: scope, Provider: "ivy", EventID: id, ReceivedAt: time.Now(), Method: "POST", Body: []byte("body of " + id)}
}

// mustSpool ingests an event of scope, new.
func mustSpool(t testing.TB, s *Redis, scope, id string) *spool.Record {
	t.Helper()
	rec := spoolRec(scope, id)
	dup, err := s.Ingest(context.Background(), Key(scope, "ivy", id), rec, time.Hour)
	if err != nil || dup {
		t.Fatalf("Ingest(%s) = %v, %v", id, dup, err)
	}
	return rec
}

// leaseAll leases the due events of scope's target, at most free, taking
// them all, and returns them.
func leaseAll(t testing.TB, s *Redis, scope string, free int) []spool.Due {
	t.Helper()
	var out []spool.Due
	_, err := s.Lease(context.Background(), time.Now(), []spool.Opening{{Target: scope + "/t", Scope: scope, Free: free}},
		func(d spool.Due) spool.Verdict { out = append(out, d); return spool.Take })
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	return out
}

// dueIDs are the ids of dues, sorted.
func dueIDs(dues []spool.Due) []uint64 {
	out := make([]uint64, len(dues))
	for i, d := range dues {
		out[i] = d.ID
	}
	slices.Sort(out)
	return out
}

// newSpoolRedis is a store with a spool (checked) on srv under prefix,
// whose leases last lease.
func newSpoolRedis(t testing.TB, srv *testkit.RedisServer, prefix string, lease time.Duration) *Redis {
	t.Helper()
	// A loaded machine (-race, two cores) can hold a script past the
	// default second; no test here is about the timeout.
	s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: prefix, ReadTimeout: 10 * time.Second})
	if _, err := s.CheckSpool(context.Background(), SpoolOptions{Lease: lease}); err != nil {
		t.Fatalf("CheckSpool: %v", err)
	}
	return s
}

// Every key of one prefix, the replay memory's, its index and the
// spool's, carries the prefix as its hash tag: one cluster slot.
func TestRedisKeysShareTheHashTag(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Prefix: "shop1:", MaxEvents: 100})
	if _, err := s.CheckSpool(ctx, SpoolOptions{}); err != nil {
		t.Fatal(err)
	}
	c := mustClaim(t, s, Key("shop", "ivy", "evt_1"), time.Minute, Fresh)
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	a := mustSpool(t, s, "shop", "evt_2")
	mustSpool(t, s, "shop", "evt_3")
	dues := leaseAll(t, s, "shop", 1)
	if err := s.Failed(ctx, &spool.Record{ID: dues[0].ID, Attempts: 1, NextAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Discard(ctx, a.ID, "ops"); err != nil && !errors.Is(err, spool.ErrInFlight) {
		t.Fatal(err)
	}
	if err := s.SetPaused(ctx, "other", true); err != nil {
		t.Fatal(err)
	}
	keys, err := s.client.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 10 {
		t.Fatalf("only %d keys: %q", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "{shop1:}") {
			t.Errorf("key %q does not start with the hash tag {shop1:}", k)
		}
	}
}

// Ids remembered under the layout before the hash tag (prefix + key, as
// 0.1.0 wrote them) are still duplicates, to a claim and to the spool; in
// a cluster that layout is not read (another slot).
func TestRedisLegacyKeys(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	s := newSpoolRedis(t, srv, "", time.Minute)
	old := Key("ivy", "ivy", "evt_old")
	if err := s.client.Set(ctx, DefaultRedisPrefix+old, "delivered", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, old, time.Minute, Delivered)
	if dup, err := s.Ingest(ctx, old, spoolRec("ivy", "evt_old"), time.Hour); err != nil || !dup {
		t.Fatalf("Ingest of an id remembered by the old layout = %v, %v; want a duplicate", dup, err)
	}
	// An old in-flight token is not a delivery.
	inflight := Key("ivy", "ivy", "evt_old_inflight")
	if err := s.client.Set(ctx, DefaultRedisPrefix+inflight, "sometoken", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, inflight, time.Minute, Fresh)
	// Forget forgets both layouts.
	if ok, err := s.Forget(ctx, old); err != nil || !ok {
		t.Fatalf("Forget = %v, %v", ok, err)
	}
	mustClaim(t, s, old, time.Minute, Fresh)

	cluster, err := NewRedis(RedisConfig{ClusterAddrs: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	if k := cluster.keys("x"); k[2] != k[0] {
		t.Fatalf("cluster keys %q: a legacy key in another slot", k)
	}
}

// The forms of a Redis: standalone, Sentinel, Cluster; mistakes fail
// before any connection, naming what is wrong, never a password.
func TestRedisForms(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-pw"
	s, err := NewRedis(RedisConfig{URL: "rediss://:" + secret + "@/2", MasterName: "mymaster", SentinelAddrs: []string{"10.0.0.1:26379", "10.0.0.2:26379"}, SentinelPassword: "sentinel-" + secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.client.(*redis.Client); !ok || s.cluster != nil || !s.legacy || s.Where() != "sentinel master mymaster (10.0.0.1:26379, 10.0.0.2:26379)" {
		t.Fatalf("sentinel: client %T, where %q", s.client, s.Where())
	}
	_ = s.Close()
	s, err = NewRedis(RedisConfig{URL: "redis://:" + secret + "@", ClusterAddrs: []string{"10.0.0.1:6379", "n2.example:6379"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.cluster == nil || s.legacy || s.Where() != "cluster (10.0.0.1:6379, n2.example:6379)" {
		t.Fatalf("cluster: client %T, where %q", s.client, s.Where())
	}
	_ = s.Close()
	s, err = NewRedis(RedisConfig{ClusterAddrs: []string{"10.0.0.1:6379"}}) // no URL: no password
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	for _, c := range []struct {
		cfg  RedisConfig
		want string
	}{
		{RedisConfig{URL: "redis://:" + secret + "@10.0.0.9:6379/0", MasterName: "m", SentinelAddrs: []string{"a:1"}}, "with sentinel the URL names no host"},
		{RedisConfig{URL: "redis://:" + secret + "@10.0.0.9/0", ClusterAddrs: []string{"a:1"}}, "with cluster the URL names no host"},
		{RedisConfig{URL: "redis://@/3", ClusterAddrs: []string{"a:1"}}, "database 3: a cluster has database 0 only"},
		{RedisConfig{MasterName: "m"}, "want the master name and at least one sentinel address"},
		{RedisConfig{SentinelAddrs: []string{"a:1"}}, "want the master name and at least one sentinel address"},
		{RedisConfig{MasterName: "m", SentinelAddrs: []string{"a:1"}, ClusterAddrs: []string{"b:1"}}, "sentinel and cluster are exclusive"},
		{RedisConfig{ClusterAddrs: []string{"no-port"}}, `redis address "no-port": want host:port`},
		{RedisConfig{ClusterAddrs: []string{"h:99999"}}, "want host:port"},
		{RedisConfig{URL: "redis://127.0.0.1/0", Prefix: "a{b}:"}, "braces are not allowed"},
		{RedisConfig{URL: "redis://127.0.0.1/0", Replicas: -1}, "replicas must be 0 or more"},
	} {
		s, err := NewRedis(c.cfg)
		if err == nil {
			_ = s.Close()
			t.Errorf("%+v: no error, want %q", c.cfg, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), secret) {
			t.Errorf("%+v: error %q, want %q and no password", c.cfg, err, c.want)
		}
	}
}

// What each server's settings mean for a spool (refused, naming the
// setting and the fix) and for the replay memory alone (a warning).
func TestRedisPersistenceChecks(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		o           testkit.RedisOptions
		replicas    int
		assume      bool
		waitAOF     bool
		spoolErr    string // "" accepted
		replayWarns string
	}{
		{"redis 7.0 without aof", testkit.RedisOptions{}, 0, false, false, "appendonly is no", "appendonly is no"},
		{"redis 7.0 everysec", testkit.RedisOptions{AppendFsync: "everysec"}, 0, false, false, "appendfsync is everysec on a Redis without WAITAOF", "appendfsync is everysec"},
		{"redis 7.0 always", testkit.RedisOptions{AppendFsync: "always"}, 0, false, false, "", ""},
		{"redis 7.0 always, replicas", testkit.RedisOptions{AppendFsync: "always"}, 1, false, false, "replicas 1 needs WAITAOF", ""},
		{"redis 7.0 allkeys-lru", testkit.RedisOptions{AppendFsync: "always", Args: []string{"--maxmemory-policy", "allkeys-lru"}}, 0, false, false, "maxmemory-policy is allkeys-lru", ""},
		{"valkey everysec", testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"}, 0, false, true, "", ""},
		{"valkey no fsync", testkit.RedisOptions{Valkey: true, AppendFsync: "no"}, 0, false, true, "appendfsync is no", "appendfsync is no"},
		{"config refused", testkit.RedisOptions{AppendFsync: "always", Args: []string{"--rename-command", "CONFIG", ""}}, 0, false, false, "refuses CONFIG GET", ""},
		{"config refused, assumed", testkit.RedisOptions{AppendFsync: "always", Args: []string{"--rename-command", "CONFIG", ""}}, 0, true, false, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := startRedisWith(t, c.o)
			s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Replicas: c.replicas})
			p, err := s.CheckSpool(context.Background(), SpoolOptions{AssumePersistent: c.assume})
			if p.WaitAOF != c.waitAOF {
				t.Errorf("WaitAOF %v, want %v", p.WaitAOF, c.waitAOF)
			}
			switch {
			case c.spoolErr == "" && err != nil:
				t.Errorf("CheckSpool: %v, want none", err)
			case c.spoolErr != "" && (err == nil || !strings.Contains(err.Error(), c.spoolErr)):
				t.Errorf("CheckSpool: %v, want %q", err, c.spoolErr)
			}
			if w := p.ReplayWarning(); c.replayWarns == "" && w != "" || !strings.Contains(w, c.replayWarns) {
				t.Errorf("ReplayWarning %q, want %q", w, c.replayWarns)
			}
			// An event is refused while the settings would lose it.
			_, ierr := s.Ingest(context.Background(), Key("shop", "ivy", "e"), spoolRec("shop", "e"), time.Hour)
			if (ierr != nil) != (c.spoolErr != "") || ierr != nil && !errors.Is(ierr, ErrUnavailable) {
				t.Errorf("Ingest: %v", ierr)
			}
		})
	}
}

// Settings changed while running are seen by the next connection: events
// are refused until they are fixed.
func TestRedisPersistenceRecheckedOnConnect(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	s := newSpoolRedis(t, srv, "", time.Minute)
	mustSpool(t, s, "shop", "e1")
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	if err := admin.ConfigSet(ctx, "appendfsync", "everysec").Err(); err != nil {
		t.Fatal(err)
	}
	// A new connection (every client connection is killed) checks again.
	if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	_ = s.Ping(ctx)
	_, err := s.Ingest(ctx, Key("shop", "ivy", "e2"), spoolRec("shop", "e2"), time.Hour)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "appendfsync is everysec") {
		t.Fatalf("Ingest after appendfsync everysec = %v", err)
	}
	if err := admin.ConfigSet(ctx, "appendfsync", "always").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	_ = s.Ping(ctx)
	mustSpool(t, s, "shop", "e3")
}

// WAITAOF that cannot be satisfied (replicas 1, no replica): a spooled
// event is refused (503 for the guard) but stays stored, so the provider's
// retry is a duplicate and the event is delivered; a committed replay id
// stands, and OnUnconfirmed is told.
func TestRedisWaitAOFUnsatisfiable(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"})
	ctx := context.Background()
	var mu sync.Mutex
	var unconfirmed []error
	s := newTestRedisWith(t, RedisConfig{URL: srv.URL(), Replicas: 1, WaitTimeout: 100 * time.Millisecond, OnUnconfirmed: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		unconfirmed = append(unconfirmed, err)
	}})
	if _, err := s.CheckSpool(ctx, SpoolOptions{}); err != nil {
		t.Fatal(err)
	}
	rec := spoolRec("shop", "evt_1")
	_, err := s.Ingest(ctx, Key("shop", "ivy", "evt_1"), rec, time.Hour)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "not confirmed on disk") || !strings.Contains(err.Error(), "WAITAOF 1 1") {
		t.Fatalf("Ingest = %v, want ErrUnavailable saying WAITAOF did not confirm", err)
	}
	if got, ok, err := s.Get(ctx, rec.ID); err != nil || !ok || string(got.Body) != "body of evt_1" {
		t.Fatalf("the refused event is not stored: %v %v", ok, err)
	}
	// The provider's retry finds the stored copy, which is still on no replica: refused too,
	// until it is (an acknowledgement means on disk and on the replicas asked for).
	if dup, err := s.Ingest(ctx, Key("shop", "ivy", "evt_1"), spoolRec("shop", "evt_1"), time.Hour); !errors.Is(err, ErrUnavailable) || dup || !strings.Contains(err.Error(), "earlier copy") {
		t.Fatalf("the provider's retry = %v, %v; want ErrUnavailable: the earlier copy is not confirmed", dup, err)
	}
	c := mustClaim(t, s, Key("shop", "ivy", "evt_2"), time.Minute, Fresh)
	if err := s.Commit(ctx, c, time.Hour); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	mustClaim(t, s, Key("shop", "ivy", "evt_2"), time.Minute, Delivered)
	mu.Lock()
	defer mu.Unlock()
	if len(unconfirmed) != 1 || !strings.Contains(unconfirmed[0].Error(), "WAITAOF 1 1") {
		t.Fatalf("OnUnconfirmed got %v", unconfirmed)
	}
}

// Two instances share the spool: each leases what the other has not; the
// leases of an instance that stops renewing them are taken over by the
// other after the lease, counted as losses; the late result of the first
// is dropped (Failed) or stands (Delivered: the backend took it).
func TestRedisSpoolTwoInstances(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	const lease = 300 * time.Millisecond
	a := newSpoolRedis(t, srv, "fleet:", lease)
	b := newSpoolRedis(t, srv, "fleet:", lease)
	var all []uint64
	for i := range 10 {
		all = append(all, mustSpool(t, a, "shop", "evt_"+strconv.Itoa(i)).ID)
	}
	fromA := leaseAll(t, a, "shop", 4)
	fromB := leaseAll(t, b, "shop", 100)
	if len(fromA) != 4 || len(fromB) != 6 {
		t.Fatalf("A leased %d, B %d; want 4 and 6", len(fromA), len(fromB))
	}
	got := append(dueIDs(fromA), dueIDs(fromB)...)
	slices.Sort(got)
	if !slices.Equal(got, all) {
		t.Fatalf("leased %v, want each of %v once", got, all)
	}
	if more := leaseAll(t, b, "shop", 100); len(more) != 0 {
		t.Fatalf("B leased %v again while they are held", dueIDs(more))
	}
	// B renews its leases; A does not: after the lease, B takes A's over.
	deadline := time.Now().Add(10 * time.Second)
	var taken []spool.Due
	for len(taken) < 4 && time.Now().Before(deadline) {
		for _, d := range fromB {
			if err := b.Extend(ctx, d.ID); err != nil {
				t.Fatalf("B's Extend: %v", err)
			}
		}
		taken = append(taken, leaseAll(t, b, "shop", 100)...)
		time.Sleep(lease / 5)
	}
	if !slices.Equal(dueIDs(taken), dueIDs(fromA)) {
		t.Fatalf("B took over %v, want A's %v", dueIDs(taken), dueIDs(fromA))
	}
	for _, d := range taken {
		if d.Losses != 1 {
			t.Fatalf("taken over %+v: losses %d, want 1", d, d.Losses)
		}
	}
	if err := a.Extend(ctx, fromA[0].ID); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("A's Extend of a lease taken over = %v, want ErrNotHeld", err)
	}
	// A's late results: a failure is dropped, a delivery stands.
	late := fromA[0].ID
	if err := a.Failed(ctx, &spool.Record{ID: late, Attempts: 1, LastError: "late", NextAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("A's late Failed: %v", err)
	}
	if got, _, _ := a.Get(ctx, late); got.Attempts != 0 || got.LastError != "" {
		t.Fatalf("A's late failure was recorded: %+v", got)
	}
	if err := b.Retry(ctx, late); !errors.Is(err, spool.ErrInFlight) {
		t.Fatalf("Retry of an event B holds = %v, want ErrInFlight", err)
	}
	if err := a.Delivered(ctx, fromA[1].ID, time.Hour); err != nil {
		t.Fatalf("A's late Delivered: %v", err)
	}
	if err := b.Delivered(ctx, fromA[1].ID, time.Hour); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("B's Delivered of an event A delivered = %v, want ErrNotFound", err)
	}
	// A pause through one instance holds both.
	if err := a.SetPaused(ctx, "shop", true); err != nil {
		t.Fatal(err)
	}
	for _, d := range fromB[:2] {
		b.Abandon(ctx, d.ID)
	}
	if got := leaseAll(t, b, "shop", 100); len(got) != 0 {
		t.Fatalf("B leased %v of a scope paused through A", dueIDs(got))
	}
	if p, _ := b.Paused(ctx); !p["shop"] {
		t.Fatalf("B does not see the pause: %v", p)
	}
}

// Every lease that ends without a result counts: the delivery count of
// the stream entry, read as losses.
func TestRedisSpoolLossesGrow(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	const lease = 100 * time.Millisecond
	first := newSpoolRedis(t, srv, "crashy:", lease)
	rec := mustSpool(t, first, "shop", "evt_crashy")
	if got := leaseAll(t, first, "shop", 1); len(got) != 1 || got[0].Losses != 0 {
		t.Fatalf("first lease %+v", got)
	}
	for want := 1; want <= 3; want++ {
		// A new instance each time: the last one "crashed".
		next := newSpoolRedis(t, srv, "crashy:", lease)
		var got []spool.Due
		waitUntil(t, 10*time.Second, "the lease is taken over", func() bool {
			got = leaseAll(t, next, "shop", 1)
			return len(got) == 1
		})
		if got[0].ID != rec.ID || got[0].Losses != want {
			t.Fatalf("take-over %d: %+v, want losses %d", want, got[0], want)
		}
	}
}

// Redis losing its data while running (FLUSHALL) is reported once, and
// the spool goes on from an empty start; a consumer group deleted is
// created again from the start of its stream, and its events are offered.
func TestRedisSpoolDataLost(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	s := newSpoolRedis(t, srv, "lost:", time.Minute)
	mustSpool(t, s, "shop", "e1")
	if got := leaseAll(t, s, "shop", 10); len(got) != 1 {
		t.Fatalf("leased %d", len(got))
	}
	if err := s.client.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	lease := func() error {
		s.spool.mu.Lock()
		s.spool.epochAt = time.Time{} // look at the epoch now, not a second later
		s.spool.mu.Unlock()
		_, err := s.Lease(ctx, time.Now(), []spool.Opening{{Target: "shop/t", Scope: "shop", Free: 10}}, func(spool.Due) spool.Verdict { return spool.Take })
		return err
	}
	if err := lease(); !errors.Is(err, ErrDataLost) || !strings.Contains(err.Error(), "FLUSHALL") {
		t.Fatalf("Lease after FLUSHALL = %v, want ErrDataLost", err)
	}
	if err := lease(); err != nil {
		t.Fatalf("Lease after the loss was reported: %v", err)
	}
	mustSpool(t, s, "shop", "e2")
	if got := leaseAll(t, s, "shop", 10); len(got) != 1 {
		t.Fatalf("leased %d after the loss, want the new event", len(got))
	}
	e3 := mustSpool(t, s, "shop", "e3")
	if err := s.client.XGroupDestroy(ctx, s.tag+"spool:q:shop/t", redisGroup).Err(); err != nil {
		t.Fatal(err)
	}
	var got []spool.Due
	_, err := s.Lease(ctx, time.Now(), []spool.Opening{{Target: "shop/t", Scope: "shop", Free: 10}}, func(d spool.Due) spool.Verdict {
		got = append(got, d)
		return spool.Take
	})
	if !errors.Is(err, ErrDataLost) || !strings.Contains(err.Error(), "consumer group") {
		t.Fatalf("Lease with the group gone = %v, want ErrDataLost", err)
	}
	// Read from the start of the stream: e2 (leased before, not acknowledged) and e3.
	if ids := dueIDs(got); !slices.Contains(ids, e3.ID) {
		t.Fatalf("after the group was created again, leased %v, want %d among them", ids, e3.ID)
	}
}

// A discarded event is purged once its replay key expired.
func TestRedisSpoolPurgesDiscarded(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	s := newSpoolRedis(t, srv, "purge:", time.Minute)
	rec := spoolRec("shop", "e1")
	if _, err := s.Ingest(ctx, Key("shop", "ivy", "e1"), rec, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Discard(ctx, rec.ID, "ops"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the discarded event is purged", func() bool {
		s.spool.mu.Lock()
		s.spool.purgedAt = time.Time{}
		s.spool.mu.Unlock()
		if _, err := s.Lease(ctx, time.Now(), nil, nil); err != nil {
			t.Fatal(err)
		}
		_, ok, err := s.Get(ctx, rec.ID)
		return err == nil && !ok
	})
	if c, err := s.Counts(ctx); err != nil || c["shop"].Discarded != 0 {
		t.Fatalf("counts after the purge = %+v, %v", c, err)
	}
}

// The spool's worker delivers what the Redis store holds, and the key is
// then delivered.
func TestRedisSpoolWorker(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"})
	ctx := context.Background()
	s := newSpoolRedis(t, srv, "", time.Minute)
	sp := spool.New(s, spool.Options{})
	delivered := make(chan string, 10)
	sp.Register(&spool.Target{Key: "shop/t", Scope: "shop", MaxAge: time.Hour, Timeout: time.Second, Concurrency: 2, Window: time.Hour,
		Deliver: func(_ context.Context, rec *spool.Record, attempt int) spool.Attempt {
			delivered <- rec.EventID + "#" + strconv.Itoa(attempt) + ":" + string(rec.Body)
			return spool.Attempt{Status: 200}
		}})
	sp.Start()
	defer sp.Stop()
	for i := range 3 {
		rec := spoolRec("shop", "e"+strconv.Itoa(i))
		if dup, err := sp.Ingest(ctx, Key("shop", "ivy", rec.EventID), rec, time.Hour); err != nil || dup {
			t.Fatal(dup, err)
		}
	}
	var got []string
	for range 3 {
		select {
		case d := <-delivered:
			got = append(got, d)
		case <-time.After(10 * time.Second):
			t.Fatalf("delivered %v within 10s", got)
		}
	}
	slices.Sort(got)
	if want := []string{"e0#1:body of e0", "e1#1:body of e1", "e2#1:body of e2"}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	waitUntil(t, 10*time.Second, "the spool is empty", func() bool {
		c, err := s.Counts(ctx)
		return err == nil && c["shop"].Pending == 0
	})
	mustClaim(t, s, Key("shop", "ivy", "e1"), time.Minute, Delivered)
}

// go-redis' failover client runs OnConnect on its connections to the
// sentinels too: what a sentinel answers is not taken for the primary's
// persistence.
func TestRedisPersistenceIgnoresSentinels(t *testing.T) {
	t.Parallel()
	o := testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"}
	primary := startRedisWith(t, o)
	sentinel := testkit.StartSentinel(t, "mymaster", primary, time.Second, o)
	ctx := context.Background()
	for _, c := range []struct {
		addr string
		ok   bool
	}{{sentinel.Addr, false}, {primary.Addr, true}} {
		client := redis.NewClient(&redis.Options{Addr: c.addr})
		p, ok := probePersistence(ctx, client)
		_ = client.Close()
		if ok != c.ok || ok && (!p.WaitAOF || p.AppendOnly != "yes" || p.ConfigRefused) {
			t.Fatalf("%s: %+v, %v; want ok %v", c.addr, p, ok, c.ok)
		}
	}
	// Through the failover client, the spool is accepted whichever
	// connection comes first.
	s := newTestRedisWith(t, RedisConfig{MasterName: "mymaster", SentinelAddrs: []string{sentinel.Addr}})
	if _, err := s.CheckSpool(ctx, SpoolOptions{}); err != nil {
		t.Fatalf("CheckSpool through Sentinel: %v", err)
	}
	mustSpool(t, s, "shop", "e1")
}

// An id one instance makes the store forget is dropped from every
// instance's cache of delivered answers (WatchForgotten): another instance
// that had answered it "delivered" from its cache asks Redis again, and the
// provider's resend is new there too.
func TestRedisForgetReachesEveryCache(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	a := newSpoolRedis(t, srv, "forget:", time.Minute)
	b := newSpoolRedis(t, srv, "forget:", time.Minute)
	ca, cb := NewCached(a, 0, nil), NewCached(b, 0, nil)
	t.Cleanup(func() { ca.(interface{ Close() error }).Close(); cb.(interface{ Close() error }).Close() })
	watchForgotten(a, ca)
	watchForgotten(b, cb)
	key := Key("shop", "ivy", "evt_forget")
	c := mustClaim(t, ca, key, time.Minute, Fresh)
	if err := ca.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, cb, key, time.Minute, Delivered) // now in b's cache
	// Both subscriptions are in place before the forget is announced.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := a.client.PubSubNumSub(ctx, a.forgottenChannel()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n[a.forgottenChannel()] == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscribers: %v, want 2", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ok, err := a.Forget(ctx, key); err != nil || !ok {
		t.Fatalf("Forget: %v %v", ok, err)
	}
	for {
		cl, err := cb.Claim(ctx, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if cl.State == Fresh {
			break
		}
		if cl.State != Delivered || time.Now().After(deadline) {
			t.Fatalf("b's claim after the forget: %v, want it fresh", cl.State)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// watchForgotten makes s tell cache of the ids forgotten (WatchForgotten).
func watchForgotten(s *Redis, cache Store) {
	f := cache.(interface {
		Forget(string)
		ForgetAll()
	})
	s.WatchForgotten(f.Forget, f.ForgetAll)
}

// An instance whose subscription to the forgotten ids dropped (Redis
// restarted, a network cut) may have missed a forget: once subscribed again
// it empties its cache of delivered answers, so that a resend of an id
// forgotten meanwhile asks Redis instead of being answered "duplicate".
func TestRedisResubscribeEmptiesTheCache(t *testing.T) {
	t.Parallel()
	srv := startRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	ctx := context.Background()
	a := newSpoolRedis(t, srv, "resub:", time.Minute)
	ca := NewCached(a, 0, nil)
	t.Cleanup(func() { _ = ca.(interface{ Close() error }).Close() })
	subscribed := make(chan struct{}, 4)
	f := ca.(interface {
		Forget(string)
		ForgetAll()
	})
	a.WatchForgotten(f.Forget, func() { f.ForgetAll(); subscribed <- struct{}{} })
	<-subscribed
	key := Key("shop", "ivy", "evt_missed")
	c := mustClaim(t, ca, key, time.Minute, Fresh)
	if err := ca.Commit(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, ca, key, time.Minute, Delivered) // from the cache now
	// Another instance forgets the id while a's subscription is cut: the
	// key goes from Redis, the announcement never reaches a.
	if err := a.client.Del(ctx, a.key(key)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.client.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	<-subscribed // the client subscribed again
	mustClaim(t, ca, key, time.Minute, Fresh)
}
