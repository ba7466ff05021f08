package ledger

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/btree"
	bolt "go.etcd.io/bbolt"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// The spool: events acknowledged once on disk and delivered later, with
// retries, by a spool.Spool. It lives in the ledger file beside the replay
// records, so that storing an event and marking its id accepted is one
// transaction (one group-committed fsync).
//
// Buckets:
//
//	spool      seq (8 bytes, big endian)  → record: uvarint(len(meta)) ‖ meta (JSON) ‖ body
//	due        next_at (unix ns) ‖ seq    → received_at (unix ns, 8 bytes) ‖ scope [‖ 0x00 ‖ target]
//	dead       died_at (unix ns) ‖ seq    → scope
//	discarded  purge_at (unix ns) ‖ seq   → scope
//	meta       "pause/" + scope           → empty: the scope's deliveries are held
//
// The index values carry the scope (and, for due, the received time and the
// target) so that the worker and the gauges read the indexes without
// decoding records, and a listing decodes a record's meta without its body.
// Release 0.1.0 wrote no target (and had no discarded bucket): its due
// values end with the scope.
var (
	bucketSpool      = []byte("spool")
	bucketDue        = []byte("due")
	bucketDead       = []byte("dead")
	bucketDiscarded  = []byte("discarded")
	pausePrefix      = "pause/"
	spoolBucketNames = [][]byte{bucketSpool, bucketDue, bucketDead, bucketDiscarded}
)

// maxLeaseScan bounds the due entries one Lease looks at (of paused scopes,
// busy or absent targets); the next Lease goes on from there.
const maxLeaseScan = 4096

// leaseBackoff is how soon the worker comes back after a Lease that stopped
// at maxLeaseScan.
const leaseBackoff = 50 * time.Millisecond

// diskRecord is a spool record as the ledger stores it: the record's own
// fields (its JSON form) and the ledger's.
type diskRecord struct {
	*spool.Record
	// Digest is the SHA-256 of the replay key, to mark it delivered.
	Digest []byte `json:"digest"`
	// AcceptFor is how long the key stays accepted from ReceivedAt (or
	// from an operator's retry).
	AcceptFor time.Duration `json:"accept_for,omitempty"`
	// PurgeAt is when a discarded record is deleted: when its replay key
	// is forgotten.
	PurgeAt time.Time `json:"purge_at,omitzero"`
}

// spoolState is what the ledger keeps in memory of its spool.
type spoolState struct {
	mu sync.Mutex
	// paused mirrors the paused scopes of the meta bucket.
	paused map[string]bool
	// leased holds the events leased to the worker.
	leased map[uint64]bool
	// cursor is the due key where the last Lease stopped at maxLeaseScan.
	cursor []byte
	// due counts the due (pending) events by scope, so that a Lease finds
	// at once that every one is paused (ingest goes on while deliveries
	// are held: a Lease per event spooled must not walk them all).
	due map[string]int
}

// countDue counts the due events by scope, from the indexes.
func (s *Ledger) countDue() error {
	due := map[string]int{}
	err := s.readSnapshot(func(sn *snapshot) error {
		sn.ascendIndex(idxDue, nil, func(_, v []byte) bool {
			due[indexScope(bucketDue, v)]++
			return true
		})
		return nil
	})
	if err != nil {
		return err
	}
	s.spool.mu.Lock()
	s.spool.due = due
	s.spool.mu.Unlock()
	return nil
}

// countDueChanges keeps the due counts as records are journaled.
func (s *Ledger) countDueChanges(recs []jrecord) {
	st := &s.spool
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, r := range recs {
		for i := range r.muts {
			m := &r.muts[i]
			if m.spoolChange == nil {
				continue
			}
			if m.oldIdx.bucket == idxDue {
				scope := indexScope(bucketDue, m.oldIdx.value)
				if st.due[scope]--; st.due[scope] <= 0 {
					delete(st.due, scope)
				}
			}
			if m.kind == mPutSpool && m.idx.bucket == idxDue {
				st.due[indexScope(bucketDue, m.idx.value)]++
			}
		}
	}
}

// anyLeasable says whether a due event of a scope not paused may be
// there; s.spool.mu is held.
func (st *spoolState) anyLeasable() bool {
	for scope, n := range st.due {
		if n > 0 && !st.paused[scope] {
			return true
		}
	}
	return false
}

// loadSpoolState reads the paused scopes.
func (s *Ledger) loadSpoolState() error {
	paused, err := s.readPaused()
	if err != nil {
		return err
	}
	s.spool.paused = paused
	s.spool.leased = map[uint64]bool{}
	return nil
}

