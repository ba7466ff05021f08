package ledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// Bounds of a journal group.
const (
	maxGroupOps   = 4096
	maxGroupBytes = 1 << 20
)

// opClass says how an operation weighs on the ledger's room.
type opClass int

const (
	// classChange changes what the ledger holds without adding to it much
	// (a spool state change, a pause, a forget): taken until the hard
	// back-pressure bound.
	classChange opClass = iota
	// classNew adds an id or an event (a commit, an ingest): refused while
	// the ledger is full, and past the soft bound.
	classNew
	// classProbe writes an empty record, to learn whether writes work.
	classProbe
)

// jop is one operation queued for the journal writer. eval runs in the
// writer, in journal order, against the state every earlier operation
// left (view): it returns the record's mutations (none: nothing to write,
// as for a duplicate) or the operation's own error. after runs once the
// group is durable (err nil) or failed, before done.
type jop struct {
	class opClass
	eval  func(v *view) ([]mutation, error)
	after func(err error)
	done  chan error
	err   error // the operation's own error, from eval
}

// finish reports the result of op to its caller.
func (op *jop) finish(err error) {
	if err == nil {
		err = op.err
	}
	if op.after != nil {
		op.after(err)
	}
	op.done <- err
}

// crashPoint, when set (by this package's tests only, to kill the process
// there), is called at the named points of the journal's write path.
var crashPoint func(point string)

func crashAt(point string) {
	if crashPoint != nil {
		crashPoint(point)
	}
}

// submit hands op to the journal writer and waits for its result or for ctx.
func (s *Ledger) submit(ctx context.Context, op *jop) error {
	op.done = make(chan error, 1)
	return handOff(ctx, s, &s.jmu, &s.jclosed, s.jops, op, op.done, "write")
}

// The journal's write path is three goroutines. The writer evaluates each
// operation as it arrives, in order, against the state every earlier one
// left, and gathers the records into a group; the syncer writes a group
// (one write) and hands it to the flusher, which syncs it (one fdatasync),
// then publishes it and wakes its callers. The syncer writes a group while
// the flusher syncs the one before, and takes the next once the flusher
// has taken the one it wrote. The writer hands the syncer its group once
// the syncer is idle and no more deliveries are in flight than the group
// holds (gatherFor): a group is everything that arrived during the write
// and sync before, and while others are in flight whatever comes in the
// next groupWait. An operation waits at most for the end of the write and
// the sync running when it arrived, groupWait, and its own write and sync.

// group is a group of records on its way to the journal: its operations,
// their records, and what they changed (staged) for the operations
// evaluated after them until it is published; once handed, the encoded
// frames, the segment and the offset they go to.
type group struct {
	ops []*jop
	// opened is when the first operation came; gathered says the group
	// waited for more (gatherFor) as long as it may.
	opened   time.Time
	gathered bool
	recs     []jrecord
	size     int
	replay   map[digest]ovReplay
	spool    map[uint64]*ovSpool
	view     *view

	buf []byte
	sg  *segment
	off int64
	// writeErr is why its write failed.
	writeErr error
}

func (s *Ledger) newGroup() *group {
	g := &group{replay: map[digest]ovReplay{}, spool: map[uint64]*ovSpool{}, opened: time.Now()}
	g.view = &view{s: s, replay: g.replay, spool: g.spool, nextSpool: s.nextSpool}
	return g
}

// full says whether g takes no more operations until handed.
func (g *group) full() bool { return len(g.ops) >= maxGroupOps || g.size >= maxGroupBytes }

// journalWriter is the writer goroutine.
func (s *Ledger) journalWriter() {
	defer close(s.syncq)
	var g *group
	idle := true // the syncer waits for a group
	var gather *time.Timer
	var gathered <-chan time.Time // gather's, while g waits for more
	for {
		if g != nil && idle {
			if wait := s.gatherFor(g); wait > 0 {
				if gathered == nil {
					gather = time.NewTimer(wait)
					gathered = gather.C
				}
			} else {
				if gathered != nil {
					gather.Stop()
					gathered = nil
				}
				s.handGroup(g)
				g, idle = nil, false
				continue
			}
		}
		var ops chan *jop
		if g == nil || !g.full() {
			ops = s.jops
		}
		select {
		case <-gathered:
			gathered, g.gathered = nil, true
		case op, ok := <-ops:
			if !ok {
				if g != nil {
					if !idle {
						<-s.syncIdle
					}
					s.handGroup(g)
				}
				return
			}
			if g == nil {
				if g = s.startGroup(); g == nil {
					op.finish(s.brokenErr())
					continue
				}
			}
			s.evalOp(g, op)
		case <-s.syncIdle:
			idle = true
		case <-s.reopenKick: // a sync failed: reopen now
			if g == nil {
				s.reopenIfBroken()
			}
		}
	}
}

