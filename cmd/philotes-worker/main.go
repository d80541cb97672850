// Command philotes-worker streams a PostgreSQL logical replication slot into a shared buffer and drains the
// buffer into Apache Iceberg. See docs/worker-interface.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/config"
	"github.com/philotes/philotes-worker/internal/metrics"
	"github.com/philotes/philotes-worker/internal/sink/iceberg"
	"github.com/philotes/philotes-worker/internal/source"
	"github.com/philotes/philotes-worker/internal/worker"
)

func main() {
	cfg, err := config.FromOS()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "philotes-worker: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	log := newLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// In-flight batches get ShutdownTimeout; should anything still hang after that (an unreachable buffer
	// database during the reader's last append), exit anyway: nothing unconfirmed is lost, it is read again.
	context.AfterFunc(ctx, func() {
		time.AfterFunc(cfg.ShutdownTimeout+5*time.Second, func() {
			log.Error("shutdown did not finish in time; exiting", "timeout", cfg.ShutdownTimeout)
			os.Exit(1)
		})
	})
	if err := run(ctx, cfg, log); err != nil {
		log.Error("worker stopped", "err", err)
		if errors.Is(err, source.ErrNotBackfillable) || errors.Is(err, source.ErrSourceConfig) || errors.Is(err, iceberg.ErrWarehouse) {
			os.Exit(2) // the tables, the source's setup or the warehouse settings are the problem: configuration
		}
		os.Exit(1)
	}
	log.Info("worker stopped cleanly")
}

