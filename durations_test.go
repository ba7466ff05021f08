package webhookguard

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestDurationsAtLeastOneSecond: tolerance, replay_window and a store's
// lease under one second are refused by the Caddyfile with the option and
// the line, and by Provision for a JSON config; a wrong number of arguments
// names the option and the expected form.
func TestDurationsAtLeastOneSecond(t *testing.T) {
	for block, want := range map[string]string{
		"tolerance 5 minutes":           "tolerance: want one duration such as 5m or 24h, got 2 arguments '5 minutes', at Testfile:3",
		"tolerance":                     "tolerance: want one duration such as 5m or 24h, got 0 arguments '', at Testfile:3",
		"tolerance 1ns":                 "tolerance: 1ns is under one second",
		"replay_window 999ms":           "replay_window: 999ms is under one second (e.g. 5m, 24h), at Testfile:3",
		"store memory {\nlease 10ms\n}": "lease: 10ms is under one second (e.g. 5m, 24h), at Testfile:4",
	} {
		d := caddyfile.NewTestDispenser("webhook_guard ivy {\nsecret s3cr3t-value\n" + block + "\n}")
		err := new(Handler).UnmarshalCaddyfile(d)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", block, err, want)
		}
	}
	for _, ok := range []string{"tolerance 1s", "replay_window 1d", "store memory {\nlease 30s\n}"} {
		d := caddyfile.NewTestDispenser("webhook_guard ivy {\nsecret s3cr3t-value\n" + ok + "\n}")
		if err := new(Handler).UnmarshalCaddyfile(d); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}

	for _, c := range []struct {
		h    Handler
		want string
	}{
		{Handler{Tolerance: caddy.Duration(time.Millisecond)}, "tolerance: must be at least 1s"},
		{Handler{ReplayWindow: caddy.Duration(time.Nanosecond)}, "replay_window: must be at least 1s"},
	} {
		h := c.h
		h.Provider, h.Secrets, h.DedupeOff = "ivy", []string{"s3cr3t-value"}, true
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := h.Provision(ctx)
		h.Cleanup()
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("JSON %+v: error %v, want %q", c.h, err, c.want)
		}
	}
}
