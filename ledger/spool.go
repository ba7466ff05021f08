package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

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

// putRecord stores d and its index entry.
func putRecord(tx *bolt.Tx, d *diskRecord) error {
	enc, err := encodeRecord(d)
	if err != nil {
		return err
	}
	bucket, k, v := index(d)
	if err := tx.Bucket(bucket).Put(k, v); err != nil {
		return err
	}
	return tx.Bucket(bucketSpool).Put(seqKey(d.ID), enc)
}

// deleteIndex deletes the index entry of d.
func deleteIndex(tx *bolt.Tx, d *diskRecord) error {
	bucket, k, _ := index(d)
	return tx.Bucket(bucket).Delete(k)
}

// Ingest implements spool.Store: it stores rec and marks key accepted until
// rec.ReceivedAt + acceptFor in one transaction, unless key is already
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
	accepted := replayRecord{state: recordAccepted, expires: rec.ReceivedAt.Add(acceptFor).UnixNano()}
	var added bool
	op := &writeOp{
		fn: func(tx *bolt.Tx) error {
			duplicate, added = false, false
			if r, ok := getReplay(tx, &dg); ok && r.remembered(s.now().UnixNano()) {
				duplicate = true
				return nil
			}
			sp, due := tx.Bucket(bucketSpool), tx.Bucket(bucketDue)
			sp.FillPercent, due.FillPercent = 1, 1 // appended to, mostly
			seq, err := sp.NextSequence()
			if err != nil {
				return err
			}
			rec.ID = seq
			if err := putRecord(tx, d); err != nil {
				return err
			}
			added, err = putReplay(tx, &dg, accepted)
			return err
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
	if err := s.queue(ctx, op); err != nil {
		return false, err
	}
	return duplicate, nil
}

// dropLease forgets the in-flight claim of d, if any.
func (s *Ledger) dropLease(d *digest) {
	sh := s.shard(d)
	sh.mu.Lock()
	if _, ok := sh.m[*d]; ok {
		delete(sh.m, *d)
		s.used.Add(-1)
	}
	sh.mu.Unlock()
}

// spoolUpdate runs fn on the record seq in a write transaction through the
// writer; fn changes the record in place and returns whether to keep it
// (false: delete it). A missing record is spool.ErrNotFound; when leased is
// set, a leased record is spool.ErrInFlight and nothing is written.
func (s *Ledger) spoolUpdate(ctx context.Context, seq uint64, refuseLeased bool, fn func(tx *bolt.Tx, d *diskRecord) (keep bool, err error)) error {
	if refuseLeased && s.isLeased(seq) {
		return spool.ErrInFlight
	}
	var missing bool
	op := &writeOp{fn: func(tx *bolt.Tx) error {
		sp := tx.Bucket(bucketSpool)
		v := sp.Get(seqKey(seq))
		missing = v == nil
		if missing {
			return nil
		}
		d, err := decodeRecord(seq, v, true)
		if err != nil {
			return err
		}
		if err := deleteIndex(tx, d); err != nil {
			return err
		}
		keep, err := fn(tx, d)
		if err != nil {
			return err
		}
		if !keep {
			return sp.Delete(seqKey(seq))
		}
		return putRecord(tx, d)
	}}
	if err := s.queue(ctx, op); err != nil {
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
func (s *Ledger) finish(ctx context.Context, seq uint64, fn func(tx *bolt.Tx, d *diskRecord) (bool, error)) error {
	defer s.Abandon(ctx, seq)
	return s.spoolUpdate(ctx, seq, false, fn)
}

// Delivered implements spool.Store.
func (s *Ledger) Delivered(ctx context.Context, seq uint64, window time.Duration) error {
	var added bool
	err := s.finish(ctx, seq, func(tx *bolt.Tx, d *diskRecord) (bool, error) {
		added = false
		if len(d.Digest) != sha256.Size {
			return false, nil
		}
		var dg digest
		copy(dg[:], d.Digest)
		var err error
		added, err = putReplay(tx, &dg, replayRecord{state: recordDelivered, expires: s.now().Add(window).UnixNano()})
		return false, err
	})
	if err == nil && added {
		s.used.Add(1)
	}
	return err
}

// Failed implements spool.Store.
func (s *Ledger) Failed(ctx context.Context, rec *spool.Record) error {
	return s.finish(ctx, rec.ID, func(_ *bolt.Tx, d *diskRecord) (bool, error) {
		if d.State == spool.Pending {
			d.Attempts, d.LastError, d.NextAt, d.History = rec.Attempts, rec.LastError, rec.NextAt, rec.History
		}
		return true, nil
	})
}

// Die implements spool.Store.
func (s *Ledger) Die(ctx context.Context, rec *spool.Record) (spool.Record, error) {
	var out spool.Record
	err := s.finish(ctx, rec.ID, func(_ *bolt.Tx, d *diskRecord) (bool, error) {
		d.Attempts, d.LastError, d.History = rec.Attempts, rec.LastError, rec.History
		if d.State != spool.Dead {
			d.State, d.DiedAt, d.NextAt = spool.Dead, s.now(), time.Time{}
		}
		out = *d.Record
		out.Body = nil
		return true, nil
	})
	return out, err
}

// Retry implements spool.Store. The key stays accepted for AcceptFor from
// now (if that is later than it was), so that a provider's retry stays a
// duplicate while the event may still be delivered.
func (s *Ledger) Retry(ctx context.Context, seq uint64) error {
	var added bool
	err := s.spoolUpdate(ctx, seq, true, func(tx *bolt.Tx, d *diskRecord) (bool, error) {
		added = false
		if d.State != spool.Pending {
			d.Attempts = 0
		}
		t := s.now()
		d.State, d.DiedAt, d.NextAt, d.RetriedAt = spool.Pending, time.Time{}, t, t
		d.DiscardedAt, d.DiscardedBy, d.PurgeAt = time.Time{}, "", time.Time{}
		if len(d.Digest) != sha256.Size || d.AcceptFor <= 0 {
			return true, nil
		}
		var dg digest
		copy(dg[:], d.Digest)
		exp := t.Add(d.AcceptFor).UnixNano()
		if r, ok := getReplay(tx, &dg); ok && r.expires >= exp {
			return true, nil
		}
		var err error
		added, err = putReplay(tx, &dg, replayRecord{state: recordAccepted, expires: exp})
		return true, err
	})
	if err == nil && added {
		s.used.Add(1)
	}
	return err
}

// Discard implements spool.Store: the record stays, discarded, until its
// replay key is forgotten (the key stays accepted, so a provider's retry of
// it is a duplicate), then the sweep purges it.
func (s *Ledger) Discard(ctx context.Context, seq uint64, by string) (spool.Record, error) {
	var out spool.Record
	err := s.spoolUpdate(ctx, seq, true, func(tx *bolt.Tx, d *diskRecord) (bool, error) {
		t := s.now()
		d.State, d.NextAt, d.DiscardedAt, d.DiscardedBy = spool.Discarded, time.Time{}, t, by
		d.PurgeAt = t
		if len(d.Digest) == sha256.Size {
			var dg digest
			copy(dg[:], d.Digest)
			if r, ok := getReplay(tx, &dg); ok && r.expires > t.UnixNano() {
				d.PurgeAt = time.Unix(0, r.expires)
			}
		}
		out = *d.Record
		out.Body = nil
		return true, nil
	})
	return out, err
}

// Forget implements spool.Store: it deletes the replay record of key and a
// discarded event of it; a pending or dead event of it is an error (retry
// or discard it first: forgetting its id would let a resend be spooled
// twice).
func (s *Ledger) Forget(ctx context.Context, key string) (bool, error) {
	dg := digest(sha256.Sum256([]byte(key)))
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
	var deleted bool
	op := &writeOp{fn: func(tx *bolt.Tx) error {
		for _, seq := range purge {
			if v := tx.Bucket(bucketSpool).Get(seqKey(seq)); v != nil {
				d, err := decodeRecord(seq, v, false)
				if err != nil {
					return err
				}
				if err := deleteIndex(tx, d); err != nil {
					return err
				}
				if err := tx.Bucket(bucketSpool).Delete(seqKey(seq)); err != nil {
					return err
				}
			}
		}
		var err error
		deleted, err = deleteReplay(tx, &dg)
		return err
	}}
	if err := s.queue(ctx, op); err != nil {
		return false, err
	}
	if deleted {
		s.used.Add(-1)
	}
	return deleted, nil
}

// ErrSpooled is the error of Forget for a key whose event is spooled.
var ErrSpooled = errors.New("cannot forget the id of an event the spool holds")

// recordsOf returns the records of the replay key digest d (a scan of the
// spool bucket, with a cheap test of the raw meta first).
func (s *Ledger) recordsOf(d *digest) ([]*diskRecord, error) {
	needle := []byte(`"digest":"` + base64.StdEncoding.EncodeToString(d[:]) + `"`)
	var out []*diskRecord
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSpool).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			meta, _, err := recordMeta(seq, v)
			if err != nil || !bytes.Contains(meta, needle) {
				continue
			}
			rec, err := decodeRecord(seq, v, false)
			if err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// Get implements spool.Store.
func (s *Ledger) Get(_ context.Context, seq uint64) (rec spool.Record, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSpool).Get(seqKey(seq))
		if v == nil {
			return nil
		}
		d, err := decodeRecord(seq, v, true)
		if err != nil {
			return err
		}
		rec, ok = *d.Record, true
		return nil
	})
	return rec, ok, err
}

