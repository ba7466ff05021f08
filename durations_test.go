package webhookguard

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/hookguard/caddy-webhook-guard/verify"
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

// TestReplayWindowAtLeastTwiceTolerance: for a scheme with a signed
// timestamp, a replay_window shorter than twice the tolerance (the default
// 5m when not set) is refused, with the line in a Caddyfile and naming the
// option in JSON; schemes without a timestamp take any window; and the
// default window is never shorter than twice the tolerance.
func TestReplayWindowAtLeastTwiceTolerance(t *testing.T) {
	const secret = "secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
	hmacTS := "header X-Sig\ntimestamp_header X-Ts\n"
	for _, c := range []struct {
		provider, block, want string // want "" when accepted
	}{
		{"stripe", "replay_window 2s", "replay_window: 2s is shorter than twice the tolerance (2 × 5m)"},
		{"stripe", "replay_window 9m59s", "replay_window: 9m59s is shorter than twice the tolerance (2 × 5m)"},
		{"stripe", "replay_window 10m", ""},
		{"standard", "tolerance 10m\nreplay_window 15m", "replay_window: 15m is shorter than twice the tolerance (2 × 10m)"},
		{"standard", "replay_window 15m\ntolerance 10m", "replay_window: 15m is shorter than twice the tolerance (2 × 10m)"},
		{"slack", "tolerance 1m\nreplay_window 2m", ""},
		{"slack", "replay_window 1h\ntolerance 1h", "set replay_window to at least 2h"},
		{"hmac", hmacTS + "replay_window 5s", "replay_window: 5s is shorter than twice the tolerance"},
		{"hmac", "header X-Sig\nreplay_window 5s", ""},
		{"ivy", "replay_window 2s", ""},
		{"github", "tolerance 1h\nreplay_window 2s", ""},
	} {
		d := caddyfile.NewTestDispenser("webhook_guard " + c.provider + " {\n" + secret + c.block + "\n}")
		err := new(Handler).UnmarshalCaddyfile(d)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s %q: %v", c.provider, c.block, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s %q: error %v, want %q", c.provider, c.block, err, c.want)
		case c.want != "":
			line := strings.Count(c.block[:strings.Index(c.block, "replay_window")], "\n") + 3
			if at := fmt.Sprintf(", at Testfile:%d", line); !strings.HasSuffix(err.Error(), at) {
				t.Errorf("%s %q: error %v, want it to end with %q", c.provider, c.block, err, at)
			}
		}
	}

	provision := func(h Handler) (Handler, error) {
		h.DedupeOff = true
		h.Secrets = []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		err := h.Provision(ctx)
		h.Cleanup()
		return h, err
	}
	for _, c := range []struct {
		h    Handler
		want string
	}{
		{Handler{Provider: "stripe", ReplayWindow: caddy.Duration(2 * time.Second)}, "replay_window: 2s is shorter than twice the tolerance (2 × 5m)"},
		{Handler{Provider: "standard", Tolerance: caddy.Duration(time.Hour), ReplayWindow: caddy.Duration(time.Hour)}, "replay_window: 1h is shorter than twice the tolerance (2 × 1h)"},
		{Handler{Provider: "hmac", HMAC: &verify.HMACOptions{Header: "X-Sig", TimestampHeader: "X-Ts"}, ReplayWindow: caddy.Duration(time.Minute)}, "replay_window: 1m is shorter"},
		{Handler{Provider: "stripe", ReplayWindow: caddy.Duration(10 * time.Minute)}, ""},
		{Handler{Provider: "hmac", HMAC: &verify.HMACOptions{Header: "X-Sig"}, ReplayWindow: caddy.Duration(time.Second)}, ""},
	} {
		_, err := provision(c.h)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("JSON %+v: %v", c.h, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("JSON %+v: error %v, want %q", c.h, err, c.want)
		}
	}

	for _, c := range []struct {
		h    Handler
		want time.Duration
	}{
		{Handler{Provider: "stripe"}, DefaultReplayWindow},
		{Handler{Provider: "stripe", Tolerance: caddy.Duration(13 * time.Hour)}, 26*time.Hour + clockSkew},
		{Handler{Provider: "ivy", Tolerance: caddy.Duration(13 * time.Hour)}, DefaultReplayWindow},
	} {
		h, err := provision(c.h)
		if err != nil || h.window != c.want {
			t.Errorf("JSON %+v: window %v (%v), want %v", c.h, h.window, err, c.want)
		}
	}
}
