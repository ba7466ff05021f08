package integration

// The replay store seen from outside (issue 4): two Caddy instances sharing
// one Redis, Redis going down and coming back, the memory store at capacity,
// and `caddy reload` keeping or switching the store.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// storeWaitTimeout bounds each wait of these tests for answers of concurrent
// senders; it is a bound, not a pace: the waits end as soon as the answers
// are in.
const storeWaitTimeout = 30 * time.Second

// storeSecretEnv is the environment variable holding the Ivy secret.
const storeSecretEnv = "STORE_IVY_SECRET"

// storeIvyGuard returns the arguments of an ivy webhook_guard reading its
// secret from storeSecretEnv, accepting any source (the tests send from
// loopback), with storeLines (e.g. "store redis {env.REDIS_URL}") in its
// block.
func storeIvyGuard(storeLines string) string {
	return "ivy {\n" +
		"secret {env." + storeSecretEnv + "}\n" +
		"allow_ips any\n" +
		storeLines + "\n" +
		"}"
}

// storeEvent is one signed Ivy event.
type storeEvent struct {
	id   string
	body []byte
	h    http.Header
}

// newStoreEvent returns a fresh Ivy event, signed with secret.
func newStoreEvent(t testing.TB, secret, prefix string) storeEvent {
	t.Helper()
	id := newID(t, prefix)
	body := eventBody(id, "payment.succeeded", `"amount":4200`, `"currency":"EUR"`)
	return storeEvent{id: id, body: body, h: signIvy(secret, body)}
}

// storeRedisClient returns a go-redis client of srv, closed when the test
// ends.
func storeRedisClient(t testing.TB, srv *testkit.RedisServer) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: srv.Password})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// storeRedisKey is the Redis key of the Ivy event id under prefix: the
// prefix in braces (the keys' cluster hash tag), then the replay key.
func storeRedisKey(prefix, id string) string {
	return "{" + prefix + "}" + dedupe.Key("ivy", "ivy", id)
}

// storeRedisValue returns the value Redis holds for the Ivy event id under
// prefix, and whether the key exists.
func storeRedisValue(t testing.TB, c *redis.Client, prefix, id string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.Get(ctx, storeRedisKey(prefix, id)).Result()
	if err == redis.Nil {
		return "", false
	}
	if err != nil {
		t.Fatalf("redis GET: %v", err)
	}
	return v, true
}

