// Package ledger is the guard's durable memory on one Caddy instance: a
// bbolt file that remembers delivered event ids (a dedupe.Store) and holds
// the spool's events (a spool.Store), with a write-ahead journal in front of
// it. A write is durable once its journal record is: one goroutine writes
// every record waiting in one write and one fdatasync (journal.go,
// writer.go); a background checkpoint applies the records to the bbolt file
// later (checkpoint.go); reads see the records not yet applied through an
// in-memory overlay (overlay.go), then the file.
//
// A file it cannot open, read or upgrade is an error naming its path: never
// a silent fallback, never an empty start over data it could not read.
package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// Defaults of Config.
const (
	// DefaultMaxEvents bounds the file store when MaxEvents is not set.
	DefaultMaxEvents = 10_000_000
	// DefaultSweep is how often expired ids are deleted from the file
	// when Config.SweepEvery is not set.
	DefaultSweep = time.Minute
	// DefaultGroupWait is Config.GroupWait when not set: on the project's
	// benchmark machine one fdatasync costs 60-90 µs of CPU, and waiting
	// up to 1 ms for the deliveries in flight made groups about twice
	// as large and the guard about 10 % faster under load
	// (docs/benchmarks.md). A lone delivery never waits.
	DefaultGroupWait = time.Millisecond
)

// Schema is the version of the ledger's layout that this build writes
// (bucket meta, key schema). A file with a newer version is refused, never
// read or written.
const Schema = 1

// shardCount is the number of shards of the claims in flight.
const shardCount = 64

// fileOpenTimeout bounds waiting for the file lock held by another process.
const fileOpenTimeout = time.Second

// initialMmapSize is how much of the file bbolt maps at open: 1 GiB of
// address space (not of memory) on 64-bit systems other than Windows, so
// that a growing file is not mapped again (bbolt doubles the mapping as the
// file grows, and a new mapping waits for every read transaction to end,
// and holds every new one, claims included, meanwhile), as etcd does. On
// Windows bbolt would grow the file itself to that size, and a 32-bit
// process has little address space to spare: there it is bbolt's default.
var initialMmapSize = func() int {
	if strconv.IntSize == 64 && runtime.GOOS != "windows" {
		return 1 << 30
	}
	return 0
}()

// sweepBatch bounds the ids the sweep deletes in one transaction, so that
// commits queued behind it wait little.
const sweepBatch = 1000

// maxGroup bounds the write operations of one transaction.
const maxGroup = 4096

// Bucket and key names of the ledger.
var (
	bucketMeta   = []byte("meta")   // schema → version (4 bytes, big endian)
	bucketReplay = []byte("replay") // sha256(key) → state (1 byte) ‖ expires (unix ns, 8 bytes)
	bucketExpiry = []byte("expiry") // expires (8 bytes) ‖ sha256(key) → empty
	keySchema    = []byte("schema")
)

// ErrDiskFull wraps the error of a write that the file store could not make
// because its disk (or Config.MaxSize) is full. It matches dedupe.ErrFull too,
// so the guard answers 503 with Retry-After.
var ErrDiskFull = fmt.Errorf("%w: ledger disk full", dedupe.ErrFull)

// ErrInUse wraps the error of Open when another process holds the file.
var ErrInUse = errors.New("in use by another process (another Caddy running with the same data directory?)")

// The kinds of journal failure, as Config.OnJournalError is told them.
const (
	// FailSync: a write or fdatasync of the journal failed. It is fatal to
	// the journal as it was (never retried): the group's operations fail,
	// the ledger refuses writes until it reopened its journal from disk.
	FailSync = "sync"
	// FailReopen: reopening the journal after FailSync failed; it is tried
	// again every second.
	FailReopen = "reopen"
	// FailCheckpoint: applying journal records to the file failed (a full
	// disk, max_size: new events are refused until a checkpoint succeeds).
	FailCheckpoint = "checkpoint"
	// FailSegment: making the next segment failed (a full disk: new events
	// are refused until one is made).
	FailSegment = "segment"
)

