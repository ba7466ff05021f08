package dedupe

import (
	"context"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxEvents bounds the memory store when MaxEvents is not set.
const DefaultMaxEvents = 1_000_000

// DefaultMemorySweep is how often the memory store forgets expired ids when
// MemoryConfig.SweepEvery is not set.
const DefaultMemorySweep = time.Minute

// MemoryConfig configures the in-memory store.
type MemoryConfig struct {
	// MaxEvents bounds the number of ids remembered or in flight; default
	// DefaultMaxEvents. A claim of a new id beyond it fails with ErrFull.
	MaxEvents int64
	// SweepEvery is how often expired ids are forgotten in the
	// background; default DefaultMemorySweep. A claim refused at capacity
	// forgets the expired ids first in any case, so the sweep only returns
	// memory early.
	SweepEvery time.Duration
}

// Memory is an exact in-memory replay store: a sharded map of every id in
// flight or delivered, each kept until its lease or window ends. It is lost
// when the process ends, so it suits tests and throwaway setups; the file
// store keeps the same record across restarts.
type Memory struct {
	shards   [shardCount]memoryShard
	seed     maphash.Seed
	tokens   atomic.Uint64
	capacity int64
	used     atomic.Int64 // entries in all shards, expired ones included
	// soonest is the earliest expiry (unix nanoseconds) of any entry, or
	// later: a claim at capacity sweeps only when something may have
	// expired.
	soonest atomic.Int64
	// sweepMu makes the sweeps take turns: a claim at capacity that
	// sweeps while another sweep runs waits for it to have counted what
	// it freed, instead of finding nothing left to sweep and the count not
	// yet lowered (and refusing an id there is room for).
	sweepMu sync.Mutex
	now     func() time.Time

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

const shardCount = 64

type memoryShard struct {
	mu sync.Mutex
	m  map[string]memoryEntry
}

// memoryEntry is the record of one id.
type memoryEntry struct {
	state   State     // InFlight or Delivered
	token   string    // holder of an InFlight claim
	expires time.Time // end of the lease (InFlight) or of the window (Delivered)
}

// NewMemory returns a memory store and starts its sweeper; Close stops it.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	return newMemory(cfg, time.Now)
}

// newMemory is NewMemory with a clock, which tests replace.
func newMemory(cfg MemoryConfig, clock func() time.Time) (*Memory, error) {
	if cfg.MaxEvents < 0 {
		return nil, fmt.Errorf("dedupe: memory max_events must be positive, got %d", cfg.MaxEvents)
	}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = DefaultMemorySweep
	}
	s := &Memory{
		seed:     maphash.MakeSeed(),
		capacity: cfg.MaxEvents,
		now:      clock,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.soonest.Store(maxNanos)
	for i := range s.shards {
		s.shards[i].m = make(map[string]memoryEntry)
	}
	go s.sweepEvery(cfg.SweepEvery)
	return s, nil
}

func (s *Memory) shard(key string) *memoryShard {
	return &s.shards[maphash.String(s.seed, key)%shardCount]
}

// Claim implements Store.
func (s *Memory) Claim(ctx context.Context, key string, lease time.Duration) (Claim, error) {
	c, _, err := s.ClaimWindow(ctx, key, lease)
	return c, err
}

// ClaimWindow implements WindowClaimer. At capacity it sweeps the expired
// ids and tries again: whoever's sweep freed room, a claim goes through
// while the store holds fewer than max_events ids.
func (s *Memory) ClaimWindow(_ context.Context, key string, lease time.Duration) (Claim, time.Time, error) {
	if lease <= 0 {
		return Claim{Key: key, State: InFlight}, time.Time{}, fmt.Errorf("dedupe: lease must be positive, got %v", lease)
	}
	c, until, full := s.claim(key, lease)
	if full {
		s.sweep()
		c, until, full = s.claim(key, lease)
	}
	if full {
		return c, time.Time{}, fmt.Errorf("%w: %d ids remembered or in flight, max_events %d", ErrFull, s.used.Load(), s.capacity)
	}
	return c, until, nil
}

// claim is one attempt of Claim; full says the store had no room, until is
// the end of the window of a Delivered claim.
func (s *Memory) claim(key string, lease time.Duration) (c Claim, until time.Time, full bool) {
	sh := s.shard(key)
	t := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[key]; ok {
		if t.Before(e.expires) {
			if e.state == Delivered {
				until = e.expires
			}
			return Claim{Key: key, State: e.state}, until, false
		}
		delete(sh.m, key)
		s.used.Add(-1)
	}
	if !Reserve(&s.used, s.capacity) {
		return Claim{Key: key, State: InFlight}, time.Time{}, true
	}
	token := strconv.FormatUint(s.tokens.Add(1), 36)
	e := memoryEntry{state: InFlight, token: token, expires: t.Add(lease)}
	sh.m[key] = e
	lowerTo(&s.soonest, e.expires.UnixNano())
	return Claim{Key: key, State: Fresh, Token: token}, time.Time{}, false
}

// Commit implements Store. The event is recorded delivered whether or not
// the lease of c ended meanwhile: the upstream accepted it.
func (s *Memory) Commit(_ context.Context, c Claim, window time.Duration) error {
	if c.State != Fresh {
		return fmt.Errorf("dedupe: commit of a %s claim; only a fresh claim can be committed", c.State)
	}
	if window <= 0 {
		return fmt.Errorf("dedupe: window must be positive, got %v", window)
	}
	sh := s.shard(c.Key)
	e := memoryEntry{state: Delivered, expires: s.now().Add(window)}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[c.Key]; !ok {
		// The lease ended and was swept: the id takes a place again, even
		// beyond capacity, since forgetting it would let a replay through.
		s.used.Add(1)
	}
	sh.m[c.Key] = e
	lowerTo(&s.soonest, e.expires.UnixNano())
	return nil
}

// Release implements Store: the key is freed only if c still holds it.
func (s *Memory) Release(_ context.Context, c Claim) error {
	if c.State != Fresh {
		return nil
	}
	sh := s.shard(c.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[c.Key]; ok && e.state == InFlight && e.token == c.Token {
		delete(sh.m, c.Key)
		s.used.Add(-1)
	}
	return nil
}

// Renew implements Store.
func (s *Memory) Renew(_ context.Context, c Claim, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("dedupe: lease must be positive, got %v", lease)
	}
	sh := s.shard(c.Key)
	t := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[c.Key]
	if !ok || c.State != Fresh || e.state != InFlight || e.token != c.Token || !t.Before(e.expires) {
		return fmt.Errorf("dedupe: renew %q: %w", c.Key, ErrNotHeld)
	}
	e.expires = t.Add(lease)
	sh.m[c.Key] = e
	return nil
}

// Usage implements Usage: the ids remembered or in flight (expired ones
// not yet swept included) and MaxEvents.
func (s *Memory) Usage() (remembered, capacity int64) {
	return s.used.Load(), s.capacity
}

// sweepEvery forgets expired ids every period until Close.
func (s *Memory) sweepEvery(period time.Duration) {
	defer close(s.done)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.sweep()
		}
	}
}