// gatherFor says how much longer the group g, which the syncer could take
// now, should wait for more records: while more deliveries are in flight
// than g holds operations, and for at most groupWait from g's first
// operation. Their commits would otherwise each start a sync of their
// own, and on a busy ledger the CPU an fdatasync costs, not its latency,
// limits how many deliveries a second the guard answers. A lone delivery
// never waits; one waiting is answered at most groupWait later (also when
// what is in flight is a delivery to a slow backend, or one released
// meanwhile: a release does not wake the writer). A broken journal's group
// is failed at once.
func (s *Ledger) gatherFor(g *group) time.Duration {
	if g.gathered || g.full() || s.groupWait <= 0 || s.leases.Load() <= int64(len(g.ops)) || s.brokenErr() != nil {
		return 0
	}
	return s.groupWait - time.Since(g.opened)
}

// startGroup begins a group: after a failed sync the journal is reopened
// first (nil: it could not be).
func (s *Ledger) startGroup() *group {
	// The groups synced since are in the overlay.
	durable := s.durable.Load()
	for len(s.pending) > 0 && (len(s.pending[0].recs) == 0 || s.pending[0].recs[len(s.pending[0].recs)-1].seq <= durable) {
		s.pending = s.pending[1:]
	}
	if !s.reopenIfBroken() {
		return nil
	}
	s.waitRoom()
	return s.newGroup()
}

// reopenIfBroken reopens a journal whose sync failed, once the groups
// handed after it are failed; it reports whether the journal works.
func (s *Ledger) reopenIfBroken() bool {
	if s.brokenErr() == nil {
		return true
	}
	s.inflight.Wait()
	s.pending = nil
	s.tryReopen()
	return s.brokenErr() == nil
}

// evalOp evaluates op into g.
func (s *Ledger) evalOp(g *group, op *jop) {
	g.ops = append(g.ops, op)
	g.view.now = s.now()
	op.err = nil
	if err := s.refusal()[op.class]; err != nil {
		op.err = err
		return
	}
	muts, err := op.eval(g.view)
	if err != nil {
		op.err = err
		return
	}
	if len(muts) == 0 && op.class != classProbe {
		return
	}
	rec := jrecord{seq: s.nextSeq, muts: muts}
	for i := range muts {
		rec.size += muts[i].size()
	}
	s.nextSeq++
	g.view.stage(rec.seq, muts)
	g.recs = append(g.recs, rec)
	g.size += rec.size
}

// handGroup encodes g's records for the segment they go to (activating the
// next one if they do not fit) and hands g to the syncer; a group without
// records is finished at once, or, if groups before it are not yet
// durable, after them.
func (s *Ledger) handGroup(g *group) {
	s.nextSpool = g.view.nextSpool
	if len(g.recs) == 0 {
		if len(s.pending) == 0 {
			for _, op := range g.ops {
				op.finish(nil)
			}
			s.signalIdle()
			return
		}
		s.inflight.Add(1)
		s.syncq <- g
		return
	}
	active := s.j.active()
	if active != nil && active.f == nil {
		// A segment read back at an open or reopen that could not activate
		// a new one (a full disk): never written to again.
		active = nil
	}
	buf := s.encodeGroup(active, g.recs, active != nil && active.off == 0)
	if active == nil || active.off+int64(len(buf)) > active.size {
		var err error
		if active, err = s.rotate(int64(len(buf)) + blockSize); err != nil {
			err = s.writeError(err)
			s.nextSeq = g.recs[0].seq // nothing written
			for _, op := range g.ops {
				op.finish(err)
			}
			s.reportHealth()
			s.signalIdle()
			return
		}
		s.keepGroupBuffer(buf)
		buf = s.encodeGroup(active, g.recs, true)
	}
	g.buf, g.sg, g.off = buf, active, active.off
	active.off += int64(len(buf))
	active.last = g.recs[len(g.recs)-1].seq
	s.pending = append(s.pending, g)
	if active.off > active.size/2 {
		s.kickAlloc()
	}
	s.inflight.Add(1)
	s.syncq <- g
}

