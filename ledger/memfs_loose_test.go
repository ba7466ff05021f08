package ledger

import (
	"bytes"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// A loose crash keeps each block written since the last sync whole, new or
// old, at random, and each creation, rename or removal since the last
// SyncDir at random: keep 1 keeps all of it, keep 0 none (strict).
func TestMemFSLooseCrash(t *testing.T) {
	const blocks = 8
	run := func(keep float64, seed uint64) (*memFS, []byte) {
		fs := newMemFS()
		fs.loose, fs.keep = rand.New(rand.NewPCG(seed, 2)), keep
		fs.put("seg", bytes.Repeat([]byte{'o'}, blocks*blockSize))
		f, err := fs.OpenFile("seg", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Blocks 1 to 6 written, one write across them, not synced.
		if _, err := f.WriteAt(bytes.Repeat([]byte{'n'}, 6*blockSize), blockSize); err != nil {
			t.Fatal(err)
		}
		// A file made, written, synced, renamed; another removed.
		fs.put("gone", []byte("x"))
		g, _ := fs.OpenFile("new.tmp", os.O_CREATE|os.O_EXCL|os.O_RDWR, 0)
		_, _ = g.WriteAt([]byte("spare"), 0)
		_ = g.Datasync()
		_ = fs.Rename("new.tmp", "new")
		_ = fs.Remove("gone")
		fs.crash()
		fs.restart()
		h, err := fs.OpenFile("seg", os.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, blocks*blockSize)
		if n, _ := h.ReadAt(data, 0); n != len(data) {
			t.Fatalf("seg reads %d bytes, want %d", n, len(data))
		}
		return fs, data
	}
	blockOf := func(data []byte, b int) byte {
		blk := data[b*blockSize : (b+1)*blockSize]
		if !bytes.Equal(blk, bytes.Repeat(blk[:1], blockSize)) {
			t.Fatalf("block %d is torn", b)
		}
		return blk[0]
	}

	fs, data := run(1, 1)
	for b := range blocks {
		want := byte('n')
		if b == 0 || b == blocks-1 {
			want = 'o'
		}
		if got := blockOf(data, b); got != want {
			t.Errorf("keep 1: block %d is %c, want %c", b, got, want)
		}
	}
	if got, want := fs.names(), []string{"new", "seg"}; !slices.Equal(got, want) {
		t.Errorf("keep 1: names %v, want %v", got, want)
	}

	fs, data = run(0, 1)
	for b := range blocks {
		if got := blockOf(data, b); got != 'o' {
			t.Errorf("keep 0: block %d is %c, want o", b, got)
		}
	}
	if got, want := fs.names(), []string{"gone", "seg"}; !slices.Equal(got, want) {
		t.Errorf("keep 0: names %v, want %v", got, want)
	}

	// keep 1/2: some blocks kept, some lost, the same for the same seed.
	seen := map[string]bool{}
	for seed := range uint64(20) {
		_, a := run(0.5, seed)
		_, b := run(0.5, seed)
		if !bytes.Equal(a, b) {
			t.Fatalf("seed %d: two crashes keep different blocks", seed)
		}
		var pattern []byte
		for blk := range blocks {
			pattern = append(pattern, blockOf(a, blk))
		}
		seen[string(pattern)] = true
	}
	if len(seen) < 5 {
		t.Errorf("20 seeds kept %d patterns of blocks: %v", len(seen), seen)
	}
}
