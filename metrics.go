package webhookguard

import (
	"errors"
	"sync"
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
	commitRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "commit_retries_total",
		Help:      "Delivered events whose first commit to the replay store failed, by how the background retry ended: landed, or lost when the claim's lease ended first.",
	}, []string{"result"})
)

// handlerMetrics records a handler's deliveries. It keeps the labelled
// children it has used, so a delivery does not hash its labels and look them
// up in the vectors each time; children are created on first use, as
// WithLabelValues does, so no series appears before its first event.
type handlerMetrics struct {
	provider string
	events   sync.Map // outcome → prometheus.Counter
	verify   func() prometheus.Observer
}

// registerMetrics registers the collectors into the config's registry and
// returns the recorder of one handler's deliveries.
func registerMetrics(reg *prometheus.Registry, logger *zap.Logger, provider string) *handlerMetrics {
	if reg != nil {
		for _, c := range []prometheus.Collector{eventsTotal, verifySeconds, commitRetries, spoolEvents, spoolOldestPending, spoolPaused, deliveryAttempts, spoolDeadTotal,
			journalSyncSeconds, journalGroupRecords, journalFsyncErrors, journalLag, spoolDataLost} {
			if err := reg.Register(c); err != nil {
				var already prometheus.AlreadyRegisteredError
				if !errors.As(err, &already) {
					logger.Warn("registering metrics", zap.Error(err))
				}
			}
		}
	}
	return &handlerMetrics{
		provider: provider,
		verify: sync.OnceValue(func() prometheus.Observer {
			return verifySeconds.WithLabelValues(provider)
		}),
	}
}

func (m *handlerMetrics) countEvent(outcome string) {
	c, ok := m.events.Load(outcome)
	if !ok {
		c, _ = m.events.LoadOrStore(outcome, eventsTotal.WithLabelValues(m.provider, outcome))
	}
	c.(prometheus.Counter).Inc()
}

func (m *handlerMetrics) observeVerify(d time.Duration) {
	m.verify().Observe(d.Seconds())
}
