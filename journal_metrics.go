package webhookguard

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hookguard/caddy-webhook-guard/ledger"
)

// The ledger journal's collectors, registered with the handler's in
// registerMetrics. The ledger package measures (ledger.Config.OnSync,
// OnJournalError, Ledger.JournalStats); these turn it into series.
var (
	// journalSyncSeconds is how long each fdatasync of a journal group
	// took: the floor of every durable answer.
	journalSyncSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "journal_sync_seconds",
		Help:      "Time each fdatasync of the ledger's journal took (one per group of writes).",
		Buckets:   []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1},
	})
	// journalGroupRecords is how many records each journal group held.
	journalGroupRecords = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "journal_group_records",
		Help:      "Records (commits, spooled events, spool changes) written and synced together in one journal group.",
		Buckets:   prometheus.ExponentialBuckets(1, 2, 13), // 1 .. 4096
	})
	// journalFsyncErrors counts the journal writes or syncs that failed.
	journalFsyncErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "webhook_guard",
		Name:      "journal_fsync_errors_total",
		Help:      "Writes or fdatasyncs of the ledger's journal that failed; each is fatal to the journal, which is reopened from disk.",
	})
	// journalLag reports the checkpoint's lag of the open ledgers.
	journalLag = &journalLagCollector{
		records: prometheus.NewDesc("caddy_webhook_guard_journal_checkpoint_lag_records",
			"Journal records durable but not yet applied to the ledger file (all open ledgers).", nil, nil),
		seconds: prometheus.NewDesc("caddy_webhook_guard_journal_checkpoint_lag_seconds",
			"Age of the oldest journal record not yet applied to the ledger file (the largest of the open ledgers), 0 when none.", nil, nil),
		segments: prometheus.NewDesc("caddy_webhook_guard_journal_segments",
			"Journal segment files (in use and spare) of the open ledgers.", nil, nil),
		segmentBytes: prometheus.NewDesc("caddy_webhook_guard_journal_segment_bytes",
			"Size on disk of the journal segment files (in use and spare) of the open ledgers.", nil, nil),
		ledgers: map[*ledger.Ledger]bool{},
	}
)

// journalLagCollector is a collector of the open ledgers' checkpoint lag
// and journal files, read when scraped.
type journalLagCollector struct {
	records, seconds       *prometheus.Desc
	segments, segmentBytes *prometheus.Desc
	mu                     sync.Mutex
	ledgers                map[*ledger.Ledger]bool
}

// Describe implements prometheus.Collector.
func (c *journalLagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.records
	ch <- c.seconds
	ch <- c.segments
	ch <- c.segmentBytes
}

// Collect implements prometheus.Collector.
func (c *journalLagCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	var records, segments, segmentBytes int64
	var seconds float64
	for l := range c.ledgers {
		st := l.JournalStats()
		records += st.LagRecords
		seconds = max(seconds, st.LagSeconds)
		segments += int64(st.Segments)
		segmentBytes += st.SegmentBytes
	}
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.records, prometheus.GaugeValue, float64(records))
	ch <- prometheus.MustNewConstMetric(c.seconds, prometheus.GaugeValue, seconds)
	ch <- prometheus.MustNewConstMetric(c.segments, prometheus.GaugeValue, float64(segments))
	ch <- prometheus.MustNewConstMetric(c.segmentBytes, prometheus.GaugeValue, float64(segmentBytes))
}

// add makes l's lag reported; the returned function stops it.
func (c *journalLagCollector) add(l *ledger.Ledger) (remove func()) {
	c.mu.Lock()
	c.ledgers[l] = true
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.ledgers, l)
		c.mu.Unlock()
	}
}

// observeJournalSync is the ledgers' ledger.Config.OnSync.
func observeJournalSync(d time.Duration, records int) {
	journalSyncSeconds.Observe(d.Seconds())
	journalGroupRecords.Observe(float64(records))
}
