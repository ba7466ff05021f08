package dedupe

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

// The spool on Redis: events acknowledged once Redis has them on disk, and
// delivered by whichever instance sharing the prefix takes them. It
// implements spool.Store beside the replay store (dedupe.Store), so that
// storing an event and marking its replay key accepted is one script.
//
// Keys, each after the hash tag "{prefix}" (so all in one cluster slot):
//
//	spool:seq            INCR counter of event ids
//	spool:e:<id>         hash: the event (see redisEventFields)
//	spool:q:<target>     stream of the due events of a target, with the consumer group "delivery"
//	spool:r:<target>     sorted set: pending events of a target waiting for their next attempt (score: next attempt, unix ms)
//	spool:ids            sorted set: every event (score: its id), for listings
//	spool:oldest         sorted set (lexical): pending events as scope \0 received ms \0 id
//	spool:dead           sorted set: dead events (score: died at, unix ms), never trimmed
//	spool:discarded      sorted set: discarded events (score: when they are purged, unix ms)
//	spool:count          hash: events by state, scope (and target): "p\0scope\0target", "d\0scope", "x\0scope"
//	spool:paused         set of the paused scopes
//	spool:bykey          hash: replay key → id of its latest event
//	spool:targets        set of the targets that have a stream
//	spool:epoch          a random value set once: when it is gone, Redis lost the spool
//
// A pending event is in exactly one of its target's stream (due; leased
// while it is in a consumer's pending entries) and its retry set. A lease
// is a stream entry in this instance's pending entries: renewed (XCLAIM
// JUSTID) while the attempt runs, taken over (XCLAIM) by another instance
// once idle for longer than the store's lease. The entry's delivery count
// says how many leases ended without a result (spool.Due.Losses).
//
// Scripts build some key names (the event's, the target's) from the tag:
// every key they touch is in the slot of the key they are given, which
// Redis Cluster allows.

// The consumer group of every stream.
const redisGroup = "delivery"

// redisSpoolPoll is how soon Lease asks to look again: other instances add
// events, and leases of dead instances expire, without waking this one.
const redisSpoolPoll = time.Second

// redisPromoteBatch bounds the due retries one Lease moves to a stream.
const redisPromoteBatch = 256

// redisPurgeEvery is how often an instance purges the discarded events
// whose replay window ended, and forgets consumers of dead instances.
const redisPurgeEvery = 10 * time.Second

// redisStaleConsumer is how long a consumer with nothing pending may stay
// idle before it is removed from its group (an instance that stopped).
const redisStaleConsumer = time.Hour

// ErrDataLost wraps the error of Lease when Redis has lost the spool's data
// since this instance last looked (FLUSHALL, a server restarted without its
// files, a stream's consumer group deleted): the events acknowledged before
// are gone. The spool starts again; the error is returned once.
var ErrDataLost = errors.New("redis lost the spool's data")

// redisSpoolLua is the start of every spool script: its keys and helpers.
// ARGV[1] is always the hash tag.
const redisSpoolLua = `
local T = ARGV[1]
local G = '` + redisGroup + `'
local Z = string.char(0)
local IDS, OLD, DEAD, DISC = T .. 'spool:ids', T .. 'spool:oldest', T .. 'spool:dead', T .. 'spool:discarded'
local CNT, PAUSED, BYKEY, TARGETS = T .. 'spool:count', T .. 'spool:paused', T .. 'spool:bykey', T .. 'spool:targets'
local INDEX = T .. 'index'
local function ek(id) return T .. 'spool:e:' .. id end
local function qk(tg) return T .. 'spool:q:' .. tg end
local function rk(tg) return T .. 'spool:r:' .. tg end
local function now_ms()
	local t = redis.call('TIME')
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- get: the fields of event id the scripts use; nil when there is none.
local function get(id)
	local v = redis.call('HMGET', ek(id), 'st', 'tg', 'sc', 'recv', 'sid', 'key', 'af', 'tok')
	if not v[1] then return nil end
	return {st = v[1], tg = v[2], sc = v[3], recv = v[4], sid = v[5] or '', key = v[6], af = tonumber(v[7]), tok = v[8]}
end
local function count(e, st, d)
	local f = 'x' .. Z .. e.sc
	if st == 'pending' then f = 'p' .. Z .. e.sc .. Z .. e.tg elseif st == 'dead' then f = 'd' .. Z .. e.sc end
	if redis.call('HINCRBY', CNT, f, d) <= 0 then redis.call('HDEL', CNT, f) end
end
-- ensure: the target's stream and its group exist (created from the start).
local function ensure(tg)
	local q = qk(tg)
	if redis.call('EXISTS', q) == 0 then
		redis.call('XGROUP', 'CREATE', q, G, '0', 'MKSTREAM')
		redis.call('SADD', TARGETS, tg)
	end
	return q
end
-- owner: the consumer holding the event's stream entry, or nil.
local function owner(e)
	if e.sid == '' then return nil end
	local p = redis.pcall('XPENDING', qk(e.tg), G, e.sid, e.sid, 1)
	if type(p) ~= 'table' or p.err or not p[1] then return nil end
	return p[1][2]
end
-- unqueue: the pending event leaves its stream (acknowledged, deleted) or
-- its retry set.
local function unqueue(id, e)
	if e.sid ~= '' then
		redis.call('XACK', qk(e.tg), G, e.sid)
		redis.call('XDEL', qk(e.tg), e.sid)
		redis.call('HSET', ek(id), 'sid', '')
		e.sid = ''
	end
	redis.call('ZREM', rk(e.tg), id)
end
-- leave: the event leaves the indexes of its state.
local function leave(id, e)
	if e.st == 'pending' then
		unqueue(id, e)
		redis.call('ZREM', OLD, e.sc .. Z .. e.recv .. Z .. id)
	elseif e.st == 'dead' then
		redis.call('ZREM', DEAD, id)
	else
		redis.call('ZREM', DISC, id)
	end
	count(e, e.st, -1)
end
-- enqueue: the pending event is due now: an entry of its target's stream.
local function enqueue(id, e)
	local sid = redis.call('XADD', ensure(e.tg), '*', 'id', id)
	redis.call('HSET', ek(id), 'sid', sid)
	e.sid = sid
end
-- pend: the event enters the pending state, due now (score nil) or at
-- score (unix ms) in its retry set.
local function pend(id, e, score)
	redis.call('HSET', ek(id), 'st', 'pending')
	e.st = 'pending'
	if score then
		redis.call('ZADD', rk(e.tg), score, id)
	else
		enqueue(id, e)
	end
	redis.call('ZADD', OLD, 0, e.sc .. Z .. e.recv .. Z .. id)
	count(e, 'pending', 1)
end
-- drop: the event's record is deleted (it left its state's indexes).
local function drop(id, e)
	redis.call('DEL', ek(id))
	redis.call('ZREM', IDS, id)
	if redis.call('HGET', BYKEY, e.key) == tostring(id) then redis.call('HDEL', BYKEY, e.key) end
end
-- remember: the replay key (without tag) holds value for ms, and the
-- index (when max_events, ARGV of the caller, is positive) knows its end;
-- the keys whose end passed leave the index, as at a claim, so that it
-- does not grow where the spool alone writes.
local function remember(key, value, ms, max)
	redis.call('SET', T .. key, value, 'PX', ms)
	if tonumber(max) > 0 then
		local now = now_ms()
		redis.call('ZREMRANGEBYSCORE', INDEX, '-inf', now)
		redis.call('ZADD', INDEX, now + ms, T .. key)
	end
end
`

