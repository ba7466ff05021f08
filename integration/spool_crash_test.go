package integration

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/internal/testkit"
)

// The crash loop's scenario. Its figures (kills, events acknowledged, delivered, delivered more
// than once) are logged at the end: run it with -v to see them.
const (
	// crashKills is how many times Caddy is SIGKILLed on the same data directory.
	crashKills = 60
	// crashSenders is how many senders post events at once, each one request at a time.
	crashSenders = 4
	// crashMaxDelay bounds the random delay between a start and the kill.
	crashMaxDelay = 300 * time.Millisecond
	// crashAfterAckEvery: every crashAfterAckEvery-th iteration kills right after a 200
	// instead of after a random delay.
	crashAfterAckEvery = 3
	// crashForgeEvery: one request in crashForgeEvery is a forged event (signed with another
	// secret), which must be refused and never reach the upstream.
	crashForgeEvery = 20
	// crashAbandonEvery: one unanswered event in crashAbandonEvery is never sent again (a
	// provider that gave up); the others are sent again until answered.
	crashAbandonEvery = 4
	// crashRefused503 is how many deliveries the upstream refuses with 503 at the iterations
	// of crashRefuseAt, so that some events wait for a later attempt across kills.
	crashRefused503 = 30
)

// crashRefuseAt are the iterations at whose start the upstream is made to refuse the next
// crashRefused503 deliveries.
var crashRefuseAt = map[int]bool{10: true, 25: true, 40: true}

// Bounds of the crash loop's waits (none stands in for synchronisation: each ends as soon as
// what it waits for happens).
const (
	// crashWaitKilled bounds how long a sender whose request went unanswered waits for the
	// loop to say it killed that Caddy: longer means the request failed without a kill.
	crashWaitKilled = 30 * time.Second
	// crashWaitNext bounds how long a sender waits for the next Caddy to be ready.
	crashWaitNext = 90 * time.Second
	// crashWaitAck bounds the wait for a 200 in the iterations that kill right after one.
	crashWaitAck = 30 * time.Second
	// crashWaitSenders bounds the senders' last retries once the loop has ended.
	crashWaitSenders = 2 * time.Minute
	// crashWaitDrain bounds the wait for the spool to deliver everything at the end (an
	// event the upstream refused waits about 5 s for its next attempt, 30 s if refused twice).
	crashWaitDrain = 3 * time.Minute
)

// crashEvent is one event of the crash loop, genuine or forged.
type crashEvent struct {
	id     string
	body   []byte
	header http.Header
	forged bool

	// Under crashState.mu:
	sends     int    // requests made with it
	answered  bool   // answered at all (a status)
	acked     bool   // answered 200 spooled or duplicate
	outcome   string // Webhook-Guard-Outcome of the acknowledgement
	abandoned bool   // unanswered, never sent again
}

// crashEpoch is one Caddy of the loop, from its start to its kill.
type crashEpoch struct {
	n      int
	g      *guard
	url    string
	killed chan struct{} // closed once this Caddy is dead
	next   chan struct{} // closed once the next Caddy serves (or the loop has ended)
}

// crashState is what the senders and the loop share.
type crashState struct {
	current  atomic.Pointer[crashEpoch]
	stopping atomic.Bool
	acks     chan *crashEpoch // a 200 was received from that Caddy (not blocking: buffer 1)
	quit     chan struct{}    // closed when the test ends: senders give up at once
	secret   string           // the route's Ivy secret

	mu       sync.Mutex
	events   map[string]*crashEvent // by event id
	byBody   map[string]*crashEvent
	problems []string
	// Figures.
	requests, unanswered, retried, spooled, duplicates, forgedRefused int
}

func (s *crashState) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