// List implements spool.Store: a walk of the spool bucket from the newest
// record, each record's meta tested raw for the state and scope before it
// is decoded.
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
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSpool).Cursor()
		k, v := c.Last()
		if p.After > 0 {
			if sk, _ := c.Seek(seqKey(p.After)); sk != nil {
				k, v = c.Prev() // the record before the cursor's (or its place)
			} else {
				k, v = c.Last() // the cursor is past every record
			}
		}
	records:
		for ; k != nil && len(out) < size; k, v = c.Prev() {
			if len(k) != 8 {
				continue
			}
			seq := binary.BigEndian.Uint64(k)
			if p.After > 0 && seq >= p.After {
				continue
			}
			meta, _, err := recordMeta(seq, v)
			if err != nil {
				return err
			}
			for _, n := range needles {
				if !bytes.Contains(meta, n) {
					continue records
				}
			}
			if text != nil && seq != textID && !containsFold(meta, text) {
				continue
			}
			d, err := decodeRecord(seq, v, false)
			if err != nil {
				return err
			}
			if !f.Match(d.Record) {
				continue
			}
			d.Header, d.History = nil, nil
			out = append(out, *d.Record)
		}
		return nil
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

// stateIndex is the index bucket of a state.
func stateIndex(state spool.State) []byte {
	switch state {
	case spool.Dead:
		return bucketDead
	case spool.Discarded:
		return bucketDiscarded
	}
	return bucketDue
}

