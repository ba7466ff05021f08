//go:build !race

package ledger

// raceEnabled says the tests run with the race detector.
const raceEnabled = false
