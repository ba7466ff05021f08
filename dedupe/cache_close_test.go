package dedupe

import (
	"testing"
	"time"
)

// A forget announced (WatchForgotten's goroutine) while the pooled store is
// closed at a reload: Cached.Forget may run during or after Close (an
// adversarial review found it hanging, or panicking, when Close closed the
// ristretto cache first). It must neither hang nor panic.
func TestCachedForgetDuringClose(t *testing.T) {
	for i := 0; i < 300; i++ {
		m, err := NewMemory(MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		c := NewCached(m, 1024, nil).(cachedUsage).Cached
		stop := make(chan struct{})
		done, started := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			c.Forget("k")
			close(started)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.Forget("k")
			}
		}()
		<-started // Close comes while Forget is being called in a loop
		_ = c.Close()
		close(stop)
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("round %d: Cached.Forget hangs forever after a concurrent Close (goroutine leaked)", i)
		}
	}
}