// redisIngestScript stores a new event and marks its replay key accepted, in
// one step, unless the key is remembered. KEYS: the replay key, the index,
// the legacy key (see redisClaimScript), the id counter. ARGV: tag, token
// (this ingest's), accept ms, max_events, meta, body, scope, target,
// received ms (16 digits), next attempt (unix ns), replay key (without
// tag). Reply: {0, id} stored; {1} duplicate of an accepted event; {2}
// duplicate of a delivered one. A key holding a claim token
// (the caller's claim) is new. A retried call (a reply lost) that finds its
// own event answers {0, id} again, after a write, so that the WAITAOF
// following it covers the first run's writes.
var redisIngestScript = redis.NewScript(redisSpoolLua + `
-- duplicate of an accepted event: a write too, so that the WAITAOF after
-- the script also covers the earlier copy's writes (its own WAITAOF may not
-- have confirmed them: the provider's retry is then refused 503 until they
-- are on disk). A delivered one ({2}) needs no confirmation: the backend
-- has it.
local function duplicate()
	redis.call('HINCRBY', T .. 'spool:duplicates', 'n', 1)
	return {1}
end
local v = redis.call('GET', KEYS[1])
if v == '` + redisAccepted + `' then
	local id = redis.call('HGET', BYKEY, ARGV[11])
	if id and redis.call('HGET', ek(id), 'tok') == ARGV[2] then
		redis.call('HINCRBY', ek(id), 'ingests', 1)
		return {0, tonumber(id)}
	end
	return duplicate()
end
if v == '` + redisDelivered + `' then
	return {2}
end
if not v and KEYS[3] ~= KEYS[1] and redis.call('GET', KEYS[3]) == '` + redisDelivered + `' then
	return {2}
end
local id = redis.call('INCR', KEYS[4])
remember(ARGV[11], '` + redisAccepted + `', tonumber(ARGV[3]), ARGV[4])
redis.call('HSET', ek(id), 'meta', ARGV[5], 'body', ARGV[6], 'key', ARGV[11], 'af', ARGV[3], 'tok', ARGV[2],
	'sc', ARGV[7], 'tg', ARGV[8], 'recv', ARGV[9], 'next', ARGV[10], 'att', 0, 'ingests', 1)
redis.call('ZADD', IDS, id, id)
redis.call('HSET', BYKEY, ARGV[11], id)
pend(id, {tg = ARGV[8], sc = ARGV[7], recv = ARGV[9], sid = ''}, nil)
return {0, id}
`)

// redisLeaseScript leases up to n due events of one target to a consumer.
// KEYS: the target's stream. ARGV: tag, target, scope, now (unix ms), lease
// ms, consumer, n. It moves the target's due retries to its stream, takes
// over the entries idle for longer than the lease (their holder stopped
// renewing them), then reads new entries. Reply: {paused} when the scope is
// paused (nothing done); else {0, recreated, next retry ms or -1, entries
// ...}, an entry being {id, stream id, deliveries, next ns, received ms,
// token}; recreated is 1 when the consumer group was missing and was
// created again from the start of the stream.
var redisLeaseScript = redis.NewScript(redisSpoolLua + `
local tg, n = ARGV[2], tonumber(ARGV[7])
if redis.call('SISMEMBER', PAUSED, ARGV[3]) == 1 then
	return {1}
end
local due = redis.call('ZRANGEBYSCORE', rk(tg), '-inf', ARGV[4], 'LIMIT', 0, ` + strconv.Itoa(redisPromoteBatch) + `)
for _, id in ipairs(due) do
	redis.call('ZREM', rk(tg), id)
	local e = get(id)
	if e and e.st == 'pending' and e.sid == '' then
		enqueue(id, e)
	end
end
local q = ensure(tg)
local recreated = 0
local taken = {}
local p = redis.pcall('XPENDING', q, G, 'IDLE', ARGV[5], '-', '+', n)
if type(p) == 'table' and p.err then
	redis.call('XGROUP', 'CREATE', q, G, '0')
	recreated = 1
	p = {}
end
for _, x in ipairs(p) do
	local c = redis.call('XCLAIM', q, G, ARGV[6], ARGV[5], x[1])
	if c[1] and c[1][2] then
		table.insert(taken, {c[1][2][2], x[1], x[4] + 1})
	else
		redis.call('XACK', q, G, x[1])
	end
end
if #taken < n then
	local r = redis.call('XREADGROUP', 'GROUP', G, ARGV[6], 'COUNT', n - #taken, 'STREAMS', q, '>')
	if r and r[1] then
		for _, m in ipairs(r[1][2]) do
			if m[2] then
				table.insert(taken, {m[2][2], m[1], 1})
			else
				redis.call('XACK', q, G, m[1])
			end
		end
	end
end
local next = redis.call('ZRANGE', rk(tg), 0, 0, 'WITHSCORES')
local out = {0, recreated, -1}
if next[2] then out[3] = tonumber(next[2]) end
for _, t in ipairs(taken) do
	local v = redis.call('HMGET', ek(t[1]), 'st', 'sid', 'next', 'recv', 'tok')
	if v[1] == 'pending' and v[2] == t[2] then
		table.insert(out, {tonumber(t[1]), t[2], t[3], v[3], v[4], v[5]})
	else
		-- an entry of an event that moved on (delivered, discarded,
		-- queued again): nothing to deliver
		redis.call('XACK', q, G, t[2])
		redis.call('XDEL', q, t[2])
	end
end
return out
`)

