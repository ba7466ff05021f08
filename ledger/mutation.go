package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A journal record is one operation of the ledger (a commit, a spooled
// event with its accepted id, a spool state change, a pause): a list of
// mutations, applied together. The request path waits only for the record's
// fsync; the checkpoint applies it to the bbolt file later, in journal
// order, and readers see it meanwhile through the overlay.

// Kinds of mutation.
const (
	mPutReplay byte = 1 + iota // digest, state, expires; flag: the key was new
	mDelReplay                 // digest; flag: the key existed
	mPutSpool                  // spool seq, old index entry, index entry, stored record
	mDelSpool                  // spool seq, old index entry
	mPause                     // scope, paused
)

// The index buckets, as a mutation names them.
const (
	idxNone      byte = 0
	idxDue       byte = 1
	idxDead      byte = 2
	idxDiscarded byte = 3
)

// indexBucket is the bucket of an index id.
func indexBucket(id byte) []byte {
	switch id {
	case idxDue:
		return bucketDue
	case idxDead:
		return bucketDead
	case idxDiscarded:
		return bucketDiscarded
	}
	return nil
}

// indexID is the id of an index bucket.
func indexID(bucket []byte) byte {
	switch string(bucket) {
	case string(bucketDue):
		return idxDue
	case string(bucketDead):
		return idxDead
	case string(bucketDiscarded):
		return idxDiscarded
	}
	return idxNone
}

// indexEntry is an entry of a spool index (due, dead or discarded): the
// bucket id (idxNone: no entry), the key (t ‖ seq) and the value.
type indexEntry struct {
	bucket byte
	key    [16]byte
	value  []byte
}

// entryOf is the index entry of d in its state.
func entryOf(d *diskRecord) indexEntry {
	bucket, k, v := index(d)
	e := indexEntry{bucket: indexID(bucket), value: v}
	copy(e.key[:], k)
	return e
}

// mutation is one change of a journal record. It is small (the overlay
// holds many): a spool change is behind a pointer.
type mutation struct {
	digest digest
	replay replayRecord
	*spoolChange
	scope  string // mPause
	kind   byte
	flag   bool // mPutReplay: the key was new; mDelReplay: it existed
	paused bool // mPause
}

// spoolChange is what a mutation of a spool record changes.
type spoolChange struct {
	seq    uint64     // spool seq
	oldIdx indexEntry // the index entry the record had (mPutSpool, mDelSpool)
	idx    indexEntry // its new one (mPutSpool)
	enc    []byte     // the stored record (mPutSpool)
}

// size is an estimate of the memory m holds, for back-pressure.
func (m *mutation) size() int {
	n := 80 + len(m.scope)
	if m.spoolChange != nil {
		n += 120 + len(m.enc) + len(m.idx.value)
	}
	return n
}

// appendMutations appends the encoding of muts to b:
//
//	count (uvarint), then each mutation: kind (1) ‖ flags (1) ‖ fields
func appendMutations(b []byte, muts []mutation) []byte {
	b = binary.AppendUvarint(b, uint64(len(muts)))
	for i := range muts {
		m := &muts[i]
		var flags byte
		if m.flag {
			flags = 1
		}
		b = append(b, m.kind, flags)
		switch m.kind {
		case mPutReplay:
			b = append(b, m.digest[:]...)
			b = append(b, m.replay.state)
			b = binary.BigEndian.AppendUint64(b, uint64(m.replay.expires))
		case mDelReplay:
			b = append(b, m.digest[:]...)
		case mPutSpool:
			b = binary.BigEndian.AppendUint64(b, m.seq)
			b = appendIndexKey(b, m.oldIdx)
			b = appendIndexKey(b, m.idx)
			b = binary.AppendUvarint(b, uint64(len(m.idx.value)))
			b = append(b, m.idx.value...)
			b = binary.AppendUvarint(b, uint64(len(m.enc)))
			b = append(b, m.enc...)
		case mDelSpool:
			b = binary.BigEndian.AppendUint64(b, m.seq)
			b = appendIndexKey(b, m.oldIdx)
		case mPause:
			if m.paused {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
			b = binary.AppendUvarint(b, uint64(len(m.scope)))
			b = append(b, m.scope...)
		}
	}
	return b
}

// appendIndexKey appends the bucket id of e and, unless none, its key.
func appendIndexKey(b []byte, e indexEntry) []byte {
	b = append(b, e.bucket)
	if e.bucket != idxNone {
		b = append(b, e.key[:]...)
	}
	return b
}

// errBadRecord is the error of a journal record whose payload cannot be
// decoded (its checksum matched: a bug or a record of a newer version).
var errBadRecord = errors.New("undecodable journal record")

// decoder reads a record's payload.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errBadRecord
	}
	d.b = nil
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.fail()
		return nil
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) byte1() byte {
	b := d.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (d *decoder) uint64() uint64 {
	b := d.bytes(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// lenBytes reads a uvarint length and that many bytes.
func (d *decoder) lenBytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	return d.bytes(int(n))
}

func (d *decoder) indexKey() indexEntry {
	var e indexEntry
	e.bucket = d.byte1()
	if e.bucket == idxNone {
		return e
	}
	if e.bucket > idxDiscarded {
		d.fail()
		return e
	}
	copy(e.key[:], d.bytes(16))
	return e
}

// decodeMutations decodes a record's payload. The slices of the result
// point into payload.
func decodeMutations(payload []byte) ([]mutation, error) {
	_, muts, err := decodeMutationsInto(nil, payload)
	return muts, err
}

// decodeMutationsInto decodes a record's payload, appending its mutations
// to arena (one allocation for many records): it returns the arena and the
// record's mutations, a slice of it.
func decodeMutationsInto(arena []mutation, payload []byte) ([]mutation, []mutation, error) {
	d := &decoder{b: payload}
	n := d.uvarint()
	if d.err != nil || n > uint64(len(payload)) { // every mutation takes two bytes at least
		return arena, nil, errBadRecord
	}
	first := len(arena)
	for range n {
		var m mutation
		m.kind = d.byte1()
		switch flags := d.byte1(); flags {
		case 0:
		case 1:
			m.flag = true
		default:
			d.fail()
		}
		switch m.kind {
		case mPutReplay:
			copy(m.digest[:], d.bytes(len(m.digest)))
			m.replay.state = d.byte1()
			m.replay.expires = int64(d.uint64())
		case mDelReplay:
			copy(m.digest[:], d.bytes(len(m.digest)))
		case mPutSpool:
			m.spoolChange = &spoolChange{}
			m.seq = d.uint64()
			m.oldIdx = d.indexKey()
			m.idx = d.indexKey()
			m.idx.value = d.lenBytes()
			m.enc = d.lenBytes()
			if m.idx.bucket == idxNone {
				d.fail()
			}
		case mDelSpool:
			m.spoolChange = &spoolChange{}
			m.seq = d.uint64()
			m.oldIdx = d.indexKey()
		case mPause:
			switch d.byte1() {
			case 0:
			case 1:
				m.paused = true
			default:
				d.fail()
			}
			m.scope = string(d.lenBytes())
		default:
			d.fail()
		}
		if d.err != nil {
			return arena[:first], nil, d.err
		}
		arena = append(arena, m)
	}
	if len(d.b) != 0 {
		return arena[:first], nil, errBadRecord
	}
	return arena, arena[first:len(arena):len(arena)], nil
}

// applyMutations applies the mutations of record seq to the bbolt file, as
// the checkpoint does, in journal order. When the file is full (pruneBefore
// set: unix ns), a replay record whose window has ended by then, and which
// no later record changes (latest), is not written but its key deleted, as
// the sweep would: a full file takes what expired while it was full.
//
// drift is how many more replay records the file holds after than the
// mutations' flags counted when they were journaled (the count of
// remembered ids took those): a pruned record, or one the sweep deleted
// between a commit's evaluation and its publication (the commit counted it
// as there, the file had lost it).
func applyMutations(tx *bolt.Tx, seq uint64, muts []mutation, pruneBefore int64, latest func(d *digest, seq uint64) bool) (drift int64, err error) {
	for i := range muts {
		m := &muts[i]
		var changed bool
		switch m.kind {
		case mPutReplay:
			if m.replay.expires <= pruneBefore && latest(&m.digest, seq) {
				changed, err = deleteReplay(tx, &m.digest)
				drift -= count(changed) + count(m.flag)
			} else {
				changed, err = putReplay(tx, &m.digest, m.replay)
				drift += count(changed) - count(m.flag)
			}
		case mDelReplay:
			changed, err = deleteReplay(tx, &m.digest)
			drift += count(m.flag) - count(changed)
		case mPutSpool:
			err = applyPutSpool(tx, m)
		case mDelSpool:
			if err = deleteIndexEntry(tx, m.oldIdx); err == nil {
				err = tx.Bucket(bucketSpool).Delete(seqKey(m.seq))
			}
		case mPause:
			key := []byte(pausePrefix + m.scope)
			if m.paused {
				err = tx.Bucket(bucketMeta).Put(key, nil)
			} else {
				err = tx.Bucket(bucketMeta).Delete(key)
			}
		default:
			err = fmt.Errorf("journal mutation of kind %d", m.kind)
		}
		if err != nil {
			return drift, err
		}
	}
	return drift, nil
}

// count is 1 for true, else 0.
func count(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// applyPutSpool stores a spool record and its index entry in place of its
// old one, and keeps the bucket's sequence past it.
func applyPutSpool(tx *bolt.Tx, m *mutation) error {
	sp := tx.Bucket(bucketSpool)
	if err := deleteIndexEntry(tx, m.oldIdx); err != nil {
		return err
	}
	ib := tx.Bucket(indexBucket(m.idx.bucket))
	if ib == nil {
		return fmt.Errorf("journal: spool record %d: index bucket %d", m.seq, m.idx.bucket)
	}
	if m.idx.bucket == idxDue {
		ib.FillPercent = 1 // appended to, mostly
	}
	if err := ib.Put(m.idx.key[:], m.idx.value); err != nil {
		return err
	}
	if m.seq > sp.Sequence() {
		sp.FillPercent = 1
		if err := sp.SetSequence(m.seq); err != nil {
			return err
		}
	}
	return sp.Put(seqKey(m.seq), m.enc)
}

// deleteIndexEntry deletes e from its bucket (nothing when e is none).
func deleteIndexEntry(tx *bolt.Tx, e indexEntry) error {
	if e.bucket == idxNone {
		return nil
	}
	return tx.Bucket(indexBucket(e.bucket)).Delete(e.key[:])
}