// encodeRecord is the stored form of d.
func encodeRecord(d *diskRecord) ([]byte, error) {
	meta, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, binary.MaxVarintLen64+len(meta)+len(d.Body))
	out = binary.AppendUvarint(out, uint64(len(meta)))
	out = append(out, meta...)
	return append(out, d.Body...), nil
}

// recordMeta returns the meta (JSON) part of a stored record.
func recordMeta(seq uint64, v []byte) ([]byte, []byte, error) {
	n, k := binary.Uvarint(v)
	if k <= 0 || uint64(len(v)-k) < n {
		return nil, nil, fmt.Errorf("spool record %d: corrupt (bad length)", seq)
	}
	return v[k : k+int(n)], v[k+int(n):], nil
}

// decodeRecord reads a stored record; the body is copied only when
// withBody (v may be bbolt's memory, valid only in its transaction).
func decodeRecord(seq uint64, v []byte, withBody bool) (*diskRecord, error) {
	meta, body, err := recordMeta(seq, v)
	if err != nil {
		return nil, err
	}
	d := &diskRecord{Record: &spool.Record{}}
	if err := json.Unmarshal(meta, d); err != nil {
		return nil, fmt.Errorf("spool record %d: corrupt: %v", seq, err)
	}
	d.ID = seq
	if withBody {
		d.Body = append([]byte{}, body...)
	}
	return d, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// indexKey is the key of the due, dead and discarded indexes: t ‖ seq.
func indexKey(t time.Time, seq uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(t.UnixNano()))
	return binary.BigEndian.AppendUint64(k, seq)
}

// index is the index bucket, key and value of d in its state.
func index(d *diskRecord) (bucket, key, value []byte) {
	switch d.State {
	case spool.Dead:
		return bucketDead, indexKey(d.DiedAt, d.ID), []byte(d.Scope)
	case spool.Discarded:
		return bucketDiscarded, indexKey(d.PurgeAt, d.ID), []byte(d.Scope)
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 9+len(d.Scope)+len(d.Target)), uint64(d.ReceivedAt.UnixNano()))
	v = append(v, d.Scope...)
	if d.Target != "" {
		v = append(append(v, 0), d.Target...)
	}
	return bucketDue, indexKey(d.NextAt, d.ID), v
}

// parseDue reads an entry of the due index.
func parseDue(k, v []byte) (spool.Due, bool) {
	if len(k) != 16 || len(v) < 8 {
		return spool.Due{}, false
	}
	scope, target, _ := bytes.Cut(v[8:], []byte{0})
	return spool.Due{
		ID:         binary.BigEndian.Uint64(k[8:]),
		NextAt:     time.Unix(0, int64(binary.BigEndian.Uint64(k))),
		ReceivedAt: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
		Scope:      string(scope),
		Target:     string(target),
	}, true
}

// indexScope is the scope in a value of an index.
func indexScope(bucket, v []byte) string {
	if bytes.Equal(bucket, bucketDue) {
		if len(v) < 8 {
			return ""
		}
		scope, _, _ := bytes.Cut(v[8:], []byte{0})
		return string(scope)
	}
	return string(v)
}

