package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

// The journal: segment files beside the ledger file, named
// <ledger>.journal.<id, 16 hex digits>, written by one goroutine in groups
// (one write, one fdatasync per group) and read back only when the ledger
// opens (or reopens after a failed sync).
//
// A segment is made ahead of use, zero-filled (or recycled: a segment whose
// records are all applied, renamed), so that an fdatasync flushes data, not
// the file's size or its blocks' allocation. Its first frame names its base
// sequence number; then come the groups, each starting on a 4 KiB block, so
// that a write never touches a block an earlier sync made durable. A frame
// is
//
//	crc32c (4) ‖ length (4) ‖ seq (8) ‖ segment id (8) ‖ type (1) ‖ 0 (7) ‖ payload ‖ zeros to 8 bytes
//
// little endian, the CRC-32C over everything after it up to the payload's
// end. Within a block, zeros where a frame would start mean the group ended
// (skip to the next block); at the start of a block they mean the journal
// ends, as does a frame of another segment id (an older use of a recycled
// file) or one whose checksum fails.

// Frame layout.
const (
	frameHeaderSize = 32
	frameAlign      = 8
	blockSize       = 4096
	// frameOps is a record: a payload of mutations (mutation.go).
	frameOps byte = 1
	// frameSegment is a segment's first frame: its base seq (8) and the
	// format (4).
	frameSegment byte = 2
	// journalFormat is the format of the frames written.
	journalFormat = 1
	// segmentPayload is the payload length of a frameSegment.
	segmentPayload = 12
)

// Segment sizes: a new ledger starts with a small segment; each segment
// made when the last filled up is twice as large, up to Config.SegmentSize.
const (
	// DefaultSegmentSize is the largest journal segment when
	// Config.SegmentSize is not set.
	DefaultSegmentSize = 64 << 20
	// minSegmentSize is the size of a new ledger's first segment.
	minSegmentSize = 1 << 20
)

// journalSuffix separates the ledger's file name from a segment's id.
const journalSuffix = ".journal."

// castagnoli is the CRC-32C table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// alignUp rounds n up to a multiple of a (a power of two).
func alignUp(n, a int64) int64 { return (n + a - 1) &^ (a - 1) }

// beginFrame appends a frame header of type typ, seq and segment id seg to
// b (after padding, if the header would not fit in b's current block, to
// the next block: b starts on a block), for the payload to be appended
// after it; endFrame finishes it.
func beginFrame(b []byte, typ byte, seq, seg uint64) ([]byte, int) {
	if rem := blockSize - len(b)%blockSize; rem < frameHeaderSize {
		b = append(b, make([]byte, rem)...)
	}
	start := len(b)
	var h [frameHeaderSize]byte
	binary.LittleEndian.PutUint64(h[8:], seq)
	binary.LittleEndian.PutUint64(h[16:], seg)
	h[24] = typ
	return append(b, h[:]...), start
}

// endFrame sets the length and checksum of the frame at start, whose
// payload ends b, and pads b to frameAlign.
func endFrame(b []byte, start int) []byte {
	binary.LittleEndian.PutUint32(b[start+4:], uint32(len(b)-start-frameHeaderSize))
	binary.LittleEndian.PutUint32(b[start:], crc32.Checksum(b[start+4:], castagnoli))
	if pad := int(alignUp(int64(len(b)), frameAlign)) - len(b); pad > 0 {
		b = append(b, make([]byte, pad)...)
	}
	return b
}

// alignedBlocks returns zeroed memory of whole blocks, at least n bytes,
// that starts at a multiple of blockSize, as O_DIRECT writes need
// (OpenSegment).
func alignedBlocks(n int) []byte {
	size := int(alignUp(int64(n), blockSize))
	b := make([]byte, size+blockSize)
	off := int(alignUp(int64(uintptr(unsafe.Pointer(&b[0]))), blockSize) - int64(uintptr(unsafe.Pointer(&b[0]))))
	return b[off : off+size : off+size]
}

// padBlock pads b with zeros to a whole number of blocks.
func padBlock(b []byte) []byte {
	if pad := int(alignUp(int64(len(b)), blockSize)) - len(b); pad > 0 {
		b = append(b, make([]byte, pad)...)
	}
	return b
}

