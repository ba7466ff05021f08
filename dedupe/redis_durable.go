package dedupe

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Persistence is what a Redis server says of how it keeps writes: whether
// it has WAITAOF, and its persistence and eviction settings (CONFIG GET).
// The store reads it at every new connection (a restarted server, or a
// new primary after a failover, may differ).
type Persistence struct {
	// WaitAOF: the server has WAITAOF (Redis 7.2 or later, Valkey), which
	// waits until a connection's writes are fsynced to the append-only
	// file (and to replicas').
	WaitAOF bool
	// ConfigRefused: CONFIG GET is refused (a managed Redis, or renamed
	// away); the settings below are then unknown ("").
	ConfigRefused bool
	// AppendOnly ("yes" or "no"), AppendFsync ("always", "everysec" or
	// "no") and MaxmemoryPolicy ("noeviction", "allkeys-lru", ...) are
	// the server's settings.
	AppendOnly, AppendFsync, MaxmemoryPolicy string
}

// waitAOFer has go-redis' WaitAOF (*redis.Client, *redis.Conn,
// *redis.Pipeline: it is not in their interfaces), which gives the command
// a read timeout as long as its wait.
type waitAOFer interface {
	WaitAOF(ctx context.Context, numLocal, numReplicas int, timeout time.Duration) *redis.IntSliceCmd
}

// probePersistence asks c what Persistence says; false when c failed
// (not an answer of the server's: the connection broke) or is a sentinel's
// (go-redis' failover client connects to the sentinels with the same
// OnConnect).
func probePersistence(ctx context.Context, c redis.Cmdable) (Persistence, bool) {
	var p Persistence
	answered := func(err error) bool {
		var re redis.Error
		return err == nil || errors.As(err, &re)
	}
	if pr, ok := c.(interface {
		Process(ctx context.Context, cmd redis.Cmder) error
	}); ok {
		cmd := redis.NewSliceCmd(ctx, "role")
		_ = pr.Process(ctx, cmd)
		role, err := cmd.Result()
		if !answered(err) || err == nil && len(role) > 0 && role[0] == "sentinel" {
			return p, false
		}
	}
	// WAITAOF 0 0 0 waits for nothing: it only says the command exists.
	if w, ok := c.(waitAOFer); ok {
		err := w.WaitAOF(ctx, 0, 0, 0).Err()
		if !answered(err) {
			return p, false
		}
		p.WaitAOF = err == nil
	}
	for _, name := range []string{"appendonly", "appendfsync", "maxmemory-policy"} {
		m, err := c.ConfigGet(ctx, name).Result()
		if !answered(err) {
			return p, false
		}
		if err != nil {
			p.ConfigRefused = true
			p.AppendOnly, p.AppendFsync, p.MaxmemoryPolicy = "", "", ""
			return p, true
		}
		switch name {
		case "appendonly":
			p.AppendOnly = m[name]
		case "appendfsync":
			p.AppendFsync = m[name]
		default:
			p.MaxmemoryPolicy = m[name]
		}
	}
	return p, true
}

// learn reads the server's persistence on a new connection (OnConnect): it
// decides whether writes wait for WAITAOF, reports an evicting policy once,
// and re-checks the spool's requirements.
func (s *Redis) learn(ctx context.Context, cn *redis.Conn) {
	p, ok := probePersistence(ctx, cn)
	if !ok {
		return
	}
	s.persistence.Store(&p)
	if p.MaxmemoryPolicy != "" && p.MaxmemoryPolicy != "noeviction" && s.onEvicting != nil && !s.evictReported.Swap(true) {
		s.onEvicting(p.MaxmemoryPolicy)
	}
	s.spool.recheck(p)
}

// Persistence connects if needed and returns what the server says of its
// persistence (read by the connection, see Persistence). In cluster mode it
// is the node holding the prefix's slot.
func (s *Redis) Persistence(ctx context.Context) (Persistence, error) {
	ctx, cancel := context.WithTimeout(ctx, s.pingLimit)
	defer cancel()
	c, err := s.node(ctx)
	if err != nil {
		return Persistence{}, s.unavailable("persistence check", err)
	}
	p, ok := probePersistence(ctx, c)
	if err := c.Ping(ctx).Err(); err != nil || !ok {
		return Persistence{}, s.unavailable("persistence check", cmp.Or(err, errors.New("the connection failed")))
	}
	s.persistence.Store(&p)
	s.spool.recheck(p)
	return p, nil
}

// ReplayWarning says, for a store that only remembers ids (no spool), what
// the server's settings would lose at a crash or restart; "" when they lose
// nothing (or are unknown). An evicting policy is reported apart
// (OnEvictingPolicy).
func (p Persistence) ReplayWarning() string {
	switch {
	case p.ConfigRefused:
		return ""
	case p.AppendOnly != "yes":
		return "appendonly is no: Redis keeps the remembered ids without an append-only file, so a restart or crash forgets those since its last snapshot, and replays of them would be forwarded; set appendonly yes"
	case p.AppendFsync == "no":
		return "appendfsync is no: Redis leaves the append-only file to the kernel, so a crash of the machine forgets the ids remembered in its last seconds; set appendfsync everysec (with WAITAOF: Redis 7.2 or later, Valkey) or always"
	case p.AppendFsync == "everysec" && !p.WaitAOF:
		return "appendfsync is everysec on a Redis without WAITAOF (before 7.2): a crash forgets up to a second of remembered ids; set appendfsync always, or use Redis 7.2 or later or Valkey"
	}
	return ""
}