// Config configures the file store.
type Config struct {
	// Path is the ledger file; its folder is created (mode 0700) if
	// missing, and the file with mode 0600.
	Path string
	// MaxEvents bounds the ids remembered or in flight; default
	// DefaultMaxEvents. A claim of a new id beyond it fails with dedupe.ErrFull.
	MaxEvents int64
	// MaxSize bounds the size of the file in bytes (0: no bound). A write
	// that would grow it further fails with ErrDiskFull, as on a full disk.
	MaxSize int
	// SweepEvery is how often expired ids are deleted; default
	// DefaultSweep. A claim refused at capacity deletes expired ids
	// first in any case.
	SweepEvery time.Duration
	// HoldLeases makes a claim held until it is committed or released,
	// whatever its lease: the claims of one process cannot outlive it, and
	// a process stopped (SIGSTOP) or starved longer than a lease must not
	// let a copy of an event it is delivering through. The lease still
	// bounds nothing else. Caddy's file store sets it.
	HoldLeases bool
	// OnBackgroundError, when set, is called with the error of a failed
	// background task: a sweep of expired ids, a purge of discarded
	// events, or a build of the replay filter (its error begins "replay
	// filter:"; claims then read the file for every id, as without it).
	OnBackgroundError func(error)
	// OnWritable, when set, is told when the ledger stops being writable
	// (the error: a full disk, a journal that failed a sync) and when it is
	// again (nil). It must not call the ledger.
	OnWritable func(err error)
	// SegmentSize is the largest journal segment, in bytes; default
	// DefaultSegmentSize. A new ledger's first segment is 1 MiB, each one
	// made after the last filled up twice as large, up to it.
	SegmentSize int64
	// CheckpointEvery is how often the journal's records are applied to
	// the file; default one second (and at once when 4096 records wait).
	CheckpointEvery time.Duration
	// GroupWait is how long a journal group may wait for more records,
	// from its first, while other deliveries are in flight (claimed and
	// neither committed nor released): one fdatasync then carries them
	// all (see journalWriter). Default DefaultGroupWait; negative: never
	// wait.
	GroupWait time.Duration
	// OnSync, when set, is told of each journal group: how long its
	// fdatasync took and how many records it held.
	OnSync func(d time.Duration, records int)
	// OnJournalError, when set, is told of every journal failure, by kind
	// (FailSync, FailReopen, FailCheckpoint, FailSegment). It must not call
	// the ledger.
	OnJournalError func(kind string, err error)

	// fs is the journal's file system (the OS's when nil); tests use a
	// strict in-memory one.
	fs fileSystem
	// manualCheckpoint stops the background checkpoint, and Close's: the
	// tests call checkpoint themselves, or leave the journal as it is.
	manualCheckpoint bool
	// filterBuilt, when set (by tests), is sent each replay filter the
	// ledger puts in place.
	filterBuilt chan<- *replayFilter
	// filterChunkRead, when set (by tests), is called in the read
	// transaction of each chunk of keys a build of the replay filter read
	// from the file (the first is 1): an error it returns fails the build,
	// as a failed read of the file would.
	filterChunkRead func(chunk int) error
	// filterRetryAfter, when set (by tests), stands for time.After in the
	// pause after a failed build of the replay filter: it is called with
	// the pause (filterRetry) and returns the channel that ends it.
	filterRetryAfter func(time.Duration) <-chan time.Time
	// forgetScanned, when set (by tests), is called by Forget once it has
	// read the spool's records of the key, before its journal record.
	forgetScanned func()
	// Now is the ledger's clock; time.Now when nil. Tests move it.
	Now func() time.Time
}

// Ledger is the replay store kept in a bbolt file and its journal, so that
// delivered ids survive a restart or a crash. A commit is durable once its
// journal record is (one fdatasync per group of every write waiting); ids in
// flight are kept in memory only: they belong to this process. The file and
// the journal hold SHA-256 digests of the keys, never event ids in clear.
type Ledger struct {
	db       *bolt.DB
	path     string
	capacity atomic.Int64 // max_events, changed by SetCapacity
	maxSize  int
	now      func() time.Time
	hold     bool // Config.HoldLeases
	tokens   atomic.Uint64
	// used counts the records in the file (expired ones not yet swept
	// included) plus the ids in flight; leases the ids in flight alone
	// (the leases in shards).
	used, leases atomic.Int64
	shards       [shardCount]fileShard

	// The bbolt writer: the checkpoint's transactions, the sweeps.
	writes  chan *writeOp
	closeMu sync.RWMutex // held for reading while queueing a write
	closed  bool
	writer  chan struct{} // closed when the writer has finished

	// The journal (journal.go, writer.go, checkpoint.go, overlay.go).
	fs          fileSystem
	j           *journal
	ov          *overlay
	segmentSize int64
	jops        chan *jop
	jmu         sync.RWMutex // held for reading while queueing to jops
	jclosed     bool
	jdone       chan struct{} // closed when the journal writer has finished
	// Owned by the journal writer: the next record's seq and spool seq,
	// the groups written and not yet published, when the last reopen was
	// tried.
	nextSeq      uint64
	nextSpool    uint64
	pending      []*group
	lastReopen   time.Time
	failuresSeen int64
	encodeBuf    []byte        // encodeGroup's scratch
	groupWait    time.Duration // Config.GroupWait
	// groupBufs keeps the aligned buffers of groups written for the
	// groups to come: the syncer returns a group's once written.
	groupBufs chan []byte
	// syncq hands the groups to the syncer, which says on syncIdle when
	// it waits for one; inflight counts those it has not finished;
	// reopenKick wakes the writer to reopen.
	syncq      chan *group
	syncIdle   chan struct{}
	inflight   sync.WaitGroup
	reopenKick chan struct{}
	// durable is the seq of the last record synced; applied the last one
	// the file holds.
	durable, applied atomic.Uint64
	cpq              checkpointQueue
	cpMu             sync.Mutex // one checkpoint, or a reopen, at a time
	cpKick, cpStop   chan struct{}
	cpDone           chan struct{}
	allocMu          sync.Mutex // held while segments are made or recycled, and by a reopen
	allocKick        chan struct{}
	allocStop        chan struct{}
	allocDone        chan struct{}
	// The replay filter's builder (filter.go).
	filterKick, filterStop, filterDone chan struct{}
	filterBuilt                        chan<- *replayFilter                 // Config.filterBuilt
	filterChunkRead                    func(int) error                      // Config.filterChunkRead
	filterRetryAfter                   func(time.Duration) <-chan time.Time // Config.filterRetryAfter
	forgetScanned                      func()                               // Config.forgetScanned
	// fileReads counts the replay look-ups that read the file.
	fileReads        atomic.Int64
	manualCheckpoint bool
	// bound is how many bytes of records (as held in memory) may wait for
	// the checkpoint before the writer waits for it (see waitRoom).
	bound int64
	// broken is the error of the journal's failed write or sync, until it
	// is reopened; full the error of a checkpoint that found no room.
	broken, full   atomic.Pointer[error]
	fsyncErrors    atomic.Int64
	onSync         func(time.Duration, int)
	onJournalError func(string, error)
	healthMu       sync.Mutex
	unhealthy      bool
	closing        atomic.Bool

	roomMu       sync.Mutex // makeRoom's turn
	stopSweep    chan struct{}
	swept        chan struct{} // closed when the sweeper has finished
	onBackground func(error)
	onHealth     func(error)
	closeOnce    sync.Once
	closeErr     error

	// spool is the state of the spool's due events held in memory.
	spool spoolState
}