func run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg, cfg.SourceName)

	// /readyz is served from the start, before the worker exists: it reads the worker through an atomic.
	var current atomic.Pointer[worker.Worker]
	httpAddr, stopHTTP, err := worker.Serve(ctx, cfg.HTTPAddr, worker.Handler(reg, func() (bool, []string) {
		w := current.Load()
		if w == nil {
			return false, []string{"starting: connecting to the buffer database and the warehouse"}
		}
		return w.Health()
	}))
	if err != nil {
		return err
	}
	defer stopHTTP()
	log.Info("serving /metrics, /healthz and /readyz", "addr", httpAddr)

	buf, err := retry(ctx, log, "buffer database", nil, func() (*buffer.Buffer, error) {
		// Processors and backfill workers each hold a dedicated connection (their lease) and borrow another
		// one now and then; the reader's appenders, the committer and the stats loop need a few more.
		return buffer.Open(ctx, cfg.BufferURL, cfg.SourceName, 2*(cfg.Processors+cfg.BackfillWorkers)+6)
	})
	if err != nil || buf == nil {
		return err // nil: stopped while waiting
	}
	defer buf.Close()
	shared := cfg.BufferSharesSource()
	if shared && !cfg.NoReader {
		log.Warn("the buffer shares the source database: the walsender also decodes the buffer's own writes; set PHILOTES_BUFFER_URL to a separate database")
	}

	var (
		sink worker.Sink
		lake worker.Lake
	)
	if cfg.Processors > 0 {
		s, err := retry(ctx, log, "iceberg catalog and warehouse", iceberg.ErrWarehouse, func() (*iceberg.Sink, error) {
			return iceberg.New(ctx, iceberg.Config{
				Warehouse:   cfg.IcebergWarehouse,
				CatalogURI:  cfg.IcebergCatalogURI,
				CatalogName: cfg.IcebergCatalogName,
				Namespace:   cfg.IcebergNamespace,
				BufferURL:   cfg.BufferURL,
				Properties:  cfg.IcebergProperties,
				Logger:      log,
				Maintenance: iceberg.MaintenanceConfig{
					SnapshotRetention: cfg.SnapshotRetention,
					SnapshotsToKeep:   cfg.SnapshotsToKeep,
					TargetFileBytes:   int64(cfg.TargetFileBytes),
				},
			})
		})
		if err != nil || s == nil {
			return err
		}
		defer s.Close()
		sink, lake = s, s
	}

	var reader worker.Reader
	if !cfg.NoReader {
		r, err := source.NewReader(source.Config{
			SourceURL:      cfg.SourceURL,
			Slot:           cfg.Slot,
			Publication:    cfg.Publication,
			Tables:         cfg.Tables,
			BatchSize:      cfg.BatchSize,
			FlushInterval:  cfg.FlushInterval,
			StatusInterval: cfg.StatusInterval,
			RetryInterval:  cfg.ReaderRetryInterval,
			Skip:           skipOwnTables(shared),
			Backfill:       cfg.Backfill,
			Logger:         log,
			Metrics:        m,
		}, buf)
		if err != nil {
			return err
		}
		reader = r
	}

	backfill := worker.BackfillConfig{
		Workers:          cfg.BackfillWorkers,
		ChunkRows:        cfg.BackfillChunkRows,
		MaxRowsPerSecond: cfg.BackfillMaxRowsPerSecond,
		Connect: func(ctx context.Context) (worker.BackfillConn, error) {
			return source.ConnectBackfill(ctx, cfg.SourceURL)
		},
	}
	if cfg.SourceURL == "" {
		backfill.Workers = 0 // a processors-only replica without the source: the others backfill
	}
	if cfg.Mode == config.Backfill {
		return worker.BackfillTables(ctx, backfill, buf, m, cfg.BackfillTables, cfg.IdlePollInterval, log)
	}

	w, err := worker.New(worker.Config{
		Processors:         cfg.Processors,
		BatchSize:          cfg.BatchSize,
		MaxEventsPerSecond: cfg.MaxEventsPerSecond,
		StatsInterval:      cfg.StatsInterval,
		IdlePollInterval:   cfg.IdlePollInterval,
		ShutdownTimeout:    cfg.ShutdownTimeout,
		Committer: worker.CommitterConfig{
			Interval:            cfg.CommitInterval,
			MaxPendingBytes:     int64(cfg.CommitBytes),
			PollInterval:        cfg.IdlePollInterval,
			RetryInterval:       cfg.ReaderRetryInterval,
			CleanInterval:       30 * time.Second,
			MaintenanceInterval: cfg.MaintenanceInterval,
			MaxFilesPerCommit:   1000,
			MaxCommitAttempts:   10,
			OrphanAge:           24 * time.Hour,
		},
		Backfill: backfill,
		Decoder:  source.NewDecoder(buf),
		Logger:   log,
	}, buf, sink, reader, buf, lake, m)
	if err != nil {
		return err
	}
	log.Info("worker started", "mode", cfg.Mode, "source", cfg.SourceName, "slot", cfg.Slot,
		"reader_candidate", reader != nil, "processors", cfg.Processors, "http", httpAddr)
	current.Store(w)
	if cfg.Mode == config.Drain {
		return w.Drain(ctx)
	}
	return w.Run(ctx)
}

// retry calls open until it succeeds or ctx is cancelled (then it returns nil, nil): a dependency that is not
// reachable yet leaves the pod running and unready instead of crash-looping. An error that is permanent (wraps
// permanent, when not nil) is returned at once: only the configuration can fix it.
func retry[T any](ctx context.Context, log *slog.Logger, what string, permanent error, open func() (*T, error)) (*T, error) {
	backoff := 500 * time.Millisecond
	for {
		v, err := open()
		if err == nil {
			return v, nil
		}
		if permanent != nil && errors.Is(err, permanent) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		log.Warn(what+" not available yet", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
		backoff = min(backoff*2, 15*time.Second)
	}
}

// skipOwnTables keeps the worker's own writes out of the stream: the buffer's tables always, and the Iceberg SQL
// catalog's tables when the buffer (which holds the catalog) is the source database.
func skipOwnTables(bufferSharesSource bool) func(schema, table string) bool {
	return func(schema, table string) bool {
		return buffer.Owns(schema, table) || bufferSharesSource && iceberg.IsCatalogTable(schema, table)
	}
}

func newLogger(cfg config.Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
