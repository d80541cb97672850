// Command cdc measures the worker's throughput against pg_recvlogical on the same slot workload, in one run:
//
//  1. reference: pg_recvlogical (pgoutput) drains a slot to /dev/null;
//  2. slot to buffer: the worker's reader drains a copy of the same slot into the buffer table;
//  3. buffer to Iceberg: the worker's processors drain the buffer into a file:// warehouse;
//  4. backfill: the same rows, now existing rows of the table, read by the worker's backfill with one and two
//     worker processes, against COPY (SELECT ...) TO STDOUT (see backfill.go).
//
// Phases 1 and 2 run in interleaved rounds, each on its own copy of the slot (same position, same workload), so
// that a change in machine load hits both alike; medians and each round's ratio are printed. Run it with
// bench/run.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/metrics"
	"github.com/philotes/philotes-worker/internal/sink/iceberg"
	"github.com/philotes/philotes-worker/internal/source"
	"github.com/philotes/philotes-worker/internal/worker"
	"github.com/philotes/philotes-worker/test/pgtest"
)

func main() {
	rows := flag.Int("rows", 1_000_000, "rows to insert")
	txs := flag.Int("tx", 100, "transactions to insert them in")
	batch := flag.Int("batch", 5000, "worker batch size")
	processors := flag.Int("processors", 2, "processors for the buffer-to-Iceberg phase")
	skipSink := flag.Bool("skip-sink", false, "skip the buffer-to-Iceberg phase")
	appenders := flag.Int("appenders", 2, "parallel COPY connections of the reader")
	rounds := flag.Int("rounds", 3, "interleaved rounds of reference and slot-to-buffer")
	skipBackfill := flag.Bool("skip-backfill", false, "skip the backfill phase")
	flag.Parse()
	if err := run(*rows, *txs, *batch, *processors, *appenders, *rounds, *skipSink, *skipBackfill); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name    string
	seconds float64
	cpu     string
}

func run(rows, txs, batchSize, processors, appenders, rounds int, skipSink, skipBackfill bool) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fmt.Printf("workload: %d rows of about 200 bytes in %d transactions; %d interleaved rounds\n", rows, txs, rounds)
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
	setup := []string{
		`CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2), status text, note text, created_at timestamptz)`,
		`CREATE PUBLICATION bench_pub FOR TABLE orders`,
		`SELECT pg_create_logical_replication_slot('bench_ref_1', 'pgoutput')`,
		`SELECT pg_copy_logical_replication_slot('bench_ref_1', 'bench_worker_1')`,
	}
	for i := 2; i <= rounds; i++ {
		setup = append(setup,
			fmt.Sprintf(`SELECT pg_copy_logical_replication_slot('bench_ref_1', 'bench_ref_%d')`, i),
			fmt.Sprintf(`SELECT pg_copy_logical_replication_slot('bench_ref_1', 'bench_worker_%d')`, i))
	}
	for _, q := range setup {
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

	var lastTx int64
	if err := conn.QueryRow(ctx, `SELECT ($1::pg_lsn - '0/0'::pg_lsn)::bigint`, lastTxStart).Scan(&lastTx); err != nil {
		return err
	}
	m := metrics.New(prometheus.NewRegistry(), "bench")
	var refs, workers []result
	var buf *buffer.Buffer
	for i := 1; i <= rounds; i++ {
		ref, err := reference(ctx, src, fmt.Sprintf("bench_ref_%d", i), endLSN)
		if err != nil {
			return err
		}
		refs = append(refs, ref)
		b, err := buffer.Open(ctx, bufURL, fmt.Sprintf("bench_%d", i), processors+appenders+2)
		if err != nil {
			return err
		}
		defer b.Close()
		if buf == nil {
			buf = b
		}
		reader, err := source.NewReader(source.Config{
			SourceURL: src, Slot: fmt.Sprintf("bench_worker_%d", i), Publication: "bench_pub", BatchSize: batchSize,
			FlushInterval: 200 * time.Millisecond, StatusInterval: time.Second, RetryInterval: time.Second, Appenders: appenders,
			Skip: func(schema, _ string) bool { return schema == "philotes" }, Logger: log, Metrics: m,
		}, b)
		if err != nil {
			return err
		}
		r, err := measure("worker slot -> buffer", func(ctx context.Context) error {
			rctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- reader.Run(rctx) }()
			defer func() { stop(); <-done }()
			for {
				p, err := b.Progress(ctx)
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
		workers = append(workers, r)
		fmt.Printf("round %d: reference %.0f rows/s, slot -> buffer %.0f rows/s, ratio %.2fx\n",
			i, float64(rows)/ref.seconds, float64(rows)/r.seconds, ref.seconds/r.seconds)
	}
	ref := median(refs)
	results := []result{ref, median(workers)}

	if !skipSink {
		dir, err := os.MkdirTemp("", "philotes-bench-warehouse-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		sink, err := iceberg.New(ctx, iceberg.Config{Warehouse: "file://" + dir, CatalogName: "bench", Namespace: "bench",
			BufferURL: bufURL, Logger: log})
		if err != nil {
			return err
		}
		defer sink.Close()
		w, err := worker.New(worker.Config{Processors: processors, BatchSize: batchSize, StatsInterval: time.Second,
			IdlePollInterval: 50 * time.Millisecond, ShutdownTimeout: time.Minute, Logger: log, Decoder: source.NewDecoder(buf),
			Committer: worker.CommitterConfig{Interval: 10 * time.Second, MaxPendingBytes: 128 << 20,
				PollInterval: 50 * time.Millisecond, RetryInterval: time.Second, CleanInterval: 30 * time.Second,
				MaxFilesPerCommit: 1000, MaxCommitAttempts: 10}}, buf, sink, nil, buf, sink, m)
		if err != nil {
			return err
		}
		r, err := measure(fmt.Sprintf("worker buffer -> Iceberg (%d processors)", processors), w.Drain)
		if err != nil {
			return err
		}
		results = append(results, r)
	}

	fmt.Printf("\nmedians of %d rounds (the Iceberg phase runs once, on round 1's buffer)\n", rounds)
	fmt.Printf("%-42s %10s %12s %8s  %s\n", "phase", "seconds", "rows/s", "ratio", "cpu (user+sys)")
	for _, res := range results {
		rate := float64(rows) / res.seconds
		fmt.Printf("%-42s %10.2f %12.0f %7.2fx  %s\n", res.name, res.seconds, rate, ref.seconds/res.seconds, res.cpu)
	}
	fmt.Println("\nratio = reference time / phase time (1.00x = as fast as pg_recvlogical on the same slot workload)")
	if skipBackfill {
		return nil
	}
	fmt.Println()
	return backfillPhase(ctx, srv, src, rows, rounds)
}

// median returns the result with the median time.
func median(rs []result) result {
	sorted := append([]result(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].seconds < sorted[j].seconds })
	return sorted[len(sorted)/2]
}

// reference drains a reference slot with pg_recvlogical.
func reference(ctx context.Context, src, slot, endLSN string) (result, error) {
	bin, err := pgtest.BinDir()
	if err != nil {
		return result{}, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pg_recvlogical"), "-d", src, "--slot", slot, "--start",
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
