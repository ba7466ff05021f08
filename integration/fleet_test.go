package integration

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// TestFleetInstanceKilledForGood: three Caddy instances share a spool on one redis-server
// (7.0, appendfsync always). Events are sent to them in turn; one instance is SIGKILLed for
// good halfway; every event answered 200 reaches the backend, with its event id and exact
// body. A copy of a delivered event sent to another instance is answered 200 duplicate and not
// delivered again. A pause through one instance holds the deliveries of all of them, and a
// resume through another releases them.
func TestFleetInstanceKilledForGood(t *testing.T) {
	testkit.SkipIfShort(t, "runs three Caddy instances and redis-server")
	srv := testkit.StartRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	backend := startFleetBackend(t)
	key := newSecret(t, "ivpay_fleet_")
	store := fleetRedisStore("2s")
	gs := []*guard{
		fleetStart(t, 0, store, backend.url(), key, srv.URL()),
		fleetStart(t, 1, store, backend.url(), key, srv.URL()),
		fleetStart(t, 2, store, backend.url(), key, srv.URL()),
	}
	var events []fleetEvent
	for i := range 30 {
		events = append(events, fleetSpool(t, gs[i%3], key, "pay_fleet"))
	}
	gs[2].Kill() // for good
	live := gs[:2]
	for i := range 30 {
		events = append(events, fleetSpool(t, live[i%2], key, "pay_fleet"))
	}
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.id
	}
	backend.waitAccepted(ids...)
	for _, ev := range events {
		expectFleetDelivery(t, backend, ev)
	}

	// Copies of delivered events, each to an instance that did not accept it.
	before := backend.accepted()
	for i, ev := range events[:10] {
		expectDropped(t, "copy of "+ev.id, fleetSend(t, live[(i+1)%2], key, ev), "duplicate")
	}
	fleetMarkers(t, backend, key, live...)
	after := backend.accepted()
	for _, ev := range events[:10] {
		if after[ev.id] != before[ev.id] {
			t.Errorf("a duplicate of %s was delivered: %d deliveries, %d before", ev.id, after[ev.id], before[ev.id])
		}
	}
	// An event in flight on the instance killed was accepted by the backend but not recorded:
	// a live instance delivers it again once its lease ends. The spool is empty once every
	// event is recorded delivered.
	waitRecordedDelivered(t, gs, ids)
	if list := spoolList(t, live[1], ""); len(list) != 0 {
		t.Fatalf("the spool lists %d events after delivery: %+v", len(list), list)
	}

	// A pause through A holds every instance's deliveries of the scope.
	adminPost(t, live[0], "/webhook_guard/spool/pause?scope=ivpay")
	held := []fleetEvent{fleetSpool(t, live[0], key, "pay_paused"), fleetSpool(t, live[1], key, "pay_paused")}
	fleetMarkers(t, backend, key, live...)
	for _, ev := range held {
		if got := backend.of(ev.id); len(got) != 0 {
			t.Fatalf("event %s of a paused scope was delivered", ev.id)
		}
	}
	list := spoolList(t, live[1], "?state=pending&scope=ivpay")
	if len(list) != 2 {
		t.Fatalf("instance B lists %d pending events of the paused scope, want 2: %+v", len(list), list)
	}
	// B's gauges show the pause made through A (they are set at most once a second).
	fleetWaitMetric(t, live[1], `caddy_webhook_guard_spool_paused{scope="ivpay"}`, "1")
	fleetWaitMetric(t, live[1], `caddy_webhook_guard_spool_events{scope="ivpay",state="pending"}`, "2")
	resumed := time.Now()
	adminPost(t, live[1], "/webhook_guard/spool/resume?scope=ivpay")
	backend.waitAccepted(held[0].id, held[1].id)
	for _, ev := range held {
		expectFleetDelivery(t, backend, ev)
		for _, a := range backend.of(ev.id) {
			if a.at.Before(resumed) {
				t.Errorf("event %s was delivered at %v, before the resume at %v", ev.id, a.at, resumed)
			}
		}
	}
}