type fileShard struct {
	mu sync.Mutex
	m  map[digest]lease
}

// digest is the SHA-256 of a key, as stored in the file.
type digest [sha256.Size]byte

// lease is a claim in flight.
type lease struct {
	token   string
	expires time.Time
	// exists says whether the ledger held a record of the key (an
	// expired one) when it was claimed: its commit then replaces it. The
	// sweep leaves the records of keys in flight alone, so it still
	// holds when the commit is written.
	exists bool
}

// writeOp is one write queued for the writer goroutine. fn runs inside the
// group's transaction, perhaps more than once (if another operation of the
// group fails, the group is run again without it), so it must have no
// effect outside tx but the values it computes for after. after runs once,
// after the transaction committed (err nil) or failed, before done.
type writeOp struct {
	fn    func(tx *bolt.Tx) error
	after func(err error)
	done  chan error
}

// Open opens or creates the ledger at cfg.Path and starts its writer
// and sweeper; Close stops them. A file that cannot be opened (locked by
// another process, unreadable, corrupt, not a ledger, of a newer schema)
// is an error naming the path and the cause; Open never starts empty
// over a file it could not read.
func Open(cfg Config) (*Ledger, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return open(cfg, cfg.Now)
}

// openFile is Open with a clock, which tests replace.
func open(cfg Config, clock func() time.Time) (*Ledger, error) {
	if cfg.Path == "" {
		return nil, errors.New("ledger: ledger path is empty")
	}
	if cfg.MaxEvents < 0 {
		return nil, fmt.Errorf("ledger: ledger max_events must be positive, got %d", cfg.MaxEvents)
	}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = DefaultSweep
	}
	db, count, err := openLedger(cfg.Path, cfg.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", cfg.Path, err)
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = defaultCheckpointEvery
	}
	if cfg.GroupWait == 0 {
		cfg.GroupWait = DefaultGroupWait
	}
	s := &Ledger{
		db:           db,
		path:         cfg.Path,
		maxSize:      cfg.MaxSize,
		now:          clock,
		hold:         cfg.HoldLeases,
		writes:       make(chan *writeOp, maxGroup),
		writer:       make(chan struct{}),
		stopSweep:    make(chan struct{}),
		swept:        make(chan struct{}),
		onBackground: cfg.OnBackgroundError,
		groupWait:    cfg.GroupWait,
		onHealth:     cfg.OnWritable,
	}
	s.used.Store(count)
	s.capacity.Store(cfg.MaxEvents)
	for i := range s.shards {
		s.shards[i].m = make(map[digest]lease)
	}
	if err := s.loadSpoolState(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("ledger %s: %w", cfg.Path, err)
	}
	if err := s.openJournal(cfg); err != nil {
		s.j.closeFiles()
		_ = db.Close()
		return nil, fmt.Errorf("ledger %s: %w", cfg.Path, err)
	}
	go s.write()
	go s.journalWriter()
	go s.syncer()
	go s.checkpointer(cfg.CheckpointEvery)
	go s.allocator()
	go s.sweepEvery(cfg.SweepEvery)
	go s.filterer()
	s.kickAlloc()
	s.kickFilter()
	if s.cpq.length() > 0 {
		s.kickCheckpoint()
	}
	return s, nil
}