// spoolBuckets creates the spool's buckets in a ledger that predates them.
func spoolBuckets(tx *bolt.Tx) error {
	for _, name := range spoolBucketNames {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// Ingest implements spool.Store: it stores rec and marks key accepted until
// rec.ReceivedAt + acceptFor in one journal record, unless key is already
// remembered. The in-flight claim of key, if any, is let go once the record
// is durable (a claim meanwhile sees the event in flight, after it accepted).
// A failed write leaves nothing: the error wraps ErrDiskFull (disk or
// MaxSize full) or dedupe.ErrUnavailable.
func (s *Ledger) Ingest(ctx context.Context, key string, rec *spool.Record, acceptFor time.Duration) (duplicate bool, err error) {
	if acceptFor <= 0 {
		return false, fmt.Errorf("ledger: accept window must be positive, got %v", acceptFor)
	}
	rec.State = spool.Pending
	if rec.NextAt.IsZero() {
		rec.NextAt = rec.ReceivedAt
	}
	dg := digest(sha256.Sum256([]byte(key)))
	d := &diskRecord{Record: rec, Digest: dg[:], AcceptFor: acceptFor}
	enc, err := encodeRecord(d) // the seq is not part of it
	if err != nil {
		return false, err
	}
	accepted := replayRecord{state: recordAccepted, expires: rec.ReceivedAt.Add(acceptFor).UnixNano()}
	var added bool
	op := &jop{
		class: classNew,
		eval: func(v *view) ([]mutation, error) {
			duplicate, added = false, false
			r, exists, err := v.replayOf(&dg)
			if err != nil {
				return nil, err
			}
			if exists && r.remembered(v.now.UnixNano()) {
				duplicate = true
				return nil, nil
			}
			rec.ID = v.nextSpool
			v.nextSpool++
			added = !exists
			return []mutation{
				{kind: mPutSpool, spoolChange: &spoolChange{seq: rec.ID, idx: entryOf(d), enc: enc}},
				{kind: mPutReplay, flag: added, digest: dg, replay: accepted},
			}, nil
		},
		after: func(err error) {
			if err != nil || duplicate {
				return
			}
			if added {
				s.used.Add(1)
			}
			s.dropLease(&dg)
		},
	}
	if err := s.submit(ctx, op); err != nil {
		return false, err
	}
	return duplicate, nil
}

// dropLease forgets the in-flight claim of d, if any.
func (s *Ledger) dropLease(d *digest) {
	sh := s.shard(d)
	sh.mu.Lock()
	if _, ok := sh.m[*d]; ok {
		s.dropLeaseLocked(sh, d)
	}
	sh.mu.Unlock()
}

// dropLeaseLocked forgets the in-flight claim of d, which sh (d's shard,
// locked) holds.
func (s *Ledger) dropLeaseLocked(sh *fileShard, d *digest) {
	delete(sh.m, *d)
	s.used.Add(-1)
	s.leases.Add(-1)
}

// spoolFn changes the record d in place, in the journal writer, and returns
// whether to keep it (false: delete it) and the record's other mutations
// (of its replay key).
type spoolFn func(v *view, d *diskRecord) (keep bool, more []mutation, err error)

// spoolUpdate runs fn on the record seq through the journal; a missing
// record is spool.ErrNotFound; when refuseLeased is set, a leased record is
// spool.ErrInFlight and nothing is written. after, when set, runs once the
// record is durable.
func (s *Ledger) spoolUpdate(ctx context.Context, seq uint64, refuseLeased bool, fn spoolFn, after func()) error {
	if refuseLeased && s.isLeased(seq) {
		return spool.ErrInFlight
	}
	var missing bool
	op := &jop{
		class: classChange,
		eval: func(v *view) ([]mutation, error) {
			enc, oldIdx, ok, err := v.spoolOf(seq)
			missing = !ok
			if err != nil || missing {
				return nil, err
			}
			d, err := decodeRecord(seq, enc, true)
			if err != nil {
				return nil, err
			}
			keep, more, err := fn(v, d)
			if err != nil {
				return nil, err
			}
			m := mutation{kind: mDelSpool, spoolChange: &spoolChange{seq: seq, oldIdx: oldIdx}}
			if keep {
				newEnc, err := encodeRecord(d)
				if err != nil {
					return nil, err
				}
				m = mutation{kind: mPutSpool, spoolChange: &spoolChange{seq: seq, oldIdx: oldIdx, idx: entryOf(d), enc: newEnc}}
			}
			return append([]mutation{m}, more...), nil
		},
		after: func(err error) {
			if err == nil && !missing && after != nil {
				after()
			}
		},
	}
	if err := s.submit(ctx, op); err != nil {
		return err
	}
	if missing {
		return spool.ErrNotFound
	}
	return nil
}

// isLeased says whether seq is leased to the worker.
func (s *Ledger) isLeased(seq uint64) bool {
	s.spool.mu.Lock()
	defer s.spool.mu.Unlock()
	return s.spool.leased[seq]
}

// Abandon implements spool.Store.
func (s *Ledger) Abandon(_ context.Context, seq uint64) {
	s.spool.mu.Lock()
	delete(s.spool.leased, seq)
	s.spool.mu.Unlock()
}

// Extend implements spool.Store: leases of one process do not expire.
func (s *Ledger) Extend(context.Context, uint64) error { return nil }

// finish runs a result's update and gives the lease back.
func (s *Ledger) finish(ctx context.Context, seq uint64, fn spoolFn, after func()) error {
	defer s.Abandon(ctx, seq)
	return s.spoolUpdate(ctx, seq, false, fn, after)
}

// putReplayMut is the mutation that makes d's replay record r, with the
// flag of a new key.
func putReplayMut(v *view, d *digest, r replayRecord) (mutation, bool, error) {
	_, exists, err := v.replayOf(d)
	if err != nil {
		return mutation{}, false, err
	}
	return mutation{kind: mPutReplay, flag: !exists, digest: *d, replay: r}, !exists, nil
}

// recordDigest is the replay key's digest a record carries (false: none,
// in a record that predates it).
func recordDigest(d *diskRecord) (digest, bool) {
	var dg digest
	if len(d.Digest) != sha256.Size {
		return dg, false
	}
	copy(dg[:], d.Digest)
	return dg, true
}

// Delivered implements spool.Store.
func (s *Ledger) Delivered(ctx context.Context, seq uint64, window time.Duration) error {
	var added bool
	return s.finish(ctx, seq, func(v *view, d *diskRecord) (bool, []mutation, error) {
		added = false
		dg, ok := recordDigest(d)
		if !ok {
			return false, nil, nil
		}
		m, isNew, err := putReplayMut(v, &dg, replayRecord{state: recordDelivered, expires: v.now.Add(window).UnixNano()})
		added = isNew
		return false, []mutation{m}, err
	}, func() {
		if added {
			s.used.Add(1)
		}
	})
}

// Failed implements spool.Store.
func (s *Ledger) Failed(ctx context.Context, rec *spool.Record) error {
	return s.finish(ctx, rec.ID, func(_ *view, d *diskRecord) (bool, []mutation, error) {
		if d.State == spool.Pending {
			d.Attempts, d.LastError, d.NextAt, d.History = rec.Attempts, rec.LastError, rec.NextAt, rec.History
		}
		return true, nil, nil
	}, nil)
}

// Die implements spool.Store.
func (s *Ledger) Die(ctx context.Context, rec *spool.Record) (spool.Record, error) {
	var out spool.Record
	err := s.finish(ctx, rec.ID, func(v *view, d *diskRecord) (bool, []mutation, error) {
		d.Attempts, d.LastError, d.History = rec.Attempts, rec.LastError, rec.History
		if d.State != spool.Dead {
			d.State, d.DiedAt, d.NextAt = spool.Dead, v.now, time.Time{}
		}
		out = *d.Record
		out.Body = nil
		return true, nil, nil
	}, nil)
	return out, err
}

// Retry implements spool.Store. The key stays accepted for AcceptFor from
// now (if that is later than it was), so that a provider's retry stays a
// duplicate while the event may still be delivered.
func (s *Ledger) Retry(ctx context.Context, seq uint64) error {
	var added bool
	return s.spoolUpdate(ctx, seq, true, func(v *view, d *diskRecord) (bool, []mutation, error) {
		added = false
		if d.State != spool.Pending {
			d.Attempts = 0
		}
		t := v.now
		d.State, d.DiedAt, d.NextAt, d.RetriedAt = spool.Pending, time.Time{}, t, t
		d.DiscardedAt, d.DiscardedBy, d.PurgeAt = time.Time{}, "", time.Time{}
		dg, ok := recordDigest(d)
		if !ok || d.AcceptFor <= 0 {
			return true, nil, nil
		}
		exp := t.Add(d.AcceptFor).UnixNano()
		r, exists, err := v.replayOf(&dg)
		if err != nil {
			return false, nil, err
		}
		if exists && r.expires >= exp {
			return true, nil, nil
		}
		added = !exists
		return true, []mutation{{kind: mPutReplay, flag: added, digest: dg, replay: replayRecord{state: recordAccepted, expires: exp}}}, nil
	}, func() {
		if added {
			s.used.Add(1)
		}
	})
}

// Discard implements spool.Store: the record stays, discarded, until its
// replay key is forgotten (the key stays accepted, so a provider's retry of
// it is a duplicate), then the sweep purges it.
func (s *Ledger) Discard(ctx context.Context, seq uint64, by string) (spool.Record, error) {
	var out spool.Record
	err := s.spoolUpdate(ctx, seq, true, func(v *view, d *diskRecord) (bool, []mutation, error) {
		t := v.now
		d.State, d.NextAt, d.DiscardedAt, d.DiscardedBy = spool.Discarded, time.Time{}, t, by
		d.PurgeAt = t
		if dg, ok := recordDigest(d); ok {
			r, exists, err := v.replayOf(&dg)
			if err != nil {
				return false, nil, err
			}
			if exists && r.expires > t.UnixNano() {
				d.PurgeAt = time.Unix(0, r.expires)
			}
		}
		out = *d.Record
		out.Body = nil
		return true, nil, nil
	}, nil)
	return out, err
}

// Forget implements spool.Store: it deletes the replay record of key and a
// discarded event of it; a pending or dead event of it is an error (retry
// or discard it first: forgetting its id would let a resend be spooled
// twice), as is one spooled, or retried, while Forget runs.
func (s *Ledger) Forget(ctx context.Context, key string) (bool, error) {
	dg := digest(sha256.Sum256([]byte(key)))
	// The spool is read before the journal record, outside the writer:
	// what changes in between (a copy of the event spooled, a discarded
	// event retried) is checked in the writer, against the replay record
	// as it was before the read and the discarded events' states.
	before, had, err := s.replayOf(&dg)
	if err != nil {
		return false, err
	}
	var spooled *spool.Record
	seqs, err := s.recordsOf(&dg)
	if err != nil {
		return false, err
	}
	var purge []uint64
	for _, d := range seqs {
		if d.State != spool.Discarded {
			spooled = d.Record
			break
		}
		purge = append(purge, d.ID)
	}
	if spooled != nil {
		return false, fmt.Errorf("%w: the event is spooled as %d (%s): retry or discard it first", ErrSpooled, spooled.ID, spooled.State)
	}
	if s.forgetScanned != nil {
		s.forgetScanned()
	}
	var deleted bool
	op := &jop{
		class: classChange,
		eval: func(v *view) ([]mutation, error) {
			var muts []mutation
			for _, seq := range purge {
				enc, oldIdx, ok, err := v.spoolOf(seq)
				if err != nil {
					return nil, err
				}
				if !ok {
					continue
				}
				if d, err := decodeRecord(seq, enc, false); err != nil {
					return nil, err
				} else if d.State != spool.Discarded {
					return nil, fmt.Errorf("%w: the event was %s as %d meanwhile: discard it first", ErrSpooled, d.State, seq)
				}
				muts = append(muts, mutation{kind: mDelSpool, spoolChange: &spoolChange{seq: seq, oldIdx: oldIdx}})
			}
			r, exists, err := v.replayOf(&dg)
			if err != nil {
				return nil, err
			}
			if exists && r.state == recordAccepted && (!had || r != before) {
				// Accepted since the spool was read: a copy of the event
				// was spooled meanwhile.
				return nil, fmt.Errorf("%w: a copy of the event was spooled meanwhile: retry or discard it first", ErrSpooled)
			}
			deleted = exists
			if exists {
				muts = append(muts, mutation{kind: mDelReplay, flag: true, digest: dg})
			}
			return muts, nil
		},
		after: func(err error) {
			if err == nil && deleted {
				s.used.Add(-1)
			}
		},
	}
	if err := s.submit(ctx, op); err != nil {
		return false, err
	}
	return deleted, nil
}

// ErrSpooled is the error of Forget for a key whose event is spooled.
var ErrSpooled = errors.New("cannot forget the id of an event the spool holds")

// snapshot is a consistent view of the spool for a scan: the overlay's
// spool records and index entries as they were, and a read transaction of
// the file begun after. An overlay entry whose record the file has applied
// (jseq ≤ applied) is older than, or the same as, the file's, and ignored.
type snapshot struct {
	tx      *bolt.Tx
	applied uint64
	spool   *btree.BTreeG[*ovSpool]
	index   *btree.BTreeG[ovIndex]
	// minSpool is the lowest seq in spool (none: the highest possible).
	minSpool uint64
}

// readSnapshot runs fn on a snapshot.
func (s *Ledger) readSnapshot(fn func(sn *snapshot) error) error {
	s.ov.mu.Lock() // Clone writes to the tree it clones
	sp, idx := s.ov.spool.Clone(), s.ov.index.Clone()
	s.ov.mu.Unlock()
	minSpool := ^uint64(0)
	if e, ok := sp.Min(); ok {
		minSpool = e.seq
	}
	return s.view(func(tx *bolt.Tx) error {
		return fn(&snapshot{tx: tx, applied: appliedIn(tx), spool: sp, index: idx, minSpool: minSpool})
	})
}

// shadowed says whether the overlay holds a newer state of the file's
// spool record seq.
func (sn *snapshot) shadowed(seq uint64) bool {
	if seq < sn.minSpool { // most records the file has were not changed since
		return false
	}
	e, ok := sn.spool.Get(&ovSpool{seq: seq})
	return ok && e.jseq > sn.applied
}

// overlayIndex returns the overlay's entries of index bucket id with keys
// from start (nil: the first), in order, one at a time (a scan that stops
// early reads little of a large overlay); stop releases it.
func (sn *snapshot) overlayIndex(id byte, start []byte) (next func() (ovIndex, bool), stop func()) {
	var from ovIndex
	from.bucket = id
	copy(from.key[:], start)
	return iter.Pull(func(yield func(ovIndex) bool) {
		sn.index.AscendGreaterOrEqual(from, func(e ovIndex) bool {
			if e.bucket != id {
				return false
			}
			return e.jseq <= sn.applied || yield(e)
		})
	})
}

// ascendIndex calls fn for the entries of index bucket id, the file's and
// the overlay's merged, in key order from start (nil: the first), until fn
// returns false.
func (sn *snapshot) ascendIndex(id byte, start []byte, fn func(k, v []byte) bool) {
	next, stop := sn.overlayIndex(id, start)
	defer stop()
	e, ok := next()
	c := sn.tx.Bucket(indexBucket(id)).Cursor()
	var k, v []byte
	if start != nil {
		k, v = c.Seek(start)
	} else {
		k, v = c.First()
	}
	for {
		for k != nil && (len(k) != 16 || sn.shadowed(binary.BigEndian.Uint64(k[8:]))) {
			k, v = c.Next()
		}
		switch {
		case k == nil && !ok:
			return
		case k != nil && (!ok || bytes.Compare(k, e.key[:]) < 0):
			if !fn(k, v) {
				return
			}
			k, v = c.Next()
		default:
			if !fn(e.key[:], e.value) {
				return
			}
			e, ok = next()
		}
	}
}

// descendSpool calls fn for the spool records, the file's and the
// overlay's merged, from the highest seq below before (0: the newest)
// down, until fn returns false.
func (sn *snapshot) descendSpool(before uint64, fn func(seq uint64, v []byte) (bool, error)) error {
	var ov []*ovSpool
	visit := func(e *ovSpool) bool {
		if e.jseq > sn.applied && !e.deleted {
			ov = append(ov, e)
		}
		return true
	}
	if before > 0 {
		sn.spool.DescendLessOrEqual(&ovSpool{seq: before - 1}, visit)
	} else {
		sn.spool.Descend(visit)
	}
	c := sn.tx.Bucket(bucketSpool).Cursor()
	var k, v []byte
	if before > 0 {
		if k, _ = c.Seek(seqKey(before)); k != nil {
			k, v = c.Prev()
		} else {
			k, v = c.Last()
		}
	} else {
		k, v = c.Last()
	}
	for {
		for k != nil && (len(k) != 8 || (before > 0 && binary.BigEndian.Uint64(k) >= before) || sn.shadowed(binary.BigEndian.Uint64(k))) {
			k, v = c.Prev()
		}
		var seq uint64
		var val []byte
		switch {
		case k == nil && len(ov) == 0:
			return nil
		case k != nil && (len(ov) == 0 || binary.BigEndian.Uint64(k) > ov[0].seq):
			seq, val = binary.BigEndian.Uint64(k), v
			k, v = c.Prev()
		default:
			seq, val = ov[0].seq, ov[0].enc
			ov = ov[1:]
		}
		more, err := fn(seq, val)
		if err != nil || !more {
			return err
		}
	}
}

// recordsOf returns the records of the replay key digest d (a scan of the
// spool, with a cheap test of the raw meta first).
func (s *Ledger) recordsOf(d *digest) ([]*diskRecord, error) {
	needle := []byte(`"digest":"` + base64.StdEncoding.EncodeToString(d[:]) + `"`)
	var out []*diskRecord
	err := s.readSnapshot(func(sn *snapshot) error {
		return sn.descendSpool(0, func(seq uint64, v []byte) (bool, error) {
			meta, _, err := recordMeta(seq, v)
			if err != nil || !bytes.Contains(meta, needle) {
				return true, nil
			}
			rec, err := decodeRecord(seq, v, false)
			if err != nil {
				return false, err
			}
			out = append(out, rec)
			return true, nil
		})
	})
	slices.SortFunc(out, func(a, b *diskRecord) int { return cmp.Compare(a.ID, b.ID) })
	return out, err
}

// Get implements spool.Store.
func (s *Ledger) Get(_ context.Context, seq uint64) (rec spool.Record, ok bool, err error) {
	enc, _, ok, err := s.spoolOf(seq)
	if err != nil || !ok {
		return spool.Record{}, false, err
	}
	d, err := decodeRecord(seq, enc, true)
	if err != nil {
		return spool.Record{}, false, err
	}
	return *d.Record, true, nil
}

// List implements spool.Store: a walk of the spool from the newest record,
// each record's meta tested raw for the state and scope before it is
// decoded.
func (s *Ledger) List(_ context.Context, f spool.Filter, p spool.Page) ([]spool.Record, error) {
	var needles [][]byte
	if f.State != "" {
		needles = append(needles, []byte(`"state":"`+string(f.State)+`"`))
	}
	if f.Scope != "" {
		scope, _ := json.Marshal(f.Scope)
		needles = append(needles, append([]byte(`"scope":`), scope...))
	}
	text := rawText(f.Text)
	textID, _ := strconv.ParseUint(f.Text, 10, 64) // a search may be an event's number
	size := p.Size()
	var out []spool.Record
	err := s.readSnapshot(func(sn *snapshot) error {
		return sn.descendSpool(p.After, func(seq uint64, v []byte) (bool, error) {
			meta, _, err := recordMeta(seq, v)
			if err != nil {
				return false, err
			}
			for _, n := range needles {
				if !bytes.Contains(meta, n) {
					return true, nil
				}
			}
			if text != nil && seq != textID && !containsFold(meta, text) {
				return true, nil
			}
			d, err := decodeRecord(seq, v, false)
			if err != nil {
				return false, err
			}
			if f.Match(d.Record) {
				d.Header, d.History = nil, nil
				out = append(out, *d.Record)
			}
			return len(out) < size, nil
		})
	})
	return out, err
}

// rawText is the lower-case form of a search text (spool.Filter.Text) to
// look for in a record's raw meta before decoding it, nil when the text is
// one that JSON may write otherwise (escaped characters, non-ASCII): then
// every record is decoded and matched.
func rawText(text string) []byte {
	if text == "" {
		return nil
	}
	for _, c := range []byte(text) {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return nil
		}
	}
	return bytes.ToLower([]byte(text))
}

// containsFold says whether b contains lower (in lower case), ignoring
// ASCII case.
func containsFold(b, lower []byte) bool {
	n := len(lower)
	first, upper := lower[0], lower[0]
	if 'a' <= first && first <= 'z' {
		upper = first - ('a' - 'A')
	}
	for i := 0; i+n <= len(b); i++ {
		// Skip to the next byte that can start a match.
		k := bytes.IndexByte(b[i:len(b)-n+1], first)
		if upper != first {
			if u := bytes.IndexByte(b[i:len(b)-n+1], upper); u >= 0 && (k < 0 || u < k) {
				k = u
			}
		}
		if k < 0 {
			return false
		}
		i += k
		j := 1
		for ; j < n; j++ {
			c := b[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}

// stateIndex is the index bucket id of a state.
func stateIndex(state spool.State) byte {
	switch state {
	case spool.Dead:
		return idxDead
	case spool.Discarded:
		return idxDiscarded
	}
	return idxDue
}

// IDs implements spool.Store, from the indexes only.
func (s *Ledger) IDs(_ context.Context, state spool.State, scope string) ([]uint64, error) {
	var out []uint64
	id := stateIndex(state)
	bucket := indexBucket(id)
	err := s.readSnapshot(func(sn *snapshot) error {
		sn.ascendIndex(id, nil, func(k, v []byte) bool {
			if scope == "" || indexScope(bucket, v) == scope {
				out = append(out, binary.BigEndian.Uint64(k[8:]))
			}
			return true
		})
		return nil
	})
	return out, err
}

// Lease implements spool.Store: it walks the due index in order (earliest
// first), at most maxLeaseScan entries, going on where the last walk
// stopped at that bound. The openings are not needed: offer says which
// events the worker takes, and the others stay where they are.
func (s *Ledger) Lease(_ context.Context, now time.Time, _ []spool.Opening, offer func(spool.Due) spool.Verdict) (next time.Time, err error) {
	st := &s.spool
	st.mu.Lock()
	if !st.anyLeasable() { // every due event is of a paused scope: Resume wakes the worker
		st.mu.Unlock()
		return time.Time{}, nil
	}
	cursor := st.cursor
	st.cursor = nil
	st.mu.Unlock()
	var stopAt []byte
	err = s.readSnapshot(func(sn *snapshot) error {
		scanned := 0
		sn.ascendIndex(idxDue, cursor, func(k, v []byte) bool {
			if len(k) != 16 || len(v) < 8 {
				return true
			}
			// What decides a skip is read without allocating.
			if at := time.Unix(0, int64(binary.BigEndian.Uint64(k))); at.After(now) {
				next = at
				return false
			}
			if scanned++; scanned > maxLeaseScan {
				stopAt = append([]byte(nil), k...)
				next = now.Add(leaseBackoff)
				return false
			}
			scope, _, _ := bytes.Cut(v[8:], []byte{0})
			st.mu.Lock()
			skip := st.leased[binary.BigEndian.Uint64(k[8:])] || st.paused[string(scope)]
			st.mu.Unlock()
			if skip {
				return true
			}
			d, _ := parseDue(k, v)
			switch offer(d) {
			case spool.Take:
				st.mu.Lock()
				st.leased[d.ID] = true
				st.mu.Unlock()
			case spool.Stop:
				return false
			}
			return true
		})
		return nil
	})
	if stopAt != nil {
		st.mu.Lock()
		st.cursor = stopAt
		st.mu.Unlock()
	}
	return next, err
}

// Counts implements spool.Store, from the indexes only.
func (s *Ledger) Counts(context.Context) (map[string]spool.Counts, error) {
	out := map[string]spool.Counts{}
	err := s.readSnapshot(func(sn *snapshot) error {
		sn.ascendIndex(idxDue, nil, func(k, v []byte) bool {
			d, ok := parseDue(k, v)
			if !ok {
				return true
			}
			sc := out[d.Scope]
			sc.Pending++
			if sc.PendingByTarget == nil {
				sc.PendingByTarget = map[string]int{}
			}
			sc.PendingByTarget[d.Target]++
			if sc.OldestPending.IsZero() || d.ReceivedAt.Before(sc.OldestPending) {
				sc.OldestPending = d.ReceivedAt
			}
			out[d.Scope] = sc
			return true
		})
		for _, id := range []byte{idxDead, idxDiscarded} {
			sn.ascendIndex(id, nil, func(_, v []byte) bool {
				sc := out[string(v)]
				if id == idxDead {
					sc.Dead++
				} else {
					sc.Discarded++
				}
				out[string(v)] = sc
				return true
			})
		}
		return nil
	})
	return out, err
}

// SetPaused implements spool.Store: the state is kept in the ledger's meta
// bucket, so it survives restarts.
func (s *Ledger) SetPaused(ctx context.Context, scope string, paused bool) error {
	return s.submit(ctx, &jop{class: classChange, eval: func(*view) ([]mutation, error) {
		return []mutation{{kind: mPause, scope: scope, paused: paused}}, nil
	}})
}

// Paused implements spool.Store.
func (s *Ledger) Paused(context.Context) (map[string]bool, error) {
	s.spool.mu.Lock()
	defer s.spool.mu.Unlock()
	out := make(map[string]bool, len(s.spool.paused))
	for scope := range s.spool.paused {
		out[scope] = true
	}
	return out, nil
}

// readPaused reads the paused scopes from the meta bucket.
func (s *Ledger) readPaused() (map[string]bool, error) {
	out := map[string]bool{}
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMeta).Cursor()
		prefix := []byte(pausePrefix)
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			out[string(k[len(prefix):])] = true
		}
		return nil
	})
	return out, err
}