// TestSpoolCrashLoop SIGKILLs Caddy crashKills times at random moments, on the same data
// directory, while crashSenders senders post unique signed Ivy events to a route with
// `spool { to <upstream> }`. The upstream stays up throughout, but refuses crashRefused503
// deliveries with 503 at a few iterations, so that some events are pending with a later
// attempt when Caddy dies. Each Caddy is killed after a random delay (0 to crashMaxDelay after
// it became ready) or, every crashAfterAckEvery-th iteration, right after a 200. A request that
// gets no answer because Caddy died is not acknowledged; like a provider, its sender sends it
// again to a later Caddy (which must answer 200 spooled or duplicate), or gives it up.
// Senders also post forged events now and then, which must be refused.
//
// At the end, with a last Caddy running, the test waits until the upstream has received every
// acknowledged event and the admin API lists nothing pending or dead, and then asserts: every
// event answered 200 reached the upstream at least once; every delivery of an event carries
// its Webhook-Guard-Event-Id, its exact body and its Ivy signature; every body the upstream
// received is one the test signed with the route's secret (no forged event, nothing
// unverified); no new event was ever answered duplicate. Events delivered more than once are
// counted and logged (delivery is at least once), with the other figures.
func TestSpoolCrashLoop(t *testing.T) {
	testkit.SkipIfShort(t, "SIGKILLs Caddy 60 times")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 0x5eed))

	up := testkit.StartUpstream(t)
	secret := newSecret(t, "ivy_")
	forgedSecret := newSecret(t, "forged_")
	env := map[string]string{"IVY_SECRET": secret}
	dir := t.TempDir()
	cfg := globalOptions() + site("handle /ivy {\n"+
		"webhook_guard ivy {\n secret {env.IVY_SECRET}\n allow_ips 127.0.0.1\n"+
		" spool {\n  to "+up.URL("")+"\n  timeout 5s\n }\n}\n}\n")

	s := &crashState{
		acks:   make(chan *crashEpoch, 1),
		quit:   make(chan struct{}),
		secret: secret,
		events: map[string]*crashEvent{},
		byBody: map[string]*crashEvent{},
	}
	var senders sync.WaitGroup
	var caddies []*guard
	start := func(n int) *crashEpoch {
		g := startGuardIn(t, dir, cfg, env, forgedSecret)
		caddies = append(caddies, g)
		ep := &crashEpoch{n: n, g: g, url: g.URL("/ivy"), killed: make(chan struct{}), next: make(chan struct{})}
		prev := s.current.Swap(ep)
		if prev != nil {
			close(prev.next)
		}
		return ep
	}

	ep := start(0)
	t.Cleanup(func() { close(s.quit) }) // a test that failed early leaves no sender behind
	for i := range crashSenders {
		senders.Add(1)
		go func() {
			defer senders.Done()
			s.send(t, i, rand.New(rand.NewPCG(seed, uint64(i+1))), secret, forgedSecret)
		}()
	}

	afterAck, withDeliveries := 0, 0
	var killSeqs []int
	for i := range crashKills {
		if crashRefuseAt[i] {
			refused := make([]int, crashRefused503)
			for k := range refused {
				refused[k] = http.StatusServiceUnavailable
			}
			up.RespondWith(refused...)
		}
		arrivedBefore := up.Count()
		if (i+1)%crashAfterAckEvery == 0 {
			afterAck++
			s.waitAck(t, ep)
		} else {
			// The scenario: a crash at a random moment.
			time.Sleep(time.Duration(rnd.Int64N(int64(crashMaxDelay) + 1)))
		}
		ep.g.Kill()
		killSeqs = append(killSeqs, up.Count())
		if killSeqs[i] > arrivedBefore {
			withDeliveries++
		}
		close(ep.killed)
		ep = start(i + 1)
	}
	t.Logf("%d SIGKILLs: %d right after a 200, %d after a random delay; deliveries arrived during %d of them",
		crashKills, afterAck, crashKills-afterAck, withDeliveries)

	// The last Caddy is not killed: the senders send what went unanswered once more, then stop.
	s.stopping.Store(true)
	if !crashWaitGroup(&senders, crashWaitSenders) {
		t.Fatalf("the senders did not finish their retries within %v", crashWaitSenders)
	}
	s.mu.Lock()
	problems := append([]string(nil), s.problems...)
	s.mu.Unlock()
	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more problems", len(problems)-20)
			break
		}
		t.Error(p)
	}

	acked := s.ackedEvents()
	s.waitDrained(t, ep.g, up, acked)
	s.checkDeliveries(t, up, acked, killSeqs)

	// Every refusal logged is a forged event's, with its reason; nothing else is refused and
	// nothing is logged as an error (a spool write that failed, an event dead).
	ep.g.Stop()
	forgedLogged := 0
	for n, g := range caddies {
		for _, e := range g.Logs() {
			switch {
			case e.Logger != guardLogger:
			case e.Msg == "webhook refused" && e.Field("outcome") == "invalid_signature":
				forgedLogged++
			case e.Level == "error" || e.Msg == "webhook refused":
				t.Errorf("Caddy #%d logged: %s", n, e.Raw)
			}
		}
	}
	if forgedLogged < s.forgedRefused {
		t.Errorf("%d forged events answered 401, %d logged as invalid_signature", s.forgedRefused, forgedLogged)
	}
}