// openJournal reads the journal beside the file back (see loadJournal) and
// prepares its writer.
func (s *Ledger) openJournal(cfg Config) error {
	s.fs = cfg.fs
	if s.fs == nil {
		s.fs = osFS{}
	}
	s.segmentSize = cfg.SegmentSize
	if s.segmentSize <= 0 {
		s.segmentSize = DefaultSegmentSize
	}
	s.segmentSize = max(alignUp(s.segmentSize, blockSize), minSegmentSize)
	// The records waiting for the checkpoint: a segment's worth at most,
	// and with a max_size budget an eighth of it, so that the journal
	// never holds much more than the file could take.
	s.bound = s.segmentSize
	if cfg.MaxSize > 0 {
		s.bound = min(s.bound, max(int64(cfg.MaxSize)/8, 16<<10))
	}
	s.cpq.room = make(chan struct{}, 1)
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = defaultCheckpointEvery
	}
	if cfg.GroupWait == 0 {
		cfg.GroupWait = DefaultGroupWait
	}
	s.ov = newOverlay(0)
	s.jops = make(chan *jop, maxGroupOps)
	s.jdone = make(chan struct{})
	s.syncq = make(chan *group, 1)
	s.groupBufs = make(chan []byte, 2)
	s.syncIdle = make(chan struct{}, 1)
	s.reopenKick = make(chan struct{}, 1)
	s.cpKick, s.cpStop, s.cpDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	s.allocKick, s.allocStop, s.allocDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	s.filterKick, s.filterStop, s.filterDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	s.filterBuilt, s.filterChunkRead, s.filterRetryAfter = cfg.filterBuilt, cfg.filterChunkRead, cfg.filterRetryAfter
	s.forgetScanned = cfg.forgetScanned
	s.manualCheckpoint = cfg.manualCheckpoint
	s.onSync, s.onJournalError = cfg.OnSync, cfg.OnJournalError
	s.j = &journal{fs: s.fs, dir: filepath.Dir(s.path), name: filepath.Base(s.path), maxSize: s.segmentSize}
	err := s.view(func(tx *bolt.Tx) error {
		s.j.nextID = segmentIDIn(tx)
		return nil
	})
	if err != nil {
		return err
	}
	return s.loadJournal(false)
}

// openLedger opens the bbolt file at path, checks or writes its schema and
// counts its records.
//
// An existing file is first read through, opened read only, in this
// goroutine, where a panic of bbolt on a corrupt page can be recovered; it
// counts the records on the way.
//
// The free list is stored (NoFreelistSync off): without it, bbolt rebuilds
// the list by walking every page at each open and after each failed commit
// (a full disk), in a goroutine of its own where a panic on a corrupt page
// would end the process. Storing it costs no measurable commit time.
func openLedger(path string, maxSize int) (db *bolt.DB, count int64, err error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			target, _ := os.Readlink(path)
			return nil, 0, fmt.Errorf("a symbolic link to %s, which does not exist: point it at a ledger, or remove it (a ledger is never created through a dangling link)", target)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, 0, err
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return nil, 0, errors.New("is a directory, not a file")
	case err == nil && !fi.Mode().IsRegular():
		return nil, 0, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	case err == nil && fi.Size() > 0:
		if count, err = readLedger(path); err != nil {
			return nil, 0, err
		}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, 0, err
	}
	defer recoverCorrupt(&err)
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         fileOpenTimeout,
		FreelistType:    bolt.FreelistMapType,
		MaxSize:         maxSize,
		InitialMmapSize: initialMmapSize,
	})
	if err != nil {
		return nil, 0, openError(err)
	}
	if err := initLedger(db); err != nil {
		_ = db.Close()
		return nil, 0, err
	}
	return db, count, nil
}

// readLedger opens the ledger at path read only, checks its schema, reads
// every page and returns the number of records.
func readLedger(path string) (count int64, err error) {
	defer recoverCorrupt(&err)
	// A fault reading the mapping (a truncated file) panics, not crashes.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: fileOpenTimeout, ReadOnly: true})
	if err != nil {
		return 0, openError(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		fresh, err := checkSchema(tx)
		if err != nil || fresh {
			return err
		}
		// A file cut short may still hold every page the buckets reach.
		if fi, err := os.Stat(path); err == nil && fi.Size() < tx.Size() {
			return fmt.Errorf("corrupt file: %d bytes where its pages need %d (cut short?); move it away to start an empty ledger", fi.Size(), tx.Size())
		}
		for _, name := range append([][]byte{bucketMeta, bucketReplay, bucketExpiry}, spoolBucketNames...) {
			b := tx.Bucket(name)
			if b == nil { // the spool's, in a ledger that predates it
				continue
			}
			n := b.Stats().KeyN // every page, branches included
			if err := b.ForEach(func(k, v []byte) error { return nil }); err != nil {
				return err
			}
			if bytes.Equal(name, bucketReplay) {
				count = int64(n)
			}
		}
		return nil
	})
	return count, err
}

