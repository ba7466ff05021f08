package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookguard/caddy-webhook-guard/spool"
)

// benchEvents is how many events the spool of the page benchmark holds.
const benchEvents = 100_000

// fillSpool ingests n events (a 600-byte JSON body, five headers) into f's
// spool from 64 goroutines (the ledger commits them in groups); every 50th
// is made dead.
func fillSpool(b *testing.B, f *fixture, n int) {
	b.Helper()
	body := `{"payment_id":"pay_%07d","status":"paid","amount":"12.50","currency":"EUR","customer":{"id":"cus_0001","email":"someone@example.com"},"metadata":{"order":"%07d","note":"` + strings.Repeat("x", 400) + `"}}`
	header := map[string][]string{
		"Content-Type": {"application/json"}, "User-Agent": {"IVPAY-Webhooks/1.0"}, "X-Request-Id": {"req_0123456789"},
		"X-Ivpay-Event": {"payment.paid"}, "Accept-Encoding": {"gzip"},
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > n {
					return
				}
				id := fmt.Sprintf("pay_%07d/paid", i)
				rec := &spool.Record{
					Target: "ivpay/shop/backend", Scope: "shop", Provider: "ivpay", EventID: id, EventType: "paid",
					ReceivedAt: testStart.Add(time.Duration(i) * time.Millisecond), Method: http.MethodPost, Path: "/hooks/ivpay",
					ClientIP: "192.0.2.7", Host: "hooks.example", Proto: "https", Header: header, Body: fmt.Appendf(nil, body, i, i),
				}
				if _, err := f.sp.Ingest(context.Background(), "shop/ivpay/"+id, rec, 96*time.Hour); err != nil {
					errs <- err
					return
				}
				if i%50 == 0 {
					rec.Attempts, rec.LastError = 10, "status 503"
					if _, err := f.store.Die(context.Background(), rec); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkEventsPage renders a page of the list (100 events) with 100,000
// events in the spool, as a browser asks for it: the server's whole work,
// from the request to the HTML, the store's paging included. Sub-benchmarks:
// the newest page, a page deep in the list (?after=), the dead events (one
// in 50, with the Retry all count), and a search that matches one event.
func BenchmarkEventsPage(b *testing.B) {
	f := newFixture(b, ActionRetry, ActionDiscard, ActionPause)
	start := time.Now()
	fillSpool(b, f, benchEvents)
	b.Logf("%d events spooled in %v", benchEvents, time.Since(start).Round(time.Millisecond))
	deep := fmt.Sprintf("/events?after=%d", benchEvents/2)
	for _, bc := range []struct{ name, target, want string }{
		{"newest", "/events", "pay_0100000/paid"},
		{"deep", deep, fmt.Sprintf("pay_%07d/paid", benchEvents/2-1)},
		{"dead", "/events?state=dead", "Retry all (2000)"},
		{"search", "/events?q=pay_0000007", "pay_0000007/paid"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			page := f.get(bc.target)
			if !strings.Contains(page, bc.want) {
				b.Fatalf("%s does not show %q", bc.target, bc.want)
			}
			if bc.name != "search" && strings.Count(page, `data-label="Event id"><a`) != pageSize {
				b.Fatalf("%s: not a page of %d events", bc.target, pageSize)
			}
			b.ReportAllocs()
			for b.Loop() {
				f.get(bc.target)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
		})
	}
}

// BenchmarkOverview renders the overview with 100,000 events in the spool
// (the counts read the indexes) and a full ring of outcomes.
func BenchmarkOverview(b *testing.B) {
	f := newFixture(b, ActionPause)
	fillSpool(b, f, benchEvents)
	for i := range 1000 {
		f.rec.add(Outcome{At: f.clock().Add(-time.Duration(i) * 3 * time.Second), Scope: "shop", Provider: "ivpay", Outcome: outcomeOrder[i%len(outcomeOrder)], Status: 200, ClientIP: "192.0.2.1"})
	}
	b.ReportAllocs()
	for b.Loop() {
		f.get("/")
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
}