// send is one sender: it posts new events (and now and then a forged one) to the current
// Caddy, and sends again what got no answer, until the loop stops and nothing is left to send.
func (s *crashState) send(t *testing.T, sender int, rnd *rand.Rand, secret, forgedSecret string) {
	client := testkit.ClientFrom("127.0.0.1")
	var retry []*crashEvent
	for n := 0; ; n++ {
		select {
		case <-s.quit:
			return
		default:
		}
		ep := s.current.Load()
		var ev *crashEvent
		switch {
		case len(retry) > 0 && (s.stopping.Load() || rnd.IntN(2) == 0):
			ev, retry = retry[0], retry[1:]
		case s.stopping.Load():
			return
		default:
			forged := n%crashForgeEvery == crashForgeEvery-1
			ev = s.newEvent(t, sender, forged, secret, forgedSecret)
		}
		s.mu.Lock()
		ev.sends++
		if ev.sends > 1 {
			s.retried++
		}
		s.requests++
		s.mu.Unlock()

		resp, err := testkit.Send(client, http.MethodPost, ep.url, ev.header, ev.body)
		if err != nil {
			// No answer: that Caddy must have been killed. Follow to the next one.
			select {
			case <-ep.killed:
			case <-s.quit:
				return
			case <-time.After(crashWaitKilled):
				s.problem("sender %d: event %s: no answer from Caddy #%d, which was not killed: %v", sender, ev.id, ep.n, err)
				return
			}
			select {
			case <-ep.next:
			case <-s.quit:
				return
			case <-time.After(crashWaitNext):
				s.problem("sender %d: no Caddy after #%d within %v", sender, ep.n, crashWaitNext)
				return
			}
			s.mu.Lock()
			s.unanswered++
			giveUp := ev.forged || (!ev.answered && rnd.IntN(crashAbandonEvery) == 0)
			if giveUp {
				ev.abandoned = !ev.answered && !ev.forged
			}
			s.mu.Unlock()
			if !giveUp {
				retry = append(retry, ev)
			}
			continue
		}
		s.answer(sender, ep, ev, resp)
	}
}

// answer checks and records the answer to ev from the Caddy of ep.
func (s *crashState) answer(sender int, ep *crashEpoch, ev *crashEvent, resp testkit.Response) {
	outcome := resp.Header.Get("Webhook-Guard-Outcome")
	s.mu.Lock()
	defer s.mu.Unlock()
	ev.answered = true
	ev.abandoned = false
	if ev.forged {
		if resp.Status != http.StatusUnauthorized {
			s.problems = append(s.problems, fmt.Sprintf("sender %d: forged event %s answered %d %q, want 401", sender, ev.id, resp.Status, outcome))
		} else {
			s.forgedRefused++
		}
		return
	}
	if resp.Status != http.StatusOK || (outcome != "spooled" && outcome != "duplicate") {
		s.problems = append(s.problems, fmt.Sprintf("sender %d: event %s (send %d) answered %d %q by Caddy #%d, want 200 spooled or duplicate (body %q)",
			sender, ev.id, ev.sends, resp.Status, outcome, ep.n, resp.Body))
		return
	}
	if outcome == "duplicate" && ev.sends == 1 {
		s.problems = append(s.problems, fmt.Sprintf("sender %d: new event %s answered duplicate", sender, ev.id))
	}
	if ev.acked {
		s.problems = append(s.problems, fmt.Sprintf("sender %d: event %s sent again after its 200", sender, ev.id))
	}
	ev.acked, ev.outcome = true, outcome
	if outcome == "spooled" {
		s.spooled++
	} else {
		s.duplicates++
	}
	select {
	case s.acks <- ep:
	default:
	}
}

// newEvent makes a unique event of about 1 KiB, signed with secret (or, forged, with
// forgedSecret), and registers it.
func (s *crashState) newEvent(t *testing.T, sender int, forged bool, secret, forgedSecret string) *crashEvent {
	prefix := fmt.Sprintf("evt_crash%d_", sender)
	key := secret
	if forged {
		prefix, key = fmt.Sprintf("evt_forged%d_", sender), forgedSecret
	}
	id := newID(t, prefix)
	body := eventBody(id, "payment.succeeded", `"amount":4200`, `"pad":"`+strings.Repeat("x", 900)+`"`)
	ev := &crashEvent{id: id, body: body, header: signIvy(key, body), forged: forged}
	s.mu.Lock()
	s.events[id] = ev
	s.byBody[string(body)] = ev
	s.mu.Unlock()
	return ev
}

// waitAck waits for a 200 from the Caddy of ep.
func (s *crashState) waitAck(t *testing.T, ep *crashEpoch) {
	t.Helper()
	deadline := time.After(crashWaitAck)
	for {
		select {
		case got := <-s.acks:
			if got == ep {
				return
			}
		case <-deadline:
			t.Fatalf("no 200 from Caddy #%d within %v", ep.n, crashWaitAck)
		}
	}
}