// sweep forgets every expired id and returns how many it forgot. It scans
// only when some id may have expired since the last scan.
func (s *Memory) sweep() int {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	t := s.now()
	now := t.UnixNano()
	if now < s.soonest.Load() {
		return 0
	}
	// Claims made during the scan lower soonest again as they go.
	s.soonest.Store(maxNanos)
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if !t.Before(e.expires) {
				delete(sh.m, k)
				n++
			} else {
				lowerTo(&s.soonest, e.expires.UnixNano())
			}
		}
		sh.mu.Unlock()
	}
	s.used.Add(-int64(n))
	return n
}

// Close stops the sweeper. The store must not be used afterwards.
func (s *Memory) Close() error {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
	})
	return nil
}

// maxNanos is the "no expiry known" value of an expiry in unix nanoseconds.
const maxNanos = int64(^uint64(0) >> 1)

// Reserve takes one place of capacity (0: no limit) in used, if there is
// one left: the capacity check of the stores that count their ids.
func Reserve(used *atomic.Int64, capacity int64) bool {
	for {
		n := used.Load()
		if capacity > 0 && n >= capacity {
			return false
		}
		if used.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// lowerTo sets v to x if x is lower.
func lowerTo(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if x >= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}

var (
	_ Store         = (*Memory)(nil)
	_ WindowClaimer = (*Memory)(nil)
	_ Usage         = (*Memory)(nil)
)