// redisRenewLeaseScript renews a consumer's lease of a stream entry (resets
// its idle time without counting a delivery). KEYS: the stream. ARGV: tag,
// stream id, consumer. Reply: 1 renewed, 0 not held.
var redisRenewLeaseScript = redis.NewScript(redisSpoolLua + `
local p = redis.pcall('XPENDING', KEYS[1], G, ARGV[2], ARGV[2], 1)
if type(p) ~= 'table' or p.err or not p[1] or p[1][2] ~= ARGV[3] then
	return 0
end
redis.call('XCLAIM', KEYS[1], G, ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
`)

// redisPutBackScript gives a leased event back, due at a time: out of the
// consumer's pending entries and the stream, into the retry set (any
// instance moves it to the stream again). KEYS: the event. ARGV: tag, id,
// stream id, consumer, due at (unix ms). Reply: 1 put back, 0 not held.
var redisPutBackScript = redis.NewScript(redisSpoolLua + `
local id = ARGV[2]
local e = get(id)
if not e or e.st ~= 'pending' or e.sid ~= ARGV[3] or owner(e) ~= ARGV[4] then
	return 0
end
unqueue(id, e)
redis.call('ZADD', rk(e.tg), ARGV[5], id)
return 1
`)

// redisDeliveredScript deletes a delivered event and marks its replay key
// delivered. KEYS: the event. ARGV: tag, id, window ms, max_events, token
// of the event leased ("" if unknown), consumer. Reply: 1 done, 0 no such
// event. Without the token (this instance forgot its lease: Redis lost its
// data, or the id was offered again while in flight) the event must be
// pending and leased by this consumer: after a FLUSHALL the id may be
// another event's, which a late result must never delete.
var redisDeliveredScript = redis.NewScript(redisSpoolLua + `
local id = ARGV[2]
local e = get(id)
if not e then
	return 0
end
if ARGV[5] ~= '' then
	if e.tok ~= ARGV[5] then
		return 0
	end
elseif e.st ~= 'pending' or owner(e) ~= ARGV[6] then
	return 0
end
leave(id, e)
drop(id, e)
remember(e.key, '` + redisDelivered + `', tonumber(ARGV[3]), ARGV[4])
return 1
`)

// redisFailedScript stores a failed attempt of a leased pending event and
// moves it to its retry set, due at its next attempt. KEYS: the event.
// ARGV: tag, id, consumer, attempts, last error, history (JSON), next
// attempt (unix ns), next attempt (unix ms). Reply: 1 stored, 0 no such
// event, 2 not this consumer's lease any more (its holder now records the
// result).
var redisFailedScript = redis.NewScript(redisSpoolLua + `
local id = ARGV[2]
local e = get(id)
if not e then
	return 0
end
if e.st ~= 'pending' then
	return 1
end
if owner(e) ~= ARGV[3] then
	return 2
end
redis.call('HSET', ek(id), 'att', ARGV[4], 'err', ARGV[5], 'hist', ARGV[6], 'next', ARGV[7])
unqueue(id, e)
redis.call('ZADD', rk(e.tg), ARGV[8], id)
return 1
`)

// redisDieScript makes an event dead. KEYS: the event. ARGV: tag, id,
// consumer, attempts, last error, history (JSON), died at (unix ns), died
// at (unix ms). A pending event must be leased by the consumer. Reply: 1
// done, 0 no such event, 2 not this consumer's lease.
var redisDieScript = redis.NewScript(redisSpoolLua + `
local id = ARGV[2]
local e = get(id)
if not e then
	return 0
end
if e.st == 'pending' and owner(e) ~= ARGV[3] then
	return 2
end
if e.st ~= 'dead' then
	leave(id, e)
	redis.call('HSET', ek(id), 'st', 'dead', 'died', ARGV[7], 'next', '')
	redis.call('ZADD', DEAD, ARGV[8], id)
	count(e, 'dead', 1)
end
redis.call('HSET', ek(id), 'att', ARGV[4], 'err', ARGV[5], 'hist', ARGV[6])
return 1
`)

// redisRetryScript makes an event due now: a dead or discarded one pending
// again with its attempts reset; its replay key stays accepted as long
// again. KEYS: the event. ARGV: tag, id, now (unix ns), max_events. Reply:
// 1 done, 0 no such event, 2 leased (in flight).
var redisRetryScript = redis.NewScript(redisSpoolLua + `
local id = ARGV[2]
local e = get(id)
if not e then
	return 0
end
if e.st == 'pending' and owner(e) then
	return 2
end
redis.call('HSET', ek(id), 'next', ARGV[3], 'retried', ARGV[3], 'died', '', 'dat', '', 'dby', '', 'purge', '')
if e.st ~= 'pending' then
	redis.call('HSET', ek(id), 'att', 0)
	leave(id, e)
	pend(id, e, nil)
elseif e.sid == '' then
	redis.call('ZREM', rk(e.tg), id)
	enqueue(id, e)
end
local ttl = redis.call('PTTL', T .. e.key)
if ttl ~= -1 and ttl < e.af then
	remember(e.key, '` + redisAccepted + `', e.af, ARGV[4])
end
return 1
`)

// redisDiscardScript makes an event discarded: kept until its replay key
// expires, then purged. KEYS: the event. ARGV: tag, id, now (unix ns), now
// (unix ms), by. Reply: 1 done, 0 no such event, 2 leased (in flight).
var redisDiscardScript = redis.NewScript(redisSpoolLua + `
local id = ARGV[2]
local e = get(id)
if not e then
	return 0
end
if e.st == 'pending' and owner(e) then
	return 2
end
if e.st ~= 'discarded' then
	leave(id, e)
	local purge = tonumber(ARGV[4])
	local ttl = redis.call('PTTL', T .. e.key)
	if ttl > 0 then purge = purge + ttl end
	redis.call('HSET', ek(id), 'st', 'discarded', 'next', '', 'purge', purge)
	redis.call('ZADD', DISC, purge, id)
	count(e, 'discarded', 1)
end
redis.call('HSET', ek(id), 'dat', ARGV[3], 'dby', ARGV[5])
return 1
`)