// recoverCorrupt turns a panic of bbolt on a corrupt file (or a fault
// reading its mapping) into *err. It must be deferred.
func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("corrupt file (%v); move it away to start an empty ledger", r)
	}
}

// openError explains an error of bolt.Open.
func openError(err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return ErrInUse
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return fmt.Errorf("corrupt file or not a ledger (%v); move it away to start an empty ledger", err)
	}
	return err
}

// initLedger checks the schema of an existing ledger, or lays out a new one.
func initLedger(db *bolt.DB) error {
	var fresh bool
	err := db.View(func(tx *bolt.Tx) (err error) {
		fresh, err = checkSchema(tx)
		return err
	})
	if err != nil {
		return err
	}
	if !fresh {
		// A ledger written before the spool gets its buckets.
		var missing bool
		_ = db.View(func(tx *bolt.Tx) error {
			for _, name := range spoolBucketNames {
				missing = missing || tx.Bucket(name) == nil
			}
			return nil
		})
		if !missing {
			return nil
		}
		return db.Update(spoolBuckets)
	}
	return db.Update(func(tx *bolt.Tx) error {
		if err := spoolBuckets(tx); err != nil {
			return err
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, Schema)); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketReplay); err != nil {
			return err
		}
		_, err = tx.CreateBucket(bucketExpiry)
		return err
	})
}

// checkSchema checks that tx reads a ledger of this schema, or an empty
// file (fresh).
func checkSchema(tx *bolt.Tx) (fresh bool, err error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return false, errors.New("not a webhook_guard ledger (it has no meta bucket)")
		}
		return true, nil
	}
	v := meta.Get(keySchema)
	if len(v) != 4 {
		return false, fmt.Errorf("corrupt file: schema version of %d bytes; move it away to start an empty ledger", len(v))
	}
	if n := binary.BigEndian.Uint32(v); n != Schema {
		if n > Schema {
			return false, fmt.Errorf("schema version %d is newer than this build's (%d): the file was written by a newer caddy-webhook-guard", n, Schema)
		}
		return false, fmt.Errorf("schema version %d is not supported (this build reads %d)", n, Schema)
	}
	if tx.Bucket(bucketReplay) == nil || tx.Bucket(bucketExpiry) == nil {
		return false, errors.New("corrupt file: a bucket is missing; move it away to start an empty ledger")
	}
	return false, nil
}

// Path returns the path of the ledger file.
func (s *Ledger) Path() string { return s.path }

func (s *Ledger) shard(d *digest) *fileShard {
	return &s.shards[d[0]%shardCount]
}

// Claim implements dedupe.Store. An id in flight is looked up in memory, a
// delivered one in the file (a read transaction, no disk write).
func (s *Ledger) Claim(ctx context.Context, key string, leaseFor time.Duration) (dedupe.Claim, error) {
	c, _, err := s.ClaimWindow(ctx, key, leaseFor)
	return c, err
}

// ClaimWindow implements dedupe.WindowClaimer. At capacity it deletes the
// expired ids and tries again: whoever's sweep freed room, a claim goes
// through while the ledger holds fewer than max_events ids.
func (s *Ledger) ClaimWindow(_ context.Context, key string, leaseFor time.Duration) (dedupe.Claim, time.Time, error) {
	failed := dedupe.Claim{Key: key, State: dedupe.InFlight}
	if leaseFor <= 0 {
		return failed, time.Time{}, fmt.Errorf("ledger: lease must be positive, got %v", leaseFor)
	}
	d := digest(sha256.Sum256([]byte(key)))
	c, until, full, err := s.claim(key, &d, leaseFor)
	if err == nil && full {
		s.makeRoom()
		c, until, full, err = s.claim(key, &d, leaseFor)
	}
	if err != nil {
		return failed, time.Time{}, err
	}
	if full {
		return failed, time.Time{}, fmt.Errorf("%w: %d ids remembered or in flight, max_events %d (ledger %s)", dedupe.ErrFull, s.used.Load(), s.capacity.Load(), s.path)
	}
	return c, until, nil
}

// claim is one attempt of Claim; full says the store had no room, until is
// the end of the window of a dedupe.Delivered claim.
func (s *Ledger) claim(key string, d *digest, leaseFor time.Duration) (c dedupe.Claim, until time.Time, full bool, err error) {
	sh := s.shard(d)
	t := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if l, ok := sh.m[*d]; ok {
		if s.hold || t.Before(l.expires) {
			return dedupe.Claim{Key: key, State: dedupe.InFlight}, time.Time{}, false, nil
		}
		s.dropLeaseLocked(sh, d)
	}
	until, exists, err := s.delivered(d, t)
	if err != nil {
		return dedupe.Claim{}, time.Time{}, false, err
	}
	if !until.IsZero() {
		return dedupe.Claim{Key: key, State: dedupe.Delivered}, until, false, nil
	}
	if !dedupe.Reserve(&s.used, s.capacity.Load()) {
		return dedupe.Claim{}, time.Time{}, true, nil
	}
	token := strconv.FormatUint(s.tokens.Add(1), 36)
	sh.m[*d] = lease{token: token, expires: t.Add(leaseFor), exists: exists}
	s.leases.Add(1)
	return dedupe.Claim{Key: key, State: dedupe.Fresh, Token: token}, time.Time{}, false, nil
}

