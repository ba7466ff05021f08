package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// The checkpoint applies the journal's durable records to the bbolt file in
// the background, many in one transaction, with the seq of the last one
// stored in that same transaction (meta "journal"); then the overlay
// forgets them and the segments they filled are recycled. It never holds
// the journal writer: requests wait only for the journal.

// Checkpoint cadence.
const (
	// defaultCheckpointEvery is how often the checkpoint runs when
	// Config.CheckpointEvery is not set; it also runs as soon as
	// checkpointRecords records wait.
	defaultCheckpointEvery = time.Second
	checkpointRecords      = 4096
	// checkpointBatch bounds the records applied in one transaction.
	checkpointBatch = 16384
	// forgetChunk bounds the records the overlay forgets under one hold
	// of its lock, so that readers wait little.
	forgetChunk = 1024
	// maxSpares is how many zero-filled or recycled segments are kept
	// ready.
	maxSpares = 1
)

// keyJournal is the meta key of the journal's state in the file: the seq of
// the last record applied (8 bytes) and the next segment id (8 bytes).
var keyJournal = []byte("journal")

// appliedIn reads the seq of the last journal record the file applied.
func appliedIn(tx *bolt.Tx) uint64 {
	v := tx.Bucket(bucketMeta).Get(keyJournal)
	if len(v) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// segmentIDIn reads the next segment id the file recorded.
func segmentIDIn(tx *bolt.Tx) uint64 {
	v := tx.Bucket(bucketMeta).Get(keyJournal)
	if len(v) < 16 {
		return 0
	}
	return binary.BigEndian.Uint64(v[8:])
}

// putJournalState records the applied seq and the next segment id.
func putJournalState(tx *bolt.Tx, applied, nextID uint64) error {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), applied)
	return tx.Bucket(bucketMeta).Put(keyJournal, binary.BigEndian.AppendUint64(v, nextID))
}

// checkpointQueue holds the durable records the file has not applied, in
// order, with when each was made durable.
type checkpointQueue struct {
	mu    sync.Mutex
	recs  []jrecord
	runs  []timeRun // when the records were made durable, oldest first
	sum   int64     // usedDelta of the records
	bytes atomic.Int64
	n     atomic.Int64
	// room is signalled when records are dropped (applied).
	room chan struct{}
}

// timeRun is n records of the queue made durable at the same time.
type timeRun struct {
	n  int
	at time.Time
}

func (q *checkpointQueue) push(recs []jrecord, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range recs {
		q.recs = append(q.recs, r)
		q.sum += usedDelta(r.muts)
		q.bytes.Add(int64(r.size))
	}
	q.runs = append(q.runs, timeRun{len(recs), at})
	q.n.Store(int64(len(q.recs)))
}

// reset replaces the queue's records by recs, whose usedDelta is sum.
func (q *checkpointQueue) reset(recs []jrecord, at time.Time, sum int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.recs, q.runs, q.sum = recs, []timeRun{{len(recs), at}}, sum
	var bytes int64
	for _, r := range recs {
		bytes += int64(r.size)
	}
	q.bytes.Store(bytes)
	q.n.Store(int64(len(recs)))
}

// peek returns up to limit records from the head.
func (q *checkpointQueue) peek(limit int) []jrecord {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.recs[:min(limit, len(q.recs)):min(limit, len(q.recs))]
}

// drop removes n records from the head.
func (q *checkpointQueue) drop(n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var bytes int64
	for _, r := range q.recs[:n] {
		bytes += int64(r.size)
		q.sum -= usedDelta(r.muts)
	}
	q.recs = append([]jrecord(nil), q.recs[n:]...)
	for left := n; left > 0 && len(q.runs) > 0; {
		if q.runs[0].n > left {
			q.runs[0].n -= left
			break
		}
		left -= q.runs[0].n
		q.runs = q.runs[1:]
	}
	q.bytes.Add(-bytes)
	q.n.Store(int64(len(q.recs)))
	q.signal()
}

// signal wakes a writer waiting for room.
func (q *checkpointQueue) signal() {
	select {
	case q.room <- struct{}{}:
	default:
	}
}

func (q *checkpointQueue) length() int64    { return q.n.Load() }
func (q *checkpointQueue) bytesHeld() int64 { return q.bytes.Load() }

func (q *checkpointQueue) delta() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.sum
}

// oldest is when the oldest record waiting was made durable (zero: none).
func (q *checkpointQueue) oldest() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range q.runs {
		if r.n > 0 {
			return r.at
		}
	}
	return time.Time{}
}

// kickCheckpoint wakes the checkpoint.
func (s *Ledger) kickCheckpoint() {
	select {
	case s.cpKick <- struct{}{}:
	default:
	}
}

// idleCheckpoint is how long the journal writer must have been idle for
// the checkpoint to run before its period: a quiet ledger's records reach
// the file soon after they are written.
const idleCheckpoint = 100 * time.Millisecond