// TestFleetLeases: a delivery held open by the backend when its instance is SIGKILLed is taken
// over by another instance once the store's lease has passed, with the same event id and body;
// a delivery slower than the lease on a live instance is attempted once, though another
// instance is looking.
func TestFleetLeases(t *testing.T) {
	testkit.SkipIfShort(t, "runs Caddy instances and redis-server")
	const lease = 2 * time.Second
	srv := testkit.StartRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	backend := startFleetBackend(t)
	key := newSecret(t, "ivpay_lease_")
	store := fleetRedisStore(lease.String())

	backend.hold(true)
	a := fleetStart(t, 0, store, backend.url(), key, srv.URL())
	var events []fleetEvent
	for range 3 {
		events = append(events, fleetSpool(t, a, key, "pay_held"))
	}
	backend.waitHeld(3) // A is delivering them, held open
	b := fleetStart(t, 1, store, backend.url(), key, srv.URL())
	a.Kill()
	killed := time.Now()
	backend.releaseHeld(false) // A's connections are gone: nobody gets these answers
	ids := []string{events[0].id, events[1].id, events[2].id}
	backend.waitAccepted(ids...)
	for _, ev := range events {
		expectFleetDelivery(t, backend, ev)
		for _, d := range backend.of(ev.id) {
			// A renewed its lease at most a third of a lease before it died.
			if d.status/100 == 2 && d.at.Before(killed.Add(lease-lease/3-100*time.Millisecond)) {
				t.Errorf("event %s was taken over at %v, before its lease could expire (killed at %v, lease %v)", ev.id, d.at, killed, lease)
			}
			if d.status/100 == 2 {
				// A figure for docs/several-instances.md, not an assertion.
				t.Logf("event %s delivered by the survivor %v after the holder was killed (lease %v)", ev.id, d.at.Sub(killed).Round(time.Millisecond), lease)
			}
		}
	}
	b.expectLogs(0, logWant{Msg: "spooled webhook delivered"}, 3) // B took them over

	// A delivery three leases long on a live instance, with another instance polling.
	c := fleetStart(t, 2, store, backend.url(), key, srv.URL())
	slow := newFleetEvent(t, "pay_slow")
	backend.hold(false, slow.id)
	expectDropped(t, "slow event", fleetSend(t, b, key, slow), "spooled")
	backend.waitHeld(1)
	time.Sleep(3 * lease) // the backend's slowness, modelled: not a synchronisation
	backend.releaseHeld(true)
	backend.waitAccepted(slow.id)
	fleetMarkers(t, backend, key, b, c)
	if got := backend.of(slow.id); len(got) != 1 {
		t.Fatalf("the slow event reached the backend %d times, want once: %+v", len(got), got)
	}
}

// TestFleetRedisKilled: redis-server SIGKILLed right after it acknowledged events, and started
// again on its files: every acknowledged event is delivered; while it is down, ingest answers
// 503 with Retry-After, and those events, sent again, are delivered. Redis 7.0 with appendfsync
// always, and Valkey with WAITAOF (appendfsync everysec).
func TestFleetRedisKilled(t *testing.T) {
	testkit.SkipIfShort(t, "runs Caddy instances and redis-server")
	for _, c := range []struct {
		name string
		o    testkit.RedisOptions
	}{
		{"redis 7.0 always", testkit.RedisOptions{AppendFsync: "always"}},
		{"valkey waitaof", testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := testkit.StartRedisWith(t, c.o)
			backend := startFleetBackend(t)
			backend.setStatus(http.StatusServiceUnavailable) // events stay pending in Redis
			key := newSecret(t, "ivpay_rk_")
			store := fleetRedisStore("2s")
			gs := []*guard{fleetStart(t, 0, store, backend.url(), key, srv.URL()), fleetStart(t, 1, store, backend.url(), key, srv.URL())}
			var events []fleetEvent
			for i := range 20 {
				events = append(events, fleetSpool(t, gs[i%2], key, "pay_rk"))
			}
			srv.Kill() // right after the last 200

			var refused []fleetEvent
			for i := range 4 {
				ev := newFleetEvent(t, "pay_down")
				resp := fleetSend(t, gs[i%2], key, ev)
				expectStatus(t, "event while Redis is down", resp, http.StatusServiceUnavailable)
				if resp.Header.Get("Retry-After") == "" {
					t.Fatalf("503 without Retry-After")
				}
				refused = append(refused, ev)
			}
			gs[0].expectLog(0, logWant{Msg: "webhook refused", Outcome: "store_unavailable"})

			srv.Start() // on its files
			backend.setStatus(http.StatusOK)
			for i, ev := range refused {
				// The provider's retry: the event was never stored, so it is new. The
				// client may take a second to dial again after refused dials.
				fleetSendUntilOK(t, gs[i%2], key, ev, "spooled")
			}
			all := append(events, refused...)
			ids := make([]string, len(all))
			for i, ev := range all {
				ids[i] = ev.id
			}
			backend.waitAccepted(ids...)
			for _, ev := range all {
				expectFleetDelivery(t, backend, ev)
			}
		})
	}
}

