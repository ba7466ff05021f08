package webhookguard

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hookguard/caddy-webhook-guard/ledger"
)

// A ledger or its folder open to others is kept as it is, and said once
// at open; a private one is not mentioned.
func TestLedgerModesWarned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wg")
	path := filepath.Join(dir, "ledger.db")
	l, err := ledger.Open(ledger.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	warnings := func() []observer.LoggedEntry {
		core, logs := observer.New(zapcore.WarnLevel)
		logLedgerOpened(zap.New(core), l, false)
		return logs.FilterMessage("ledger file or folder readable or writable by others: it holds event ids and spooled payment events; chmod it").All()
	}
	if w := warnings(); len(w) != 0 {
		t.Fatalf("a private ledger warned: %v", w)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := warnings()
	if len(w) != 2 {
		t.Fatalf("%d warnings, want 2 (file and folder)", len(w))
	}
	for _, e := range w {
		f := e.ContextMap()
		if f["path"] == path && f["mode"] != "-rw-r--r--" || f["path"] == dir && f["mode"] != "-rwxr-xr-x" {
			t.Errorf("warning %v", f)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Error("the mode was changed")
	}
}

// TestDefaultLedgerPathAbsolute: with a relative XDG_DATA_HOME (Caddy's data
// directory is then relative), the default ledger is resolved against the
// directory Caddy starts in rather than refused as a relative path.
func TestDefaultLedgerPathAbsolute(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "relative/data")
	got := DefaultLedgerPath()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "relative/data/caddy/webhook_guard/ledger.db"); got != want {
		t.Fatalf("DefaultLedgerPath() = %q, want %q", got, want)
	}
}