// storeExpectInRedis fails the test unless Redis holds the event id under
// prefix as delivered, with a TTL.
func storeExpectInRedis(t testing.TB, c *redis.Client, prefix, id string) {
	t.Helper()
	v, ok := storeRedisValue(t, c, prefix, id)
	if !ok || v != "delivered" {
		t.Fatalf("redis key %q: value %q (exists %v), want delivered", storeRedisKey(prefix, id), v, ok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ttl, err := c.PTTL(ctx, storeRedisKey(prefix, id)).Result()
	if err != nil || ttl <= 0 {
		t.Fatalf("redis key of %s: TTL %v, %v; want a positive TTL (the replay window)", id, ttl, err)
	}
}

// storeExpectNotInRedis fails the test if Redis holds the event id under
// prefix.
func storeExpectNotInRedis(t testing.TB, c *redis.Client, prefix, id string) {
	t.Helper()
	if v, ok := storeRedisValue(t, c, prefix, id); ok {
		t.Fatalf("redis key %q exists (%q), want none", storeRedisKey(prefix, id), v)
	}
}

// storeExpectInFlight fails the test unless resp is 409 with Retry-After.
func storeExpectInFlight(t testing.TB, what string, resp testkit.Response) {
	t.Helper()
	expectStatus(t, what, resp, http.StatusConflict)
	if ra := resp.Header.Get("Retry-After"); ra == "" {
		t.Fatalf("%s: 409 without Retry-After", what)
	}
	if o := resp.Header.Get("Webhook-Guard-Outcome"); o != "" {
		t.Fatalf("%s: 409 with Webhook-Guard-Outcome %q", what, o)
	}
}

// storeExpectUpstreamAnswer fails the test unless resp is the upstream's own
// 200 passed through (not an acknowledgement by the guard).
func storeExpectUpstreamAnswer(t testing.TB, what string, resp testkit.Response) {
	t.Helper()
	expectStatus(t, what, resp, http.StatusOK)
	if o := resp.Header.Get("Webhook-Guard-Outcome"); o != "" {
		t.Fatalf("%s: 200 with Webhook-Guard-Outcome %q, want the upstream's answer", what, o)
	}
	if string(resp.Body) != "upstream 200" || resp.Header.Get("X-Upstream-Seq") == "" {
		t.Fatalf("%s: body %q, X-Upstream-Seq %q: not the upstream's answer", what, resp.Body, resp.Header.Get("X-Upstream-Seq"))
	}
}

// storeWaitLogCount waits (bounded by testkit.LogWaitTimeout) until n
// webhook_guard lines matching want were printed after mark.
func storeWaitLogCount(t testing.TB, g *guard, mark int, want logWant, n int) {
	t.Helper()
	if n == 0 {
		return
	}
	seen := 0
	g.WaitLogSince(t, mark, func(e testkit.LogEntry) bool {
		if want.matches(e) {
			seen++
		}
		return seen == n
	})
}

// storeUpstreamByID groups the requests that reached up by the event id in
// their JSON body.
func storeUpstreamByID(t testing.TB, up *testkit.Upstream) map[string][]testkit.Recorded {
	t.Helper()
	out := map[string][]testkit.Recorded{}
	for _, rec := range up.Requests() {
		var ev struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(rec.Body, &ev); err != nil || ev.ID == "" {
			t.Fatalf("the upstream got a body without an event id: %q", rec.Body)
		}
		out[ev.ID] = append(out[ev.ID], rec)
	}
	return out
}

// storeAnswer is what one sender goroutine got back.
type storeAnswer struct {
	from int // index of the instance or of the event
	resp testkit.Response
	err  error
}

// storeCollect reads n answers from ch, failing the test if they do not all
// come within storeWaitTimeout.
func storeCollect(t testing.TB, ch <-chan storeAnswer, n int, what string) []storeAnswer {
	t.Helper()
	timer := time.NewTimer(storeWaitTimeout)
	defer timer.Stop()
	out := make([]storeAnswer, 0, n)
	for len(out) < n {
		select {
		case a := <-ch:
			if a.err != nil {
				t.Fatalf("%s: %v", what, a.err)
			}
			out = append(out, a)
		case <-timer.C:
			t.Fatalf("%s: %d of %d answers within %v", what, len(out), n, storeWaitTimeout)
		}
	}
	return out
}

// Two instances share one Redis: 32 concurrent copies of one event, half to
// each, reach the shared upstream once; a later copy to the other instance is
// a duplicate.
func TestStoreRedisTwoInstancesDeliverOnce(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_store_")
	env := map[string]string{storeSecretEnv: secret, "REDIS_URL": srv.URL()}
	caddyfile := globalOptions() + site(guardRoute("/hook", storeIvyGuard("store redis {env.REDIS_URL}"), up.Addr(), ""))
	instances := []*guard{startGuard(t, caddyfile, env), startGuard(t, caddyfile, env)}
	marks := []int{instances[0].LogMark(), instances[1].LogMark()}
	ev := newStoreEvent(t, secret, "evt_shared_")

	// The upstream holds the copy that gets through, so that it is really in
	// flight while every other copy arrives.
	release := up.Block()
	defer release()
	const copies = 32
	answers := make(chan storeAnswer, copies)
	start := make(chan struct{})
	for i := range copies {
		inst := i % 2
		go func() {
			<-start
			resp, err := instances[inst].send(nil, http.MethodPost, "/hook", ev.h, ev.body)
			answers <- storeAnswer{from: inst, resp: resp, err: err}
		}()
	}
	close(start)
	held := up.WaitArrival(t)
	if !bytes.Equal(held.Body, ev.body) {
		t.Fatalf("the upstream got body %q, want %q", held.Body, ev.body)
	}
	// Every other copy is answered while the first is held: in flight.
	early := storeCollect(t, answers, copies-1, "copies answered while one is in flight")
	inFlight := [2]int{}
	for _, a := range early {
		storeExpectInFlight(t, fmt.Sprintf("copy to instance %d while one is in flight", a.from), a.resp)
		inFlight[a.from]++
	}
	release()
	last := storeCollect(t, answers, 1, "the held copy")[0]
	storeExpectUpstreamAnswer(t, "the held copy", last.resp)
	expectForwarded(t, "32 concurrent copies", up, 0, ev.body)
	if want := [2]int{copies / 2, copies / 2}; inFlight[last.from]+1 != want[last.from] || inFlight[1-last.from] != want[1-last.from] {
		t.Fatalf("in-flight answers per instance %v, forwarded by instance %d: copies went astray", inFlight, last.from)
	}

	// Each instance logged what it did: one forwarded, the rest in flight.
	instances[last.from].expectLog(marks[last.from], logWant{Msg: "webhook forwarded", Outcome: "forwarded", EventID: ev.id, Status: http.StatusOK})
	for i, g := range instances {
		storeWaitLogCount(t, g, marks[i], logWant{Msg: "webhook refused", Outcome: "in_flight", EventID: ev.id, Status: http.StatusConflict}, inFlight[i])
	}

	// After the delivery, a copy to the other instance (and to the same) is
	// a duplicate, acknowledged and not forwarded.
	other := instances[1-last.from]
	mark := other.LogMark()
	expectDropped(t, "copy to the other instance after delivery", other.post("/hook", ev.h, ev.body), "duplicate")
	other.expectLog(mark, logWant{Msg: "webhook dropped", Outcome: "duplicate", EventID: ev.id, Status: http.StatusOK})
	expectDropped(t, "copy to the delivering instance after delivery", instances[last.from].post("/hook", ev.h, ev.body), "duplicate")
	expectNotForwarded(t, "copies after delivery", up, 1)
	storeExpectInRedis(t, storeRedisClient(t, srv), dedupe.DefaultRedisPrefix, ev.id)
}

// Two handlers with different prefixes on one Redis keep separate histories:
// the same event id is delivered once per prefix.
func TestStoreRedisPrefixesSeparateHistories(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_store_")
	env := map[string]string{storeSecretEnv: secret, "REDIS_URL": srv.URL()}
	route := func(path, prefix string) string {
		return guardRoute(path, storeIvyGuard("store redis {env.REDIS_URL} {\nprefix "+prefix+"\n}"), up.Addr(), "")
	}
	g := startGuard(t, globalOptions()+site(route("/tenant-a", "tenant_a:"), route("/tenant-b", "tenant_b:")), env)
	rc := storeRedisClient(t, srv)
	ev := newStoreEvent(t, secret, "evt_prefixed_")

	for i, path := range []string{"/tenant-a", "/tenant-b"} {
		mark := g.LogMark()
		storeExpectUpstreamAnswer(t, "first copy to "+path, g.post(path, ev.h, ev.body))
		if rec := expectForwarded(t, "first copy to "+path, up, i, ev.body); rec.Path != path {
			t.Fatalf("forwarded to path %q, want %q", rec.Path, path)
		}
		g.expectLog(mark, logWant{Msg: "webhook forwarded", Outcome: "forwarded", EventID: ev.id})
	}
	for _, path := range []string{"/tenant-a", "/tenant-b"} {
		expectDropped(t, "second copy to "+path, g.post(path, ev.h, ev.body), "duplicate")
	}
	expectNotForwarded(t, "second copies", up, 2)
	storeExpectInRedis(t, rc, "tenant_a:", ev.id)
	storeExpectInRedis(t, rc, "tenant_b:", ev.id)
	storeExpectNotInRedis(t, rc, dedupe.DefaultRedisPrefix, ev.id)
}

// Redis stops while events flow: the guard fails closed (503 with
// Retry-After, nothing forwarded, store_unavailable logged), recovers when
// Redis is back without a Caddy restart, and no event is lost: each event
// answered 2xx reached the upstream exactly once, each answered 503 reaches
// it exactly once when resent.
func TestStoreRedisOutageFailsClosed(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_store_")
	env := map[string]string{storeSecretEnv: secret, "REDIS_URL": srv.URL()}
	g := startGuard(t, globalOptions()+site(guardRoute("/hook", storeIvyGuard("store redis {env.REDIS_URL}"), up.Addr(), "")), env)
	mark := g.LogMark()

	// Senders post distinct events, each numbered, until told to stop (or a
	// bound is reached).
	const senders, maxEvents = 4, 4000
	run := randomHex(t, 4)
	type sent struct {
		n    int64
		ev   storeEvent
		resp testkit.Response
		err  error
	}
	results := make(chan sent, maxEvents)
	var next atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := next.Add(1)
				if n > maxEvents {
					return
				}
				id := fmt.Sprintf("evt_outage_%s_%04d", run, n)
				body := eventBody(id, "payment.succeeded", `"amount":`+strconv.FormatInt(n, 10))
				ev := storeEvent{id: id, body: body, h: signIvy(secret, body)}
				resp, err := g.send(nil, http.MethodPost, "/hook", ev.h, ev.body)
				results <- sent{n: n, ev: ev, resp: resp, err: err}
			}
		}()
	}
	stopSenders := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopSenders()

	var all []sent
	timer := time.NewTimer(3 * storeWaitTimeout)
	defer timer.Stop()
	// waitFor reads answers until count of them satisfy pred.
	waitFor := func(what string, count int, pred func(sent) bool) {
		t.Helper()
		for seen := 0; seen < count; {
			select {
			case s := <-results:
				if s.err != nil {
					t.Fatalf("event %s: %v", s.ev.id, s.err)
				}
				all = append(all, s)
				if pred(s) {
					seen++
				}
			case <-timer.C:
				t.Fatalf("%s: only %d of %d answers after %d events", what, seen, count, len(all))
			}
		}
	}
	isOK := func(s sent) bool { return s.resp.Status == http.StatusOK }

	waitFor("events delivered with Redis up", 3, isOK)
	srv.Stop()
	waitFor("events refused with Redis down", 3, func(s sent) bool { return s.resp.Status == http.StatusServiceUnavailable })
	srv.Start() // same port, empty
	restarted := next.Load()
	waitFor("events delivered after Redis is back", 3, func(s sent) bool { return s.n > restarted && isOK(s) })
	stopSenders()
	close(results)
	for s := range results {
		if s.err != nil {
			t.Fatalf("event %s: %v", s.ev.id, s.err)
		}
		all = append(all, s)
	}

	// Every answer is the upstream's 200 or the guard's 503; a 503 forwarded
	// nothing, a 200 reached the upstream exactly once, byte for byte.
	byID := storeUpstreamByID(t, up)
	var refused []storeEvent
	for _, s := range all {
		got := byID[s.ev.id]
		switch s.resp.Status {
		case http.StatusOK:
			storeExpectUpstreamAnswer(t, "event "+s.ev.id, s.resp)
			if len(got) != 1 || !bytes.Equal(got[0].Body, s.ev.body) {
				t.Fatalf("event %s acknowledged 200 reached the upstream %d times, want once with its bytes", s.ev.id, len(got))
			}
		case http.StatusServiceUnavailable:
			if s.resp.Header.Get("Retry-After") == "" {
				t.Fatalf("event %s: 503 without Retry-After", s.ev.id)
			}
			if len(got) != 0 {
				t.Fatalf("event %s answered 503 reached the upstream %d times, want none", s.ev.id, len(got))
			}
			refused = append(refused, s.ev)
		default:
			t.Fatalf("event %s: status %d (body %q), want 200 or 503", s.ev.id, s.resp.Status, s.resp.Body)
		}
	}
	g.expectLog(mark, logWant{Msg: "webhook refused", Outcome: "store_unavailable", EventID: refused[0].id, Status: http.StatusServiceUnavailable})
	if e := g.WaitLogSince(t, mark, logWant{Outcome: "store_unavailable"}.matches); e.Level != "error" {
		t.Fatalf("store_unavailable logged at level %q, want error", e.Level)
	}
	t.Logf("%d events: %d answered 503 while Redis was down", len(all), len(refused))

	// The provider retries what was refused: each reaches the upstream once.
	before := up.Count()
	for i, ev := range refused {
		storeExpectUpstreamAnswer(t, "resent "+ev.id, g.post("/hook", ev.h, ev.body))
		expectForwarded(t, "resent "+ev.id, up, before+i, ev.body)
	}
	byID = storeUpstreamByID(t, up)
	for _, s := range all {
		if n := len(byID[s.ev.id]); n != 1 {
			t.Fatalf("event %s reached the upstream %d times, want once", s.ev.id, n)
		}
	}
	if up.Count() != len(all) {
		t.Fatalf("the upstream received %d requests for %d events", up.Count(), len(all))
	}
	// Redis remembers again.
	expectDropped(t, "a resent event sent again", g.post("/hook", refused[0].h, refused[0].body), "duplicate")
	expectNotForwarded(t, "a resent event sent again", up, len(all))
	storeExpectInRedis(t, storeRedisClient(t, srv), dedupe.DefaultRedisPrefix, refused[0].id)
}