// redisForgetScript forgets a replay key and deletes a discarded event of
// it. KEYS: the replay key, the index, the legacy key. ARGV: tag, replay
// key (without tag). Reply: {1} or {0}: whether the key was remembered;
// {2, id, state}: its event is pending or dead (not forgotten).
var redisForgetScript = redis.NewScript(redisSpoolLua + `
local id = redis.call('HGET', BYKEY, ARGV[2])
if id then
	local e = get(id)
	if e and e.st ~= 'discarded' then
		return {2, tonumber(id), e.st}
	end
	if e then
		leave(id, e)
		drop(id, e)
	end
end
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
if KEYS[3] ~= KEYS[1] then
	n = n + redis.call('DEL', KEYS[3])
end
if n > 0 then return {1} end
return {0}
`)

// redisPurgeScript deletes up to ARGV[3] discarded events whose purge time
// (ARGV[2], unix ms) has come. KEYS: the discarded set. Reply: how many.
var redisPurgeScript = redis.NewScript(redisSpoolLua + `
local ids = redis.call('ZRANGEBYSCORE', DISC, '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
	local e = get(id)
	if e then
		leave(id, e)
		drop(id, e)
	else
		redis.call('ZREM', DISC, id)
	end
end
return #ids
`)

// redisReapScript removes from a stream's group the consumers of instances
// gone for good: nothing pending, idle for longer than ARGV[3] ms, and not
// this instance's (ARGV[2]). One script, so that no instance reads entries
// between the look and the removal: a consumer removed takes its pending
// entries with it, and no instance could take those over. KEYS: the
// stream. ARGV: tag, consumer, stale ms. Reply: how many were removed.
var redisReapScript = redis.NewScript(redisSpoolLua + `
local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], G)
if type(cs) ~= 'table' or cs.err then
	return 0
end
local n = 0
for _, c in ipairs(cs) do
	local f = {}
	for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
	if f.name ~= ARGV[2] and tonumber(f.pending) == 0 and tonumber(f.idle) > tonumber(ARGV[3]) then
		redis.call('XGROUP', 'DELCONSUMER', KEYS[1], G, f.name)
		n = n + 1
	end
end
return n
`)

// redisCountsScript reads the counts and, for every scope with pending
// events, its oldest. KEYS: the counts. Reply: {counts (field, value ...),
// {scope, oldest member} ...}.
var redisCountsScript = redis.NewScript(redisSpoolLua + `
local c = redis.call('HGETALL', CNT)
local out = {c}
local seen = {}
for i = 1, #c, 2 do
	local f = c[i]
	if string.sub(f, 1, 2) == 'p' .. Z then
		local sc = string.match(string.sub(f, 3), '^([^%z]*)')
		if not seen[sc] then
			seen[sc] = true
			local o = redis.call('ZRANGEBYLEX', OLD, '[' .. sc .. Z, '(' .. sc .. string.char(1), 'LIMIT', 0, 1)
			if o[1] then table.insert(out, {sc, o[1]}) end
		end
	end
end
return out
`)

// redisEpochScript returns the spool's epoch, setting it to ARGV[1] when
// there is none. KEYS: the epoch. Reply: {epoch, 1 if set now}.
var redisEpochScript = redis.NewScript(`
local e = redis.call('GET', KEYS[1])
if e then return {e, 0} end
redis.call('SET', KEYS[1], ARGV[1])
return {ARGV[1], 1}
`)

// redisLease is an event leased by this instance.
type redisLease struct {
	target, sid, token string
	next               time.Time
}

// redisSpool is the spool side of a Redis store.
type redisSpool struct {
	s        *Redis
	consumer string // this instance's name in the consumer groups

	mu          sync.Mutex
	leased      map[uint64]redisLease
	epoch       string    // the epoch last seen ("" before the first look)
	epochAt     time.Time // when it was last looked at
	purgedAt    time.Time
	leaseExpiry time.Duration
	// staleConsumer is how long a consumer with nothing pending may stay
	// idle before it is removed (redisStaleConsumer; tests shorten it).
	staleConsumer time.Duration

	// strict is set once the store holds a spool: the server's
	// persistence must keep acknowledged events (Persistence.SpoolProblem).
	strict atomic.Bool
	// assume: trust a server that refuses CONFIG (assume_persistent).
	assume atomic.Bool
	// problem is what the last check found wrong (nil: nothing).
	problem atomic.Pointer[error]
}

// init prepares the spool side of s.
func (sp *redisSpool) init(s *Redis) {
	sp.s = s
	host, _ := os.Hostname()
	sp.consumer = fmt.Sprintf("%s:%d:%s", cmp.Or(host, "caddy"), os.Getpid(), rand.Text()[:8])
	sp.leased = map[uint64]redisLease{}
	sp.leaseExpiry = 30 * time.Second
	sp.staleConsumer = redisStaleConsumer
}

func (sp *redisSpool) close() {}

// recheck applies the spool's requirements to what a new connection found.
func (sp *redisSpool) recheck(p Persistence) {
	if !sp.strict.Load() {
		return
	}
	err := p.SpoolProblem(sp.s.replicas)
	if errors.Is(err, ErrConfigRefused) && sp.assume.Load() {
		err = nil
	}
	if err == nil {
		sp.problem.Store(nil)
		return
	}
	sp.problem.Store(&err)
}

// SpoolOptions configures the spool side of a Redis store.
type SpoolOptions struct {
	// Lease is how long a leased event stays with an instance that stops
	// renewing it (crashed, stalled) before another instance takes it
	// over; default 30s.
	Lease time.Duration
	// AssumePersistent trusts a server that refuses CONFIG GET (a managed
	// Redis) to persist every write: its settings are not checked.
	AssumePersistent bool
}

// CheckSpool makes the store hold a spool: from now on an event is
// acknowledged only if the server's persistence keeps it (see
// Persistence.SpoolProblem), checked at every new connection. It checks the
// server now: the error says what is wrong and how to fix it, or wraps
// ErrUnavailable when Redis cannot be reached (then the first connection
// checks, and events are refused until one has).
func (s *Redis) CheckSpool(ctx context.Context, o SpoolOptions) (Persistence, error) {
	sp := &s.spool
	if o.Lease > 0 {
		sp.mu.Lock()
		sp.leaseExpiry = o.Lease
		sp.mu.Unlock()
	}
	sp.assume.Store(o.AssumePersistent)
	sp.strict.Store(true)
	p, err := s.Persistence(ctx)
	if err != nil {
		return p, err
	}
	if perr := sp.problem.Load(); perr != nil {
		return p, *perr
	}
	return p, nil
}

