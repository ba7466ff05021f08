package webhookguard

import (
	"io"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap/zapcore"
)

// TestSlackProbeAnsweredWithoutForwarding: Slack's unsigned ssl_check probe
// is answered 200 with outcome probe and reaches nothing; any other unsigned
// form POST is refused.
func TestSlackProbeAnsweredWithoutForwarding(t *testing.T) {
	h, logs := guard(t, &Handler{Provider: "slack", Secrets: []string{"slack-unit-test-secret"}, AllowIPs: []string{"any"}, DedupeOff: true})
	up := &upstreamStub{}
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	w, err := send(t, h, up, http.MethodPost, "203.0.113.9:1", form, "ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO")
	if got := statusOfResult(w, err); got != http.StatusOK || up.count() != 0 {
		t.Fatalf("probe: %d, %d forwarded; want 200, 0", got, up.count())
	}
	if got := w.Header().Get(outcomeHeader); got != outcomeProbe {
		t.Errorf("%s = %q, want %q", outcomeHeader, got, outcomeProbe)
	}
	assertLog(t, logs, zapcore.InfoLevel, outcomeProbe, "ssl_check")

	w, err = send(t, h, up, http.MethodPost, "203.0.113.9:1", form, "ssl_check=1&token=x&command=%2Fpay")
	if got := statusOfResult(w, err); got != http.StatusUnauthorized || up.count() != 0 {
		t.Fatalf("unsigned non-probe: %d, %d forwarded; want 401, 0", got, up.count())
	}
	assertLog(t, logs, zapcore.WarnLevel, outcomeInvalidSignature, "X-Slack-Signature header missing")
}

// TestPlaceholdersUnderBothNames: the event is in
// {http.webhook_guard.*} and in the deprecated {http.webhook.*}.
func TestPlaceholdersUnderBothNames(t *testing.T) {
	h, _ := guard(t, &Handler{Provider: "ivy", Secrets: []string{testIvySecret}, AllowIPs: []string{"any"}, DedupeOff: true})
	body := `{"id":"evt_ph","type":"order_updated"}`
	got := map[string]string{}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		for _, p := range []string{"http.webhook_guard.", "http.webhook."} {
			for _, f := range []string{"provider", "event_id", "event_type"} {
				got[p+f], _ = repl.GetString(p + f)
			}
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
		return nil
	})
	w, err := send(t, h, next, http.MethodPost, "203.0.113.9:1", ivyHeaders(body), body)
	if s := statusOfResult(w, err); s != http.StatusOK {
		t.Fatalf("status %d", s)
	}
	for _, p := range []string{"http.webhook_guard.", "http.webhook."} {
		if got[p+"provider"] != "ivy" || got[p+"event_id"] != "evt_ph" || got[p+"event_type"] != "order_updated" {
			t.Errorf("placeholders %s*: %v", p, got)
		}
	}
}

// TestAllowIPsPresetIsTheSchemes: `allow_ips ivy` is the ivy scheme's
// published list, and an unknown name is not a preset.
func TestAllowIPsPresetIsTheSchemes(t *testing.T) {
	list, err := parseAllowList([]string{"ivy"}, nil)
	if err != nil || !list.allows("3.120.50.145") || list.allows("203.0.113.9") {
		t.Fatalf("ivy preset: %v, %v", list, err)
	}
	if _, err := parseAllowList([]string{"stripe"}, nil); err == nil {
		t.Fatal("stripe has no published list, yet is a preset")
	}
}