// delivered returns the end of the window of d if the ledger records it as
// delivered (or accepted) with a window that has not ended at t, else the
// zero time: the journal's overlay first, then the file. exists says it
// holds a record of d at all (an expired one, maybe).
func (s *Ledger) delivered(d *digest, t time.Time) (until time.Time, exists bool, err error) {
	if s.isClosing() {
		return time.Time{}, false, errClosed
	}
	r, ok, err := s.replayOf(d)
	if err != nil {
		return time.Time{}, false, err
	}
	if ok && r.remembered(t.UnixNano()) {
		until = time.Unix(0, r.expires)
	}
	return until, ok, nil
}

// isClosing says whether Close has begun.
func (s *Ledger) isClosing() bool { return s.closing.Load() }

// makeRoom, for a claim refused at capacity, forgets the leases that ended
// and deletes the expired records. Its callers take turns: a sweep's count
// of the ids it freed lands after its transaction, so a claim that came
// second must see the first one's sweep counted, not find nothing left to
// sweep and the count not yet lowered.
func (s *Ledger) makeRoom() {
	s.roomMu.Lock()
	defer s.roomMu.Unlock()
	s.forgetLeases()
	_, _ = s.sweepOnce(context.Background())
}

// Commit implements dedupe.Store. It returns once the record's journal
// record is fsynced. The
// event is recorded delivered whether or not the lease of c ended
// meanwhile: the upstream accepted it. If ctx ends first Commit returns its
// error, and the record may still be written.
func (s *Ledger) Commit(ctx context.Context, c dedupe.Claim, window time.Duration) error {
	if c.State != dedupe.Fresh {
		return fmt.Errorf("ledger: commit of a %s claim; only a fresh claim can be committed", c.State)
	}
	if window <= 0 {
		return fmt.Errorf("ledger: window must be positive, got %v", window)
	}
	d := digest(sha256.Sum256([]byte(c.Key)))
	rec := replayRecord{state: recordDelivered, expires: s.now().Add(window).UnixNano()}
	// What the claim found spares the writer a read of the file.
	sh := s.shard(&d)
	sh.mu.Lock()
	l, held := sh.m[d]
	sh.mu.Unlock()
	held = held && l.token == c.Token
	var added bool
	op := &jop{
		class: classNew,
		eval: func(v *view) ([]mutation, error) {
			_, exists, found := v.inMemory(&d)
			if !found && held {
				exists, found = l.exists, true
			}
			if !found {
				var err error
				if _, exists, err = v.replayOf(&d); err != nil {
					return nil, err
				}
			}
			added = !exists
			return []mutation{{kind: mPutReplay, flag: added, digest: d, replay: rec}}, nil
		},
		after: func(err error) {
			if err != nil {
				return
			}
			if added {
				s.used.Add(1)
			}
			// Only now that the record is durable does the claim leave
			// the in-flight map: a claim meanwhile sees it in flight. A
			// claim that took the key over after c's lease ended leaves
			// too: the event is delivered (as Redis overwrites the key).
			s.dropLease(&d)
		},
	}
	return s.submit(ctx, op)
}

// Release implements dedupe.Store: the key is freed only if c still holds it.
func (s *Ledger) Release(_ context.Context, c dedupe.Claim) error {
	if c.State != dedupe.Fresh {
		return nil
	}
	d := digest(sha256.Sum256([]byte(c.Key)))
	sh := s.shard(&d)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if l, ok := sh.m[d]; ok && l.token == c.Token {
		s.dropLeaseLocked(sh, &d)
	}
	return nil
}

// Renew implements dedupe.Store. Leases live in memory: nothing is written.
func (s *Ledger) Renew(_ context.Context, c dedupe.Claim, leaseFor time.Duration) error {
	if leaseFor <= 0 {
		return fmt.Errorf("ledger: lease must be positive, got %v", leaseFor)
	}
	d := digest(sha256.Sum256([]byte(c.Key)))
	sh := s.shard(&d)
	t := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l, ok := sh.m[d]
	if !ok || c.State != dedupe.Fresh || l.token != c.Token || (!s.hold && !t.Before(l.expires)) {
		return fmt.Errorf("ledger: renew %q: %w", c.Key, dedupe.ErrNotHeld)
	}
	l.expires = t.Add(leaseFor)
	sh.m[d] = l
	return nil
}

// Usage implements dedupe.Usage: the records in the file (expired ones not yet
// swept included) plus the ids in flight, and MaxEvents.
func (s *Ledger) Usage() (remembered, capacity int64) {
	return s.used.Load(), s.capacity.Load()
}