// storeReloadConfig is the Caddyfile of TestStoreReload: the guard with
// storeLines, and /version answering version so that each reload is a real
// change of configuration.
func storeReloadConfig(up *testkit.Upstream, storeLines, version string) string {
	return globalOptions() + site(
		guardRoute("/hook", storeIvyGuard(storeLines), up.Addr(), ""),
		"handle /version {\nrespond \""+version+"\" 200\n}\n",
	)
}

// `caddy reload` keeps the memory store's history; a changed store line
// takes effect: memory → redis (new history, in Redis under the prefix) and
// back to memory.
func TestStoreReload(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	up := testkit.StartUpstream(t)
	rc := storeRedisClient(t, srv)
	secret := newSecret(t, "ivy_store_")
	env := map[string]string{storeSecretEnv: secret, "REDIS_URL": srv.URL()}
	const memory, viaRedis = "store memory", "store redis {env.REDIS_URL} {\nprefix reload:\n}"
	g := startGuard(t, storeReloadConfig(up, memory, "v1"), env)
	reload := func(storeLines, version string) {
		t.Helper()
		g.Reload(t, storeReloadConfig(up, storeLines, version))
		resp := g.post("/version", nil, nil)
		if resp.Status != http.StatusOK || string(resp.Body) != version {
			t.Fatalf("after reload: /version answered %d %q, want %q", resp.Status, resp.Body, version)
		}
	}
	deliver := func(what string, ev storeEvent) {
		t.Helper()
		before := up.Count()
		storeExpectUpstreamAnswer(t, what, g.post("/hook", ev.h, ev.body))
		expectForwarded(t, what, up, before, ev.body)
	}
	duplicate := func(what string, ev storeEvent) {
		t.Helper()
		before := up.Count()
		mark := g.LogMark()
		expectDropped(t, what, g.post("/hook", ev.h, ev.body), "duplicate")
		expectNotForwarded(t, what, up, before)
		g.expectLog(mark, logWant{Msg: "webhook dropped", Outcome: "duplicate", EventID: ev.id})
	}

	// Memory, reloaded with the same store: the history survives.
	e1 := newStoreEvent(t, secret, "evt_reload_memory_")
	deliver("e1 via memory", e1)
	reload(memory, "v2")
	duplicate("e1 after a reload keeping the memory store", e1)

	// memory → redis: a new history, kept in Redis under the prefix. e1 was
	// remembered in memory only, so Redis does not know it: by design it is
	// delivered once more.
	reload(viaRedis, "v3")
	storeExpectNotInRedis(t, rc, "reload:", e1.id)
	deliver("e1 after the switch to redis (memory history not carried over)", e1)
	storeExpectInRedis(t, rc, "reload:", e1.id)
	e2 := newStoreEvent(t, secret, "evt_reload_redis_")
	deliver("e2 via redis", e2)
	storeExpectInRedis(t, rc, "reload:", e2.id)
	storeExpectNotInRedis(t, rc, dedupe.DefaultRedisPrefix, e2.id)
	duplicate("e2 again via redis", e2)

	// redis → memory: the memory store does not consult Redis, which is no
	// longer needed.
	reload(memory, "v4")
	srv.Stop()
	e3 := newStoreEvent(t, secret, "evt_reload_back_")
	deliver("e3 via memory with Redis down", e3)
	duplicate("e3 again via memory", e3)
	deliver("e2 via the new memory store (redis history not carried over)", e2)
	duplicate("e2 again via memory", e2)
}