// checkpointer is the checkpoint's goroutine: it runs when checkpointRecords
// records wait (kicked), when the oldest waits for every, or when no record
// came for idleCheckpoint.
func (s *Ledger) checkpointer(every time.Duration) {
	defer close(s.cpDone)
	tick := time.NewTicker(min(every, idleCheckpoint))
	defer tick.Stop()
	var seen uint64
	for {
		run := false
		select {
		case <-s.cpStop:
			return
		case <-tick.C:
			d := s.durable.Load()
			idle := d == seen
			seen = d
			oldest := s.cpq.oldest()
			run = !oldest.IsZero() && (idle || time.Since(oldest) >= every)
			run = run || s.full.Load() != nil // a full file: try again
		case <-s.cpKick:
			run = true
		}
		if !run || s.manualCheckpoint {
			continue
		}
		for {
			n, err := s.checkpoint()
			if err != nil || n < checkpointBatch {
				break
			}
		}
	}
}

// checkpoint applies up to checkpointBatch waiting records to the file in
// one transaction and returns how many it applied. A transaction that
// fails for lack of room (the disk, max_size) makes the ledger full: new
// events are refused until a checkpoint succeeds (tried every second, and
// after each sweep).
func (s *Ledger) checkpoint() (int, error) {
	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	limit := checkpointBatch
	for {
		batch := s.cpq.peek(limit)
		if len(batch) == 0 {
			if s.full.Load() != nil {
				s.full.Store(nil)
				s.reportHealth()
			}
			return 0, nil
		}
		err := s.applyBatch(batch)
		if err == nil {
			return len(batch), nil
		}
		if errors.Is(err, ErrDiskFull) && len(batch) > 1 {
			limit = len(batch) / 2 // a smaller transaction may fit
			continue
		}
		if errors.Is(err, ErrDiskFull) {
			if s.full.Swap(&err) == nil && s.onJournalError != nil {
				s.onJournalError(FailCheckpoint, err)
			}
			s.cpq.signal() // a writer waiting for room waits no more
		} else if s.onJournalError != nil {
			s.onJournalError(FailCheckpoint, err)
		}
		s.reportHealth()
		return 0, err
	}
}

// applyBatch applies batch, the head of the queue, in one transaction;
// then the overlay forgets it and the queue drops it. s.cpMu is held.
func (s *Ledger) applyBatch(batch []jrecord) error {
	last := batch[len(batch)-1].seq
	var prune int64 // a full file takes what expired as deleted
	if s.full.Load() != nil {
		prune = s.now().UnixNano()
	}
	s.j.mu.Lock()
	nextID := s.j.nextID
	s.j.mu.Unlock()
	var drift int64
	err := s.queue(context.Background(), &writeOp{fn: func(tx *bolt.Tx) error {
		drift = 0
		// A transaction that reported a failure may have reached the file
		// all the same (bbolt's fdatasync failing after its meta page was
		// written): its records are not applied twice, which would count
		// their keys' changes twice in drift.
		done := appliedIn(tx)
		for _, r := range batch {
			if r.seq <= done {
				continue
			}
			n, err := applyMutations(tx, r.seq, r.muts, prune, s.latestReplay)
			if err != nil {
				return err
			}
			drift += n
		}
		crashAt("checkpoint-before-commit")
		return putJournalState(tx, max(last, done), nextID)
	}})
	if err != nil {
		return err
	}
	crashAt("checkpoint-after-commit")
	s.full.Store(nil)
	s.used.Add(drift)
	s.applied.Store(last)
	for i := 0; i < len(batch); i += forgetChunk {
		s.ov.mu.Lock()
		for _, r := range batch[i:min(i+forgetChunk, len(batch))] {
			s.ov.forget(r.seq, r.muts)
		}
		s.ov.mu.Unlock()
	}
	s.cpq.drop(len(batch))
	s.kickAlloc()
	s.reportHealth()
	return nil
}

// checkpointAll applies every waiting record, as far as it can.
func (s *Ledger) checkpointAll() error {
	for {
		n, err := s.checkpoint()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

// latestReplay says whether record seq set the overlay's entry of d (no
// later record changed it).
func (s *Ledger) latestReplay(d *digest, seq uint64) bool {
	s.ov.mu.RLock()
	defer s.ov.mu.RUnlock()
	e, ok := s.ov.replay[*d]
	return ok && e.jseq == seq
}

// kickAlloc wakes the allocator.
func (s *Ledger) kickAlloc() {
	select {
	case s.allocKick <- struct{}{}:
	default:
	}
}

// allocator is the goroutine that recycles the segments the file has
// applied and makes a spare segment ahead of use, so that the writer never
// waits for one and a full disk shows here, before any write fails.
func (s *Ledger) allocator() {
	defer close(s.allocDone)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.allocStop:
			return
		case <-tick.C:
			if s.brokenErr() != nil { // the writer tries to reopen again
				select {
				case s.reopenKick <- struct{}{}:
				default:
				}
			}
		case <-s.allocKick:
		}
		s.maintainSegments()
	}
}