// TestFleetDurabilityRefusals: WAITAOF that cannot be satisfied (replicas 1 without a
// replica) answers 503 with Retry-After, and the event stays stored: it is delivered, and the
// provider's retry is a duplicate. Configs whose Redis would lose acknowledged events are
// refused at load, naming the setting and the fix: appendonly no, appendfsync everysec on Redis
// 7.0, maxmemory-policy allkeys-lru.
func TestFleetDurabilityRefusals(t *testing.T) {
	testkit.SkipIfShort(t, "runs Caddy and redis-server")
	key := newSecret(t, "ivpay_dur_")
	backend := startFleetBackend(t)

	valkey := testkit.StartRedisWith(t, testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"})
	g := fleetStart(t, 0, fleetRedisStore("2s", "replicas 1", "wait_timeout 1s"), backend.url(), key, valkey.URL())
	ev := newFleetEvent(t, "pay_unconfirmed")
	resp := fleetSend(t, g, key, ev)
	expectStatus(t, "event without a replica to confirm it", resp, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	line := g.expectLog(0, logWant{Msg: "webhook refused", Outcome: "store_unavailable", Reason: "not confirmed on disk"})
	if !strings.Contains(line.Field("reason"), "WAITAOF 1 1") {
		t.Errorf("the refusal does not name WAITAOF: %s", line.Raw)
	}
	backend.waitAccepted(ev.id) // the record stayed: the spool delivers it
	expectFleetDelivery(t, backend, ev)
	expectDropped(t, "the provider's retry", fleetSend(t, g, key, ev), "duplicate")

	for _, c := range []struct {
		name string
		o    testkit.RedisOptions
		want string
	}{
		{"appendonly no", testkit.RedisOptions{}, "appendonly is no: a Redis restart would lose every spooled event not yet delivered; set appendonly yes"},
		{"everysec on 7.0", testkit.RedisOptions{AppendFsync: "everysec"}, "appendfsync is everysec on a Redis without WAITAOF (before 7.2): an acknowledged event could be lost in the last second before a crash; set appendfsync always"},
		{"allkeys-lru", testkit.RedisOptions{AppendFsync: "always", Args: []string{"--maxmemory-policy", "allkeys-lru"}}, "maxmemory-policy is allkeys-lru: Redis may evict keys under memory pressure, and an evicted spooled event is lost without a word; set maxmemory-policy noeviction"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := testkit.StartRedisWith(t, c.o)
			out := testkit.Validate(t, fleetConfig(0, fleetRedisStore("2s"), backend.url()), "IVPAY_KEY="+key, "REDIS_URL="+srv.URL())
			if !strings.Contains(out, "cannot hold a spool: "+c.want) {
				t.Fatalf("caddy validate: %s\nwant it to say %q", out, c.want)
			}
		})
	}
}

// TestFleetFlushAll: Redis loses the spool's data while two instances run (FLUSHALL): each
// says so once at ERROR and counts it, the spool goes on (new events are delivered), and no
// loop of errors follows.
func TestFleetFlushAll(t *testing.T) {
	testkit.SkipIfShort(t, "runs Caddy instances and redis-server")
	srv := testkit.StartRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	backend := startFleetBackend(t)
	key := newSecret(t, "ivpay_flush_")
	store := fleetRedisStore("2s")
	gs := []*guard{fleetStart(t, 0, store, backend.url(), key, srv.URL()), fleetStart(t, 1, store, backend.url(), key, srv.URL())}
	first := []string{fleetSpool(t, gs[0], key, "pay_flush").id, fleetSpool(t, gs[1], key, "pay_flush").id}
	backend.waitAccepted(first...)

	marks := []int{gs[0].LogMark(), gs[1].LogMark()}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	isLost := func(e testkit.LogEntry) bool {
		return strings.HasPrefix(e.Logger, guardLogger) && e.Level == "error" && strings.HasPrefix(e.Msg, "spool: Redis lost the spool's data")
	}
	for i, g := range gs {
		g.WaitLogSince(t, marks[i], isLost)
	}
	var later []string
	for i := range 10 {
		later = append(later, fleetSpool(t, gs[i%2], key, "pay_after").id)
	}
	backend.waitAccepted(later...)
	// A few more passes of every worker (a second apart when idle), then count.
	fleetMarkers(t, backend, key, gs...)
	fleetMarkers(t, backend, key, gs...)
	for i, g := range gs {
		var lostLines, errorLines, all int
		for _, e := range g.Logs()[marks[i]:] {
			if !strings.HasPrefix(e.Logger, guardLogger) {
				continue
			}
			all++
			switch {
			case isLost(e):
				lostLines++
			case e.Level == "error":
				errorLines++
				t.Errorf("instance %d logged after FLUSHALL: %s", i, e.Raw)
			}
		}
		if lostLines != 1 {
			t.Errorf("instance %d said %d times that Redis lost the spool, want once", i, lostLines)
		}
		// 10 events, 2×2 markers: a spooled and a delivered line each, and little else.
		if all > 40 {
			t.Errorf("instance %d printed %d lines after FLUSHALL: a loop?", i, all)
		}
		if v := fleetMetric(t, g, "caddy_webhook_guard_spool_data_lost_total"); v != "1" {
			t.Errorf("instance %d: spool_data_lost_total %q, want 1", i, v)
		}
	}
}

// TestFleetSentinelFailover: a real Sentinel (valkey-server --sentinel) watches a primary with
// two replicas; two instances spool with replicas 1 (every event also on a replica's disk
// before 200). The primary is SIGKILLed; after the failover every event answered 200 before
// and after it is delivered.
func TestFleetSentinelFailover(t *testing.T) {
	testkit.SkipIfShort(t, "runs Caddy instances, Valkey and a sentinel")
	o := testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"}
	primary := testkit.StartRedisWith(t, o)
	host, port, _ := strings.Cut(primary.Addr, ":")
	ro := o
	ro.Args = []string{"--replicaof", host, port}
	replicas := []*testkit.RedisServer{testkit.StartRedisWith(t, ro), testkit.StartRedisWith(t, ro)}
	for _, r := range replicas {
		r.WaitReplicaInSync()
	}
	sentinel := testkit.StartSentinel(t, "mymaster", primary, time.Second, o)
	sentinel.WaitSentinelPrimary("mymaster", primary.Addr, 2)

	backend := startFleetBackend(t)
	backend.setStatus(http.StatusServiceUnavailable) // events stay pending through the failover
	key := newSecret(t, "ivpay_sentinel_")
	store := fleetRedisStore("2s", "sentinel mymaster "+sentinel.Addr, "replicas 1")
	gs := []*guard{fleetStart(t, 0, store, backend.url(), key, ""), fleetStart(t, 1, store, backend.url(), key, "")}
	var acked []fleetEvent
	for i := range 20 {
		acked = append(acked, fleetSpool(t, gs[i%2], key, "pay_sentinel"))
	}
	primary.Kill()
	deadline := time.Now().Add(fleetWait)
	promoted := ""
	for promoted == "" || promoted == primary.Addr {
		if time.Now().After(deadline) {
			t.Fatalf("no failover within %v", fleetWait)
		}
		time.Sleep(100 * time.Millisecond)
		promoted = sentinel.SentinelPrimary("mymaster")
	}
	// During and after the failover: events are answered 200 (once a replica of the new
	// primary confirms) or 503; the 503 ones are sent again, as a provider would.
	for i := range 10 {
		ev := newFleetEvent(t, "pay_after")
		fleetSendUntilOK(t, gs[i%2], key, ev, "spooled")
		acked = append(acked, ev)
	}
	backend.setStatus(http.StatusOK)
	ids := make([]string, len(acked))
	for i, ev := range acked {
		ids[i] = ev.id
	}
	backend.waitAccepted(ids...)
	for _, ev := range acked {
		expectFleetDelivery(t, backend, ev)
	}
	t.Logf("primary %s failed over to %s", primary.Addr, promoted)
}

// TestFleetCluster: a real 3-node Redis Cluster (Valkey, WAITAOF) runs the spool of two
// instances: every event is delivered once, a copy is a duplicate, and every key of the prefix
// is on one node, in one slot.
func TestFleetCluster(t *testing.T) {
	testkit.SkipIfShort(t, "runs Caddy instances and a Valkey cluster")
	nodes := testkit.StartCluster(t, 3, testkit.RedisOptions{Valkey: true, AppendFsync: "everysec"})
	backend := startFleetBackend(t)
	key := newSecret(t, "ivpay_cluster_")
	store := fleetRedisStore("2s", "cluster "+nodes[0].Addr+" "+nodes[1].Addr)
	gs := []*guard{fleetStart(t, 0, store, backend.url(), key, ""), fleetStart(t, 1, store, backend.url(), key, "")}
	var events []fleetEvent
	for i := range 20 {
		events = append(events, fleetSpool(t, gs[i%2], key, "pay_cluster"))
	}
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.id
	}
	backend.waitAccepted(ids...)
	for i, ev := range events[:5] {
		expectDropped(t, "copy of "+ev.id, fleetSend(t, gs[(i+1)%2], key, ev), "duplicate")
	}
	fleetMarkers(t, backend, key, gs...)
	for _, ev := range events {
		expectFleetDelivery(t, backend, ev)
		if n := len(backend.of(ev.id)); n != 1 {
			t.Errorf("event %s delivered %d times, want once", ev.id, n)
		}
	}
	slot := nodes[0].CLI("CLUSTER", "KEYSLOT", "{webhook_guard:}")
	holders := 0
	for _, n := range nodes {
		keys := strings.Fields(n.CLI("KEYS", "*"))
		if len(keys) == 0 {
			continue
		}
		holders++
		for _, k := range keys {
			if !strings.HasPrefix(k, "{webhook_guard:}") {
				t.Errorf("node %s holds key %q, outside the prefix's hash tag", n.Addr, k)
			}
			if s := n.CLI("CLUSTER", "KEYSLOT", k); s != slot {
				t.Errorf("key %q is in slot %s, not the prefix's %s", k, s, slot)
			}
		}
	}
	if holders != 1 {
		t.Errorf("%d nodes hold keys, want 1 (one slot)", holders)
	}
	if _, err := strconv.Atoi(slot); err != nil {
		t.Fatalf("CLUSTER KEYSLOT: %q", slot)
	}
}

