package dedupe

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The spool: events acknowledged once on disk and delivered later, with
// retries, by a SpoolWorker. It lives in the ledger file beside the replay
// records, so that storing an event and marking its id accepted is one
// transaction (one group-committed fsync).
//
// Buckets:
//
//	spool  seq (8 bytes, big endian)  → record: uvarint(len(meta)) ‖ meta (JSON) ‖ body
//	due    next_at (unix ns) ‖ seq    → received_at (unix ns, 8 bytes) ‖ scope
//	dead   died_at (unix ns) ‖ seq    → scope
//	meta   "pause/" + scope           → empty: the scope's deliveries are held
//
// The index values carry the scope (and, for due, the received time) so that
// the worker and the gauges read the indexes without decoding records, and
// a listing decodes a record's meta without its body.
var (
	bucketSpool = []byte("spool")
	bucketDue   = []byte("due")
	bucketDead  = []byte("dead")
	pausePrefix = "pause/"
)

// States of a spooled event.
const (
	// SpoolPending is an event waiting for its next delivery attempt.
	SpoolPending = "pending"
	// SpoolDead is an event that ran out of attempts or age, kept until an
	// operator retries or discards it.
	SpoolDead = "dead"
)

// SpoolRecord is one spooled event.
type SpoolRecord struct {
	// Seq is the event's number in its ledger (bbolt's sequence), unique
	// per ledger file; set by Spool.
	Seq uint64 `json:"-"`
	// Scope and Provider are the handler's replay scope and scheme.
	Scope    string `json:"scope"`
	Provider string `json:"provider"`
	// EventID is the provider's id of the event (sent to the backend as
	// Webhook-Guard-Event-Id), EventType its type.
	EventID   string `json:"event_id"`
	EventType string `json:"event_type,omitempty"`
	// State is SpoolPending or SpoolDead.
	State string `json:"state"`
	// Attempts counts the delivery attempts made (since the last retry by
	// an operator, which resets it).
	Attempts int `json:"attempts"`
	// ReceivedAt is when the event was spooled; NextAt when it is due
	// (pending); DiedAt when it became dead.
	ReceivedAt time.Time `json:"received_at"`
	NextAt     time.Time `json:"next_at,omitzero"`
	DiedAt     time.Time `json:"died_at,omitzero"`
	// RetriedAt is when an operator last retried the event; max_age then
	// counts from it rather than from ReceivedAt.
	RetriedAt time.Time `json:"retried_at,omitzero"`
	// LastError says why the last attempt failed.
	LastError string `json:"last_error,omitempty"`
	// The original request: method, path, raw query, client IP and its
	// headers (without hop-by-hop and credential headers: the caller
	// removes them before Spool).
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	Query    string              `json:"query,omitempty"`
	ClientIP string              `json:"client_ip,omitempty"`
	Header   map[string][]string `json:"header,omitempty"`
	// Body is the exact body received; empty in listings.
	Body []byte `json:"-"`
	// Digest is the SHA-256 of the replay key, to mark it delivered.
	Digest []byte `json:"digest"`
	// AcceptFor is how long the key stays accepted from ReceivedAt (or
	// from an operator's retry).
	AcceptFor time.Duration `json:"accept_for,omitempty"`
}

// AgeFrom is when the event's max_age starts: when it was received, or
// last retried by an operator.
func (r *SpoolRecord) AgeFrom() time.Time {
	if r.RetriedAt.After(r.ReceivedAt) {
		return r.RetriedAt
	}
	return r.ReceivedAt
}

// ErrNoSpool is the error of a spool operation on an event the ledger does
// not hold (delivered, discarded, never spooled).
var ErrNoSpool = errors.New("no such spooled event")

// encodeRecord is the stored form of rec.
func encodeRecord(rec *SpoolRecord) ([]byte, error) {
	meta, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, binary.MaxVarintLen64+len(meta)+len(rec.Body))
	out = binary.AppendUvarint(out, uint64(len(meta)))
	out = append(out, meta...)
	return append(out, rec.Body...), nil
}

