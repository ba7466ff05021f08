package ledger

import (
	"context"
	"errors"
	"testing"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/dedupe/dedupetest"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// forgetDuring runs Forget(key) and, once it has read the spool's records
// of key and before its journal record, meanwhile; it returns Forget's
// result.
func forgetDuring(t *testing.T, key string, meanwhile func()) (hook func(), run func(s *Ledger) (bool, error)) {
	t.Helper()
	scanned, resume := make(chan struct{}), make(chan struct{})
	hook = func() {
		close(scanned)
		<-resume
	}
	run = func(s *Ledger) (bool, error) {
		type result struct {
			ok  bool
			err error
		}
		done := make(chan result, 1)
		go func() {
			ok, err := s.Forget(context.Background(), key)
			done <- result{ok, err}
		}()
		<-scanned
		meanwhile()
		close(resume)
		r := <-done
		return r.ok, r.err
	}
	return hook, run
}

// Forget refuses a key whose event the spool holds, so that a resend is
// not spooled twice; it read the spool's records of the key before its
// journal record, and an event of the key spooled in between (a copy the
// provider sent as the admin forgot its id) or a discarded one retried in
// between was not seen: the id was forgotten while its event was pending,
// and the next copy was spooled (delivered) again, or the retried event
// deleted. (An adversarial review found both.)
func TestSpoolForgetRacingIngestOrRetry(t *testing.T) {
	ctx := context.Background()
	key := dedupe.Key("shop", "ivy", "evt_1")

	t.Run("ingest", func(t *testing.T) {
		var s *Ledger
		var clock *dedupetest.FakeClock
		hook, run := forgetDuring(t, key, func() {
			if _, dup := spoolOne(t, s, "shop", "evt_1", []byte("{}"), clock.Now()); dup {
				t.Fatal("the first copy is a duplicate")
			}
		})
		s, clock = newTestFile(t, Config{forgetScanned: hook})
		ok, err := run(s)
		if err == nil || !errors.Is(err, ErrSpooled) {
			t.Errorf("Forget while the event was spooled: %v, %v; want ErrSpooled", ok, err)
		}
		if _, dup := spoolOne(t, s, "shop", "evt_1", []byte("{}"), clock.Now()); !dup {
			t.Fatal("a second copy of a pending event was spooled: it is delivered twice")
		}
	})

	t.Run("retry", func(t *testing.T) {
		var s *Ledger
		var rec *spool.Record
		hook, run := forgetDuring(t, key, func() {
			if err := s.Retry(ctx, rec.ID); err != nil {
				t.Fatal(err)
			}
		})
		s, clock := newTestFile(t, Config{forgetScanned: hook})
		rec, _ = spoolOne(t, s, "shop", "evt_1", []byte("{}"), clock.Now())
		if _, err := s.Discard(ctx, rec.ID, "test"); err != nil {
			t.Fatal(err)
		}
		ok, err := run(s)
		if err == nil || !errors.Is(err, ErrSpooled) {
			t.Errorf("Forget while the event was retried: %v, %v; want ErrSpooled", ok, err)
		}
		got, found, err := s.Get(ctx, rec.ID)
		if err != nil || !found || got.State != spool.Pending {
			t.Fatalf("the retried event: %v %v %v; want pending", got.State, found, err)
		}
	})
}