// segmentHeader appends the first frame of segment seg, of base seq base.
func segmentHeader(b []byte, seg, base uint64) []byte {
	b, start := beginFrame(b, frameSegment, 0, seg)
	b = binary.LittleEndian.AppendUint64(b, base)
	b = binary.LittleEndian.AppendUint32(b, journalFormat)
	return endFrame(b, start)
}

// jrecord is a journal record read back or written: its seq, mutations,
// and an estimate of the memory it holds; read back, where its frame
// starts and ends (before its alignment) in its segment.
type jrecord struct {
	seq        uint64
	muts       []mutation
	size       int
	start, end int64
}

// scanEnd says how the reading of a segment ended.
type scanEnd int

const (
	// endClean: zeros at a block start, an older use of the file, or its end.
	endClean scanEnd = iota
	// endBad: a frame whose checksum, length, type, sequence or payload is
	// wrong: a torn write in the last segment, damage elsewhere.
	endBad
)

// segmentScan is what reading a segment found.
type segmentScan struct {
	activated bool   // its first frame is its own segment frame
	base      uint64 // the seq of its first record
	records   []jrecord
	end       scanEnd
	endOffset int64  // where reading stopped
	why       string // what was wrong, for endBad
}

// last is the seq of the segment's last record (base-1 when none).
func (sc *segmentScan) last() uint64 { return sc.base + uint64(len(sc.records)) - 1 }

// scanSegment reads the frames of segment id from data (the whole file).
// The records' slices point into data. keep says whether a record of seq
// is wanted (its payload is then decoded).
func scanSegment(data []byte, id uint64, keep func(seq uint64) bool) segmentScan {
	var sc segmentScan
	base, ok := readSegmentFrame(data, id)
	if !ok {
		return sc
	}
	sc.activated, sc.base = true, base
	p := alignUp(frameHeaderSize+segmentPayload, frameAlign)
	next := base
	sc.records = make([]jrecord, 0, len(data)/(8*blockSize))
	var arena []mutation
	for {
		if rem := blockSize - p%blockSize; p%blockSize != 0 && rem < frameHeaderSize {
			p += rem
		}
		if p+frameHeaderSize > int64(len(data)) {
			sc.end, sc.endOffset = endClean, p
			return sc
		}
		h := data[p : p+frameHeaderSize]
		if isZero(h) {
			if p%blockSize == 0 {
				sc.end, sc.endOffset = endClean, p
				return sc
			}
			p = alignUp(p, blockSize) // the rest of a group's block
			continue
		}
		n := int64(binary.LittleEndian.Uint32(h[4:]))
		seq := binary.LittleEndian.Uint64(h[8:])
		seg := binary.LittleEndian.Uint64(h[16:])
		typ := h[24]
		bad := func(why string) segmentScan {
			sc.end, sc.endOffset, sc.why = endBad, p, why
			return sc
		}
		if seg != id && p%blockSize == 0 && crcOK(data, p, n) {
			sc.end, sc.endOffset = endClean, p // an older use of a recycled file
			return sc
		}
		switch {
		case n > int64(len(data))-p-frameHeaderSize:
			return bad("a frame runs past the end of the file")
		case !crcOK(data, p, n):
			return bad("checksum mismatch")
		case seg != id:
			return bad(fmt.Sprintf("a frame of segment %d inside a group", seg))
		case typ != frameOps || !isZero(h[25:32]):
			return bad(fmt.Sprintf("frame type %d", typ))
		case seq != next:
			return bad(fmt.Sprintf("seq %d where %d was due", seq, next))
		}
		payload := data[p+frameHeaderSize : p+frameHeaderSize+n]
		rec := jrecord{seq: seq, start: p, end: p + frameHeaderSize + n}
		if keep(seq) {
			if cap(arena)-len(arena) < 16 {
				arena = make([]mutation, 0, max(1024, (int64(len(data))-p)/128))
			}
			var muts []mutation
			var err error
			if arena, muts, err = decodeMutationsInto(arena, payload); err != nil {
				return bad(fmt.Sprintf("record %d: %v", seq, err))
			}
			rec.muts = muts
			for i := range muts {
				rec.size += muts[i].size()
			}
		}
		sc.records = append(sc.records, rec)
		next++
		p = alignUp(p+frameHeaderSize+n, frameAlign)
	}
}