// LeaseExpiry implements spool.LeaseExpirer.
func (s *Redis) LeaseExpiry() time.Duration {
	s.spool.mu.Lock()
	defer s.spool.mu.Unlock()
	return s.spool.leaseExpiry
}

// ready says whether the server may take a spooled event: an error when its
// persistence would lose it, or it was never checked.
func (s *Redis) ready(ctx context.Context) error {
	if s.known(ctx) == nil {
		return s.unavailable("spool", errors.New("not connected: its persistence is not checked yet"))
	}
	if perr := s.spool.problem.Load(); perr != nil {
		return s.unavailable("spool", *perr)
	}
	return nil
}

// ek is the key of event id.
func (s *Redis) ek(id uint64) string { return s.tag + "spool:e:" + strconv.FormatUint(id, 10) }

// Ingest implements spool.Store: one script stores rec and marks key
// accepted until acceptFor from now unless key is remembered; then, where
// the server has it, WAITAOF on the same connection. Only when that
// confirms is the event acknowledged: otherwise the error wraps
// ErrUnavailable (the guard answers 503; the event is stored, and a
// provider's retry of it is a duplicate). Where the server has no WAITAOF,
// appendfsync always (checked) makes the script's reply durable.
func (s *Redis) Ingest(ctx context.Context, key string, rec *spool.Record, acceptFor time.Duration) (duplicate bool, err error) {
	if acceptFor <= 0 {
		return false, fmt.Errorf("dedupe: redis spool: accept window must be positive, got %v", acceptFor)
	}
	ms, err := redisMillis("accept window", acceptFor)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout+s.waitFor())
	defer cancel()
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	rec.State = spool.Pending
	if rec.NextAt.IsZero() {
		rec.NextAt = rec.ReceivedAt
	}
	meta, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	token := rand.Text()
	keys := append(s.keys(key), s.tag+"spool:seq")
	reply, err := s.durably(ctx, redisIngestScript, keys, s.tag, token, ms, s.maxEvents, meta, rec.Body,
		rec.Scope, rec.Target, recvField(rec.ReceivedAt), strconv.FormatInt(rec.NextAt.UnixNano(), 10), key)
	var nc *notConfirmedError
	if err != nil && !errors.As(err, &nc) {
		return false, s.unavailable("spool ingest", err)
	}
	r, ok := reply.([]any)
	if !ok || len(r) == 0 {
		return false, s.unavailable("spool ingest", fmt.Errorf("unexpected script reply %v", reply))
	}
	if r[0] == int64(2) { // delivered already
		return true, nil
	}
	if r[0] == int64(1) {
		if nc != nil {
			return false, s.unavailable("spool ingest", fmt.Errorf("an earlier copy of the event is stored but not confirmed on disk: %w", nc))
		}
		return true, nil
	}
	if len(r) == 2 {
		id, _ := r[1].(int64)
		rec.ID = uint64(id)
	}
	if nc != nil {
		return false, s.unavailable("spool ingest", fmt.Errorf("the event is stored as %d but not confirmed on disk: %w", rec.ID, nc))
	}
	return false, nil
}

// latest is the later of a and b.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// recvField is a received time as the oldest index sorts it: unix ms, 16
// digits.
func recvField(t time.Time) string { return fmt.Sprintf("%016d", max(t.UnixMilli(), 0)) }

// Lease implements spool.Store: for each target open here whose scope is
// not paused, one script moves its due retries to its stream, takes over
// the entries whose holder stopped renewing them, and reads new ones, at
// most as many as the worker can start; then each is offered.
func (s *Redis) Lease(ctx context.Context, now time.Time, open []spool.Opening, offer func(spool.Due) spool.Verdict) (next time.Time, err error) {
	sp := &s.spool
	if err := s.checkEpoch(ctx); err != nil {
		return now.Add(redisSpoolPoll), err
	}
	s.maintain(ctx, now)
	next = now.Add(redisSpoolPoll)
	lost := false
	stopped := false
	for _, o := range open {
		if o.Free <= 0 || stopped {
			continue
		}
		opCtx, cancel := context.WithTimeout(ctx, s.opTimeout)
		reply, err := redisLeaseScript.Run(opCtx, s.client, []string{s.tag + "spool:q:" + o.Target},
			s.tag, o.Target, o.Scope, now.UnixMilli(), sp.expiry().Milliseconds(), sp.consumer, o.Free).Slice()
		cancel()
		if err != nil {
			return now.Add(redisSpoolPoll), s.unavailable("spool lease", err)
		}
		if len(reply) < 3 || reply[0] != int64(0) {
			continue // paused
		}
		if reply[1] == int64(1) {
			lost = true
		}
		if ms, _ := reply[2].(int64); ms >= 0 {
			if t := time.UnixMilli(ms); t.Before(next) {
				next = t
			}
		}
		var dues []spool.Due
		var leases []redisLease
		for _, x := range reply[3:] {
			e, ok := x.([]any)
			if !ok || len(e) != 6 {
				continue
			}
			id, _ := e[0].(int64)
			sid, _ := e[1].(string)
			deliveries, _ := e[2].(int64)
			nextNs, _ := e[3].(string)
			recv, _ := e[4].(string)
			token, _ := e[5].(string)
			d := spool.Due{
				ID: uint64(id), NextAt: parseNanos(nextNs), ReceivedAt: parseMillis(recv),
				Scope: o.Scope, Target: o.Target, Losses: int(max(deliveries-1, 0)),
			}
			l := redisLease{target: o.Target, sid: sid, token: token, next: d.NextAt}
			sp.mu.Lock()
			if held, ok := sp.leased[d.ID]; ok && token != "" && held.token == token {
				// This instance's attempt of the event still runs: its
				// lease lapsed (renewals failed for longer than the
				// lease) and the script took the entry back. The attempt
				// keeps it, under the entry held now; offering it would
				// only put it back and drop the attempt's result.
				held.target, held.sid = o.Target, sid
				sp.leased[d.ID] = held
				sp.mu.Unlock()
				continue
			}
			sp.leased[d.ID] = l
			sp.mu.Unlock()
			dues = append(dues, d)
			leases = append(leases, l)
		}
		for i, d := range dues {
			v := spool.Stop
			if !stopped {
				v = offer(d)
			}
			switch v {
			case spool.Take:
			case spool.Stop:
				// Not taken now: due as it was, for any instance.
				stopped = true
				s.putBack(ctx, d.ID, leases[i], latest(d.NextAt, now))
			default:
				// Skipped here (held back, or already in flight): not
				// offered again at once.
				s.putBack(ctx, d.ID, leases[i], now.Add(redisSpoolPoll))
			}
		}
	}
	if lost {
		return next, fmt.Errorf("%w: a consumer group was missing and was created again from the start of its stream", ErrDataLost)
	}
	return next, nil
}

