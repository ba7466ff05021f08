package dedupe

import (
	"context"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// DefaultMaxEvents bounds the memory store when max_events is not set.
const DefaultMaxEvents = 1_000_000

// settleTime is how long a committed key stays in the exact record after it
// was handed to ristretto, which applies sets asynchronously. A set that
// ristretto's buffer dropped is handed over again by the sweeper, so a key
// leaves the exact record only once ristretto has taken it (or, at capacity,
// rejected or evicted it, which is counted).
const settleTime = time.Second

// Pressure says how the memory store lost a delivered event before its
// window ended: the signs that it is at capacity.
type Pressure string

const (
	// Evicted: ristretto evicted a remembered event to make room.
	Evicted Pressure = "evicted"
	// Rejected: ristretto's admission policy refused a new event (cache full).
	Rejected Pressure = "rejected"
)

// MemoryConfig configures the in-memory store.
type MemoryConfig struct {
	// MaxEvents bounds the number of remembered events; default DefaultMaxEvents.
	MaxEvents int64
	// OnPressure, when set, is called for each event the store forgot before
	// its window ended. It must be cheap and safe for concurrent use.
	OnPressure func(Pressure)
}

// Memory is the in-memory replay store of one Caddy instance. An exact,
// sharded, mutex-guarded record of in-flight and just-committed keys stands
// in front of ristretto, which has no atomic insert-if-absent and applies
// sets asynchronously; ristretto keeps the delivered keys for their window.
type Memory struct {
	shards [shardCount]shard
	seed   maphash.Seed
	cache  *ristretto.Cache[string, struct{}]
	tokens atomic.Uint64
	report func(Pressure)
	now    func() time.Time

	evicted, rejected, dropped atomic.Int64 // dropped: sets handed over again

	// closing is set by Close: ristretto's Close evicts every item it holds,
	// which is the store going away, not capacity pressure.
	closing atomic.Bool

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

const shardCount = 64

type shard struct {
	mu sync.Mutex
	m  map[string]entry
}

// entry is the exact record of a key that ristretto may not show yet.
type entry struct {
	state   State     // InFlight or Delivered
	token   string    // holder of an InFlight claim
	expires time.Time // end of the lease (InFlight) or of the window (Delivered)
	settle  time.Time // Delivered: when to check ristretto took it
	unsaved bool      // Delivered: ristretto dropped the set; hand it over again
}

// NewMemory returns a memory store and starts its sweeper; Close stops it.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	return newMemory(cfg, time.Now)
}

// newMemory is NewMemory with a clock, which tests replace.
func newMemory(cfg MemoryConfig, clock func() time.Time) (*Memory, error) {
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	s := &Memory{
		seed:   maphash.MakeSeed(),
		report: cfg.OnPressure,
		now:    clock,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i].m = make(map[string]entry)
	}
	cache, err := ristretto.NewCache(&ristretto.Config[string, struct{}]{
		NumCounters:        cfg.MaxEvents * 10,
		MaxCost:            cfg.MaxEvents,
		BufferItems:        64,
		IgnoreInternalCost: true,
		OnEvict: func(it *ristretto.Item[struct{}]) {
			if s.closing.Load() {
				return
			}
			if it.Expiration.IsZero() || it.Expiration.After(time.Now()) {
				s.pressure(Evicted)
			}
		},
		OnReject: func(*ristretto.Item[struct{}]) {
			if !s.closing.Load() {
				s.pressure(Rejected)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	s.cache = cache
	go s.sweep()
	return s, nil
}

func (s *Memory) pressure(p Pressure) {
	switch p {
	case Evicted:
		s.evicted.Add(1)
	case Rejected:
		s.rejected.Add(1)
	}
	if s.report != nil {
		s.report(p)
	}
}

// MemoryStats counts what the store forgot before its window ended (Evicted,
// Rejected: capacity pressure) and the sets ristretto's full buffer dropped
// (Dropped), which the store hands over again, so they lose nothing.
type MemoryStats struct {
	Evicted, Rejected, Dropped int64
	// Pending is the number of keys in the exact record (in flight or
	// just committed).
	Pending int
}

// Stats returns the store's counters.
func (s *Memory) Stats() MemoryStats {
	st := MemoryStats{Evicted: s.evicted.Load(), Rejected: s.rejected.Load(), Dropped: s.dropped.Load()}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		st.Pending += len(sh.m)
		sh.mu.Unlock()
	}
	return st
}

func (s *Memory) shard(key string) *shard {
	return &s.shards[maphash.String(s.seed, key)%shardCount]
}

// Claim implements Store.
func (s *Memory) Claim(_ context.Context, key string, lease time.Duration) (Claim, error) {
	sh := s.shard(key)
	t := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[key]; ok && t.Before(e.expires) {
		return Claim{Key: key, State: e.state}, nil
	}
	if _, ok := s.cache.Get(key); ok {
		return Claim{Key: key, State: Delivered}, nil
	}
	token := strconv.FormatUint(s.tokens.Add(1), 36)
	sh.m[key] = entry{state: InFlight, token: token, expires: t.Add(lease)}
	return Claim{Key: key, State: Fresh, Token: token}, nil
}

// Commit implements Store. The key stays in the exact record until ristretto
// has applied the set (settleTime, and the sweeper waits for ristretto's
// buffers), so it is visible to the next Claim at once. A set that
// ristretto's buffer drops under a burst is kept in the exact record and
// handed over again by the sweeper: a burst is not capacity, and must not
// forget a delivered event.
func (s *Memory) Commit(_ context.Context, c Claim, window time.Duration) error {
	sh := s.shard(c.Key)
	t := s.now()
	e := entry{state: Delivered, expires: t.Add(window), settle: t.Add(settleTime)}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !s.cache.SetWithTTL(c.Key, struct{}{}, 1, window) {
		e.unsaved = true
		s.dropped.Add(1)
	}
	sh.m[c.Key] = e
	return nil
}

// Release implements Store: the key is freed only if c still holds it.
func (s *Memory) Release(_ context.Context, c Claim) error {
	sh := s.shard(c.Key)
	sh.mu.Lock()
	if e, ok := sh.m[c.Key]; ok && e.state == InFlight && e.token == c.Token {
		delete(sh.m, c.Key)
	}
	sh.mu.Unlock()
	return nil
}

// sweep periodically hands settled keys over to ristretto and forgets
// expired leases.
func (s *Memory) sweep() {
	defer close(s.done)
	tick := time.NewTicker(settleTime)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.settle()
		}
	}
}

// settle removes from the exact record the leases that expired and the
// committed keys ristretto has had time to apply, and hands the sets that
// ristretto's buffer dropped over again (they stay until it takes them). A
// committed key that ristretto rejected or evicted (at capacity) has been
// counted as pressure already; it is forgotten too, so the exact record
// stays small.
func (s *Memory) settle() {
	s.cache.Wait()
	t := s.now()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			switch {
			case !t.Before(e.expires):
				delete(sh.m, k)
			case e.state != Delivered || t.Before(e.settle):
			case e.unsaved:
				if s.cache.SetWithTTL(k, struct{}{}, 1, e.expires.Sub(t)) {
					e.unsaved = false
					e.settle = t.Add(settleTime)
					sh.m[k] = e
				}
			default:
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}

// Close stops the sweeper and frees the cache.
func (s *Memory) Close() error {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.closing.Store(true)
		s.cache.Close()
	})
	return nil
}

var _ Store = (*Memory)(nil)