// decodeRecord reads a stored record; the body is copied only when
// withBody (v may be bbolt's memory, valid only in its transaction).
func decodeRecord(seq uint64, v []byte, withBody bool) (SpoolRecord, error) {
	var rec SpoolRecord
	n, k := binary.Uvarint(v)
	if k <= 0 || uint64(len(v)-k) < n {
		return rec, fmt.Errorf("spool record %d: corrupt (bad length)", seq)
	}
	if err := json.Unmarshal(v[k:k+int(n)], &rec); err != nil {
		return rec, fmt.Errorf("spool record %d: corrupt: %v", seq, err)
	}
	rec.Seq = seq
	if withBody {
		rec.Body = append([]byte{}, v[k+int(n):]...)
	}
	return rec, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// indexKey is the key of the due and dead indexes: t ‖ seq.
func indexKey(t time.Time, seq uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(t.UnixNano()))
	return binary.BigEndian.AppendUint64(k, seq)
}

func dueValue(rec *SpoolRecord) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(rec.Scope)), uint64(rec.ReceivedAt.UnixNano()))
	return append(v, rec.Scope...)
}

// spoolBuckets creates the spool's buckets in a ledger that predates them.
func spoolBuckets(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketSpool, bucketDue, bucketDead} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// Spool stores rec (with its Body) and marks key accepted until
// rec.ReceivedAt + acceptFor, in one transaction, unless key is already
// remembered (delivered or accepted, window not ended): then it writes
// nothing and returns duplicate true. When it returns nil the record is
// durable (fsynced). A failed write leaves nothing: the error wraps
// ErrDiskFull (disk or MaxSize full) or ErrUnavailable. The in-flight claim
// of key, if any, is let go once the record is durable (a claim meanwhile
// sees the event in flight, after it accepted).
func (s *File) Spool(ctx context.Context, key string, rec *SpoolRecord, acceptFor time.Duration) (duplicate bool, err error) {
	if acceptFor <= 0 {
		return false, fmt.Errorf("dedupe: accept window must be positive, got %v", acceptFor)
	}
	d := digest(sha256.Sum256([]byte(key)))
	rec.Digest = d[:]
	rec.AcceptFor = acceptFor
	rec.State = SpoolPending
	if rec.NextAt.IsZero() {
		rec.NextAt = rec.ReceivedAt
	}
	exp := rec.ReceivedAt.Add(acceptFor).UnixNano()
	val := make([]byte, 9)
	val[0] = recordAccepted
	binary.BigEndian.PutUint64(val[1:], uint64(exp))
	var existed bool
	op := &writeOp{
		fn: func(tx *bolt.Tx) error {
			duplicate, existed = false, false
			replay, expiry := tx.Bucket(bucketReplay), tx.Bucket(bucketExpiry)
			old := replay.Get(d[:])
			existed = old != nil
			if len(old) == 9 && (old[0] == recordDelivered || old[0] == recordAccepted) &&
				s.now().UnixNano() < int64(binary.BigEndian.Uint64(old[1:])) {
				duplicate = true
				return nil
			}
			spool, due := tx.Bucket(bucketSpool), tx.Bucket(bucketDue)
			spool.FillPercent, due.FillPercent = 1, 1 // appended to, mostly
			seq, err := spool.NextSequence()
			if err != nil {
				return err
			}
			rec.Seq = seq
			enc, err := encodeRecord(rec)
			if err != nil {
				return err
			}
			if err := spool.Put(seqKey(seq), enc); err != nil {
				return err
			}
			if err := due.Put(indexKey(rec.NextAt, seq), dueValue(rec)); err != nil {
				return err
			}
			if len(old) == 9 {
				if err := expiry.Delete(expiryKey(int64(binary.BigEndian.Uint64(old[1:])), &d)); err != nil {
					return err
				}
			}
			if err := replay.Put(d[:], val); err != nil {
				return err
			}
			return expiry.Put(expiryKey(exp, &d), nil)
		},
		after: func(err error) {
			if err != nil || duplicate {
				return
			}
			if !existed {
				s.used.Add(1)
			}
			sh := s.shard(&d)
			sh.mu.Lock()
			if _, ok := sh.m[d]; ok {
				delete(sh.m, d)
				s.used.Add(-1)
			}
			sh.mu.Unlock()
		},
	}
	if err := s.queue(ctx, op); err != nil {
		return false, err
	}
	if wake := s.spooled.Load(); wake != nil && !duplicate {
		(*wake)()
	}
	return duplicate, nil
}

