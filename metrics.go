package webhookguard

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The collectors are created once and registered into each config's
// registry at provisioning (a reload brings a fresh registry).
var (
	eventsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "events_total",
		Help:      "Webhook deliveries seen by webhook_guard, by provider and outcome.",
	}, []string{"provider", "outcome"})
	verifySeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "verify_seconds",
		Help:      "Time spent verifying a delivery's signature or key.",
		Buckets:   []float64{0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01},
	}, []string{"provider"})
	storeEvictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "store_evictions_total",
		Help:      "Delivered events the replay store forgot before their window ended (capacity pressure).",
	}, []string{"store"})
)

// handlerMetrics records a handler's deliveries.
type handlerMetrics struct{}

// registerMetrics registers the collectors into the config's registry.
func registerMetrics(reg *prometheus.Registry, logger *zap.Logger) *handlerMetrics {
	if reg != nil {
		for _, c := range []prometheus.Collector{eventsTotal, verifySeconds, storeEvictions} {
			if err := reg.Register(c); err != nil {
				var already prometheus.AlreadyRegisteredError
				if !errors.As(err, &already) {
					logger.Warn("registering metrics", zap.Error(err))
				}
			}
		}
	}
	return &handlerMetrics{}
}

func (*handlerMetrics) countEvent(provider, outcome string) {
	eventsTotal.WithLabelValues(provider, outcome).Inc()
}

func (*handlerMetrics) observeVerify(provider string, d time.Duration) {
	verifySeconds.WithLabelValues(provider).Observe(d.Seconds())
}