// signalIdle tells the writer the syncer waits for a group.
func (s *Ledger) signalIdle() {
	select {
	case s.syncIdle <- struct{}{}:
	default:
	}
}

// syncer is the goroutine that writes the groups, in order, and hands each
// to the flusher, which syncs it. It writes a group while the flusher syncs
// the one before, and the writer gathers the next meanwhile: the groups are
// larger under load (docs/benchmarks.md), and on a disk that takes a write
// and a flush at once a group's turn is the longer of the two rather than
// their sum. The hand-off is unbuffered: at most one group is written ahead
// of the sync; none ahead of the sync of a segment's first group, nor into
// a new segment ahead of the last sync of the one before.
func (s *Ledger) syncer() {
	flushq := make(chan *group)
	flushed := make(chan struct{})
	go s.flusher(flushq, flushed)
	var lastSeg *segment // the segment of the last group written
	var lastOff int64    // and where in it that group went
	for g := range s.syncq {
		if len(g.recs) > 0 {
			if g.sg != lastSeg || g.off == 0 || lastOff == 0 {
				// Not ahead of a sync here: a segment's first group waits
				// for the groups before it (in the segment before) to be
				// durable, and the group after it for it to be (its first
				// frame, the segment's header). Written ahead, the disk
				// could get it first: a new segment's records after a gap
				// (recovery refuses the journal), or a header-less segment,
				// read back as a spare, holding a frame of its own id that
				// would follow the first group written at its next
				// activation and be read as the journal's.
				crashAt("write-waits-sync")
				flushq <- nil // taken once the flusher has finished the group before
			}
			lastSeg, lastOff = g.sg, g.off
		}
		s.writeGroup(g)
		flushq <- g
		s.signalIdle()
	}
	close(flushq)
	<-flushed
	close(s.jdone)
}

// writeGroup writes the frames of g, unless it has none or the journal is
// broken; a failed write is g.writeErr, for the flusher to fail in turn,
// after the groups before g.
func (s *Ledger) writeGroup(g *group) {
	if len(g.recs) == 0 || s.brokenErr() != nil {
		return
	}
	crashAt("before-write")
	_, g.writeErr = g.sg.f.WriteAt(g.buf, g.off)
	crashAt("after-write")
	s.keepGroupBuffer(g.buf)
	g.buf = nil
}

// flusher is the goroutine that syncs the groups written, in order, and
// publishes them and wakes their callers once durable.
func (s *Ledger) flusher(flushq <-chan *group, done chan<- struct{}) {
	defer close(done)
	var synced *segment // the segment of the last group synced
	for g := range flushq {
		if g == nil { // the syncer waits for the group before to be finished
			continue
		}
		s.syncGroup(g, &synced)
		s.inflight.Done()
	}
	if synced != nil && synced.f != nil && synced != s.j.active() {
		_ = synced.f.Close()
	}
}

// syncGroup syncs the group g, written (after the ones before it), then
// publishes it and finishes its operations; a failed write or sync is
// fatal to the journal (journalFailed). synced is the segment of the
// previous group: its file is closed once a later segment's group is synced.
func (s *Ledger) syncGroup(g *group, synced **segment) {
	if err := s.brokenErr(); err != nil { // handed after a group whose sync failed
		for _, op := range g.ops {
			op.finish(err)
		}
		return
	}
	if len(g.recs) == 0 {
		for _, op := range g.ops {
			op.finish(nil)
		}
		return
	}
	err := g.writeErr
	if err == nil {
		start := time.Now()
		err = g.sg.f.Datasync()
		if s.onSync != nil {
			s.onSync(time.Since(start), len(g.recs))
		}
	}
	if err != nil {
		s.journalFailed(err, g.ops)
		return
	}
	crashAt("after-sync")
	if prev := *synced; prev != nil && prev != g.sg {
		s.j.mu.Lock()
		if prev.f != nil {
			_ = prev.f.Close()
			prev.f = nil
		}
		s.j.mu.Unlock()
	}
	*synced = g.sg
	s.publish(g.recs)
	for _, op := range g.ops {
		op.finish(nil)
	}
}