// spoolUpdate runs fn on the record seq in a write transaction through the
// writer; fn returns the record to store (nil: delete it). A missing
// record is ErrNoSpool.
func (s *File) spoolUpdate(ctx context.Context, seq uint64, fn func(tx *bolt.Tx, rec *SpoolRecord) (*SpoolRecord, error)) error {
	var missing bool
	op := &writeOp{fn: func(tx *bolt.Tx) error {
		spool := tx.Bucket(bucketSpool)
		v := spool.Get(seqKey(seq))
		missing = v == nil
		if missing {
			return nil
		}
		rec, err := decodeRecord(seq, v, true)
		if err != nil {
			return err
		}
		old := rec
		out, err := fn(tx, &rec)
		if err != nil {
			return err
		}
		// The index entries of the record as it was.
		if old.State == SpoolDead {
			err = tx.Bucket(bucketDead).Delete(indexKey(old.DiedAt, seq))
		} else {
			err = tx.Bucket(bucketDue).Delete(indexKey(old.NextAt, seq))
		}
		if err != nil {
			return err
		}
		if out == nil {
			return spool.Delete(seqKey(seq))
		}
		if out.State == SpoolDead {
			err = tx.Bucket(bucketDead).Put(indexKey(out.DiedAt, seq), []byte(out.Scope))
		} else {
			err = tx.Bucket(bucketDue).Put(indexKey(out.NextAt, seq), dueValue(out))
		}
		if err != nil {
			return err
		}
		enc, err := encodeRecord(out)
		if err != nil {
			return err
		}
		return spool.Put(seqKey(seq), enc)
	}}
	if err := s.queue(ctx, op); err != nil {
		return err
	}
	if missing {
		return ErrNoSpool
	}
	return nil
}

// SpoolDelivered deletes the record seq, whose delivery the backend
// accepted, and marks its replay key delivered until now + window, in one
// transaction. A record gone meanwhile (discarded) is ErrNoSpool.
func (s *File) SpoolDelivered(ctx context.Context, seq uint64, window time.Duration) error {
	var d digest
	var existed bool
	err := s.spoolUpdate(ctx, seq, func(tx *bolt.Tx, rec *SpoolRecord) (*SpoolRecord, error) {
		existed = false
		if len(rec.Digest) != len(d) {
			return nil, nil
		}
		copy(d[:], rec.Digest)
		replay, expiry := tx.Bucket(bucketReplay), tx.Bucket(bucketExpiry)
		old := replay.Get(d[:])
		existed = old != nil
		if len(old) == 9 {
			if err := expiry.Delete(expiryKey(int64(binary.BigEndian.Uint64(old[1:])), &d)); err != nil {
				return nil, err
			}
		}
		exp := s.now().Add(window).UnixNano()
		val := make([]byte, 9)
		val[0] = recordDelivered
		binary.BigEndian.PutUint64(val[1:], uint64(exp))
		if err := replay.Put(d[:], val); err != nil {
			return nil, err
		}
		return nil, expiry.Put(expiryKey(exp, &d), nil)
	})
	if err == nil && !existed {
		s.used.Add(1)
	}
	return err
}

// SpoolFailed records a failed attempt of seq: attempts made, why, and when
// the next is due.
func (s *File) SpoolFailed(ctx context.Context, seq uint64, attempts int, lastError string, next time.Time) error {
	return s.spoolUpdate(ctx, seq, func(_ *bolt.Tx, rec *SpoolRecord) (*SpoolRecord, error) {
		if rec.State == SpoolDead {
			return rec, nil
		}
		rec.Attempts, rec.LastError, rec.NextAt = attempts, lastError, next
		return rec, nil
	})
}

