package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The replay filter spares a claim of a new id its read of the bbolt file.
// A claim looks an id up in the overlay, then in the file; most ids are new,
// and the file's read transaction was the largest cost a claim had. The
// filter is a Bloom filter of every replay key the journal ever published
// since it was built, and of every key the file held then: when it does not
// hold a digest, the file does not either, and the claim skips the read.
//
// Why it never hides a key the file holds: a key reaches the file only by
// the checkpoint applying a journal record, and every record was published
// to the overlay first. publish adds the key to the filter (under ov.mu)
// before the overlay shows it; the overlay forgets it (under ov.mu) only
// after the file has it. A reader that misses a key in the overlay under
// ov.mu therefore either finds its bit set or the key was never published.
// A rebuild (buildFilter) takes the overlay's keys once publish adds to
// the new filter too, then the file's, in read transactions begun after
// that.
//
// Keys deleted from the file (swept, forgotten) stay in the filter: they
// cost a read, as before. Once more keys were added than it was sized for,
// the filter is rebuilt in the background, sized for twice the ids held.
//
// It is not a library's Bloom filter: its bits are set and read with
// atomic operations (publish adds while claims read, without a lock), and
// its keys are SHA-256 digests already, so it needs no hash of its own.
type replayFilter struct {
	bits []atomic.Uint64
	// m is the number of bits; sized the number of keys it was made for;
	// added the keys added since.
	m     uint64
	sized int64
	added atomic.Int64
}

// Shape of the filter: 10 bits and 7 probes per key give about 1 % false
// positives once it holds the keys it was sized for.
const (
	filterBitsPerKey = 10
	filterProbes     = 7
	// minFilterKeys is the least a filter is sized for.
	minFilterKeys = 1 << 18
)

// newReplayFilter returns an empty filter sized for n keys.
func newReplayFilter(n int64) *replayFilter {
	n = max(n, minFilterKeys)
	words := (uint64(n)*filterBitsPerKey + 63) / 64
	return &replayFilter{bits: make([]atomic.Uint64, words), m: words * 64, sized: n}
}

// probes returns the two hashes of d from which the probes are made
// (h1 + i·h2, Kirsch and Mitzenmacher): d is a SHA-256, its words are
// independent and uniform already. h2 is odd, so the probes differ.
func probes(d *digest) (h1, h2 uint64) {
	return binary.LittleEndian.Uint64(d[8:16]), binary.LittleEndian.Uint64(d[16:24]) | 1
}

// add records d.
func (f *replayFilter) add(d *digest) {
	h1, h2 := probes(d)
	for i := uint64(0); i < filterProbes; i++ {
		b := (h1 + i*h2) % f.m
		w := &f.bits[b/64]
		if mask := uint64(1) << (b % 64); w.Load()&mask == 0 {
			w.Or(mask)
		}
	}
	f.added.Add(1)
}

// mayHold says whether d may have been added; false is certain.
func (f *replayFilter) mayHold(d *digest) bool {
	h1, h2 := probes(d)
	for i := uint64(0); i < filterProbes; i++ {
		b := (h1 + i*h2) % f.m
		if f.bits[b/64].Load()&(uint64(1)<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// saturated says whether f holds more keys than it was sized for: it still
// answers right, with more false positives.
func (f *replayFilter) saturated() bool { return f.added.Load() > f.sized }

// fileMayHold says whether the file may hold a replay record of d, for a
// reader that did not find d in the overlay, under ov.mu, with filter f
// (s.ov.filter read there).
func fileMayHold(f *replayFilter, d *digest) bool { return f == nil || f.mayHold(d) }

// filterer builds the replay filter at open, and again whenever it is
// saturated, until Close.
func (s *Ledger) filterer() {
	defer close(s.filterDone)
	retry := false // a build failed and its pause has passed
	for {
		if !retry {
			select {
			case <-s.filterStop:
				return
			case <-s.filterKick:
			}
		}
		retry = false
		s.ov.mu.RLock()
		current := s.ov.filter
		s.ov.mu.RUnlock()
		if current != nil && !current.saturated() {
			continue // a kick that came while it was rebuilt
		}
		f, err := s.buildFilter()
		if err != nil {
			if errors.Is(err, errClosed) {
				return
			}
			if s.onBackground != nil {
				s.onBackground(fmt.Errorf("replay filter: %w", err)) // claims read the file meanwhile
			}
			// Tried again after a pause, not at every group: each try
			// reads the whole file. The retry needs no kick: a ledger
			// that only answers claims would otherwise never get one.
			select {
			case <-s.filterStop:
				return
			case <-s.retryAfter(filterRetry):
			}
			retry = true
			continue
		}
		if s.filterBuilt != nil {
			select {
			case s.filterBuilt <- f:
			case <-s.filterStop:
				return
			}
		}
	}
}

// filterRetry is how long the filterer waits after a failed build.
const filterRetry = time.Minute

// retryAfter returns the channel that ends the filterer's pause of d after
// a failed build: time.After's, or the tests' (Config.filterRetryAfter).
func (s *Ledger) retryAfter(d time.Duration) <-chan time.Time {
	if s.filterRetryAfter != nil {
		return s.filterRetryAfter(d)
	}
	return time.After(d)
}

// kickFilter asks the filterer for a new filter.
func (s *Ledger) kickFilter() {
	select {
	case s.filterKick <- struct{}{}:
	default:
	}
}

// filterScanChunk bounds the keys of the file one read transaction of a
// build reads: a long transaction would keep bbolt from reusing the pages
// freed meanwhile. (A variable: tests make it small.)
var filterScanChunk = 1 << 16

// buildFilter makes a new replay filter of the keys the overlay and the
// file hold and puts it in place of the old one. From the moment it is
// set up, publish adds to it too; then it takes the overlay's keys (a key
// the overlay forgot meanwhile was in the file before the scan began), then
// the file's, a chunk per read transaction (a key that reached the file
// behind the scan was published after the set-up, so added then).
func (s *Ledger) buildFilter() (*replayFilter, error) {
	f := newReplayFilter(2 * s.used.Load())
	s.ov.mu.Lock()
	s.ov.next = f
	s.ov.mu.Unlock()
	s.ov.mu.RLock() // claims go on; publish and forget wait
	for d := range s.ov.replay {
		f.add(&d)
	}
	s.ov.mu.RUnlock()
	err := s.scanReplayKeys(f)
	s.ov.mu.Lock()
	s.ov.next = nil
	if err == nil {
		s.ov.filter = f
	}
	s.ov.mu.Unlock()
	return f, err
}

// scanReplayKeys adds every key of the file's replay bucket to f, in chunks
// of filterScanChunk keys, each in a read transaction of its own.
func (s *Ledger) scanReplayKeys(f *replayFilter) error {
	var after []byte // the last key added; nil: from the first
	for chunk := 1; ; chunk++ {
		n := 0
		err := s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketReplay).Cursor()
			k, _ := c.First()
			if after != nil {
				if k, _ = c.Seek(after); bytes.Equal(k, after) {
					k, _ = c.Next()
				}
			}
			var d digest
			for ; k != nil && n < filterScanChunk; k, _ = c.Next() {
				if len(k) == len(d) {
					copy(d[:], k)
					f.add(&d)
				}
				after = append(after[:0], k...)
				n++
			}
			if s.filterChunkRead != nil {
				return s.filterChunkRead(chunk)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n < filterScanChunk {
			return nil
		}
		select {
		case <-s.filterStop:
			return errClosed
		default:
		}
	}
}