// ackedEvents returns the events answered 200, once the senders have stopped.
func (s *crashState) ackedEvents() map[string]*crashEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*crashEvent{}
	for id, ev := range s.events {
		if ev.acked {
			out[id] = ev
		}
	}
	return out
}

// waitDrained waits (bounded) until the upstream has accepted (2xx) every acknowledged event
// and the admin API of g lists nothing in the spool, pending or dead. An empty spool with an
// acknowledged event missing upstream fails at once: nothing is left to deliver it.
func (s *crashState) waitDrained(t *testing.T, g *guard, up *testkit.Upstream, acked map[string]*crashEvent) {
	t.Helper()
	deadline := time.After(crashWaitDrain)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	seenCount := -1
	var missing []string
	for {
		// The list first: a record leaves it only after the upstream recorded its delivery,
		// so the upstream's requests read after an empty list hold every delivery.
		listed := crashSpoolList(t, g, "")
		if n := up.Count(); n != seenCount {
			seenCount = n
			delivered := map[string]bool{}
			for _, r := range up.Requests() {
				if r.Status/100 == 2 && r.BodyErr == "" {
					delivered[r.Header.Get("Webhook-Guard-Event-Id")] = true
				}
			}
			missing = missing[:0]
			for id := range acked {
				if !delivered[id] {
					missing = append(missing, id)
				}
			}
			sort.Strings(missing)
		}
		if len(listed) == 0 {
			if len(missing) > 0 {
				t.Fatalf("%d of %d events answered 200 never reached the upstream and the spool is empty: lost, e.g. %v",
					len(missing), len(acked), missing[:min(len(missing), 5)])
			}
			return
		}
		dead := 0
		for _, l := range listed {
			if l.State == "dead" {
				dead++
			}
		}
		if dead == len(listed) {
			t.Fatalf("the spool holds %d dead events, e.g. %+v", dead, listed[0])
		}
		select {
		case <-deadline:
			t.Fatalf("after %v, %d of %d events answered 200 have not reached the upstream and the spool still lists %d, e.g. %+v",
				crashWaitDrain, len(missing), len(acked), len(listed), listed[0])
		case <-tick.C:
		}
	}
}

// crashListed is an entry of the admin API's spool list.
type crashListed struct {
	ID        uint64 `json:"id"`
	EventID   string `json:"event_id"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error"`
}