// storeRenamedMsgLog is the module's log of TestStoreMemoryWarningFollowsReload
// after the reload: JSON on stderr with the message under "message".
const storeRenamedMsgLog = "log webhook_guard {\n" +
	"\t\toutput stderr\n" +
	"\t\tformat json {\n\t\t\tmessage_key message\n\t\t}\n" +
	"\t\tlevel DEBUG\n" +
	"\t\tinclude " + guardLogger + "\n" +
	"\t}"

// The nearly-full warning of a memory store kept across a reload goes to the
// module's log as the running configuration defines it, not as the
// configuration that first opened the store did.
func TestStoreMemoryWarningFollowsReload(t *testing.T) {
	t.Parallel()
	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_store_")
	env := map[string]string{storeSecretEnv: secret}
	route := guardRoute("/hook", storeIvyGuard("store memory {\nmax_events 10\n}"), up.Addr(), "")
	g := startGuard(t, globalOptions()+site(route), env)
	first := newStoreEvent(t, secret, "evt_logreload_")
	storeExpectUpstreamAnswer(t, "before the reload", g.post("/hook", first.h, first.body))

	// The reload changes the module's log (the message key) and keeps the
	// store, whose history survives.
	mark := g.LogMark()
	g.Reload(t, testkit.GlobalOptions(storeRenamedMsgLog)+site(route))
	expectDropped(t, "after the reload", g.post("/hook", first.h, first.body), "duplicate")
	g.WaitLogSince(t, mark, func(e testkit.LogEntry) bool {
		return e.Logger == guardLogger && e.Field("message") == "webhook dropped" && e.Field("event_id") == first.id
	})

	const events = 8 // with the first, 9 of 10 places: over 80 %
	run := randomHex(t, 4)
	for n := range events {
		body := eventBody(fmt.Sprintf("evt_logreload_%s_%04d", run, n), "payment.succeeded")
		resp := g.post("/hook", signIvy(secret, body), body)
		storeExpectUpstreamAnswer(t, fmt.Sprint("event ", n), resp)
	}
	warning := g.WaitLogSince(t, mark, func(e testkit.LogEntry) bool {
		return e.Logger == guardLogger && (strings.HasPrefix(e.Msg, "replay store nearly full") ||
			strings.HasPrefix(e.Field("message"), "replay store nearly full"))
	})
	if warning.Msg != "" || warning.Level != "warn" {
		t.Fatalf("nearly-full warning after the reload was written by the logger of the configuration before it: %s", warning.Raw)
	}
}