// SetCapacity makes n (DefaultMaxEvents when 0) the most ids the ledger
// remembers or holds in flight, from now on: a reload that changes
// max_events applies it at once. Below the ids it holds, new events are
// refused until enough expire; none is forgotten early.
func (s *Ledger) SetCapacity(n int64) {
	if n <= 0 {
		n = DefaultMaxEvents
	}
	s.capacity.Store(n)
}

// MaxSize is the Config.MaxSize the ledger was opened with: it bounds the
// file from its opening on, and cannot change while it is open.
func (s *Ledger) MaxSize() int { return s.maxSize }

// errClosed is the error of an operation on a closed file store.
var errClosed = fmt.Errorf("%w: ledger closed", dedupe.ErrClosed)

// queue hands op to the writer and waits for its result or for ctx.
func (s *Ledger) queue(ctx context.Context, op *writeOp) error {
	op.done = make(chan error, 1)
	return handOff(ctx, s, &s.closeMu, &s.closed, s.writes, op, op.done, "commit")
}

// handOff hands op to a writer goroutine through ch unless the writer is
// closed (guarded by mu), then waits for the operation's result on done; a
// ctx that ends first (while the writer is busy and ch full, or before the
// result) ends the wait with an error that names what was not confirmed.
func handOff[T any](ctx context.Context, s *Ledger, mu *sync.RWMutex, closed *bool, ch chan<- T, op T, done <-chan error, what string) error {
	notConfirmed := func() error {
		return fmt.Errorf("%w: ledger %s: %s not confirmed: %v", dedupe.ErrUnavailable, s.path, what, ctx.Err())
	}
	mu.RLock()
	if *closed {
		mu.RUnlock()
		return errClosed
	}
	select {
	case ch <- op:
	case <-ctx.Done():
		mu.RUnlock()
		return notConfirmed()
	}
	mu.RUnlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return notConfirmed()
	}
}

// write is the writer goroutine: it takes every operation waiting, runs
// them in one transaction (one fsync), and wakes their callers.
func (s *Ledger) write() {
	defer close(s.writer)
	group := make([]*writeOp, 0, maxGroup)
	for op := range s.writes {
		group = append(group[:0], op)
	gather:
		for len(group) < maxGroup {
			select {
			case op, ok := <-s.writes:
				if !ok {
					break gather
				}
				group = append(group, op)
			default:
				break gather
			}
		}
		s.commitGroup(group)
	}
}

// errOpFailed marks the failure of one operation of a group, as opposed to
// a failure of the transaction.
var errOpFailed = errors.New("operation failed")

// commitGroup runs group in one transaction. An operation that fails is
// taken out and the transaction run again without it, so that it does not
// fail the others; a transaction that fails (disk full, I/O error) fails
// every operation in it.
func (s *Ledger) commitGroup(group []*writeOp) {
	for len(group) > 0 {
		failed, opErr := -1, error(nil)
		err := s.update(func(tx *bolt.Tx) error {
			for i, op := range group {
				if err := op.fn(tx); err != nil {
					failed, opErr = i, err
					return errOpFailed
				}
			}
			return nil
		})
		if err == nil {
			for _, op := range group {
				op.finish(nil)
			}
			return
		}
		if failed >= 0 && errors.Is(err, errOpFailed) {
			group[failed].finish(fmt.Errorf("%w: ledger %s: %v", dedupe.ErrUnavailable, s.path, opErr))
			group = append(group[:failed:failed], group[failed+1:]...)
			continue
		}
		err = s.writeError(err)
		for _, op := range group {
			op.finish(err)
		}
		return
	}
}

// update is db.Update with a panic turned into an error.
func (s *Ledger) update(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("write failed: %v", r)
		}
	}()
	return s.db.Update(fn)
}

// writeError classifies the failure of a write transaction: a full disk
// (or MaxSize reached) wraps ErrDiskFull, anything else dedupe.ErrUnavailable.
func (s *Ledger) writeError(err error) error {
	// bbolt formats some errors with %s (file resize), hence the text.
	if errors.Is(err, berrors.ErrMaxSizeReached) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error()) {
		return fmt.Errorf("%w: ledger %s: %v", ErrDiskFull, s.path, err)
	}
	return fmt.Errorf("%w: ledger %s: write failed: %v", dedupe.ErrUnavailable, s.path, err)
}

// finish reports the result of op to its caller.
func (op *writeOp) finish(err error) {
	if op.after != nil {
		op.after(err)
	}
	op.done <- err
}

// sweepEvery deletes expired ids every period until Close.
func (s *Ledger) sweepEvery(period time.Duration) {
	defer close(s.swept)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-tick.C:
		}
		s.forgetLeases()
		for _, sweep := range []func(context.Context) (int, error){s.sweepOnce, s.purgeDiscarded} {
			for {
				n, err := sweep(context.Background())
				if err != nil {
					if s.onBackground != nil && !errors.Is(err, errClosed) {
						s.onBackground(err)
					}
					break
				}
				if n < sweepBatch {
					break
				}
				select {
				case <-s.stopSweep:
					return
				default:
				}
			}
		}
	}
}