// readSegmentFrame reads the first frame of segment id: its base seq.
func readSegmentFrame(data []byte, id uint64) (base uint64, ok bool) {
	if len(data) < frameHeaderSize+segmentPayload {
		return 0, false
	}
	h := data[:frameHeaderSize]
	if binary.LittleEndian.Uint32(h[4:]) != segmentPayload || binary.LittleEndian.Uint64(h[16:]) != id ||
		h[24] != frameSegment || !crcOK(data, 0, segmentPayload) {
		return 0, false
	}
	payload := data[frameHeaderSize : frameHeaderSize+segmentPayload]
	if binary.LittleEndian.Uint32(payload[8:]) != journalFormat {
		return 0, false
	}
	return binary.LittleEndian.Uint64(payload), true
}

// ownFrameAfterHeader says whether a frame of segment id, with a good
// checksum, sits where a segment's first record would: the segment was
// activated and its first frame is damaged.
func ownFrameAfterHeader(data []byte, id uint64) bool {
	p := alignUp(frameHeaderSize+segmentPayload, frameAlign)
	if p+frameHeaderSize > int64(len(data)) {
		return false
	}
	n := int64(binary.LittleEndian.Uint32(data[p+4:]))
	return n <= int64(len(data))-p-frameHeaderSize && binary.LittleEndian.Uint64(data[p+16:]) == id && crcOK(data, p, n)
}

// crcOK checks the checksum of the frame at p with a payload of n bytes.
func crcOK(data []byte, p, n int64) bool {
	if n < 0 || p+frameHeaderSize+n > int64(len(data)) {
		return false
	}
	return crc32.Checksum(data[p+4:p+frameHeaderSize+n], castagnoli) == binary.LittleEndian.Uint32(data[p:])
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// segment is a segment file of the journal.
type segment struct {
	id   uint64
	path string
	size int64
	f    journalFile // open while it is active
	base uint64      // first seq (activated)
	last uint64      // last seq written (base-1: none)
	off  int64       // where the next group goes (active)
}

// journal is the set of segment files: the activated ones, oldest first
// (the last is where the writer writes), and the spares made ahead of use.
type journal struct {
	fs      fileSystem
	dir     string
	name    string // the ledger file's name
	maxSize int64

	mu     sync.Mutex
	segs   []*segment // activated, oldest first
	spares []*segment // zero-filled or recycled, not activated
	nextID uint64
	// allocErr is why the last attempt to make a spare failed (nil: it
	// did not); a full disk wraps ErrDiskFull.
	allocErr error
}

// segmentPath is the path of segment id.
func (j *journal) segmentPath(id uint64) string {
	return filepath.Join(j.dir, fmt.Sprintf("%s%s%016x", j.name, journalSuffix, id))
}

// segmentID parses the id out of a file name of this journal; ok false for
// another file (a .tmp file is reported with tmp set).
func (j *journal) segmentID(name string) (id uint64, tmp, ok bool) {
	rest, found := strings.CutPrefix(name, j.name+journalSuffix)
	if !found {
		return 0, false, false
	}
	rest, tmp = strings.CutSuffix(rest, ".tmp")
	if len(rest) != 16 {
		return 0, false, false
	}
	id, err := strconv.ParseUint(rest, 16, 64)
	return id, tmp, err == nil
}

// active is the segment the writer writes to (nil: none yet).
func (j *journal) active() *segment {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.segs) == 0 {
		return nil
	}
	return j.segs[len(j.segs)-1]
}

// nextSize is the size of the next segment to make: twice the active
// one's, up to maxSize, and at least need.
func (j *journal) nextSize(need int64) int64 {
	size := int64(minSegmentSize)
	if n := len(j.segs); n > 0 {
		size = min(2*j.segs[n-1].size, j.maxSize)
	}
	return max(size, alignUp(need, blockSize), minSegmentSize)
}

