package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

// Report is what Inspect read from a ledger.
type Report struct {
	// Path is the ledger's path; Size its size in bytes.
	Path string
	Size int64
	// Schema is the layout version of the file.
	Schema uint32
	// Delivered and Accepted count the remembered replay keys (within their
	// window at At); Expired the ones whose window ended, not yet swept.
	Delivered, Accepted, Expired int
	// Counts is what the spool holds, by scope.
	Counts map[string]spool.Counts
	// Paused lists the paused scopes.
	Paused []string
	// Events are the spool's events without headers and bodies, newest
	// first, at most the limit Inspect was given.
	Events []spool.Record
	// At is when the snapshot was taken.
	At time.Time
	// Snapshot says Inspect read a copy, taken at At: another process (a
	// running Caddy) held the file, or its journal had records to apply.
	Snapshot bool
}

// inspectAttempts bounds the copies Inspect makes of a ledger another
// process is writing, until one is consistent.
const inspectAttempts = 3

// Inspect reads the ledger at path without writing to it, to its journal,
// or waiting for its lock. A file no one holds and without journal segments
// is read as it is. Otherwise Inspect copies the journal's segments, then
// the file (which is then as new as the segments or newer), into a
// temporary folder, opens the copy — which applies the journal, truncating
// a tail torn by a write in progress — and reads that: a snapshot of the
// moment, taken again while a copy is inconsistent (a segment recycled
// during the copy). It returns up to limit events (0: none).
func Inspect(path string, limit int) (*Report, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	if segs, _ := filepath.Glob(path + journalSuffix + "*"); len(segs) == 0 {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
		if err == nil {
			defer db.Close()
			return inspectDB(db, path, limit, false)
		}
		if !errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("ledger %s: %w", path, openError(err))
		}
	}
	var last error
	for range inspectAttempts {
		r, err := inspectCopy(path, limit)
		if err == nil {
			return r, nil
		}
		last = err
	}
	return nil, fmt.Errorf("ledger %s: held by another process, and %d copies of it were not consistent (it is being written fast): %v", path, inspectAttempts, last)
}

// inspectCopy reads a copy of the ledger at path and its journal.
func inspectCopy(path string, limit int) (*Report, error) {
	dir, err := os.MkdirTemp("", "webhook-guard-inspect-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	dst := filepath.Join(dir, "ledger.db")
	segs, _ := filepath.Glob(path + journalSuffix + "*")
	for _, seg := range segs { // the segments first: the file is then as new or newer
		if err := copyFile(seg, dst+strings.TrimPrefix(seg, path)); err != nil {
			return nil, err
		}
	}
	if err := copyFile(path, dst); err != nil {
		return nil, err
	}
	l, err := Open(Config{Path: dst, SweepEvery: time.Hour})
	if err != nil {
		return nil, err
	}
	if err := l.Close(); err != nil { // applies the journal to the copy
		return nil, err
	}
	db, err := bolt.Open(dst, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, openError(err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}); err != nil {
		return nil, err
	}
	return inspectDB(db, path, limit, true)
}

// copyFile copies the file src to dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// inspectDB reads the report from an open ledger.
func inspectDB(db *bolt.DB, path string, limit int, snapshot bool) (r *Report, err error) {
	defer recoverCorrupt(&err)
	r = &Report{Path: path, Counts: map[string]spool.Counts{}, At: time.Now(), Snapshot: snapshot}
	if fi, err := os.Stat(path); err == nil {
		r.Size = fi.Size()
	}
	now := r.At.UnixNano()
	err = db.View(func(tx *bolt.Tx) error {
		if _, err := checkSchema(tx); err != nil {
			return err
		}
		if v := tx.Bucket(bucketMeta).Get(keySchema); len(v) == 4 {
			r.Schema = uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
		}
		if err := tx.Bucket(bucketReplay).ForEach(func(_, v []byte) error {
			rec, ok := parseReplay(v)
			switch {
			case !ok:
			case now >= rec.expires:
				r.Expired++
			case rec.state == recordDelivered:
				r.Delivered++
			case rec.state == recordAccepted:
				r.Accepted++
			}
			return nil
		}); err != nil {
			return err
		}
		prefix := []byte(pausePrefix)
		c := tx.Bucket(bucketMeta).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			r.Paused = append(r.Paused, string(k[len(prefix):]))
		}
		sp := tx.Bucket(bucketSpool)
		if sp == nil {
			return nil
		}
		c = sp.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if len(k) != 8 {
				continue
			}
			d, err := decodeRecord(binary.BigEndian.Uint64(k), v, false)
			if err != nil {
				return err
			}
			sc := r.Counts[d.Scope]
			switch d.State {
			case spool.Pending:
				sc.Pending++
				if sc.OldestPending.IsZero() || d.ReceivedAt.Before(sc.OldestPending) {
					sc.OldestPending = d.ReceivedAt
				}
			case spool.Dead:
				sc.Dead++
			case spool.Discarded:
				sc.Discarded++
			}
			r.Counts[d.Scope] = sc
			if len(r.Events) < limit {
				d.Header, d.History = nil, nil
				r.Events = append(r.Events, *d.Record)
			}
		}
		return nil
	})
	sort.Strings(r.Paused)
	return r, err
}
