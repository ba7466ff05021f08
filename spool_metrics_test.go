package webhookguard

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hookguard/caddy-webhook-guard/spool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestSpoolMetricsRegistered: the spool's collectors are registered with the
// handler's, once per registry, under their documented names and labels.
func TestSpoolMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	core, logs := observer.New(zapcore.DebugLevel)
	registerMetrics(reg, zap.New(core), "ivy")
	registerMetrics(reg, zap.New(core), "stripe") // a second handler, same config
	if logs.Len() != 0 {
		t.Errorf("registering twice logged: %v", logs.All())
	}

	const scope = "metrics-test"
	t.Cleanup(func() {
		for _, state := range []string{"pending", "dead"} {
			spoolEvents.DeleteLabelValues(scope, state)
		}
		spoolOldestPending.DeleteLabelValues(scope)
		for _, r := range []string{deliveryDelivered, deliveryRefused, deliveryError} {
			deliveryAttempts.DeleteLabelValues(scope, r)
		}
		spoolDeadTotal.DeleteLabelValues(scope)
		spoolPaused.DeleteLabelValues(scope)
	})
	spoolPaused.WithLabelValues(scope).Set(1)
	spoolEvents.WithLabelValues(scope, "pending").Set(3)
	spoolEvents.WithLabelValues(scope, "dead").Set(1)
	spoolOldestPending.WithLabelValues(scope).Set(42.5)
	deliveryAttempts.WithLabelValues(scope, deliveryDelivered).Add(5)
	deliveryAttempts.WithLabelValues(scope, deliveryRefused).Add(2)
	deliveryAttempts.WithLabelValues(scope, deliveryError).Inc()
	spoolDeadTotal.WithLabelValues(scope).Inc()

	want := `
# HELP caddy_webhook_guard_delivery_attempts_total Delivery attempts of spooled events to the backend, by scope and result (delivered, refused, error).
# TYPE caddy_webhook_guard_delivery_attempts_total counter
caddy_webhook_guard_delivery_attempts_total{result="delivered",scope="metrics-test"} 5
caddy_webhook_guard_delivery_attempts_total{result="error",scope="metrics-test"} 1
caddy_webhook_guard_delivery_attempts_total{result="refused",scope="metrics-test"} 2
# HELP caddy_webhook_guard_spool_dead_total Spooled events that ran out of attempts or age and are kept as dead, by scope.
# TYPE caddy_webhook_guard_spool_dead_total counter
caddy_webhook_guard_spool_dead_total{scope="metrics-test"} 1
# HELP caddy_webhook_guard_spool_events Events held by the spool, by scope and state (pending, dead, discarded).
# TYPE caddy_webhook_guard_spool_events gauge
caddy_webhook_guard_spool_events{scope="metrics-test",state="dead"} 1
caddy_webhook_guard_spool_events{scope="metrics-test",state="pending"} 3
# HELP caddy_webhook_guard_spool_oldest_pending_seconds Age in seconds of the oldest pending event of the spool, by scope; 0 when none is pending.
# TYPE caddy_webhook_guard_spool_oldest_pending_seconds gauge
caddy_webhook_guard_spool_oldest_pending_seconds{scope="metrics-test"} 42.5
# HELP caddy_webhook_guard_spool_paused 1 while an operator holds the deliveries of a scope (spool pause), else 0.
# TYPE caddy_webhook_guard_spool_paused gauge
caddy_webhook_guard_spool_paused{scope="metrics-test"} 1
`
	// As the admin endpoint's /metrics serves them (text format), the
	// spool's families only.
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var got strings.Builder
	for line := range strings.Lines(rec.Body.String()) {
		for _, name := range []string{"spool_events", "spool_oldest_pending_seconds", "delivery_attempts_total", "spool_dead_total", "spool_paused"} {
			if strings.Contains(line, "caddy_webhook_guard_"+name+"{") || strings.Contains(line, "caddy_webhook_guard_"+name+" ") {
				got.WriteString(line)
				break
			}
		}
	}
	if got.String() != strings.TrimPrefix(want, "\n") {
		t.Errorf("/metrics:\n%s\nwant:\n%s", got.String(), want)
	}
}

// spoolGauges sets the paused gauge of each paused scope to 1, and back to
// 0 when it is resumed; scopes without events get 0 for every state.
func TestSpoolGaugesPaused(t *testing.T) {
	const scope = "gauges-test"
	t.Cleanup(func() {
		spoolPaused.DeleteLabelValues(scope)
		spoolOldestPending.DeleteLabelValues(scope)
		for _, s := range []string{"pending", "dead", "discarded"} {
			spoolEvents.DeleteLabelValues(scope, s)
		}
	})
	set := spoolGauges()
	set(map[string]spool.Counts{scope: {Pending: 2}}, map[string]bool{scope: true})
	if v := gaugeValue(t, spoolPaused.WithLabelValues(scope)); v != 1 {
		t.Fatalf("paused gauge %v, want 1", v)
	}
	if v := gaugeValue(t, spoolEvents.WithLabelValues(scope, "pending")); v != 2 {
		t.Fatalf("pending gauge %v, want 2", v)
	}
	set(map[string]spool.Counts{}, map[string]bool{})
	if v := gaugeValue(t, spoolPaused.WithLabelValues(scope)); v != 0 {
		t.Fatalf("paused gauge after resume %v, want 0", v)
	}
	if v := gaugeValue(t, spoolEvents.WithLabelValues(scope, "pending")); v != 0 {
		t.Fatalf("pending gauge of an emptied scope %v, want 0", v)
	}
}

// gaugeValue reads a gauge.
func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