// view is the state an operation is evaluated against: the records of its
// group evaluated before it (staged), then the overlay, then the file.
type view struct {
	s         *Ledger
	replay    map[digest]ovReplay
	spool     map[uint64]*ovSpool
	nextSpool uint64
	now       time.Time
}

// replayOf returns the replay record of d, if the ledger holds one.
func (v *view) replayOf(d *digest) (replayRecord, bool, error) {
	if r, ok, found := v.inMemory(d); found {
		return r, ok, nil
	}
	return v.s.replayOf(d)
}

// inMemory looks d up where no file is read: the group, the groups not
// yet published, the overlay; found false: the file knows.
func (v *view) inMemory(d *digest) (r replayRecord, ok, found bool) {
	if e, ok := v.replay[*d]; ok {
		return e.rec, !e.deleted, true
	}
	for i := len(v.s.pending) - 1; i >= 0; i-- {
		if e, ok := v.s.pending[i].replay[*d]; ok {
			return e.rec, !e.deleted, true
		}
	}
	v.s.ov.mu.RLock()
	e, ok := v.s.ov.getReplay(d)
	v.s.ov.mu.RUnlock()
	return e.rec, !e.deleted, ok
}

// spoolOf returns the stored record seq and its index entry.
func (v *view) spoolOf(seq uint64) (enc []byte, idx indexEntry, ok bool, err error) {
	if e, found := v.spool[seq]; found {
		return e.enc, e.idx, !e.deleted, nil
	}
	for i := len(v.s.pending) - 1; i >= 0; i-- {
		if e, found := v.s.pending[i].spool[seq]; found {
			return e.enc, e.idx, !e.deleted, nil
		}
	}
	return v.s.spoolOf(seq)
}

// stage makes muts visible to the operations after it in the group.
func (v *view) stage(jseq uint64, muts []mutation) {
	for i := range muts {
		m := &muts[i]
		switch m.kind {
		case mPutReplay:
			v.replay[m.digest] = ovReplay{rec: m.replay, jseq: jseq}
		case mDelReplay:
			v.replay[m.digest] = ovReplay{deleted: true, jseq: jseq}
		case mPutSpool:
			v.spool[m.seq] = &ovSpool{seq: m.seq, jseq: jseq, enc: m.enc, idx: m.idx}
		case mDelSpool:
			v.spool[m.seq] = &ovSpool{seq: m.seq, jseq: jseq, deleted: true}
		}
	}
}

// replayOf returns the replay record of d: the overlay's, else the file's.
func (s *Ledger) replayOf(d *digest) (r replayRecord, ok bool, err error) {
	s.ov.mu.RLock()
	e, found := s.ov.getReplay(d)
	f := s.ov.filter
	s.ov.mu.RUnlock()
	if found {
		return e.rec, !e.deleted, nil
	}
	if !fileMayHold(f, d) {
		return replayRecord{}, false, nil
	}
	// An entry leaves the overlay only once the file has it: a
	// transaction begun after the look-up sees it.
	s.fileReads.Add(1)
	err = s.view(func(tx *bolt.Tx) error {
		r, ok = getReplay(tx, d)
		return nil
	})
	if err != nil && !errors.Is(err, dedupe.ErrUnavailable) {
		err = fmt.Errorf("%w: ledger %s: %v", dedupe.ErrUnavailable, s.path, err)
	}
	return r, ok, err
}

// spoolOf returns the stored record seq and its index entry: the
// overlay's, else the file's.
func (s *Ledger) spoolOf(seq uint64) (enc []byte, idx indexEntry, ok bool, err error) {
	s.ov.mu.RLock()
	e, found := s.ov.getSpool(seq)
	s.ov.mu.RUnlock()
	if found {
		return e.enc, e.idx, !e.deleted, nil
	}
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSpool).Get(seqKey(seq))
		if v == nil {
			return nil
		}
		d, err := decodeRecord(seq, v, false)
		if err != nil {
			return err
		}
		enc, idx, ok = append([]byte(nil), v...), entryOf(d), true
		return nil
	})
	return enc, idx, ok, err
}

