package ledger

import (
	"bytes"
	"context"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/dedupe"
	"github.com/hookguard/caddy-webhook-guard/spool"
)

// BenchmarkSpoolIngest is the ledger's part of a spooled event: a fresh
// dedupe.Claim and the Ingest transaction (record, due entry, accepted key; group
// committed, fsynced) of a 1 KiB event, from 32 goroutines as from 32
// connections. The HTTP benchmark of the whole ingest is in bench/.
func BenchmarkSpoolIngest(b *testing.B) {
	s, err := Open(Config{Path: filepath.Join(b.TempDir(), "ledger.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := bytes.Repeat([]byte("x"), 1024)
	header := map[string][]string{"Content-Type": {"application/json"}, "X-Ivy-Signature": {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}
	var seq atomic.Uint64
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism((32 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := "evt_" + strconv.FormatUint(seq.Add(1), 10)
			key := dedupe.Key("bench", "ivy", id)
			c, err := s.Claim(ctx, key, time.Minute)
			if err != nil {
				b.Error(err)
				return
			}
			rec := &spool.Record{Scope: "bench", Provider: "ivy", EventID: id, ReceivedAt: time.Now(), State: spool.Pending, NextAt: time.Now(),
				Method: "POST", Path: "/hooks/ivy", ClientIP: "192.0.2.1", Header: header, Body: body}
			if _, err := s.Ingest(ctx, key, rec, 96*time.Hour); err != nil {
				b.Error(err)
				return
			}
			_ = s.Release(ctx, c)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