// expiry is the lease of a spooled event.
func (sp *redisSpool) expiry() time.Duration {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.leaseExpiry
}

// checkEpoch looks, at most once a second, whether the spool's epoch is
// still the one seen last: if it is gone, Redis lost the spool's data, and
// the error (wrapping ErrDataLost) says so, once.
func (s *Redis) checkEpoch(ctx context.Context) error {
	sp := &s.spool
	sp.mu.Lock()
	if time.Since(sp.epochAt) < time.Second {
		sp.mu.Unlock()
		return nil
	}
	known := sp.epoch
	sp.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	reply, err := redisEpochScript.Run(ctx, s.client, []string{s.tag + "spool:epoch"}, rand.Text()).Slice()
	if err != nil {
		return s.unavailable("spool lease", err)
	}
	cur, _ := reply[0].(string)
	sp.mu.Lock()
	sp.epoch, sp.epochAt = cur, time.Now()
	lost := known != "" && cur != known
	if lost {
		sp.leased = map[uint64]redisLease{}
	}
	sp.mu.Unlock()
	if lost {
		return fmt.Errorf("%w: the events acknowledged before are gone (FLUSHALL, or Redis restarted without its files); the spool starts again empty", ErrDataLost)
	}
	return nil
}

// maintain purges, at most every redisPurgeEvery, the discarded events
// whose replay window ended, and removes the consumers of instances gone
// for good. Failures are left for the next time.
func (s *Redis) maintain(ctx context.Context, now time.Time) {
	sp := &s.spool
	sp.mu.Lock()
	if time.Since(sp.purgedAt) < redisPurgeEvery {
		sp.mu.Unlock()
		return
	}
	sp.purgedAt = time.Now()
	sp.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	_ = redisPurgeScript.Run(ctx, s.client, []string{s.tag + "spool:discarded"}, s.tag, now.UnixMilli(), 1000).Err()
	targets, err := s.client.SMembers(ctx, s.tag+"spool:targets").Result()
	if err != nil {
		return
	}
	for _, tg := range targets {
		_ = redisReapScript.Run(ctx, s.client, []string{s.tag + "spool:q:" + tg}, s.tag, sp.consumer, sp.staleConsumer.Milliseconds()).Err()
	}
}

// putBack gives a leased event back, due at due; failures leave it to
// expire (another instance takes it over after the lease).
func (s *Redis) putBack(ctx context.Context, id uint64, l redisLease, due time.Time) {
	sp := &s.spool
	sp.mu.Lock()
	delete(sp.leased, id)
	sp.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opTimeout)
	defer cancel()
	_ = redisPutBackScript.Run(ctx, s.client, []string{s.ek(id)}, s.tag, id, l.sid, sp.consumer, due.UnixMilli()).Err()
}

// lease returns this instance's lease of id, if it holds one, and forgets
// it when done.
func (sp *redisSpool) lease(id uint64, done bool) (redisLease, bool) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	l, ok := sp.leased[id]
	if done {
		delete(sp.leased, id)
	}
	return l, ok
}

