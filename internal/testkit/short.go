package testkit

import "testing"

// SkipIfShort skips t under `go test -short`, the fast tier, saying what the test needs.
// The kit's helpers that build or start Caddy, redis-server or Node.js call it, so a test
// using any of them belongs to the full tier (`make test`) without a check of its own.
func SkipIfShort(t testing.TB, needs string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s: skipped in -short mode (run make test for the full suite)", needs)
	}
}
