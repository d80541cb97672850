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

	committerActive prometheus.Gauge
	pendingFiles    prometheus.Gauge
	pendingBytes    prometheus.Gauge
	commitDuration  prometheus.Histogram
	committedFiles  prometheus.Counter
	snapshots       *prometheus.GaugeVec
	dataFiles       *prometheus.GaugeVec
	maintenance     *prometheus.CounterVec

	backfillRemaining prometheus.Gauge
	backfillRows      prometheus.Counter
	backfillDropped   prometheus.Counter

	slotStatus   *prometheus.GaugeVec
	parkedTables prometheus.Gauge
	parkedEvents *prometheus.GaugeVec

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
		Help:        "1 on the replica that holds the slot's reader role and streams from the slot, 0 elsewhere; sum across replicas is 1 while a reader runs.",
		ConstLabels: labels,
	})
	m.retainedWAL = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_slot_retained_wal_bytes",
		Help:        "WAL bytes the slot retains (server position minus confirmed flush), reported by the reader replica only; use max.",
		ConstLabels: labels,
	})
	m.depth = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_buffer_depth",
		Help:        "Events in the shared buffer not yet written to data files: the processors' work queue. Every replica reports the same value: aggregate with max, never sum.",
		ConstLabels: labels,
	})
	lag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "philotes_cdc_lag_seconds",
		Help:        "Seconds since the source commit of the oldest change not yet visible in Iceberg, whether it waits in the buffer or in a data file the committer has not committed yet; 0 when nothing waits. Includes up to one commit interval. Read from the shared buffer, so every replica reports the same value: aggregate with max, never sum.",
		ConstLabels: labels,
	}, m.lagSeconds)
	m.processed = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "philotes_buffer_events_processed_total",
		Help:        "Events this replica wrote to data files and recorded; sum(rate()) across replicas is the release's throughput.",
		ConstLabels: labels,
	})
	m.batch = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "philotes_batch_duration_seconds",
		Help:        "Time per batch by stage: buffer_append (reader COPY into the buffer) and sink_write (processor writes data files, records them and deletes the events).",
		ConstLabels: labels,
		Buckets:     prometheus.ExponentialBuckets(0.005, 2, 14),
	}, []string{"stage"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "philotes_errors_total",
		Help:        "Errors by kind: replication, reader_lock, buffer, sink (writing data files), commit (the committer's Iceberg commits), maintenance, backfill, table (a table's changes could not be written: it is parked).",
		ConstLabels: labels,
	}, []string{"kind"})
	for _, kind := range ErrorKinds {
		m.errors.WithLabelValues(kind)
	}
	m.committerActive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_iceberg_committer_active",
		Help:        "1 on the replica that holds the source's committer role, 0 elsewhere; sum across replicas is 1 while a processor-running replica is up.",
		ConstLabels: labels,
	})
	m.pendingFiles = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_iceberg_pending_files",
		Help:        "Data files written and recorded but not yet committed to their Iceberg tables: the committer's queue. Read from the shared buffer: aggregate with max.",
		ConstLabels: labels,
	})
	m.pendingBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_iceberg_pending_bytes",
		Help:        "Bytes of the data files waiting for a commit. Read from the shared buffer: aggregate with max.",
		ConstLabels: labels,
	})
	m.commitDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "philotes_iceberg_commit_duration_seconds",
		Help:        "Time per Iceberg commit of one table's pending files, on the committer. Stays flat over months when maintenance keeps the metadata small.",
		ConstLabels: labels,
		Buckets:     prometheus.ExponentialBuckets(0.005, 2, 14),
	})
	m.committedFiles = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "philotes_iceberg_committed_files_total",
		Help:        "Data files the committer added to Iceberg tables.",
		ConstLabels: labels,
	})
	m.snapshots = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name:        "philotes_iceberg_snapshots",
		Help:        "Snapshots the table's metadata retains, as of the committer's last commit or maintenance; bounded by the snapshot retention. Reported by the committer.",
		ConstLabels: labels,
	}, []string{"table"})
	m.dataFiles = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name:        "philotes_iceberg_data_files",
		Help:        "Data files in the table's current snapshot, as of the committer's last maintenance; compaction keeps it bounded. Reported by the committer.",
		ConstLabels: labels,
	}, []string{"table"})
	m.maintenance = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "philotes_iceberg_maintenance_total",
		Help:        "Table maintenance operations that changed something, by operation: expire_snapshots, rewrite_manifests, compact, remove_orphans.",
		ConstLabels: labels,
	}, []string{"operation"})
	m.backfillRemaining = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_backfill_rows_remaining",
		Help:        "Rows that running backfills have yet to read from the source (estimated from the tables' sizes); 0 when no backfill runs. Read from the shared buffer: aggregate with max, never sum.",
		ConstLabels: labels,
	})
	m.backfillRows = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "philotes_backfill_rows_read_total",
		Help:        "Existing rows this replica read from the source in backfill chunks; sum(rate()) across replicas is the backfill's speed.",
		ConstLabels: labels,
	})
	m.backfillDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "philotes_backfill_rows_superseded_total",
		Help:        "Rows read by backfill chunks and left out because the stream carries the same or a newer state of their key.",
		ConstLabels: labels,
	})
	m.slotStatus = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name:        "philotes_slot_wal_status",
		Help:        "1 for the slot's wal_status in pg_replication_slots (reserved, extended, unreserved: the WAL it needs goes at the next checkpoint unless it catches up, lost: invalidated), 0 for the others; reported by the reader replica only (all 0 elsewhere): use max.",
		ConstLabels: labels,
	}, []string{"status"})
	for _, st := range SlotStatuses {
		m.slotStatus.WithLabelValues(st)
	}
	m.parkedTables = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "philotes_parked_tables",
		Help:        "Source tables parked now: their changes cannot be written (the log says why), their events wait in the buffer and are retried on a backoff, and every other table keeps flowing. Read from the shared buffer: aggregate with max.",
		ConstLabels: labels,
	})
	m.parkedEvents = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name:        "philotes_parked_events",
		Help:        "Events waiting for each parked table (schema.name); not counted in philotes_buffer_depth or philotes_cdc_lag_seconds. Read from the shared buffer: aggregate with max.",
		ConstLabels: labels,
	}, []string{"table"})
	reg.MustRegister(m.backfillRemaining, m.backfillRows, m.backfillDropped, m.slotStatus, m.parkedTables, m.parkedEvents)
	reg.MustRegister(m.readerActive, m.retainedWAL, m.depth, lag, m.processed, m.batch, m.errors,
		m.committerActive, m.pendingFiles, m.pendingBytes, m.commitDuration, m.committedFiles, m.snapshots,
		m.dataFiles, m.maintenance)
	return m
}