// IDs implements spool.Store, from the indexes only.
func (s *Ledger) IDs(_ context.Context, state spool.State, scope string) ([]uint64, error) {
	var out []uint64
	bucket := stateIndex(state)
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) == 16 && (scope == "" || indexScope(bucket, v) == scope) {
				out = append(out, binary.BigEndian.Uint64(k[8:]))
			}
		}
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
	cursor := st.cursor
	st.cursor = nil
	st.mu.Unlock()
	var stopAt []byte
	err = s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDue).Cursor()
		k, v := c.First()
		if cursor != nil {
			k, v = c.Seek(cursor)
		}
		for scanned := 0; k != nil; k, v = c.Next() {
			d, ok := parseDue(k, v)
			if !ok {
				continue
			}
			if d.NextAt.After(now) {
				next = d.NextAt
				return nil
			}
			if scanned++; scanned > maxLeaseScan {
				stopAt = append([]byte(nil), k...)
				next = now.Add(leaseBackoff)
				return nil
			}
			st.mu.Lock()
			skip := st.leased[d.ID] || st.paused[d.Scope]
			st.mu.Unlock()
			if skip {
				continue
			}
			switch offer(d) {
			case spool.Take:
				st.mu.Lock()
				st.leased[d.ID] = true
				st.mu.Unlock()
			case spool.Stop:
				return nil
			}
		}
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
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDue).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			d, ok := parseDue(k, v)
			if !ok {
				continue
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
		}
		for _, b := range [][]byte{bucketDead, bucketDiscarded} {
			c = tx.Bucket(b).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				sc := out[string(v)]
				if bytes.Equal(b, bucketDead) {
					sc.Dead++
				} else {
					sc.Discarded++
				}
				out[string(v)] = sc
			}
		}
		return nil
	})
	return out, err
}

// SetPaused implements spool.Store: the state is kept in the ledger's meta
// bucket, so it survives restarts.
func (s *Ledger) SetPaused(ctx context.Context, scope string, paused bool) error {
	key := []byte(pausePrefix + scope)
	err := s.queue(ctx, &writeOp{fn: func(tx *bolt.Tx) error {
		if paused {
			return tx.Bucket(bucketMeta).Put(key, nil)
		}
		return tx.Bucket(bucketMeta).Delete(key)
	}})
	if err != nil {
		return err
	}
	s.spool.mu.Lock()
	if paused {
		s.spool.paused[scope] = true
	} else {
		delete(s.spool.paused, scope)
	}
	s.spool.mu.Unlock()
	return nil
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
// time has come, and returns how many it deleted.
func (s *Ledger) purgeDiscarded(ctx context.Context) (int, error) {
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

// view is db.View with a panic (a corrupt page) turned into an error.
func (s *Ledger) view(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: ledger %s: read failed: %v", dedupe.ErrUnavailable, s.path, r)
		}
	}()
	return s.db.View(fn)
}
