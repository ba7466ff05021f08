package dedupe

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// TestMemoryCloseIsNotPressure checks that closing a store that remembers
// events reports no capacity pressure: ristretto's Close evicts every item it
// holds, which is the store going away (Caddy stopping), not events forgotten
// for lack of room.
func TestMemoryCloseIsNotPressure(t *testing.T) {
	ctx := context.Background()
	var reported atomic.Int64
	s, err := NewMemory(MemoryConfig{MaxEvents: 1000, OnPressure: func(Pressure) { reported.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		c, _ := s.Claim(ctx, Key("", "ivy", fmt.Sprint("evt_", i)), time.Minute)
		if err := s.Commit(ctx, c, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	s.cache.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := reported.Load(); n != 0 {
		t.Fatalf("closing the store reported %d events lost to pressure (stats %+v)", n, s.Stats())
	}
}