// crashSpoolList is GET /webhook_guard/spool[?state=] on g's admin endpoint,
// every page.
func crashSpoolList(t *testing.T, g *guard, state string) []crashListed {
	t.Helper()
	var out []crashListed
	after := ""
	for {
		path := "/webhook_guard/spool?limit=1000" + after
		if state != "" {
			path += "&state=" + state
		}
		status, body := g.AdminGet(t, path)
		if status != http.StatusOK {
			t.Fatalf("GET %s: status %d: %s", path, status, body)
		}
		var page struct {
			Events []crashListed `json:"events"`
			Next   string        `json:"next"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
		out = append(out, page.Events...)
		if page.Next == "" {
			return out
		}
		after = "&after=" + page.Next
	}
}

// checkDeliveries checks every request the upstream received against the events the test
// signed, and logs the figures.
// killSeqs[i] is the upstream's count of requests once Caddy #i was dead.
func (s *crashState) checkDeliveries(t *testing.T, up *testkit.Upstream, acked map[string]*crashEvent, killSeqs []int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	reqs := up.Requests()
	delivered := map[string]int{} // event id → 2xx deliveries
	attempts := map[string]int{}  // event id → requests
	unsigned, refused := 0, 0
	cut := 0                     // requests whose body a kill cut short
	conns := map[[3]string]int{} // (event id, connection, epoch) → 2xx deliveries
	for _, r := range reqs {
		if r.BodyErr != "" {
			// Caddy died while sending it: no delivery (nobody got the answer). What did
			// arrive must be the start of the event's body.
			cut++
			ev := s.events[r.Header.Get("Webhook-Guard-Event-Id")]
			if ev == nil || ev.forged || !bytes.HasPrefix(ev.body, r.Body) {
				t.Errorf("request %d, cut short (%s), is not the start of an event the test signed (Webhook-Guard-Event-Id %q)",
					r.Seq, r.BodyErr, r.Header.Get("Webhook-Guard-Event-Id"))
			}
			continue
		}
		ev := s.byBody[string(r.Body)]
		switch {
		case ev == nil:
			unsigned++
			if unsigned <= 5 {
				t.Errorf("the upstream received a body the test never sent (request %d, %d bytes)", r.Seq, len(r.Body))
			}
			continue
		case ev.forged:
			t.Errorf("the upstream received forged event %s", ev.id)
			continue
		}
		attempts[ev.id]++
		if r.Status/100 == 2 {
			delivered[ev.id]++
			conns[[3]string{ev.id, r.RemoteAddr, fmt.Sprint(crashEpochOf(killSeqs, r.Seq))}]++
		} else {
			refused++
		}
		if got := r.Header.Get("Webhook-Guard-Event-Id"); got != ev.id {
			t.Errorf("event %s delivered with Webhook-Guard-Event-Id %q", ev.id, got)
		}
		if r.Method != http.MethodPost || r.Path != "/ivy" || r.RawQuery != "" {
			t.Errorf("event %s delivered as %s %s?%s, want POST /ivy", ev.id, r.Method, r.Path, r.RawQuery)
		}
		if r.ContentLength != int64(len(ev.body)) || r.BodyErr != "" {
			t.Errorf("event %s delivered with Content-Length %d (body error %q), want %d", ev.id, r.ContentLength, r.BodyErr, len(ev.body))
		}
		if sig := r.Header.Get("X-Ivy-Signature"); sig != ev.header.Get("X-Ivy-Signature") {
			t.Errorf("event %s delivered with X-Ivy-Signature %q, want the one it was sent with", ev.id, sig)
		}
		if r.Header.Get("Webhook-Guard-Attempt") == "" {
			t.Errorf("event %s delivered without Webhook-Guard-Attempt", ev.id)
		}
	}
	// Bodies are unique per event and the test signed each with the route's secret: check the
	// signature independently of the module too.
	for id, n := range attempts {
		ev := s.events[id]
		mac, err := hex.DecodeString(ev.header.Get("X-Ivy-Signature"))
		if err != nil || !hmac.Equal(mac, hmacSHA256([]byte(s.secret), ev.body)) {
			t.Errorf("event %s (%d requests) reached the upstream with a signature the route's secret does not verify", id, n)
		}
	}
	lost := []string{}
	for id := range acked {
		if delivered[id] == 0 {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Errorf("%d events answered 200 never reached the upstream, e.g. %v", len(lost), lost[:min(len(lost), 5)])
	}
	// A Caddy delivers an event again only after it restarted: two deliveries of one event over
	// one connection, between the same two kills, would be one process delivering it twice.
	for k, n := range conns {
		if n > 1 {
			t.Errorf("event %s delivered %d times over one connection (%s) by Caddy #%s", k[0], n, k[1], k[2])
		}
	}
	twice, extra, most := 0, 0, 0
	for _, n := range delivered {
		if n > 1 {
			twice++
			extra += n - 1
		}
		most = max(most, n)
	}
	sent, abandoned, abandonedDelivered, neverAnswered := 0, 0, 0, 0
	for _, ev := range s.events {
		if ev.forged {
			continue
		}
		sent++
		if ev.abandoned {
			abandoned++
			if delivered[ev.id] > 0 {
				abandonedDelivered++
			}
		}
		if !ev.answered {
			neverAnswered++
		}
	}
	if unsigned > 0 {
		t.Errorf("%d requests reached the upstream with a body the test never signed", unsigned)
	}
	t.Logf("figures: %d kills; %d requests (%d sent again after no answer, %d unanswered); %d genuine events: "+
		"%d answered 200 (%d spooled, %d duplicate of an accepted one), %d given up unanswered (%d of them delivered anyway: stored before the kill); "+
		"%d forged refused 401; upstream: %d requests (%d cut short by a kill), %d refused with 503 and attempted again, %d events delivered (2xx), "+
		"%d delivered more than once (%d extra deliveries, at most %d of one event), each time with the same Webhook-Guard-Event-Id and body",
		crashKills, s.requests, s.retried, s.unanswered, sent, len(acked), s.spooled, s.duplicates, abandoned, abandonedDelivered,
		s.forgedRefused, len(reqs), cut, refused, len(delivered), twice, extra, most)
	if neverAnswered != abandoned {
		t.Errorf("%d events never answered, %d given up: every other one must have been answered", neverAnswered, abandoned)
	}
}

// crashEpochOf is the number of the Caddy that sent the upstream's request seq, as far as the counts
// taken after each kill tell (a request of a killed Caddy recorded after the count is put in the
// next one's).
func crashEpochOf(killSeqs []int, seq int) int {
	return sort.SearchInts(killSeqs, seq)
}

// crashWaitGroup waits for wg, at most d; false when d passed first.
func crashWaitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
