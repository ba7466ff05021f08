package spool

// Passes returns the dispatch passes started and finished, for the
// external tests, which wait for a pass that began after a change.
func (s *Spool) Passes() (started, done int64) {
	return s.passesStarted.Load(), s.passesDone.Load()
}

// InFlightCount returns how many attempts run.
func (s *Spool) InFlightCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight)
}