// forgetLeases drops the in-flight claims whose lease ended (none when
// leases are held).
func (s *Ledger) forgetLeases() {
	if s.hold {
		return
	}
	t := s.now()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for d, l := range sh.m {
			if !t.Before(l.expires) {
				s.dropLeaseLocked(sh, &d)
			}
		}
		sh.mu.Unlock()
	}
}

// sweepOnce deletes up to sweepBatch expired records, through the writer,
// and returns how many it deleted.
func (s *Ledger) sweepOnce(ctx context.Context) (n int, err error) {
	// What the journal holds goes to the file first, so that the sweep
	// sees it; a full file takes what it can, and the sweep frees room.
	_ = s.checkpointAll()
	defer func() {
		if n > 0 && s.full.Load() != nil {
			_ = s.checkpointAll()
		}
	}()
	now := s.now().UnixNano()
	if !s.anyExpired(now) {
		return 0, nil
	}
	op := &writeOp{
		fn: func(tx *bolt.Tx) error {
			n = 0
			replay, expiry := tx.Bucket(bucketReplay), tx.Bucket(bucketExpiry)
			var keys [][]byte
			c := expiry.Cursor()
			for k, _ := c.First(); k != nil && len(keys) < sweepBatch; k, _ = c.Next() {
				if len(k) != 8+sha256.Size || int64(binary.BigEndian.Uint64(k)) > now {
					break
				}
				keys = append(keys, k)
			}
			for _, k := range keys {
				d := k[8:]
				if s.inOverlay(d) || s.inFlight(d) {
					continue // changed since (the checkpoint replaces it), or being delivered
				}
				if r, ok := parseReplay(replay.Get(d)); ok && r.expires == int64(binary.BigEndian.Uint64(k)) {
					if err := replay.Delete(d); err != nil {
						return err
					}
					n++
				}
				if err := expiry.Delete(k); err != nil {
					return err
				}
			}
			return nil
		},
		after: func(err error) {
			if err == nil {
				s.used.Add(-int64(n))
			}
		},
	}
	if err := s.queue(ctx, op); err != nil {
		return 0, fmt.Errorf("sweep: %w", err)
	}
	return n, nil
}

// inOverlay says whether the journal holds a change of the replay key of
// digest d not yet applied.
func (s *Ledger) inOverlay(d []byte) bool {
	var dg digest
	copy(dg[:], d)
	s.ov.mu.RLock()
	defer s.ov.mu.RUnlock()
	_, ok := s.ov.replay[dg]
	return ok
}

// inFlight says whether the key of digest d is claimed.
func (s *Ledger) inFlight(d []byte) bool {
	var dg digest
	copy(dg[:], d)
	sh := s.shard(&dg)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.m[dg]
	return ok
}

// anyExpired says whether the oldest entry of the expiry index ended
// before now.
func (s *Ledger) anyExpired(now int64) bool {
	var any bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketExpiry).Cursor().First()
		any = len(k) >= 8 && int64(binary.BigEndian.Uint64(k)) <= now
		return nil
	})
	return any
}

// Close stops the sweeper, lets the journal writer finish the writes
// queued, applies every journal record to the file and removes the
// segments (a ledger closed cleanly is its file alone), and closes the file.
// Records it could not apply (a full disk) stay in the journal, read back at
// the next open.
func (s *Ledger) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		close(s.stopSweep)
		<-s.swept
		close(s.filterStop)
		<-s.filterDone
		s.jmu.Lock()
		s.jclosed = true
		close(s.jops)
		s.jmu.Unlock()
		<-s.jdone
		close(s.allocStop)
		<-s.allocDone
		close(s.cpStop)
		<-s.cpDone
		var cpErr error
		if s.brokenErr() == nil && !s.manualCheckpoint {
			cpErr = s.checkpointAll()
		}
		s.j.closeFiles()
		if cpErr == nil && s.brokenErr() == nil && s.cpq.length() == 0 && !s.manualCheckpoint {
			s.removeSegments()
		}
		s.closeMu.Lock()
		s.closed = true
		close(s.writes)
		s.closeMu.Unlock()
		<-s.writer
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// removeSegments deletes every segment file, all applied.
func (s *Ledger) removeSegments() {
	s.j.mu.Lock()
	all := append(append([]*segment(nil), s.j.segs...), s.j.spares...)
	s.j.segs, s.j.spares = nil, nil
	s.j.mu.Unlock()
	for _, sg := range all {
		_ = s.fs.Remove(sg.path)
	}
	_ = s.fs.SyncDir(s.j.dir)
}

var (
	_ dedupe.Store         = (*Ledger)(nil)
	_ dedupe.WindowClaimer = (*Ledger)(nil)
	_ spool.Store          = (*Ledger)(nil)
	_ dedupe.Usage         = (*Ledger)(nil)
	_ dedupe.Health        = (*Ledger)(nil)
)