// SpoolDie makes seq dead: kept, out of the due index, until an operator
// retries or discards it.
func (s *File) SpoolDie(ctx context.Context, seq uint64, attempts int, lastError string) (SpoolRecord, error) {
	var out SpoolRecord
	err := s.spoolUpdate(ctx, seq, func(_ *bolt.Tx, rec *SpoolRecord) (*SpoolRecord, error) {
		rec.Attempts, rec.LastError = attempts, lastError
		if rec.State != SpoolDead {
			rec.State, rec.DiedAt, rec.NextAt = SpoolDead, s.now(), time.Time{}
		}
		out = *rec
		out.Body = nil
		return rec, nil
	})
	return out, err
}

// SpoolRetry makes seq due now: a dead event pending again with its
// attempts reset (so max_attempts applies afresh; received_at is kept), a
// pending one due at once. A missing record is ErrNoSpool.
//
// The key stays accepted for AcceptFor from now (if that is later than it
// was), so that a provider's retry stays a duplicate while the event may
// still be delivered.
func (s *File) SpoolRetry(ctx context.Context, seq uint64) error {
	var added bool
	err := s.spoolUpdate(ctx, seq, func(tx *bolt.Tx, rec *SpoolRecord) (*SpoolRecord, error) {
		added = false
		if rec.State == SpoolDead {
			rec.Attempts = 0
		}
		t := s.now()
		rec.State, rec.DiedAt, rec.NextAt, rec.RetriedAt = SpoolPending, time.Time{}, t, t
		if len(rec.Digest) == sha256.Size && rec.AcceptFor > 0 {
			var d digest
			copy(d[:], rec.Digest)
			exp := t.Add(rec.AcceptFor).UnixNano()
			replay, expiry := tx.Bucket(bucketReplay), tx.Bucket(bucketExpiry)
			old := replay.Get(d[:])
			if len(old) == 9 && int64(binary.BigEndian.Uint64(old[1:])) >= exp {
				return rec, nil
			}
			if len(old) == 9 {
				if err := expiry.Delete(expiryKey(int64(binary.BigEndian.Uint64(old[1:])), &d)); err != nil {
					return nil, err
				}
			}
			added = old == nil
			val := make([]byte, 9)
			val[0] = recordAccepted
			binary.BigEndian.PutUint64(val[1:], uint64(exp))
			if err := replay.Put(d[:], val); err != nil {
				return nil, err
			}
			if err := expiry.Put(expiryKey(exp, &d), nil); err != nil {
				return nil, err
			}
		}
		return rec, nil
	})
	if err == nil && added {
		s.used.Add(1)
	}
	return err
}

// SpoolDiscard deletes seq and its index entries and returns it (without
// body). Its replay key stays accepted, so a provider's retry of it is a
// duplicate.
func (s *File) SpoolDiscard(ctx context.Context, seq uint64) (SpoolRecord, error) {
	var out SpoolRecord
	err := s.spoolUpdate(ctx, seq, func(_ *bolt.Tx, rec *SpoolRecord) (*SpoolRecord, error) {
		out = *rec
		out.Body = nil
		return nil, nil
	})
	return out, err
}

// SpoolGet returns the record seq with its body.
func (s *File) SpoolGet(seq uint64) (rec SpoolRecord, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSpool).Get(seqKey(seq))
		if v == nil {
			return nil
		}
		rec, err = decodeRecord(seq, v, true)
		ok = err == nil
		return err
	})
	return rec, ok, err
}

// SpoolList returns the records in state (SpoolPending, SpoolDead, or ""
// for both) and scope ("" for every scope), without bodies, pending ones
// in due order then dead ones in order of death.
func (s *File) SpoolList(state, scope string) ([]SpoolRecord, error) {
	var out []SpoolRecord
	err := s.view(func(tx *bolt.Tx) error {
		spool := tx.Bucket(bucketSpool)
		for _, idx := range []struct {
			state  string
			bucket []byte
		}{{SpoolPending, bucketDue}, {SpoolDead, bucketDead}} {
			if state != "" && state != idx.state {
				continue
			}
			c := tx.Bucket(idx.bucket).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 16 || scope != "" && indexScope(idx.state, v) != scope {
					continue
				}
				seq := binary.BigEndian.Uint64(k[8:])
				rv := spool.Get(seqKey(seq))
				if rv == nil {
					continue
				}
				rec, err := decodeRecord(seq, rv, false)
				if err != nil {
					return err
				}
				out = append(out, rec)
			}
		}
		return nil
	})
	return out, err
}