// maintainSegments recycles (or deletes) the segments whose records the
// file has applied, and makes a spare if there is none.
func (s *Ledger) maintainSegments() {
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	applied := s.applied.Load()
	j := s.j
	j.mu.Lock()
	var done []*segment
	for len(j.segs) > 1 && j.segs[0].last <= applied {
		done = append(done, j.segs[0])
		j.segs = j.segs[1:]
	}
	want := j.nextSize(0)
	var extra []*segment
	if len(j.spares) > maxSpares {
		extra = append(extra, j.spares[maxSpares:]...)
		j.spares = j.spares[:maxSpares]
	}
	spares := len(j.spares)
	j.mu.Unlock()
	changed := false
	for _, sg := range done {
		if spares < maxSpares && sg.size >= want {
			if sp, err := j.recycle(sg); err == nil {
				j.mu.Lock()
				j.spares = append(j.spares, sp)
				j.mu.Unlock()
				spares++
				changed = true
				continue
			}
		}
		extra = append(extra, sg)
	}
	for _, sg := range extra {
		if err := j.fs.Remove(sg.path); err == nil {
			changed = true
		}
	}
	if changed {
		_ = j.fs.SyncDir(j.dir)
	}
	if spares >= maxSpares {
		s.setAllocErr(nil)
		return
	}
	sp, err := j.createFitting(want, 0)
	if err != nil {
		s.setAllocErr(err)
		return
	}
	j.mu.Lock()
	j.spares = append(j.spares, sp)
	j.mu.Unlock()
	s.setAllocErr(nil)
}

// setAllocErr records the outcome of making a spare.
func (s *Ledger) setAllocErr(err error) {
	s.j.mu.Lock()
	old := s.j.allocErr
	s.j.allocErr = err
	s.j.mu.Unlock()
	if (old == nil) != (err == nil) {
		if err != nil && s.onJournalError != nil {
			s.onJournalError(FailSegment, err)
		}
		s.reportHealth()
	}
}

// Writable implements dedupe.Health: nil while writes are expected to
// succeed, else why not — the journal failed a sync and is reopening; the
// file or the disk is full (the checkpoint found no room, or no spare
// segment could be made: ErrDiskFull, which matches dedupe.ErrFull); or the
// file lags too far behind the journal.
func (s *Ledger) Writable() error {
	if err := s.brokenErr(); err != nil {
		return err
	}
	if p := s.full.Load(); p != nil {
		return *p
	}
	s.j.mu.Lock()
	allocErr := s.j.allocErr
	s.j.mu.Unlock()
	if allocErr != nil {
		if isSpaceError(allocErr) {
			return fmt.Errorf("%w: ledger %s: no room for the next journal segment: %v", ErrDiskFull, s.path, allocErr)
		}
		return fmt.Errorf("%w: ledger %s: cannot make the next journal segment: %v", dedupe.ErrUnavailable, s.path, allocErr)
	}
	if held := s.cpq.bytesHeld(); held >= s.segmentSize/2 && !s.manualCheckpoint {
		return fmt.Errorf("%w: ledger %s: %d bytes of journal records not yet applied to the file (its disk is slow?)", dedupe.ErrUnavailable, s.path, held)
	}
	return nil
}

// reportHealth tells OnWritable when Writable changes between nil and an
// error.
func (s *Ledger) reportHealth() {
	if s.onHealth == nil || s.isClosing() {
		return
	}
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	err := s.Writable()
	if (err != nil) != s.unhealthy {
		s.unhealthy = err != nil
		s.onHealth(err)
	}
}

// JournalStats is the state of the journal, for gauges.
type JournalStats struct {
	// LagRecords is how many durable records the file has not applied
	// yet; LagSeconds how long ago the oldest of them was made durable.
	LagRecords int64
	LagSeconds float64
	// FsyncErrors counts the journal's failed writes and syncs since the
	// ledger was opened.
	FsyncErrors int64
	// Segments is how many segment files the journal has (spares
	// included), SegmentBytes their size.
	Segments     int
	SegmentBytes int64
}

// JournalStats returns the state of the journal.
func (s *Ledger) JournalStats() JournalStats {
	st := JournalStats{LagRecords: s.cpq.length(), FsyncErrors: s.fsyncErrors.Load()}
	if t := s.cpq.oldest(); !t.IsZero() {
		st.LagSeconds = max(time.Since(t).Seconds(), 0)
	}
	s.j.mu.Lock()
	for _, sg := range append(append([]*segment(nil), s.j.segs...), s.j.spares...) {
		st.Segments++
		st.SegmentBytes += sg.size
	}
	s.j.mu.Unlock()
	return st
}