// ErrConfigRefused is the error of SpoolProblem when the server refuses
// CONFIG GET, so that its persistence cannot be checked.
var ErrConfigRefused = errors.New("redis refuses CONFIG GET: its persistence (appendonly, appendfsync) and maxmemory-policy cannot be checked; if your Redis service persists every write, say so with assume_persistent in the store block")

// SpoolProblem says why the server would lose spooled events that were
// acknowledged (nil when it would not): the spool acknowledges an event only
// once Redis has it on disk, which takes appendonly yes and either WAITAOF
// (Redis 7.2 or later, Valkey; appendfsync everysec or always) or, without
// it, appendfsync always; and a queue must not be evicted (noeviction).
// replicas is the store's WAITAOF replica count, which needs WAITAOF.
func (p Persistence) SpoolProblem(replicas int) error {
	if p.ConfigRefused {
		if replicas > 0 && !p.WaitAOF {
			return fmt.Errorf("replicas %d needs WAITAOF (Redis 7.2 or later, Valkey), which this Redis does not have", replicas)
		}
		return ErrConfigRefused
	}
	switch {
	case p.MaxmemoryPolicy != "noeviction":
		return fmt.Errorf("maxmemory-policy is %s: Redis may evict keys under memory pressure, and an evicted spooled event is lost without a word; set maxmemory-policy noeviction (a full Redis then refuses new events with 503)", p.MaxmemoryPolicy)
	case p.AppendOnly != "yes":
		return errors.New("appendonly is no: a Redis restart would lose every spooled event not yet delivered; set appendonly yes (with appendfsync always, or everysec on Redis 7.2 or later / Valkey)")
	case replicas > 0 && !p.WaitAOF:
		return fmt.Errorf("replicas %d needs WAITAOF (Redis 7.2 or later, Valkey), which this Redis does not have", replicas)
	case p.WaitAOF && p.AppendFsync == "no":
		return errors.New("appendfsync is no: Redis never fsyncs its append-only file, and WAITAOF confirms writes that are not on disk; set appendfsync everysec or always")
	case !p.WaitAOF && p.AppendFsync != "always":
		return fmt.Errorf("appendfsync is %s on a Redis without WAITAOF (before 7.2): an acknowledged event could be lost in the last second before a crash; set appendfsync always, or use Redis 7.2 or later or Valkey (WAITAOF)", p.AppendFsync)
	}
	return nil
}

// node is where the commands of one connection go: the client, or in
// cluster mode the primary holding the prefix's slot.
func (s *Redis) node(ctx context.Context) (redis.UniversalClient, error) {
	if s.cluster == nil {
		return s.client, nil
	}
	return s.cluster.MasterForKey(ctx, s.tag)
}

// known returns what the server says of its persistence, connecting first
// if no connection has been made yet.
func (s *Redis) known(ctx context.Context) *Persistence {
	if p := s.persistence.Load(); p != nil {
		return p
	}
	_ = s.client.Ping(ctx).Err() // a new connection learns (OnConnect)
	return s.persistence.Load()
}

// waitFor is how long a write may wait for WAITAOF.
func (s *Redis) waitFor() time.Duration { return s.waitTimeout }

// notConfirmedError says WAITAOF did not confirm a write in time.
type notConfirmedError struct {
	local, replicas       int
	gotLocal, gotReplicas int64
	timeout               time.Duration
}

func (e *notConfirmedError) Error() string {
	return fmt.Sprintf("WAITAOF %d %d confirmed the write on %d local disk(s) and %d replica(s) within %v, fewer than asked: it may be lost if Redis fails now",
		e.local, e.replicas, e.gotLocal, e.gotReplicas, e.timeout)
}

// durably runs script and then, where the server has it, WAITAOF on the
// same connection (a pipeline): WAITAOF waits for the connection's own
// writes, and inside a script it would return at once. It returns the
// script's reply; when WAITAOF does not confirm in time the error is a
// *notConfirmedError (the script's writes stand). A write the script makes
// is what WAITAOF waits for: a script retried after a lost reply must write
// again (see redisIngestScript) so that the wait covers the first run.
func (s *Redis) durably(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	p := s.known(ctx)
	local := 1
	if p != nil && p.AppendOnly == "no" {
		local = 0 // WAITAOF 1 fails without an append-only file
	}
	wait := p != nil && p.WaitAOF && (local > 0 || s.replicas > 0)
	c, err := s.node(ctx)
	if err != nil {
		return nil, err
	}
	run := func(eval bool) (*redis.Cmd, *redis.IntSliceCmd, error) {
		pipe := c.Pipeline()
		var cmd *redis.Cmd
		if eval {
			cmd = script.Eval(ctx, pipe, keys, args...)
		} else {
			cmd = script.EvalSha(ctx, pipe, keys, args...)
		}
		var w *redis.IntSliceCmd
		if wa, ok := pipe.(waitAOFer); ok && wait {
			w = wa.WaitAOF(ctx, local, s.replicas, s.waitTimeout)
		}
		_, err := pipe.Exec(ctx)
		return cmd, w, err
	}
	cmd, w, err := run(false)
	if err != nil && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		cmd, w, err = run(true)
	}
	if cmd.Err() != nil {
		return nil, cmd.Err()
	}
	if err != nil && w == nil {
		return nil, err
	}
	if w != nil {
		got, werr := w.Result()
		if werr != nil {
			return nil, fmt.Errorf("WAITAOF: %w", werr)
		}
		if len(got) != 2 || got[0] < int64(local) || got[1] < int64(s.replicas) {
			nc := &notConfirmedError{local: local, replicas: s.replicas, timeout: s.waitTimeout}
			if len(got) == 2 {
				nc.gotLocal, nc.gotReplicas = got[0], got[1]
			}
			return cmd.Val(), nc
		}
	}
	return cmd.Val(), nil
}