// isSpaceError says whether err is a file system out of room.
func isSpaceError(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}

// create makes a new spare segment of size bytes: written full of zeros to
// a temporary file, synced, renamed into place, the folder synced.
func (j *journal) create(size int64) (*segment, error) {
	j.mu.Lock()
	id := j.nextID
	j.nextID++
	j.mu.Unlock()
	path := j.segmentPath(id)
	tmp := path + ".tmp"
	f, err := j.fs.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*segment, error) {
		_ = f.Close()
		_ = j.fs.Remove(tmp)
		return nil, err
	}
	zeros := make([]byte, min(size, 1<<20))
	for off := int64(0); off < size; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
			return fail(err)
		}
	}
	if err := f.Datasync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = j.fs.Remove(tmp)
		return nil, err
	}
	if err := j.fs.Rename(tmp, path); err != nil {
		_ = j.fs.Remove(tmp)
		return nil, err
	}
	if err := j.fs.SyncDir(j.dir); err != nil {
		return nil, err
	}
	return &segment{id: id, path: path, size: size}, nil
}

// createFitting makes a spare of size bytes, or on a disk too full for it
// of half that, and so on down to need (or the smallest size): a disk
// with little room left still takes small segments.
func (j *journal) createFitting(size, need int64) (*segment, error) {
	floor := max(alignUp(need, blockSize), minSegmentSize)
	for {
		sg, err := j.create(size)
		if err == nil || !isSpaceError(err) || size/2 < floor {
			return sg, err
		}
		size = max(alignUp(size/2, blockSize), floor)
	}
}

// recycle makes the applied segment sg a spare: renamed to a new id (its
// frames, of the old id, then read as the end of the journal), the folder
// synced before the spare is returned: records acknowledged in it must not
// come back after a power loss under the old name, whose header they do not
// match (they would be read as an unused spare, and lost).
func (j *journal) recycle(sg *segment) (*segment, error) {
	sp, err := j.renameToNewID(sg)
	if err != nil {
		return nil, err
	}
	if err := j.fs.SyncDir(j.dir); err != nil {
		// Not used: at the next start it is an unused spare (of either name).
		return nil, err
	}
	return sp, nil
}

// renameToNewID renames the file of sg to the next segment id and returns
// the segment under it (not yet durable: SyncDir).
func (j *journal) renameToNewID(sg *segment) (*segment, error) {
	j.mu.Lock()
	id := j.nextID
	j.nextID++
	j.mu.Unlock()
	path := j.segmentPath(id)
	if err := j.fs.Rename(sg.path, path); err != nil {
		return nil, err
	}
	return &segment{id: id, path: path, size: sg.size}, nil
}

// freshSpares gives the spares read back at an open or reopen new ids, the
// folder synced, and returns them. A spare may hold frames of its own id:
// a segment whose first group a power loss tore so that its first block
// (the header) was lost and a later one kept reads back as a spare, and
// activated again under that id, its new records could be followed by the
// old frames with the seqs due, read as the journal's. Under a new id they
// are garbage, as a recycled segment's are. A spare that cannot be renamed
// is not used (the next open tries again); none is if the folder cannot
// be synced.
func (j *journal) freshSpares(spares []*segment) []*segment {
	var out []*segment
	for _, sp := range spares {
		if fresh, err := j.renameToNewID(sp); err == nil {
			out = append(out, fresh)
		}
	}
	if len(out) > 0 {
		if err := j.fs.SyncDir(j.dir); err != nil {
			return nil
		}
	}
	return out
}

// takeSpare removes and returns a spare of at least need bytes (nil: none),
// the largest first.
func (j *journal) takeSpare(need int64) *segment {
	j.mu.Lock()
	defer j.mu.Unlock()
	best := -1
	for i, sp := range j.spares {
		if sp.size >= need && (best < 0 || sp.size > j.spares[best].size) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	sp := j.spares[best]
	j.spares = slices.Delete(j.spares, best, best+1)
	return sp
}

// closeFiles closes the open segment files.
func (j *journal) closeFiles() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, sg := range j.segs {
		if sg.f != nil {
			_ = sg.f.Close()
			sg.f = nil
		}
	}
}
