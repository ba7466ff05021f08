package ledger

import (
	"bytes"
	"sync"

	"github.com/google/btree"
)

// overlay is what the journal holds that the bbolt file does not yet:
// the latest journaled state of every replay key and spool record changed
// since the last checkpoint, each with the sequence number of the journal
// record that set it (jseq). A read looks here first, then in the file.
//
// An entry stays until the checkpoint has applied its record (and no later
// record changed it); a reader that began its bbolt transaction after the
// checkpoint's commit ignores entries whose jseq the file has applied (see
// snapshot), so that neither a lagging overlay nor a lagging file shows an
// older state than the other.
type overlay struct {
	mu     sync.RWMutex
	replay map[digest]ovReplay
	spool  *btree.BTreeG[*ovSpool] // by seq
	index  *btree.BTreeG[ovIndex]  // by bucket, key
	// maxSpool is the highest spool seq journaled.
	maxSpool uint64
	// filter holds every replay key published since it was built, and
	// those the file held then (nil until built: see filter.go); next is
	// the filter being built, which publish fills too.
	filter, next *replayFilter
}

// ovReplay is the journaled state of a replay key: its record, or deleted.
type ovReplay struct {
	rec     replayRecord
	deleted bool
	jseq    uint64
}

// ovSpool is the journaled state of a spool record: its stored form and
// index entry, or deleted.
type ovSpool struct {
	seq     uint64
	jseq    uint64
	deleted bool
	enc     []byte
	idx     indexEntry
}

// ovIndex is an index entry of a journaled spool record.
type ovIndex struct {
	bucket byte
	key    [16]byte
	value  []byte
	seq    uint64
	jseq   uint64
}

func lessSpool(a, b *ovSpool) bool { return a.seq < b.seq }

func lessIndex(a, b ovIndex) bool {
	if a.bucket != b.bucket {
		return a.bucket < b.bucket
	}
	return bytes.Compare(a.key[:], b.key[:]) < 0
}

// newOverlay returns an empty overlay, room made for n replay keys.
func newOverlay(n int) *overlay {
	return &overlay{
		replay: make(map[digest]ovReplay, n),
		spool:  btree.NewG(32, lessSpool),
		index:  btree.NewG(32, lessIndex),
	}
}

// publish makes the mutations of journal record jseq visible; ov.mu is held
// for writing. paused, when not nil, is told of pause changes.
func (ov *overlay) publish(jseq uint64, muts []mutation, paused func(scope string, p bool)) {
	for i := range muts {
		m := &muts[i]
		switch m.kind {
		case mPutReplay:
			ov.addToFilters(&m.digest)
			ov.replay[m.digest] = ovReplay{rec: m.replay, jseq: jseq}
		case mDelReplay:
			ov.replay[m.digest] = ovReplay{deleted: true, jseq: jseq}
		case mPutSpool, mDelSpool:
			if old, ok := ov.spool.Get(&ovSpool{seq: m.seq}); ok && !old.deleted {
				ov.index.Delete(ovIndex{bucket: old.idx.bucket, key: old.idx.key})
			}
			e := &ovSpool{seq: m.seq, jseq: jseq, deleted: m.kind == mDelSpool}
			if !e.deleted {
				e.enc, e.idx = m.enc, m.idx
				ov.index.ReplaceOrInsert(ovIndex{bucket: m.idx.bucket, key: m.idx.key, value: m.idx.value, seq: m.seq, jseq: jseq})
			}
			ov.spool.ReplaceOrInsert(e)
			ov.maxSpool = max(ov.maxSpool, m.seq)
		case mPause:
			if paused != nil {
				paused(m.scope, m.paused)
			}
		}
	}
}

// addToFilters adds d to the replay filters; ov.mu is held for writing.
func (ov *overlay) addToFilters(d *digest) {
	if ov.filter != nil {
		ov.filter.add(d)
	}
	if ov.next != nil {
		ov.next.add(d)
	}
}

// forget drops the entries set by record jseq, which the file has applied,
// unless a later record changed them since; ov.mu is held for writing.
func (ov *overlay) forget(jseq uint64, muts []mutation) {
	for i := range muts {
		m := &muts[i]
		switch m.kind {
		case mPutReplay, mDelReplay:
			if e, ok := ov.replay[m.digest]; ok && e.jseq <= jseq {
				delete(ov.replay, m.digest)
			}
		case mPutSpool, mDelSpool:
			e, ok := ov.spool.Get(&ovSpool{seq: m.seq})
			if !ok || e.jseq > jseq {
				continue
			}
			ov.spool.Delete(e)
			if !e.deleted {
				ov.index.Delete(ovIndex{bucket: e.idx.bucket, key: e.idx.key})
			}
		}
	}
}

// getReplay returns the journaled state of d; ov.mu is held.
func (ov *overlay) getReplay(d *digest) (ovReplay, bool) {
	e, ok := ov.replay[*d]
	return e, ok
}

// getSpool returns the journaled state of the spool record seq; ov.mu is
// held.
func (ov *overlay) getSpool(seq uint64) (*ovSpool, bool) {
	return ov.spool.Get(&ovSpool{seq: seq})
}