// encodeGroup encodes recs for segment sg (a fresh one's first frame
// first), padded to whole blocks, in aligned memory (alignedBlocks). It
// encodes in the writer's scratch buffer, reused from group to group.
func (s *Ledger) encodeGroup(sg *segment, recs []jrecord, fresh bool) []byte {
	var id uint64
	if sg != nil {
		id = sg.id
	}
	buf := s.encodeBuf[:0]
	if fresh {
		buf = segmentHeader(buf, id, recs[0].seq)
	}
	for _, r := range recs {
		var start int
		buf, start = beginFrame(buf, frameOps, r.seq, id)
		buf = appendMutations(buf, r.muts)
		buf = endFrame(buf, start)
	}
	s.encodeBuf = buf
	out := s.groupBuffer(len(buf))
	clear(out[copy(out, buf):])
	return out
}

// Group buffers: most groups fit in minGroupBuf, and none larger than
// maxKeptGroupBuf is kept for reuse.
const (
	minGroupBuf     = 4 * blockSize
	maxKeptGroupBuf = 64 * blockSize
)

// groupBuffer returns aligned memory of whole blocks, at least n bytes, for
// a group's frames: one a written group returned (keepGroupBuffer), or
// new. Its content is undefined.
func (s *Ledger) groupBuffer(n int) []byte {
	size := int(alignUp(int64(n), blockSize))
	select {
	case b := <-s.groupBufs:
		if cap(b) >= size {
			return b[:size]
		}
	default:
	}
	return alignedBlocks(max(size, minGroupBuf))[:size]
}

// keepGroupBuffer returns the buffer of a group written, for reuse.
func (s *Ledger) keepGroupBuffer(b []byte) {
	if cap(b) > maxKeptGroupBuf {
		return
	}
	select {
	case s.groupBufs <- b:
	default:
	}
}

// publish makes durable records visible to readers and hands them to the
// checkpoint.
func (s *Ledger) publish(recs []jrecord) {
	s.ov.mu.Lock()
	for _, r := range recs {
		s.ov.publish(r.seq, r.muts, s.setPaused)
	}
	refilter := s.ov.filter == nil || s.ov.filter.saturated() // none: the build at open failed
	s.ov.mu.Unlock()
	if refilter {
		s.kickFilter()
	}
	s.countDueChanges(recs)
	s.durable.Store(recs[len(recs)-1].seq)
	s.cpq.push(recs, time.Now())
	if s.cpq.length() >= checkpointRecords || s.cpq.bytesHeld() >= s.segmentSize/4 {
		s.kickCheckpoint()
	}
	s.reportHealth()
}

// setPaused mirrors a journaled pause in memory.
func (s *Ledger) setPaused(scope string, paused bool) {
	s.spool.mu.Lock()
	if paused {
		s.spool.paused[scope] = true
	} else {
		delete(s.spool.paused, scope)
	}
	s.spool.mu.Unlock()
}

// rotate activates a spare (or, with none of need bytes ready, a segment
// made now) as the segment the writer writes to, from seq nextSeq; the
// caller writes its first frame with the group.
func (s *Ledger) rotate(need int64) (*segment, error) {
	sp := s.j.takeSpare(need)
	if sp == nil {
		s.j.mu.Lock()
		size := s.j.nextSize(need)
		s.j.mu.Unlock()
		var err error
		if sp, err = s.j.createFitting(size, need); err != nil {
			s.j.mu.Lock()
			s.j.allocErr = err
			s.j.mu.Unlock()
			return nil, err
		}
	}
	f, err := s.fs.OpenSegment(sp.path)
	if err != nil {
		s.j.mu.Lock()
		s.j.spares = append(s.j.spares, sp)
		s.j.mu.Unlock()
		return nil, err
	}
	sp.f, sp.base, sp.last, sp.off = f, s.nextSeq, s.nextSeq-1, 0
	s.j.mu.Lock()
	s.j.segs = append(s.j.segs, sp) // the syncer closes the last one's file once synced
	s.j.mu.Unlock()
	s.kickAlloc()
	return sp, nil
}

// journalFailed handles a failed write or sync of the journal: fatal to
// the journal as it is. A sync is never retried (after a failed fdatasync
// the kernel may have dropped the pages it could not write, and a second
// one would "succeed" without them): the group's callers get an error, the
// ledger is broken, and it reopens its journal from what the disk holds
// before it takes writes again.
func (s *Ledger) journalFailed(err error, group []*jop) {
	err = fmt.Errorf("%w: ledger %s: journal write failed, reopening it: %v", dedupe.ErrUnavailable, s.path, err)
	s.broken.Store(&err)
	s.fsyncErrors.Add(1)
	if s.onJournalError != nil {
		s.onJournalError(FailSync, err)
	}
	for _, op := range group {
		op.finish(err)
	}
	s.reportHealth()
	select { // the writer reopens the journal
	case s.reopenKick <- struct{}{}:
	default:
	}
}