// Extend implements spool.Store: it renews this instance's lease of id
// (XCLAIM JUSTID: the entry's idle time starts again, its delivery count
// stays).
func (s *Redis) Extend(ctx context.Context, id uint64) error {
	l, ok := s.spool.lease(id, false)
	if !ok {
		return fmt.Errorf("dedupe: redis spool: event %d is not leased here", id)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	n, err := redisRenewLeaseScript.Run(ctx, s.client, []string{s.tag + "spool:q:" + l.target}, s.tag, l.sid, s.spool.consumer).Int64()
	if err != nil {
		return s.unavailable("spool extend", err)
	}
	if n != 1 {
		return fmt.Errorf("dedupe: redis spool: event %d: %w (its lease expired and another instance took it over)", id, ErrNotHeld)
	}
	return nil
}

// Abandon implements spool.Store: the event goes back to its retry set,
// due when it was.
func (s *Redis) Abandon(ctx context.Context, id uint64) {
	l, ok := s.spool.lease(id, true)
	if !ok {
		return
	}
	s.putBack(ctx, id, l, latest(l.next, s.now()))
}

// result runs the script of an attempt's result on id.
func (s *Redis) result(ctx context.Context, op string, script *redis.Script, id uint64, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	n, err := script.Run(ctx, s.client, []string{s.ek(id)}, append([]any{s.tag, id}, args...)...).Int64()
	if err != nil {
		return 0, s.unavailable(op, err)
	}
	if n == 0 {
		return 0, spool.ErrNotFound
	}
	return n, nil
}

// Delivered implements spool.Store.
func (s *Redis) Delivered(ctx context.Context, id uint64, window time.Duration) error {
	ms, err := redisMillis("window", window)
	if err != nil {
		return err
	}
	l, _ := s.spool.lease(id, true)
	_, err = s.result(ctx, "spool delivered", redisDeliveredScript, id, ms, s.maxEvents, l.token, s.spool.consumer)
	return err
}

// Failed implements spool.Store. It records the attempt of an event this
// instance holds the lease of; if the lease passed to another instance
// meanwhile, that one records its own result and this one is dropped.
func (s *Redis) Failed(ctx context.Context, rec *spool.Record) error {
	s.spool.lease(rec.ID, true)
	hist, err := json.Marshal(rec.History)
	if err != nil {
		return err
	}
	_, err = s.result(ctx, "spool failed", redisFailedScript, rec.ID, s.spool.consumer, rec.Attempts, rec.LastError, hist,
		strconv.FormatInt(rec.NextAt.UnixNano(), 10), rec.NextAt.UnixMilli())
	return err
}

// Die implements spool.Store. A pending event must be leased by this
// instance (else spool.ErrNotFound: the holder records its result).
func (s *Redis) Die(ctx context.Context, rec *spool.Record) (spool.Record, error) {
	s.spool.lease(rec.ID, true)
	hist, err := json.Marshal(rec.History)
	if err != nil {
		return spool.Record{}, err
	}
	t := s.now()
	n, err := s.result(ctx, "spool die", redisDieScript, rec.ID, s.spool.consumer, rec.Attempts, rec.LastError, hist,
		strconv.FormatInt(t.UnixNano(), 10), t.UnixMilli())
	if err != nil {
		return spool.Record{}, err
	}
	if n == 2 {
		return spool.Record{}, fmt.Errorf("%w: its lease passed to another instance", spool.ErrNotFound)
	}
	out, ok, err := s.get(ctx, rec.ID, false, true)
	if err != nil || !ok {
		return spool.Record{}, cmp.Or(err, spool.ErrNotFound)
	}
	return out, nil
}

// operate runs an operator's script (retry, discard) on id.
func (s *Redis) operate(ctx context.Context, op string, script *redis.Script, id uint64, args ...any) error {
	n, err := s.result(ctx, op, script, id, args...)
	if err != nil {
		return err
	}
	if n == 2 {
		return spool.ErrInFlight
	}
	return nil
}

// Retry implements spool.Store.
func (s *Redis) Retry(ctx context.Context, id uint64) error {
	return s.operate(ctx, "spool retry", redisRetryScript, id, strconv.FormatInt(s.now().UnixNano(), 10), s.maxEvents)
}

// Discard implements spool.Store.
func (s *Redis) Discard(ctx context.Context, id uint64, by string) (spool.Record, error) {
	t := s.now()
	if err := s.operate(ctx, "spool discard", redisDiscardScript, id, strconv.FormatInt(t.UnixNano(), 10), t.UnixMilli(), by); err != nil {
		return spool.Record{}, err
	}
	out, ok, err := s.get(ctx, id, false, true)
	if err != nil || !ok {
		return spool.Record{}, cmp.Or(err, spool.ErrNotFound)
	}
	return out, nil
}

// ErrSpooled is the error of Forget for a key whose event is pending or
// dead in the spool.
var ErrSpooled = errors.New("cannot forget the id of an event the spool holds")

// Forget implements spool.Store: it deletes the replay key (and the key of
// the layout before the hash tag) and a discarded event of it; a pending or
// dead event of it is an error (retry or discard it first: forgetting its id
// would let a resend be spooled twice).
func (s *Redis) Forget(ctx context.Context, key string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	reply, err := redisForgetScript.Run(ctx, s.client, s.keys(key), s.tag, key).Slice()
	if err != nil {
		return false, s.unavailable("spool forget", err)
	}
	if len(reply) == 3 {
		return false, fmt.Errorf("%w: the event is spooled as %v (%v): retry or discard it first", ErrSpooled, reply[1], reply[2])
	}
	// Every instance drops the key from its cache (WatchForgotten).
	if err := s.client.Publish(ctx, s.forgottenChannel(), key).Err(); err != nil {
		return false, s.unavailable("spool forget: the id is forgotten, but the other instances could not be told (their caches may still answer a resend as a duplicate): forget it again", err)
	}
	return len(reply) == 1 && reply[0] == int64(1), nil
}

// redisEventFields are the fields of an event hash a record is read from,
// in the order get asks for them; body and hist come last, read when
// wanted.
var redisEventFields = []string{"meta", "st", "att", "err", "next", "died", "retried", "dat", "dby", "hist", "body"}

// get reads event id: with its body when withBody, with its headers and
// history when detail.
func (s *Redis) get(ctx context.Context, id uint64, withBody, detail bool) (spool.Record, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	fields := redisEventFields[:10]
	if withBody {
		fields = redisEventFields
	}
	v, err := s.client.HMGet(ctx, s.ek(id), fields...).Result()
	if err != nil {
		return spool.Record{}, false, s.unavailable("spool get", err)
	}
	return decodeRedisEvent(id, v, detail)
}

// decodeRedisEvent builds a record from the values of redisEventFields (a
// prefix of them); false when the event does not exist.
func decodeRedisEvent(id uint64, v []any, detail bool) (spool.Record, bool, error) {
	str := func(i int) string {
		if i >= len(v) {
			return ""
		}
		s, _ := v[i].(string)
		return s
	}
	if v[0] == nil {
		return spool.Record{}, false, nil
	}
	var rec spool.Record
	if err := json.Unmarshal([]byte(str(0)), &rec); err != nil {
		return spool.Record{}, false, fmt.Errorf("dedupe: redis spool event %d: corrupt: %v", id, err)
	}
	rec.ID = id
	rec.State = spool.State(str(1))
	rec.Attempts, _ = strconv.Atoi(str(2))
	rec.LastError = str(3)
	rec.NextAt = parseNanos(str(4))
	rec.DiedAt = parseNanos(str(5))
	rec.RetriedAt = parseNanos(str(6))
	rec.DiscardedAt = parseNanos(str(7))
	rec.DiscardedBy = str(8)
	rec.History = nil
	if detail {
		if h := str(9); h != "" && h != "null" {
			if err := json.Unmarshal([]byte(h), &rec.History); err != nil {
				return spool.Record{}, false, fmt.Errorf("dedupe: redis spool event %d: corrupt history: %v", id, err)
			}
		}
	} else {
		rec.Header = nil
	}
	if len(v) > 10 {
		rec.Body = []byte(str(10))
		if rec.Body == nil {
			rec.Body = []byte{}
		}
	}
	return rec, true, nil
}

// parseNanos reads a time stored as unix ns ("" is zero).
func parseNanos(v string) time.Time {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || v == "" {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// parseMillis reads a time stored as unix ms.
func parseMillis(v string) time.Time {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(n)
}

// Get implements spool.Store.
func (s *Redis) Get(ctx context.Context, id uint64) (spool.Record, bool, error) {
	return s.get(ctx, id, true, true)
}

// redisListBatch is how many events a listing reads per round trip.
const redisListBatch = 256

// List implements spool.Store: a walk of the ids from the newest (or of the
// dead or discarded set), events read a batch per round trip.
func (s *Redis) List(ctx context.Context, f spool.Filter, p spool.Page) ([]spool.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.opTimeout)
	defer cancel()
	size := p.Size()
	var out []spool.Record
	// Dead and discarded events have sets of their own, usually small.
	var ids []uint64
	fromSet := f.State == spool.Dead || f.State == spool.Discarded
	if fromSet {
		set := "spool:dead"
		if f.State == spool.Discarded {
			set = "spool:discarded"
		}
		members, err := s.client.ZRange(ctx, s.tag+set, 0, -1).Result()
		if err != nil {
			return nil, s.unavailable("spool list", err)
		}
		for _, m := range members {
			if id, err := strconv.ParseUint(m, 10, 64); err == nil && (p.After == 0 || id < p.After) {
				ids = append(ids, id)
			}
		}
		slices.SortFunc(ids, func(a, b uint64) int { return cmp.Compare(b, a) })
	}
	max := "+inf"
	if p.After > 0 {
		max = "(" + strconv.FormatUint(p.After, 10)
	}
	for len(out) < size {
		var batch []uint64
		if fromSet {
			n := min(len(ids), redisListBatch)
			batch, ids = ids[:n], ids[n:]
		} else {
			members, err := s.client.ZRevRangeByScore(ctx, s.tag+"spool:ids", &redis.ZRangeBy{Max: max, Min: "-inf", Count: redisListBatch}).Result()
			if err != nil {
				return nil, s.unavailable("spool list", err)
			}
			for _, m := range members {
				if id, err := strconv.ParseUint(m, 10, 64); err == nil {
					batch = append(batch, id)
				}
			}
			if len(batch) > 0 {
				max = "(" + strconv.FormatUint(batch[len(batch)-1], 10)
			}
		}
		if len(batch) == 0 {
			break
		}
		pipe := s.client.Pipeline()
		cmds := make([]*redis.SliceCmd, len(batch))
		for i, id := range batch {
			cmds[i] = pipe.HMGet(ctx, s.ek(id), redisEventFields[:9]...)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, s.unavailable("spool list", err)
		}
		for i, id := range batch {
			rec, ok, err := decodeRedisEvent(id, cmds[i].Val(), false)
			if err != nil {
				return nil, err
			}
			if !ok || !f.Match(&rec) {
				continue
			}
			out = append(out, rec)
			if len(out) == size {
				break
			}
		}
	}
	return out, nil
}

// IDs implements spool.Store, from the indexes.
func (s *Redis) IDs(ctx context.Context, state spool.State, scope string) ([]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.opTimeout)
	defer cancel()
	var out []uint64
	if state == spool.Pending {
		lo, hi := "-", "+"
		if scope != "" {
			lo, hi = "["+scope+"\x00", "("+scope+"\x01"
		}
		members, err := s.client.ZRangeByLex(ctx, s.tag+"spool:oldest", &redis.ZRangeBy{Min: lo, Max: hi}).Result()
		if err != nil {
			return nil, s.unavailable("spool ids", err)
		}
		for _, m := range members {
			parts := strings.Split(m, "\x00")
			if id, err := strconv.ParseUint(parts[len(parts)-1], 10, 64); err == nil {
				out = append(out, id)
			}
		}
		return out, nil
	}
	set := "spool:dead"
	if state == spool.Discarded {
		set = "spool:discarded"
	}
	members, err := s.client.ZRange(ctx, s.tag+set, 0, -1).Result()
	if err != nil {
		return nil, s.unavailable("spool ids", err)
	}
	var ids []uint64
	for _, m := range members {
		if id, err := strconv.ParseUint(m, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	if scope == "" {
		return ids, nil
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(ctx, s.ek(id), "sc")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, s.unavailable("spool ids", err)
	}
	for i, id := range ids {
		if cmds[i].Val() == scope {
			out = append(out, id)
		}
	}
	return out, nil
}

// Counts implements spool.Store, from the counts the scripts keep.
func (s *Redis) Counts(ctx context.Context) (map[string]spool.Counts, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	reply, err := redisCountsScript.Run(ctx, s.client, []string{s.tag + "spool:count"}, s.tag).Slice()
	if err != nil {
		return nil, s.unavailable("spool counts", err)
	}
	out := map[string]spool.Counts{}
	if len(reply) == 0 {
		return out, nil
	}
	fields, _ := reply[0].([]any)
	for i := 0; i+1 < len(fields); i += 2 {
		f, _ := fields[i].(string)
		nv, _ := fields[i+1].(string)
		n, _ := strconv.Atoi(nv)
		parts := strings.Split(f, "\x00")
		if len(parts) < 2 {
			continue
		}
		c := out[parts[1]]
		switch parts[0] {
		case "p":
			c.Pending += n
			if c.PendingByTarget == nil {
				c.PendingByTarget = map[string]int{}
			}
			if len(parts) > 2 {
				c.PendingByTarget[parts[2]] += n
			}
		case "d":
			c.Dead += n
		case "x":
			c.Discarded += n
		}
		out[parts[1]] = c
	}
	for _, x := range reply[1:] {
		o, ok := x.([]any)
		if !ok || len(o) != 2 {
			continue
		}
		scope, _ := o[0].(string)
		member, _ := o[1].(string)
		parts := strings.Split(member, "\x00")
		if len(parts) == 3 {
			c := out[scope]
			c.OldestPending = parseMillis(parts[1])
			out[scope] = c
		}
	}
	return out, nil
}

// SetPaused implements spool.Store: the paused scopes are a set in Redis,
// so a pause holds on every instance.
func (s *Redis) SetPaused(ctx context.Context, scope string, paused bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	var err error
	if paused {
		err = s.client.SAdd(ctx, s.tag+"spool:paused", scope).Err()
	} else {
		err = s.client.SRem(ctx, s.tag+"spool:paused", scope).Err()
	}
	if err != nil {
		return s.unavailable("spool pause", err)
	}
	return nil
}

// Paused implements spool.Store.
func (s *Redis) Paused(ctx context.Context) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	members, err := s.client.SMembers(ctx, s.tag+"spool:paused").Result()
	if err != nil {
		return nil, s.unavailable("spool paused", err)
	}
	out := make(map[string]bool, len(members))
	for _, m := range members {
		out[m] = true
	}
	return out, nil
}

var (
	_ spool.Store        = (*Redis)(nil)
	_ spool.LeaseExpirer = (*Redis)(nil)
)
