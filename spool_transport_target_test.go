package webhookguard

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// Two handlers sharing a spool target with different transports fail the
// load like other differing options (an adversarial review found them
// loading: ctx.LoadModule cleared TransportRaw before the options were
// compared).
func TestSpoolTargetTransportsDiffer(t *testing.T) {
	dir := t.TempDir()
	store, _ := json.Marshal(map[string]any{"type": "file", "path": filepath.Join(dir, "ledger.db")})
	to := "http://127.0.0.1:9/orders"
	mk := func(tr string) *Handler {
		return &Handler{Provider: "ivy", Secrets: []string{testIvySecret}, AllowIPs: []string{"any"}, StoreRaw: store,
			Spool: &SpoolConfig{To: to, TransportRaw: json.RawMessage(tr)}}
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	first := mk(`{"protocol":"http","dial_timeout":1000000000}`)
	if err := first.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer first.Cleanup()
	second := mk(`{"protocol":"http","dial_timeout":30000000000,"response_header_timeout":60000000000}`)
	err := second.Provision(ctx)
	if err == nil {
		second.Cleanup()
		t.Fatalf("two transports for one target loaded; first.Spool.TransportRaw=%q (zeroed by LoadModule)", first.Spool.TransportRaw)
	}
}
