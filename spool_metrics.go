package webhookguard

import "github.com/prometheus/client_golang/prometheus"

// The spool's collectors, registered with the handler's in registerMetrics.
// Their labels stay bounded: scope is a configured name, state one of
// pending, dead or discarded, result one of the delivery results below.
var (
	// spoolEvents is how many events the spool holds, by scope and state;
	// the spool sets it when an event is spooled, delivered, dies, is
	// retried or discarded, and when its ledger opens.
	spoolEvents = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "spool_events",
		Help:      "Events held by the spool, by scope and state (pending, dead, discarded).",
	}, []string{"scope", "state"})
	// spoolOldestPending is the age of the oldest pending event of a scope,
	// 0 when none is pending: how far behind delivery is.
	spoolOldestPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "spool_oldest_pending_seconds",
		Help:      "Age in seconds of the oldest pending event of the spool, by scope; 0 when none is pending.",
	}, []string{"scope"})
	// spoolPaused is 1 while a scope's deliveries are paused.
	spoolPaused = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "spool_paused",
		Help:      "1 while an operator holds the deliveries of a scope (spool pause), else 0.",
	}, []string{"scope"})
	// deliveryAttempts counts the spool's delivery attempts by scope and
	// result.
	deliveryAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "delivery_attempts_total",
		Help:      "Delivery attempts of spooled events to the backend, by scope and result (delivered, refused, error).",
	}, []string{"scope", "result"})
	// spoolDataLost counts the times a shared spool's store (Redis) was
	// found to have lost its data (FLUSHALL, restarted without its files).
	spoolDataLost = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "spool_data_lost_total",
		Help:      "Times Redis was found to have lost the spool's data (FLUSHALL, a server restarted without its files, a consumer group deleted); the events it held are gone.",
	})
	// spoolDeadTotal counts the events that became dead (out of attempts or
	// age), by scope.
	spoolDeadTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "spool_dead_total",
		Help:      "Spooled events that ran out of attempts or age and are kept as dead, by scope.",
	}, []string{"scope"})
)

// The result label values of deliveryAttempts.
const (
	// deliveryDelivered is an attempt the backend answered 2xx.
	deliveryDelivered = "delivered"
	// deliveryRefused is an attempt the backend answered with another status.
	deliveryRefused = "refused"
	// deliveryError is an attempt without an answer: connection, TLS or
	// timeout.
	deliveryError = "error"
)