// brokenErr is the error of a journal that failed, until it is reopened.
func (s *Ledger) brokenErr() error {
	if p := s.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// reopenEvery is how often a broken journal tries to reopen.
const reopenEvery = time.Second

// tryReopen reopens a broken journal (not more than once per reopenEvery):
// the segment files are closed, their cached pages dropped, the records
// after the file's applied seq read back from the disk into a new overlay,
// and a new segment activated. The writer calls it.
func (s *Ledger) tryReopen() {
	failures := s.fsyncErrors.Load()
	if s.brokenErr() == nil || failures == s.failuresSeen && time.Since(s.lastReopen) < reopenEvery {
		return
	}
	s.failuresSeen, s.lastReopen = failures, time.Now()
	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	s.allocMu.Lock() // no segment made or recycled meanwhile
	defer s.allocMu.Unlock()
	s.j.closeFiles()
	if err := s.loadJournal(true); err != nil {
		err = fmt.Errorf("%w: ledger %s: reopening the journal: %v", dedupe.ErrUnavailable, s.path, err)
		s.broken.Store(&err)
		if s.onJournalError != nil {
			s.onJournalError(FailReopen, err)
		}
		return
	}
	s.broken.Store(nil)
	s.reportHealth()
}

// roomWait bounds how long the writer waits for the checkpoint to make
// room (see waitRoom).
const roomWait = 10 * time.Second

// waitRoom holds the writer while the records not yet applied to the file
// fill the bound (the file's disk is slower than the journal, or max_size
// is small): the checkpoint catches up, or finds the file full, or roomWait
// passes (then refusal refuses).
func (s *Ledger) waitRoom() {
	if s.cpq.bytesHeld() < s.bound || s.manualCheckpoint {
		return
	}
	timer := time.NewTimer(roomWait)
	defer timer.Stop()
	for s.cpq.bytesHeld() >= s.bound && s.full.Load() == nil && s.brokenErr() == nil {
		s.kickCheckpoint()
		select {
		case <-s.cpq.room:
		case <-timer.C:
			return
		}
	}
}

// refusal is, by class, the error an operation gets at once: a full ledger
// refuses new events; past twice the bound of records not yet applied
// (the writer waited for room in vain) every write is refused.
func (s *Ledger) refusal() [3]error {
	var out [3]error
	if held := s.cpq.bytesHeld(); held >= 2*s.bound && !s.manualCheckpoint {
		err := fmt.Errorf("%w: ledger %s: %d bytes of journal records not yet applied to the file (its disk is slow?)", dedupe.ErrUnavailable, s.path, held)
		out[classNew], out[classChange] = err, err
	}
	if p := s.full.Load(); p != nil {
		out[classNew] = *p
	}
	return out
}

// journalRead is what reading the journal back found: its activated
// segments, oldest first (those whose records the file has all applied
// included), its spares, the records after the file's applied seq, in
// order, and the seq of the last record.
type journalRead struct {
	segs   []*segment
	spares []*segment
	recs   []jrecord
	last   uint64
	maxID  uint64
}

// readJournal reads the segments of journal j back: every record after
// applied, checked to follow the one before without a gap. A bad record in
// the last segment ends it (a torn write, never acknowledged); in another
// segment, or a gap, it fails naming the file. drop drops the files' cached
// pages first (after a failed sync).
//
// Records after limit are left out: at a reopen after a failed sync, the
// records after the last one made durable were never acknowledged (the
// page cache may still hold them, or part of them may have reached the
// disk); the new segment then starts at limit+1, and a later open finds
// them overlapped by it: a segment's records from the next one's first
// are superseded by it.
func readJournal(fsys fileSystem, j *journal, ledgerPath string, applied, limit uint64, drop bool) (*journalRead, error) {
	names, err := fsys.ReadDir(j.dir)
	if err != nil {
		return nil, err
	}
	type found struct {
		id   uint64
		path string
		scan segmentScan
		size int64
	}
	var segs []found
	out := &journalRead{maxID: j.nextID, last: applied}
	removed := false
	for _, name := range names {
		id, tmp, ok := j.segmentID(name)
		if !ok {
			continue
		}
		path := filepath.Join(j.dir, name)
		out.maxID = max(out.maxID, id+1)
		if tmp { // a segment being made when the process ended
			_ = fsys.Remove(path)
			removed = true
			continue
		}
		data, err := readSegmentFile(fsys, path, drop)
		if err != nil {
			return nil, fmt.Errorf("journal segment %s: %v", path, err)
		}
		sc := scanSegment(data, id, func(seq uint64) bool { return seq > applied })
		for len(sc.records) > 0 && sc.records[len(sc.records)-1].seq > limit {
			sc.records = sc.records[:len(sc.records)-1]
		}
		if sc.activated && len(sc.records) == 0 {
			// Its first group was torn (a crash before that group's sync):
			// it holds nothing acknowledged, and its base, the seq its first
			// record would have had, may equal a later segment's.
			_ = fsys.Remove(path)
			removed = true
			continue
		}
		if !sc.activated {
			if ownFrameAfterHeader(data, id) {
				return nil, fmt.Errorf("journal segment %s: its first frame is damaged; %s", path, journalAdvice(ledgerPath))
			}
			out.spares = append(out.spares, &segment{id: id, path: path, size: int64(len(data))})
			continue
		}
		for i := range sc.records {
			if sc.records[i].seq > applied {
				sc.records[i].muts = cloneMutations(sc.records[i].muts) // data is not kept
			}
		}
		segs = append(segs, found{id, path, sc, int64(len(data))})
	}
	if removed {
		// Durable before any segment is activated at the base a torn one
		// had: back after a power loss, one whose group the disk got
		// meanwhile (after a failed sync) could supersede its records.
		if err := fsys.SyncDir(j.dir); err != nil {
			return nil, fmt.Errorf("journal folder %s: %v", j.dir, err)
		}
	}
	// In the order of their records, not of their ids: an id is given when
	// a segment is made, and a spare made earlier may be activated after a
	// segment made later (a group too large for it, a writer that made its
	// own while the allocator was making one).
	sort.Slice(segs, func(a, b int) bool {
		if segs[a].scan.base != segs[b].scan.base {
			return segs[a].scan.base < segs[b].scan.base
		}
		return segs[a].id < segs[b].id
	})
	for i := range segs {
		if i+1 < len(segs) {
			// Superseded by the next segment (see above).
			next := segs[i+1].scan.base
			for len(segs[i].scan.records) > 0 && segs[i].scan.last() >= next {
				segs[i].scan.records = segs[i].scan.records[:len(segs[i].scan.records)-1]
			}
		}
	}
	for _, sg := range segs {
		out.segs = append(out.segs, &segment{id: sg.id, path: sg.path, size: sg.size, base: sg.scan.base, last: sg.scan.last()})
	}
	// Segments whose records the file has all applied are not needed.
	for len(segs) > 0 && segs[0].scan.last() <= applied {
		segs = segs[1:]
	}
	if len(segs) > 0 && segs[0].scan.base > applied+1 {
		return nil, fmt.Errorf("journal segment %s begins at record %d, but the ledger file has applied only up to %d: records are missing; %s", segs[0].path, segs[0].scan.base, applied, journalAdvice(ledgerPath))
	}
	for i, sg := range segs {
		if i+1 < len(segs) && segs[i+1].scan.base != sg.scan.last()+1 {
			why := ""
			if sg.scan.end == endBad {
				why = fmt.Sprintf(" (at byte %d: %s)", sg.scan.endOffset, sg.scan.why)
			}
			return nil, fmt.Errorf("journal segment %s is damaged: its records end at %d%s, but the next segment begins at %d; %s", sg.path, sg.scan.last(), why, segs[i+1].scan.base, journalAdvice(ledgerPath))
		}
		out.last = max(out.last, sg.scan.last())
		if out.recs == nil {
			n := 0
			for _, s := range segs[i:] {
				n += len(s.scan.records)
			}
			out.recs = make([]jrecord, 0, n)
		}
		for _, r := range sg.scan.records {
			if r.seq > applied {
				out.recs = append(out.recs, r)
			}
		}
	}
	return out, nil
}

// loadJournal reads the journal back (readJournal) into a new overlay and
// the checkpoint's queue; then it activates a new segment. reopen says the
// ledger is running: the segments' cached pages are dropped first.
func (s *Ledger) loadJournal(reopen bool) error {
	applied, err := s.readApplied()
	if err != nil {
		return err
	}
	limit := uint64(math.MaxUint64)
	if reopen {
		limit = s.durable.Load()
	}
	rd, err := readJournal(s.fs, s.j, s.path, applied, limit, reopen)
	if err != nil {
		return err
	}
	ov := newOverlay(len(rd.recs))
	paused := map[string]bool{}
	var delta int64
	for _, r := range rd.recs {
		ov.publish(r.seq, r.muts, func(scope string, p bool) { paused[scope] = p })
		delta += usedDelta(r.muts)
	}
	nextSpool, err := s.readSpoolSeq()
	if err != nil {
		return err
	}
	// Swap in what was read. The count of remembered ids holds the
	// queued records' changes: replace them by the ones read.
	s.ov.mu.Lock()
	s.ov.replay, s.ov.spool, s.ov.index, s.ov.maxSpool = ov.replay, ov.spool, ov.index, ov.maxSpool
	for d := range ov.replay {
		s.ov.addToFilters(&d)
	}
	s.ov.mu.Unlock()
	s.used.Add(delta - s.cpq.delta())
	s.cpq.reset(rd.recs, time.Now(), delta)
	for scope, p := range paused {
		s.setPaused(scope, p)
	}
	if err := s.countDue(); err != nil {
		return err
	}
	s.nextSeq = rd.last + 1
	s.nextSpool = max(nextSpool, ov.maxSpool) + 1
	s.durable.Store(rd.last)
	s.applied.Store(applied)
	s.j.mu.Lock()
	s.j.nextID = max(s.j.nextID, rd.maxID)
	s.j.segs = rd.segs
	s.j.mu.Unlock()
	spares := s.j.freshSpares(rd.spares)
	s.j.mu.Lock()
	s.j.spares = spares
	s.j.mu.Unlock()
	// Never write after what was read: a torn tail or an older use may
	// follow it. A new segment (a spare, or a small new one) starts at the
	// next seq.
	if _, err := s.rotate(blockSize); err != nil {
		// No room for a segment: the ledger opens, new events are
		// refused until the allocator makes one.
		s.j.mu.Lock()
		s.j.allocErr = err
		s.j.mu.Unlock()
	}
	return nil
}

// journalAdvice says what to do with a damaged journal.
func journalAdvice(ledgerPath string) string {
	return fmt.Sprintf("restore the journal from a backup, or move its segments (%s%s*) away to open the ledger without them: the ids and events recorded after the last checkpoint are then lost", ledgerPath, journalSuffix)
}

// readSegmentFile reads a whole segment file (after dropping its cached
// pages, when drop is set).
func readSegmentFile(fs fileSystem, path string, drop bool) ([]byte, error) {
	f, err := fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if drop {
		_ = f.DropCache()
	}
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	data := make([]byte, size)
	const chunk = 4 << 20
	for off := int64(0); off < size; off += chunk {
		n, err := f.ReadAt(data[off:min(off+chunk, size)], off)
		if err != nil && int64(n) < min(chunk, size-off) {
			return nil, err
		}
	}
	return data, nil
}

// cloneMutations copies the slices of muts out of the buffer they point
// into.
func cloneMutations(muts []mutation) []mutation {
	for i := range muts {
		if m := &muts[i]; m.spoolChange != nil {
			c := *m.spoolChange
			c.enc = append([]byte(nil), c.enc...)
			c.idx.value = append([]byte(nil), c.idx.value...)
			m.spoolChange = &c
		}
	}
	return muts
}

// usedDelta is what a record's mutations change in the count of
// remembered ids.
func usedDelta(muts []mutation) int64 {
	var n int64
	for i := range muts {
		switch m := &muts[i]; {
		case m.kind == mPutReplay && m.flag:
			n++
		case m.kind == mDelReplay && m.flag:
			n--
		}
	}
	return n
}

// readApplied reads the seq of the last journal record the file applied.
func (s *Ledger) readApplied() (uint64, error) {
	var applied uint64
	err := s.view(func(tx *bolt.Tx) error {
		applied = appliedIn(tx)
		return nil
	})
	return applied, err
}

// readSpoolSeq reads the spool bucket's sequence.
func (s *Ledger) readSpoolSeq() (uint64, error) {
	var seq uint64
	err := s.view(func(tx *bolt.Tx) error {
		seq = tx.Bucket(bucketSpool).Sequence()
		return nil
	})
	return seq, err
}
