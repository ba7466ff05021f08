package ledger

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Check reads, never writes: a missing ledger passes and nothing is
// created; a file that is not a ledger, a folder or a dangling link fails
// naming the path; the golden ledger passes.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "var", "lib", "ledger.db")
	if err := Check(missing); err != nil {
		t.Errorf("a missing ledger: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "var")); !os.IsNotExist(err) {
		t.Errorf("Check created a folder (%v)", err)
	}
	if err := Check(copyGolden(t)); err != nil {
		t.Errorf("the golden ledger: %v", err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(empty); err != nil {
		t.Errorf("an empty file: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a ledger\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling.db")
	if err := os.Symlink(filepath.Join(dir, "nowhere", "ledger.db"), dangling); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		garbage:                          "corrupt file or not a ledger",
		file:                             "too short for a ledger",
		dir:                              "is a directory",
		dangling:                         "a symbolic link to " + filepath.Join(dir, "nowhere", "ledger.db") + ", which does not exist",
		filepath.Join(file, "ledger.db"): "is not a folder",
		filepath.Join(file, "a", "b.db"): "is not a folder",
	} {
		err := Check(path)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("Check(%s) = %v, want %q and the path", path, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nowhere")); !os.IsNotExist(err) {
		t.Error("Check followed the dangling link and created its folder")
	}
}

// A ledger path that is a dangling symbolic link is refused: its target
// (and the target's folder) is never created.
func TestOpenRefusesDanglingLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere", "ledger.db")
	link := filepath.Join(dir, "ledger.db")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{Path: link})
	if err == nil || !strings.Contains(err.Error(), "symbolic link to "+target+", which does not exist") {
		t.Fatalf("Open through a dangling link = %v", err)
	}
	if _, err := os.Stat(filepath.Dir(target)); !os.IsNotExist(err) {
		t.Error("Open created the link target's folder")
	}
	// A link to an existing ledger works.
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := Open(Config{Path: target})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = Open(Config{Path: link})
	if err != nil {
		t.Fatalf("Open through a link to a ledger: %v", err)
	}
	l.Close()
}
