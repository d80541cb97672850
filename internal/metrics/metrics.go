// Package metrics holds the worker's Prometheus metrics. Their meanings are what the autoscaler scales on, so
// each help text says how to aggregate it across replicas.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is the worker's set of metrics for one source.
type Metrics struct {
	readerActive prometheus.Gauge
	retainedWAL  prometheus.Gauge
	depth        prometheus.Gauge
	processed    prometheus.Counter
	batch        *prometheus.HistogramVec
	errors       *prometheus.CounterVec

	mu     sync.Mutex
	oldest time.Time // commit time of the oldest buffered change; zero when the buffer is empty
	now    func() time.Time
}

// New registers the metrics with reg.
func New(reg prometheus.Registerer, source string) *Metrics {
	labels := prometheus.Labels{"source": source}
	m := &Metrics{now: time.Now}
	m.readerActive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_cdc_reader_active",
		Help:        "1 on the replica that holds the slot's reader role, 0 elsewhere; sum across replicas is 1 while a reader runs.",
		ConstLabels: labels,
	})
	m.retainedWAL = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_slot_retained_wal_bytes",
		Help:        "WAL bytes the slot retains (server position minus confirmed flush), reported by the reader replica only; use max.",
		ConstLabels: labels,
	})
	m.depth = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_buffer_depth",
		Help:        "Events in the shared buffer not yet committed to the sink. Every replica reports the same value: aggregate with max, never sum.",
		ConstLabels: labels,
	})
	lag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "philotes_cdc_lag_seconds",
		Help:        "Seconds since the commit of the oldest change not yet committed to the sink; 0 when the buffer is empty. Read from the shared buffer, so every replica reports the same value: aggregate with max, never sum. More processors make it fall.",
		ConstLabels: labels,
	}, m.lagSeconds)
	m.processed = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "philotes_buffer_events_processed_total",
		Help:        "Events this replica committed to the sink; sum(rate()) across replicas is the release's throughput.",
		ConstLabels: labels,
	})
	m.batch = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "philotes_batch_duration_seconds",
		Help:        "Time per batch by stage: buffer_append (reader COPY into the buffer) and sink_commit (processor write to the sink and buffer delete).",
		ConstLabels: labels,
		Buckets:     prometheus.ExponentialBuckets(0.005, 2, 14),
	}, []string{"stage"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "philotes_errors_total",
		Help:        "Errors by kind: replication, reader_lock, buffer, sink.",
		ConstLabels: labels,
	}, []string{"kind"})
	for _, kind := range []string{"replication", "reader_lock", "buffer", "sink"} {
		m.errors.WithLabelValues(kind)
	}
	reg.MustRegister(m.readerActive, m.retainedWAL, m.depth, lag, m.processed, m.batch, m.errors)
	return m
}

// SetReaderActive records whether this replica holds the reader role.
func (m *Metrics) SetReaderActive(active bool) {
	if active {
		m.readerActive.Set(1)
	} else {
		m.readerActive.Set(0)
		m.retainedWAL.Set(0)
	}
}

// SetRetainedWAL records the WAL the slot retains.
func (m *Metrics) SetRetainedWAL(bytes uint64) { m.retainedWAL.Set(float64(bytes)) }

// ObserveAppend records one buffer append.
func (m *Metrics) ObserveAppend(d time.Duration) {
	m.batch.WithLabelValues("buffer_append").Observe(d.Seconds())
}

// ObserveSink records one processor batch committed to the sink.
func (m *Metrics) ObserveSink(d time.Duration, events int) {
	m.batch.WithLabelValues("sink_commit").Observe(d.Seconds())
	m.processed.Add(float64(events))
}

// Error counts one error of the given kind.
func (m *Metrics) Error(kind string) { m.errors.WithLabelValues(kind).Inc() }

// SetBuffer records the buffer's depth and the commit time of its oldest event (zero when empty).
func (m *Metrics) SetBuffer(depth int64, oldest time.Time) {
	m.depth.Set(float64(depth))
	m.mu.Lock()
	m.oldest = oldest
	m.mu.Unlock()
}

// lagSeconds is computed at scrape time so it keeps growing between buffer reads while a change waits.
func (m *Metrics) lagSeconds() float64 {
	m.mu.Lock()
	oldest := m.oldest
	m.mu.Unlock()
	if oldest.IsZero() {
		return 0
	}
	return max(m.now().Sub(oldest).Seconds(), 0)
}
