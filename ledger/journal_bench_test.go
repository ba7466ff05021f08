package ledger

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
)

// writeFullSegment writes, beside the (empty, closed) ledger at path, a
// journal segment of size bytes full of commit records, 128 to a group, as
// the writer lays them out under load; it returns how many.
func writeFullSegment(tb testing.TB, path string, size int64) int {
	tb.Helper()
	const id = 1 << 20
	j := &journal{dir: filepath.Dir(path), name: filepath.Base(path)}
	buf := make([]byte, 0, size)
	buf = segmentHeader(buf, id, 1)
	seq := uint64(1)
	exp := time.Now().Add(24 * time.Hour).UnixNano()
	for {
		var group []byte
		if len(buf)%blockSize != 0 { // the first group shares the header's block
			group = buf[len(buf)-len(buf)%blockSize:]
			buf = buf[:len(buf)-len(buf)%blockSize]
		}
		for range 128 {
			d := digest(sha256.Sum256([]byte("recovery_" + strconv.FormatUint(seq, 10))))
			var start int
			group, start = beginFrame(group, frameOps, seq, id)
			group = appendMutations(group, []mutation{{kind: mPutReplay, flag: true, digest: d, replay: replayRecord{state: recordDelivered, expires: exp}}})
			group = endFrame(group, start)
			seq++
		}
		group = padBlock(group)
		if int64(len(buf)+len(group)) > size {
			seq -= 128
			break
		}
		buf = append(buf, group...)
	}
	buf = append(buf, make([]byte, size-int64(len(buf)))...)
	if err := os.WriteFile(j.segmentPath(id), buf, 0o600); err != nil {
		tb.Fatal(err)
	}
	return int(seq - 1)
}

// BenchmarkJournalRecovery is the time Open takes to read back a full
// segment of 64 MiB that no checkpoint applied (a crash under load): read,
// check, decode its records and build the overlay (the checkpoint then
// applies them in the background). Run it alone:
//
//	go test -run '^$' -bench BenchmarkJournalRecovery -benchtime 5x ./ledger/
func BenchmarkJournalRecovery(b *testing.B) {
	path := filepath.Join(b.TempDir(), "ledger.db")
	s, err := Open(Config{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	n := writeFullSegment(b, path, DefaultSegmentSize)
	full := (&journal{dir: filepath.Dir(path), name: filepath.Base(path)}).segmentPath(1 << 20)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		names, _ := os.ReadDir(filepath.Dir(path))
		for _, e := range names { // what earlier rounds' opens added
			if p := filepath.Join(filepath.Dir(path), e.Name()); strings.Contains(p, journalSuffix) && p != full {
				_ = os.Remove(p)
			}
		}
		b.StartTimer()
		s, err := Open(Config{Path: path, manualCheckpoint: true})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if got := s.cpq.length(); got != int64(n) {
			b.Fatalf("%d records read back, want %d", got, n)
		}
		c, err := s.Claim(ctx, "recovery_"+strconv.Itoa(n), time.Minute)
		if err != nil || c.State != dedupe.Delivered {
			b.Fatalf("the last record's key: %v %v", c.State, err)
		}
		_ = s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "records")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/recovery")
}

// BenchmarkJournalCommit is the cost of a Claim and a durable Commit
// through the journal, from 32 goroutines as from 32 connections: groups of
// every commit waiting, one write and one fdatasync each.
func BenchmarkJournalCommit(b *testing.B) {
	s, err := Open(Config{Path: filepath.Join(b.TempDir(), "ledger.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var syncs, records, syncNanos atomic.Int64
	s.onSync = func(d time.Duration, n int) { syncs.Add(1); records.Add(int64(n)); syncNanos.Add(int64(d)) }
	var next atomic.Int64
	ctx := context.Background()
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := dedupe.Key("bench", "ivy", strconv.FormatInt(next.Add(1), 10))
			c, err := s.Claim(ctx, key, time.Minute)
			if err == nil {
				err = s.Commit(ctx, c, time.Hour)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
	if n := syncs.Load(); n > 0 {
		b.ReportMetric(float64(records.Load())/float64(n), "records/sync")
		b.ReportMetric(float64(syncNanos.Load())/float64(n)/1e3, "µs/sync")
	}
}

// BenchmarkFdatasync is the floor of a durable answer on this disk: one 4
// KiB write into a zero-filled (preallocated) file and one fdatasync, as a
// journal group of a few records costs.
func BenchmarkFdatasync(b *testing.B) {
	path := filepath.Join(b.TempDir(), "sync")
	const size = 64 << 20
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := osFS{}.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Datasync(); err != nil {
		b.Fatal(err)
	}
	block := make([]byte, blockSize)
	var off int64
	for b.Loop() {
		block[0]++
		if _, err := f.WriteAt(block, off); err != nil {
			b.Fatal(err)
		}
		if err := f.Datasync(); err != nil {
			b.Fatal(err)
		}
		off = (off + blockSize) % size
	}
}

// BenchmarkDirectWriteAndSync is the journal's I/O per group on this disk:
// a 4 KiB O_DIRECT write into a zero-filled segment and an fdatasync, one
// after the other (serial) or, as the syncer and the flusher do, the next
// write while the last one is synced (overlapped). ns/op is the time per
// group.
func BenchmarkDirectWriteAndSync(b *testing.B) {
	for _, overlapped := range []bool{false, true} {
		name := map[bool]string{false: "serial", true: "overlapped"}[overlapped]
		b.Run(name, func(b *testing.B) {
			const size = 64 << 20
			path := filepath.Join(b.TempDir(), "segment")
			if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
				b.Fatal(err)
			}
			f, err := osFS{}.OpenSegment(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			block := alignedBlocks(blockSize)
			var off int64
			write := func() {
				block[0]++
				if _, err := f.WriteAt(block, off); err != nil {
					b.Fatal(err)
				}
				off = (off + blockSize) % size
			}
			if !overlapped {
				for b.Loop() {
					write()
					if err := f.Datasync(); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			written, synced := make(chan struct{}), make(chan error)
			go func() {
				for range written {
					synced <- f.Datasync()
				}
				close(synced)
			}()
			write()
			written <- struct{}{}
			for b.Loop() {
				write() // while the last one is synced
				if err := <-synced; err != nil {
					b.Fatal(err)
				}
				written <- struct{}{}
			}
			close(written)
			for range synced {
			}
		})
	}
}
