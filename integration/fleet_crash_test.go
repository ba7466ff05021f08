package integration

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// The fleet's crash loop. Its figures are logged at the end: run it with -v to see them.
const (
	// fleetCrashKills is how many times an instance is SIGKILLed (and started again).
	fleetCrashKills = 50
	// fleetCrashInstances is how many instances share the spool.
	fleetCrashInstances = 3
	// fleetCrashSenders is how many senders post at once, each one request at a time.
	fleetCrashSenders = 4
	// fleetCrashMaxDelay bounds the random time an instance lives before the next kill.
	fleetCrashMaxDelay = 3 * time.Second
	// fleetCrashRefuseEvery: every fleetCrashRefuseEvery-th kill the backend answers 503 until
	// the next one, so that some events wait for a later attempt across kills.
	fleetCrashRefuseEvery = 7
	// fleetCrashForgeEvery: one request in fleetCrashForgeEvery carries a wrong key.
	fleetCrashForgeEvery = 25
	// fleetCrashCopyEvery: one request in fleetCrashCopyEvery is a copy of an event already
	// sent (by any sender), to another instance.
	fleetCrashCopyEvery = 5
)

// fleetCrashEvent is one event of the crash loop.
type fleetCrashEvent struct {
	ev     fleetEvent
	forged bool

	// Under fleetCrash.mu:
	sends   int    // requests started with it
	acked   bool   // answered 200 spooled or duplicate
	outcome string // of the first 200
}

// fleetCrashSlot is one instance's place in the fleet: the Caddy running there now, replaced
// after each kill.
type fleetCrashSlot struct {
	current atomic.Pointer[guard]
}

// fleetCrash is what the senders and the loop share.
type fleetCrash struct {
	key, forgedKey string
	slots          []*fleetCrashSlot
	stop           atomic.Bool
	quit           chan struct{}

	mu       sync.Mutex
	events   map[string]*fleetCrashEvent // by event id
	byBody   map[string]*fleetCrashEvent
	order    []*fleetCrashEvent // in order of creation
	problems []string
	// Figures.
	requests, unanswered, spooled, duplicates, conflicts, forgedRefused, copies int
}

