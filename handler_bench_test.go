package webhookguard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/hookguard/caddy-webhook-guard/console"
	"github.com/hookguard/caddy-webhook-guard/verify"
)

// benchBatch is how many unique signed events BenchmarkServeHTTP prepares at
// a time, with the timer stopped.
const benchBatch = 1024

// benchWriter is a ResponseWriter that keeps nothing but the status.
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *benchWriter) WriteHeader(code int)        { w.status = code }

// benchEvent is a JSON event of exactly size bytes with the given id.
func benchEvent(size int, id string) []byte {
	head := `{"id":"` + id + `","type":"payment.succeeded","created":1767225600,"data":{"object":{"amount":4200,"currency":"eur","pad":"`
	tail := `"}}}`
	return append(append([]byte(head), bytes.Repeat([]byte{'x'}, size-len(head)-len(tail))...), tail...)
}

// BenchmarkServeHTTP runs whole deliveries through the handler, as Caddy's
// server hands them over, with a no-op next handler answering 200: the
// method, allow-list, body, signature, replay-store claim and commit, the
// metrics and the (disabled) debug log line. Every delivery is a new,
// validly signed 1 KiB event, so every one is forwarded.
func BenchmarkServeHTTP(b *testing.B) {
	for i, tc := range []struct {
		provider, secret string
	}{
		{"ivy", "ivy-bench-secret-0123456789"},
		{"standard", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
	} {
		b.Run(tc.provider+"/1KiB", func(b *testing.B) {
			benchmarkServeHTTP(b, tc.provider, tc.secret, 1<<10, int64(900_000+i))
		})
	}
	// With a console loaded, each delivery's outcome is also kept in its
	// recent outcomes.
	b.Run("ivy/1KiB/console", func(b *testing.B) {
		c := new(console.Handler)
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		if err := c.Provision(ctx); err != nil {
			b.Fatal(err)
		}
		defer c.Cleanup()
		benchmarkServeHTTP(b, "ivy", "ivy-bench-secret-0123456789", 1<<10, 900_010)
	})
}

func benchmarkServeHTTP(b *testing.B, provider, secret string, size int, maxEvents int64) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{
		Provider: provider,
		Secrets:  []string{secret},
		AllowIPs: []string{"any"},
		// A store of its own, large enough to remember every event.
		StoreRaw: memoryStore(maxEvents),
	}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	// As Caddy runs in production: only errors are logged.
	h.logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.ErrorLevel))
	signer, err := verify.NewSigner(provider, verify.Config{Secrets: []string{secret}})
	if err != nil {
		b.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.WriteHeader(http.StatusOK)
		return nil
	})
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	reqs := make([]*http.Request, benchBatch)
	writers := make([]benchWriter, benchBatch)
	prepare := func(from int) {
		for j := range reqs {
			id := fmt.Sprintf("evt_%s_%09d", run, from+j)
			body := benchEvent(size, id)
			hdr, err := signer.Sign(body, id, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			r, _ := http.NewRequest(http.MethodPost, "http://shop.example/hooks", bytes.NewReader(body))
			r.RemoteAddr = "18.159.27.193:41000"
			for k, v := range hdr {
				r.Header[k] = v
			}
			r.Header.Set("Content-Type", "application/json")
			writers[j] = benchWriter{h: http.Header{}}
			reqs[j] = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), &writers[j], &caddyhttp.Server{})
		}
	}

	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % benchBatch
		if j == 0 {
			b.StopTimer()
			prepare(i)
			b.StartTimer()
		}
		w := &writers[j]
		if err := h.ServeHTTP(w, reqs[j], next); err != nil || w.status != http.StatusOK {
			b.Fatalf("delivery %d: status %d, error %v", i, w.status, err)
		}
	}
}

// BenchmarkServeHTTPParallel runs deliveries from 32 goroutines at once, as
// 32 connections would, through the memory store and the default file
// ledger (every commit fsynced before the answer; group commit shares one
// transaction and fsync among the commits waiting together). ns/op is the
// time per delivery of the whole group: 1e9/ns/op deliveries per second.
func BenchmarkServeHTTPParallel(b *testing.B) {
	for _, store := range []string{"memory", "file"} {
		b.Run(store, func(b *testing.B) {
			raw := memoryStore(5_000_000 + int64(len(store)))
			if store == "file" {
				raw = json.RawMessage(fmt.Sprintf(`{"type":"file","path":%q}`, filepath.Join(b.TempDir(), "ledger.db")))
			}
			benchmarkServeHTTPParallel(b, raw)
		})
	}
}

func benchmarkServeHTTPParallel(b *testing.B, store json.RawMessage) {
	const secret = "ivy-bench-secret-0123456789"
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Provider: "ivy", Secrets: []string{secret}, AllowIPs: []string{"any"}, StoreRaw: store}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	h.logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.ErrorLevel))
	signer, err := verify.NewSigner("ivy", verify.Config{Secrets: []string{secret}})
	if err != nil {
		b.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.WriteHeader(http.StatusOK)
		return nil
	})
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32 / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("evt_%s_%09d", run, seq.Add(1))
			body := benchEvent(1<<10, id)
			hdr, err := signer.Sign(body, id, time.Now())
			if err != nil {
				b.Error(err)
				return
			}
			r, _ := http.NewRequest(http.MethodPost, "http://shop.example/hooks", bytes.NewReader(body))
			r.RemoteAddr = "18.159.27.193:41000"
			for k, v := range hdr {
				r.Header[k] = v
			}
			w := &benchWriter{h: http.Header{}}
			r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
			if err := h.ServeHTTP(w, r, next); err != nil || w.status != http.StatusOK {
				b.Errorf("status %d, error %v", w.status, err)
				return
			}
		}
	})
}