// The kinds of philotes_errors_total, one per part of the worker that can fail.
const (
	KindReplication = "replication" // the reader's session with the source
	KindReaderLock  = "reader_lock" // taking the reader role
	KindBuffer      = "buffer"      // the buffer database
	KindSink        = "sink"        // writing data files
	KindCommit      = "commit"      // the committer's Iceberg commits
	KindMaintenance = "maintenance" // table maintenance
	KindBackfill    = "backfill"    // a backfill chunk or planning step
	KindTable       = "table"       // a table's changes could not be written: it is parked
)

// ErrorKinds lists every kind, each exported from the start (at 0).
var ErrorKinds = []string{KindReplication, KindReaderLock, KindBuffer, KindSink, KindCommit, KindMaintenance, KindBackfill, KindTable}

// SetReaderActive records whether this replica holds the reader role.
func (m *Metrics) SetReaderActive(active bool) {
	if active {
		m.readerActive.Set(1)
	} else {
		m.readerActive.Set(0)
		m.retainedWAL.Set(0)
		m.SetSlotStatus("")
	}
}

// SlotStatuses are the values of pg_replication_slots.wal_status.
var SlotStatuses = []string{"reserved", "extended", "unreserved", "lost"}

// SetSlotStatus records the slot's wal_status ("" when unknown: every status 0).
func (m *Metrics) SetSlotStatus(status string) {
	for _, st := range SlotStatuses {
		v := 0.0
		if st == status {
			v = 1
		}
		m.slotStatus.WithLabelValues(st).Set(v)
	}
}

// SetParked records the parked tables and the events waiting for each.
func (m *Metrics) SetParked(events map[string]int64) {
	m.parkedTables.Set(float64(len(events)))
	m.parkedEvents.Reset()
	for t, n := range events {
		m.parkedEvents.WithLabelValues(t).Set(float64(n))
	}
}

// SetRetainedWAL records the WAL the slot retains.
func (m *Metrics) SetRetainedWAL(bytes uint64) { m.retainedWAL.Set(float64(bytes)) }

// ObserveAppend records one buffer append.
func (m *Metrics) ObserveAppend(d time.Duration) {
	m.batch.WithLabelValues("buffer_append").Observe(d.Seconds())
}

// ObserveSink records one processor batch written to data files and recorded.
func (m *Metrics) ObserveSink(d time.Duration, events int) {
	m.batch.WithLabelValues("sink_write").Observe(d.Seconds())
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

// SetPending records the data files waiting for a commit.
func (m *Metrics) SetPending(files, bytes int64) {
	m.pendingFiles.Set(float64(files))
	m.pendingBytes.Set(float64(bytes))
}

// SetCommitterActive records whether this replica holds the committer role.
func (m *Metrics) SetCommitterActive(active bool) {
	if active {
		m.committerActive.Set(1)
		return
	}
	m.committerActive.Set(0)
	m.snapshots.Reset()
	m.dataFiles.Reset()
}

// ObserveCommit records one Iceberg commit of files data files.
func (m *Metrics) ObserveCommit(d time.Duration, files int) {
	m.commitDuration.Observe(d.Seconds())
	m.committedFiles.Add(float64(files))
}

// SetTable records a table's retained snapshots and current data files (a negative count is left as it was).
func (m *Metrics) SetTable(table string, snapshots, dataFiles int) {
	if snapshots >= 0 {
		m.snapshots.WithLabelValues(table).Set(float64(snapshots))
	}
	if dataFiles >= 0 {
		m.dataFiles.WithLabelValues(table).Set(float64(dataFiles))
	}
}

// Maintained counts one maintenance operation that changed a table.
func (m *Metrics) Maintained(operation string) { m.maintenance.WithLabelValues(operation).Inc() }

// SetBackfillRemaining records the rows backfills have yet to read.
func (m *Metrics) SetBackfillRemaining(rows int64) { m.backfillRemaining.Set(float64(rows)) }

// ObserveBackfillChunk records one backfill chunk: rows read, of which dropped were superseded by the stream.
func (m *Metrics) ObserveBackfillChunk(rows, dropped int) {
	m.backfillRows.Add(float64(rows))
	m.backfillDropped.Add(float64(dropped))
}
