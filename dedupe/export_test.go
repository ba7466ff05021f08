package dedupe

// NewMemoryWithClock is newMemory, for the external tests.
var NewMemoryWithClock = newMemory