// indexScope is the scope in a value of the due or dead index.
func indexScope(state string, v []byte) string {
	if state == SpoolPending {
		if len(v) < 8 {
			return ""
		}
		return string(v[8:])
	}
	return string(v)
}

// SpoolSeqs returns the sequence numbers in state ("" for both) and scope
// ("" for every scope), from the indexes only.
func (s *File) SpoolSeqs(state, scope string) ([]uint64, error) {
	var out []uint64
	err := s.view(func(tx *bolt.Tx) error {
		for _, idx := range []struct {
			state  string
			bucket []byte
		}{{SpoolPending, bucketDue}, {SpoolDead, bucketDead}} {
			if state != "" && state != idx.state {
				continue
			}
			c := tx.Bucket(idx.bucket).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) == 16 && (scope == "" || indexScope(idx.state, v) == scope) {
					out = append(out, binary.BigEndian.Uint64(k[8:]))
				}
			}
		}
		return nil
	})
	return out, err
}

// SpoolDue is an entry of the due index.
type SpoolDue struct {
	Seq        uint64
	NextAt     time.Time
	ReceivedAt time.Time
	Scope      string
}

// spoolScan walks the due index in order (earliest first) and calls fn
// with each entry until fn returns false. It reads the index only.
func (s *File) spoolScan(fn func(SpoolDue) bool) error {
	return s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDue).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 16 || len(v) < 8 {
				continue
			}
			e := SpoolDue{
				Seq:        binary.BigEndian.Uint64(k[8:]),
				NextAt:     time.Unix(0, int64(binary.BigEndian.Uint64(k))),
				ReceivedAt: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
				Scope:      string(v[8:]),
			}
			if !fn(e) {
				return nil
			}
		}
		return nil
	})
}

// SpoolCounts is what the spool holds of one scope.
type SpoolCounts struct {
	Pending, Dead int
	// OldestPending is the received time of the oldest pending event.
	OldestPending time.Time
}

// SpoolCounts counts the events by scope, from the indexes only.
func (s *File) SpoolCounts() (map[string]SpoolCounts, error) {
	out := map[string]SpoolCounts{}
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDue).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) < 8 {
				continue
			}
			scope := string(v[8:])
			sc := out[scope]
			sc.Pending++
			if r := time.Unix(0, int64(binary.BigEndian.Uint64(v))); sc.OldestPending.IsZero() || r.Before(sc.OldestPending) {
				sc.OldestPending = r
			}
			out[scope] = sc
		}
		c = tx.Bucket(bucketDead).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			sc := out[string(v)]
			sc.Dead++
			out[string(v)] = sc
		}
		return nil
	})
	return out, err
}

// SpoolPause holds (paused) or releases the deliveries of scope; the state
// is kept in the ledger, so it survives restarts.
func (s *File) SpoolPause(ctx context.Context, scope string, paused bool) error {
	key := []byte(pausePrefix + scope)
	return s.queue(ctx, &writeOp{fn: func(tx *bolt.Tx) error {
		if paused {
			return tx.Bucket(bucketMeta).Put(key, nil)
		}
		return tx.Bucket(bucketMeta).Delete(key)
	}})
}

// SpoolPaused returns the scopes whose deliveries are held.
func (s *File) SpoolPaused() (map[string]bool, error) {
	out := map[string]bool{}
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMeta).Cursor()
		prefix := []byte(pausePrefix)
		for k, _ := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == pausePrefix; k, _ = c.Next() {
			out[string(k[len(prefix):])] = true
		}
		return nil
	})
	return out, err
}

// view is db.View with a panic (a corrupt page) turned into an error.
func (s *File) view(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: ledger %s: read failed: %v", ErrUnavailable, s.path, r)
		}
	}()
	return s.db.View(fn)
}
