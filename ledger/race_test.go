//go:build race

package ledger

// raceEnabled says the tests run with the race detector, which slows the
// crash loop tenfold: it runs fewer rounds.
const raceEnabled = true