// purgeDiscarded deletes up to sweepBatch discarded records whose purge
// time has come (and that the journal has not changed since), and returns
// how many it deleted.
func (s *Ledger) purgeDiscarded(ctx context.Context) (int, error) {
	_ = s.checkpointAll() // what the journal holds goes to the file first
	now := s.now()
	var n int
	op := &writeOp{fn: func(tx *bolt.Tx) error {
		n = 0
		idx, sp := tx.Bucket(bucketDiscarded), tx.Bucket(bucketSpool)
		var keys [][]byte
		c := idx.Cursor()
		for k, _ := c.First(); k != nil && len(keys) < sweepBatch; k, _ = c.Next() {
			if len(k) != 16 || time.Unix(0, int64(binary.BigEndian.Uint64(k))).After(now) {
				break
			}
			keys = append(keys, k)
		}
		for _, k := range keys {
			if s.spoolInOverlay(binary.BigEndian.Uint64(k[8:])) {
				continue
			}
			if err := idx.Delete(k); err != nil {
				return err
			}
			if err := sp.Delete(k[8:]); err != nil {
				return err
			}
			n++
		}
		return nil
	}}
	if err := s.queue(ctx, op); err != nil {
		return 0, err
	}
	return n, nil
}

// spoolInOverlay says whether the journal holds a change of the spool
// record seq not yet applied.
func (s *Ledger) spoolInOverlay(seq uint64) bool {
	s.ov.mu.RLock()
	defer s.ov.mu.RUnlock()
	_, ok := s.ov.getSpool(seq)
	return ok
}

// view is db.View with a panic (a corrupt page) turned into an error.
func (s *Ledger) view(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: ledger %s: read failed: %v", dedupe.ErrUnavailable, s.path, r)
		}
	}()
	return s.db.View(fn)
}