// TestFleetMoveFromFileSpool follows docs/several-instances.md: events pending in the file
// spool when the route moves to store redis are delivered by a drain-only handler that keeps
// the file store (same provider, scope and to, an allow-list nobody matches); new events go to
// Redis; once the ledger is empty the drain handler is removed.
func TestFleetMoveFromFileSpool(t *testing.T) {
	testkit.SkipIfShort(t, "runs Caddy and redis-server")
	srv := testkit.StartRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	backend := startFleetBackend(t)
	backend.setStatus(http.StatusServiceUnavailable)
	key := newSecret(t, "ivpay_move_")
	fileGuard := "ivpay {\n api_key {env.IVPAY_KEY}\n allow_ips 127.0.0.1\n spool {\n  to " + backend.url() + "\n  backoff 1s\n }\n}"
	drainGuard := "ivpay {\n api_key {env.IVPAY_KEY}\n allow_ips 192.0.2.1\n spool {\n  to " + backend.url() + "\n  backoff 1s\n }\n}"
	redisGuard := "ivpay {\n api_key {env.IVPAY_KEY}\n allow_ips 127.0.0.1\n " + fleetRedisStore("30s") + "\n spool {\n  to " + backend.url() + "\n  backoff 1s\n }\n}"
	g := startGuard(t, globalOptions()+site(spoolRoute("/ivpay", fileGuard)), map[string]string{"IVPAY_KEY": key, "REDIS_URL": srv.URL()})
	spoolSecrets(g)
	var old []string
	for range 5 {
		old = append(old, fleetSpool(t, g, key, "pay_file").id)
	}
	g.Reload(t, globalOptions()+site(spoolRoute("/ivpay", redisGuard), spoolRoute("/drain-only/ivpay", drainGuard)))
	var fresh []string
	for range 5 {
		fresh = append(fresh, fleetSpool(t, g, key, "pay_redis").id)
	}
	// The drain handler accepts nothing.
	expectStatus(t, "an event to the drain handler", fleetSend2(t, g, "/drain-only/ivpay", key, newFleetEvent(t, "pay_drain")), http.StatusForbidden)
	backend.setStatus(http.StatusOK)
	backend.waitAccepted(append(old, fresh...)...)
	// The backend counts an event when it answers; the spool records it
	// delivered once the answer is back and on disk, then logs it.
	g.expectLogs(0, logWant{Msg: "spooled webhook delivered"}, len(old)+len(fresh))
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	// The new events' ids are remembered in Redis (ivpay's identity is a digest of the
	// signed bytes: count the keys of its scope).
	if keys, err := rc.Keys(context.Background(), "{webhook_guard:}"+dedupeKeyIvpay("")+"*").Result(); err != nil || len(keys) < len(fresh) {
		t.Errorf("Redis remembers %d ids of scope ivpay (%v), want at least %d", len(keys), err, len(fresh))
	}
	if list := spoolList(t, g, ""); len(list) != 0 {
		t.Fatalf("after the drain the spools list %d events: %+v", len(list), list)
	}
	g.Reload(t, globalOptions()+site(spoolRoute("/ivpay", redisGuard)))
	last := fleetSpool(t, g, key, "pay_last")
	backend.waitAccepted(last.id)
	expectFleetDelivery(t, backend, last)
}
