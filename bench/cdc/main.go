// Command cdc measures the worker's throughput against pg_recvlogical on the same slot workload, in one run:
//
//  1. reference: pg_recvlogical (pgoutput) drains a slot to /dev/null;
//  2. slot to buffer: the worker's reader drains a copy of the same slot into the buffer table;
//  3. buffer to Iceberg: the worker's processors drain the buffer into a file:// warehouse.
//
// Each figure is printed with its ratio to the reference. Run it with bench/run.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/metrics"
	"github.com/philotes/philotes-worker/internal/pgtest"
	"github.com/philotes/philotes-worker/internal/sink/iceberg"
	"github.com/philotes/philotes-worker/internal/source"
	"github.com/philotes/philotes-worker/internal/worker"
)

func main() {
	rows := flag.Int("rows", 1_000_000, "rows to insert")
	txs := flag.Int("tx", 100, "transactions to insert them in")
	batch := flag.Int("batch", 5000, "worker batch size")
	processors := flag.Int("processors", 2, "processors for the buffer-to-Iceberg phase")
	skipSink := flag.Bool("skip-sink", false, "skip the buffer-to-Iceberg phase")
	appenders := flag.Int("appenders", 2, "parallel COPY connections of the reader")
	flag.Parse()
	if err := run(*rows, *txs, *batch, *processors, *appenders, *skipSink); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name    string
	seconds float64
	cpu     string
}

func run(rows, txs, batchSize, processors, appenders int, skipSink bool) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fmt.Printf("workload: %d rows of about 200 bytes in %d transactions\n", rows, txs)
	srv, err := pgtest.Start(ctx, pgtest.Options{Durable: true})
	if err != nil {
		return err
	}
	defer srv.Stop()
	src, err := srv.CreateDatabase(ctx, "bench_src")
	if err != nil {
		return err
	}
	bufURL, err := srv.CreateDatabase(ctx, "bench_buf")
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, src)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2), status text, note text, created_at timestamptz)`,
		`CREATE PUBLICATION bench_pub FOR TABLE orders`,
		`SELECT pg_create_logical_replication_slot('bench_ref', 'pgoutput')`,
		`SELECT pg_copy_logical_replication_slot('bench_ref', 'bench_worker')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	fmt.Print("loading... ")
	per := rows / txs
	var lastTxStart string
	start := time.Now()
	for i := range txs {
		if i == txs-1 {
			if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lastTxStart); err != nil {
				return err
			}
		}
		_, err := conn.Exec(ctx, `INSERT INTO orders
SELECT g, 'customer-' || g, (g % 100000) / 100.0, 'shipped',
       repeat('x', 120), timestamptz '2026-11-27 10:00:00+00' + g * interval '1 second'
FROM generate_series($1::bigint, $2::bigint) g`, i*per+1, (i+1)*per)
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}
	var endLSN string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&endLSN); err != nil {
		return err
	}
	fmt.Printf("%.1fs\n", time.Since(start).Seconds())

	var results []result
	ref, err := reference(ctx, src, endLSN)
	if err != nil {
		return err
	}
	results = append(results, ref)

	buf, err := buffer.Open(ctx, bufURL, "bench", processors+4)
	if err != nil {
		return err
	}
	defer buf.Close()
	m := metrics.New(prometheus.NewRegistry(), "bench")
	reader, err := source.NewReader(source.Config{
		SourceURL: src, Slot: "bench_worker", Publication: "bench_pub", BatchSize: batchSize,
		FlushInterval: 200 * time.Millisecond, StatusInterval: time.Second, RetryInterval: time.Second, Appenders: appenders,
		Skip: func(schema, _ string) bool { return schema == "philotes" }, Logger: log, Metrics: m,
	}, buf)
	if err != nil {
		return err
	}
	var lastTx int64
	if err := conn.QueryRow(ctx, `SELECT ($1::pg_lsn - '0/0'::pg_lsn)::bigint`, lastTxStart).Scan(&lastTx); err != nil {
		return err
	}
	r, err := measure("worker slot -> buffer", func(ctx context.Context) error {
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- reader.Run(rctx) }()
		defer func() { stop(); <-done }()
		for {
			p, err := buf.Progress(ctx)
			if err != nil {
				return err
			}
			if int64(p.Last.CommitLSN) >= lastTx && int(p.Last.Seq) == per {
				return nil
			}
			time.Sleep(20 * time.Millisecond) // poll interval
		}
	})
	if err != nil {
		return err
	}
	results = append(results, r)

	if !skipSink {
		dir, err := os.MkdirTemp("", "philotes-bench-warehouse-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		sink, err := iceberg.New(ctx, iceberg.Config{Warehouse: "file://" + dir, CatalogName: "bench", Namespace: "bench",
			BufferURL: bufURL, BufferID: buf.EventScope(), Logger: log})
		if err != nil {
			return err
		}
		defer sink.Close()
		w, err := worker.New(worker.Config{Processors: processors, BatchSize: batchSize, StatsInterval: time.Second,
			IdlePollInterval: 50 * time.Millisecond, ShutdownTimeout: time.Minute, Logger: log}, buf, sink, nil, m)
		if err != nil {
			return err
		}
		r, err := measure(fmt.Sprintf("worker buffer -> Iceberg (%d processors)", processors), w.Drain)
		if err != nil {
			return err
		}
		results = append(results, r)
	}

	fmt.Printf("\n%-42s %10s %12s %8s  %s\n", "phase", "seconds", "rows/s", "ratio", "cpu (user+sys, this process)")
	for _, res := range results {
		rate := float64(rows) / res.seconds
		fmt.Printf("%-42s %10.2f %12.0f %7.2fx  %s\n", res.name, res.seconds, rate, ref.seconds/res.seconds, res.cpu)
	}
	fmt.Println("\nratio = reference time / phase time (1.00x = as fast as pg_recvlogical on the same slot workload)")
	return nil
}

// reference drains the reference slot with pg_recvlogical.
func reference(ctx context.Context, src, endLSN string) (result, error) {
	bin, err := pgtest.BinDir()
	if err != nil {
		return result{}, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pg_recvlogical"), "-d", src, "--slot", "bench_ref", "--start",
		"--endpos", endLSN, "--no-loop", "-o", "proto_version=1", "-o", "publication_names=bench_pub", "-f", "/dev/null")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("pg_recvlogical: %w: %s", err, stderr.String())
	}
	secs := time.Since(start).Seconds()
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return result{name: "reference pg_recvlogical (pgoutput)", seconds: secs, cpu: fmt.Sprintf("%.1fs (pg_recvlogical)", cpu.Seconds())}, nil
}

func measure(name string, f func(context.Context) error) (result, error) {
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	if err := f(context.Background()); err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	secs := time.Since(start).Seconds()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() - before.Utime.Nano() + after.Stime.Nano() - before.Stime.Nano())
	return result{name: name, seconds: secs, cpu: fmt.Sprintf("%.1fs (worker)", cpu.Seconds())}, nil
}
