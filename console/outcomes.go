package console

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is what a guard handler decided about one inbound webhook request,
// as the console shows it. It never holds a body, a header or a secret:
// EventID and EventType are set only once the event's signature or key was
// verified, and Reason is the redacted reason of the guard's log line.
type Outcome struct {
	// At is when the guard answered.
	At time.Time
	// Scope and Provider are the handler's replay scope and scheme.
	Scope    string
	Provider string
	// Outcome is the guard's outcome: forwarded, spooled, duplicate,
	// invalid_signature, ip_denied, ... (the `outcome` of its log line).
	Outcome string
	// Reason says why, as the guard's log line does.
	Reason string
	// Status is the status the sender was answered.
	Status int
	// EventID and EventType are the provider's, once verified.
	EventID   string
	EventType string
	// ClientIP is the sender's address, as Caddy determined it.
	ClientIP string
}

// DefaultRecent is how many recent outcomes a console keeps by default.
const DefaultRecent = 1000

// MaxRecent bounds the recent option.
const MaxRecent = 100_000

// chartMinutes is how many minutes of outcome counts are kept for the chart.
const chartMinutes = 60

// recorder keeps the recent outcomes of every guard handler of the process:
// a ring of the last outcomes, and the counts per outcome of each of the last
// chartMinutes minutes. It exists while a console is loaded (Caddy's reload
// provisions the new config's console before it cleans up the old one, so
// the outcomes survive a reload).
type recorder struct {
	mu sync.Mutex
	// ring holds the outcomes; next is where the next one goes; full says
	// the ring has wrapped.
	ring []Outcome
	next int
	full bool
	// minutes holds the counts per outcome of a minute (unix time / 60),
	// at index minute % chartMinutes.
	minutes [chartMinutes]minuteCounts
}

// minuteCounts counts the outcomes of one minute.
type minuteCounts struct {
	minute int64
	counts map[string]int
}

// active is the recorder while a console is loaded, nil otherwise.
var active atomic.Pointer[recorder]

// registry counts the loaded consoles and their recent sizes.
var registry struct {
	mu    sync.Mutex
	sizes []int // one per loaded console
}

// Recording says whether a console keeps outcomes: the guard's hook skips
// its work when none does.
func Recording() bool { return active.Load() != nil }

// Record keeps o, when a console is loaded.
func Record(o Outcome) {
	if rec := active.Load(); rec != nil {
		rec.add(o)
	}
}

// acquire registers a console keeping size outcomes and returns its release.
// The ring holds as many outcomes as the largest loaded console asks.
func acquire(size int) (release func()) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	registry.sizes = append(registry.sizes, size)
	resize()
	return sync.OnceFunc(func() {
		registry.mu.Lock()
		defer registry.mu.Unlock()
		if i := slices.Index(registry.sizes, size); i >= 0 {
			registry.sizes = slices.Delete(registry.sizes, i, i+1)
		}
		resize()
	})
}

// resize makes the recorder fit the loaded consoles; registry.mu is held.
func resize() {
	if len(registry.sizes) == 0 {
		active.Store(nil)
		return
	}
	size := slices.Max(registry.sizes)
	rec := active.Load()
	if rec == nil {
		rec = &recorder{}
		rec.ring = make([]Outcome, size)
		active.Store(rec)
		return
	}
	rec.resize(size)
}

// newRecorder returns a recorder of size outcomes (tests use their own).
func newRecorder(size int) *recorder { return &recorder{ring: make([]Outcome, size)} }

// resize keeps the newest outcomes in a ring of size.
func (r *recorder) resize(size int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if size == len(r.ring) {
		return
	}
	kept := r.newestLocked(size, nil)
	slices.Reverse(kept) // oldest first
	r.ring = make([]Outcome, size)
	r.next = copy(r.ring, kept) % size
	r.full = len(kept) == size
}

// add keeps o in the ring and counts it in its minute.
func (r *recorder) add(o Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ring[r.next] = o
	r.next++
	if r.next == len(r.ring) {
		r.next, r.full = 0, true
	}
	minute := o.At.Unix() / 60
	m := &r.minutes[minuteIndex(minute)]
	if m.minute != minute || m.counts == nil {
		m.minute, m.counts = minute, map[string]int{}
	}
	m.counts[o.Outcome]++
}

// minuteIndex is the index of a minute in recorder.minutes.
func minuteIndex(minute int64) int {
	i := int(minute % chartMinutes)
	if i < 0 {
		i += chartMinutes
	}
	return i
}

// newest returns up to n outcomes that keep selects (nil: all), newest
// first; n <= 0: all of them.
func (r *recorder) newest(n int, keep func(*Outcome) bool) []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.newestLocked(n, keep)
}

// newestLocked is newest with r.mu held.
func (r *recorder) newestLocked(n int, keep func(*Outcome) bool) []Outcome {
	size := r.next
	if r.full {
		size = len(r.ring)
	}
	if n <= 0 {
		n = size
	}
	var out []Outcome
	for i := 1; i <= size && len(out) < n; i++ {
		o := &r.ring[(r.next-i+len(r.ring))%len(r.ring)]
		if keep == nil || keep(o) {
			out = append(out, *o)
		}
	}
	return out
}

// perMinute returns the counts per outcome of the chartMinutes minutes that
// end with the minute of now, oldest first.
func (r *recorder) perMinute(now time.Time) [chartMinutes]map[string]int {
	var out [chartMinutes]map[string]int
	last := now.Unix() / 60
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range chartMinutes {
		minute := last - int64(chartMinutes-1-i)
		m := r.minutes[minuteIndex(minute)]
		if m.minute != minute || len(m.counts) == 0 {
			continue
		}
		out[i] = make(map[string]int, len(m.counts))
		for k, v := range m.counts {
			out[i][k] = v
		}
	}
	return out
}