// TestFleetCrashLoop: three instances share a spool on one redis-server (7.0, appendfsync
// always, lease 2s). Four senders post new IVPAY events, copies of events already sent (to
// another instance), and now and then one with a wrong key, to a random live instance; a
// request left unanswered (its instance died) is sent again to another instance, as a
// provider behind a load balancer would. Meanwhile an instance chosen at random is SIGKILLed
// after a random time and started again, fleetCrashKills times; the backend refuses every
// delivery (503) for a while now and then. At the end every event answered 200 has reached the
// backend, every delivery carries the event id and the exact body of an event sent with the
// right key, no event with a wrong key got through, no new event was answered duplicate, and
// the spool holds nothing, pending or dead.
func TestFleetCrashLoop(t *testing.T) {
	testkit.SkipIfShort(t, "SIGKILLs Caddy instances 50 times")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 0xf1ee7))
	srv := testkit.StartRedisWith(t, testkit.RedisOptions{AppendFsync: "always"})
	backend := startFleetBackend(t)
	f := &fleetCrash{
		key: newSecret(t, "ivpay_crash_"), forgedKey: newSecret(t, "forged_"),
		quit: make(chan struct{}), events: map[string]*fleetCrashEvent{}, byBody: map[string]*fleetCrashEvent{},
	}
	store := fleetRedisStore("2s")
	start := func(n int) *guard {
		g := fleetStart(t, n, store, backend.url(), f.key, srv.URL())
		g.addSecret(f.forgedKey)
		return g
	}
	var all []*guard
	for n := range fleetCrashInstances {
		s := &fleetCrashSlot{}
		g := start(n)
		all = append(all, g)
		s.current.Store(g)
		f.slots = append(f.slots, s)
	}
	t.Cleanup(func() { close(f.quit) })

	var senders sync.WaitGroup
	for i := range fleetCrashSenders {
		senders.Go(func() { f.send(t, i, rand.New(rand.NewPCG(seed, uint64(i+1)))) })
	}
	refusing := false
	for i := range fleetCrashKills {
		if refusing {
			backend.setStatus(http.StatusOK)
			refusing = false
		}
		if i%fleetCrashRefuseEvery == fleetCrashRefuseEvery-1 {
			backend.setStatus(http.StatusServiceUnavailable)
			refusing = true
		}
		time.Sleep(time.Duration(rnd.Int64N(int64(fleetCrashMaxDelay)))) // the scenario: not a synchronisation
		n := rnd.IntN(fleetCrashInstances)
		f.slots[n].current.Load().Kill()
		g := start(n)
		all = append(all, g)
		f.slots[n].current.Store(g)
	}
	backend.setStatus(http.StatusOK)
	f.stop.Store(true)
	if !crashWaitGroup(&senders, crashWaitSenders) {
		t.Fatalf("the senders did not finish within %v", crashWaitSenders)
	}
	f.mu.Lock()
	problems := append([]string(nil), f.problems...)
	f.mu.Unlock()
	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more problems", len(problems)-20)
			break
		}
		t.Error(p)
	}

	// Every acknowledged event reaches the backend; then the spool is empty.
	var acked []string
	f.mu.Lock()
	for _, e := range f.order {
		if e.acked {
			acked = append(acked, e.ev.id)
		}
	}
	f.mu.Unlock()
	backend.waitAccepted(acked...)
	live := f.slots[0].current.Load()
	deadline := time.Now().Add(fleetWait)
	for {
		list := crashSpoolList(t, live, "")
		if len(list) == 0 {
			break
		}
		for _, l := range list {
			if l.State == "dead" {
				t.Fatalf("dead event %+v", l)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spool still lists %d events after %v, e.g. %+v", len(list), fleetWait, list[0])
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.check(t, backend, acked)
	for n, g := range all {
		for _, e := range g.Logs() {
			if e.Level == "error" && e.Msg == "spooled webhook is dead" {
				t.Errorf("Caddy #%d: %s", n, e.Raw)
			}
		}
	}
}

// send is one sender: new events, copies and forged ones, to random live instances, until the
// loop stops and nothing is left to send again.
func (f *fleetCrash) send(t *testing.T, sender int, rnd *rand.Rand) {
	client := testkit.ClientFrom("127.0.0.1")
	var again []*fleetCrashEvent // unanswered or 409: sent again later
	for n := 0; ; n++ {
		select {
		case <-f.quit:
			return
		default:
		}
		var e *fleetCrashEvent
		switch {
		case len(again) > 0 && (f.stop.Load() || rnd.IntN(2) == 0):
			e, again = again[0], again[1:]
		case f.stop.Load():
			return
		case n%fleetCrashCopyEvery == fleetCrashCopyEvery-1:
			f.mu.Lock()
			if len(f.order) > 0 {
				e = f.order[rnd.IntN(len(f.order))]
				if e.forged {
					e = nil
				} else {
					f.copies++
				}
			}
			f.mu.Unlock()
		}
		if e == nil {
			e = f.newEvent(t, sender, n%fleetCrashForgeEvery == fleetCrashForgeEvery/2)
		}
		key := f.key
		if e.forged {
			key = f.forgedKey
		}
		f.mu.Lock()
		e.sends++
		f.requests++
		f.mu.Unlock()
		g := f.slots[rnd.IntN(len(f.slots))].current.Load()
		resp, err := testkit.Send(client, http.MethodPost, g.URL("/ivpay"), ivpayHeaders(key), e.ev.body)
		if err != nil {
			// That instance was killed: like a load balancer, send it again elsewhere.
			f.mu.Lock()
			f.unanswered++
			f.mu.Unlock()
			if !e.forged {
				again = append(again, e)
			}
			continue
		}
		if f.answer(sender, e, resp) {
			again = append(again, e)
		}
	}
}

// newEvent makes and registers a new event, forged or not.
func (f *fleetCrash) newEvent(t *testing.T, sender int, forged bool) *fleetCrashEvent {
	prefix := fmt.Sprintf("pay_crash%d_", sender)
	if forged {
		prefix = fmt.Sprintf("pay_forged%d_", sender)
	}
	e := &fleetCrashEvent{ev: newFleetEvent(t, prefix), forged: forged}
	f.mu.Lock()
	f.events[e.ev.id] = e
	f.byBody[string(e.ev.body)] = e
	f.order = append(f.order, e)
	f.mu.Unlock()
	return e
}

// answer checks and records an answer; true when the event must be sent again (409).
func (f *fleetCrash) answer(sender int, e *fleetCrashEvent, resp testkit.Response) (again bool) {
	outcome := resp.Header.Get("Webhook-Guard-Outcome")
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case e.forged && resp.Status == http.StatusUnauthorized:
		f.forgedRefused++
	case e.forged:
		f.problems = append(f.problems, fmt.Sprintf("sender %d: forged event %s answered %d %q", sender, e.ev.id, resp.Status, outcome))
	case resp.Status == http.StatusConflict:
		f.conflicts++ // a copy in flight elsewhere: the provider retries
		return true
	case resp.Status == http.StatusOK && (outcome == "spooled" || outcome == "duplicate"):
		if outcome == "duplicate" && e.sends == 1 {
			f.problems = append(f.problems, fmt.Sprintf("sender %d: new event %s answered duplicate", sender, e.ev.id))
		}
		if outcome == "spooled" {
			f.spooled++
			if e.acked && e.outcome == "spooled" {
				f.problems = append(f.problems, fmt.Sprintf("sender %d: event %s spooled twice", sender, e.ev.id))
			}
		} else {
			f.duplicates++
		}
		if !e.acked {
			e.acked, e.outcome = true, outcome
		}
	default:
		f.problems = append(f.problems, fmt.Sprintf("sender %d: event %s (send %d) answered %d %q (body %q)", sender, e.ev.id, e.sends, resp.Status, outcome, resp.Body))
	}
	return false
}

// check checks every delivery the backend received and logs the figures.
func (f *fleetCrash) check(t *testing.T, backend *fleetBackend, acked []string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	delivered := map[string]int{}
	refused := 0
	for _, a := range backend.arrivals() {
		if a.path == "/marker" {
			continue
		}
		e := f.byBody[string(a.body)]
		switch {
		case e == nil:
			t.Errorf("the backend received a body the test never sent (%d bytes, event id %q)", len(a.body), a.eventID)
			continue
		case e.forged:
			t.Errorf("the backend received forged event %s", e.ev.id)
			continue
		case a.eventID != e.ev.id:
			t.Errorf("event %s delivered with Webhook-Guard-Event-Id %q", e.ev.id, a.eventID)
		}
		for _, name := range []string{"X-Api-Key", "Authorization", "Cookie"} {
			if a.header.Get(name) != "" {
				t.Errorf("delivery of %s carries %s", e.ev.id, name)
			}
		}
		switch {
		case a.status == 0: // held and dropped: none in this test
		case a.status/100 == 2:
			delivered[e.ev.id]++
		default:
			refused++
		}
	}
	var lost []string
	for _, id := range acked {
		if delivered[id] == 0 {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Errorf("%d events answered 200 never reached the backend, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	twice, extra := 0, 0
	for _, n := range delivered {
		if n > 1 {
			twice++
			extra += n - 1
		}
	}
	genuine := 0
	for _, e := range f.order {
		if !e.forged {
			genuine++
		}
	}
	t.Logf("figures: %d kills of %d instances; %d requests (%d unanswered, sent again elsewhere; %d copies of events already sent; %d answered 409 while a copy was in flight); "+
		"%d genuine events, %d answered 200 (%d spooled answers, %d duplicate answers); %d forged refused 401; "+
		"backend: %d events accepted, %d refused attempts (503 periods); %d events delivered more than once (%d extra deliveries), each with its event id and body",
		fleetCrashKills, fleetCrashInstances, f.requests, f.unanswered, f.copies, f.conflicts, genuine, len(acked), f.spooled, f.duplicates, f.forgedRefused,
		len(delivered), refused, twice, extra)
}
