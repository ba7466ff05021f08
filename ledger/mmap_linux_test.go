package ledger

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// On Linux (64-bit) the ledger file is mapped 1 GiB wide from the start, so
// that bbolt never maps it again as it grows (a new mapping waits for every
// read transaction, and holds the claims meanwhile).
func TestLedgerMappedWideAtOpen(t *testing.T) {
	if initialMmapSize == 0 {
		t.Skip("32-bit: bbolt's default mapping")
	}
	path := filepath.Join(t.TempDir(), "ledger.db")
	newTestFile(t, Config{Path: path})
	if got := mappedBytes(t, path); got < 1<<30 {
		t.Fatalf("the ledger file is mapped %d bytes wide, want 1 GiB", got)
	}
}

// mappedBytes is the size of the widest mapping of path in this process.
func mappedBytes(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var widest uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasSuffix(line, " "+path) {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(line, "%x-%x", &start, &end); err != nil {
			t.Fatal(err)
		}
		widest = max(widest, end-start)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return widest
}
