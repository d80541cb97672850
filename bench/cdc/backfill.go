package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/philotes/philotes-worker/test/pgtest"
)

// The backfill phase: the same 1,000,000 existing rows read by the worker's backfill (chunks read in snapshots
// on the source, placed at watermarks, appended to the buffer) with one and with two worker processes, against
// COPY (SELECT ...) TO STDOUT of the table to /dev/null in the same run: the most a single reader of the table
// can get out of the server.

// copyReference reads the whole table with COPY TO STDOUT and throws it away.
func copyReference(ctx context.Context, src string) (result, error) {
	conn, err := pgx.Connect(ctx, src)
	if err != nil {
		return result{}, err
	}
	defer conn.Close(ctx)
	start := time.Now()
	if _, err := conn.PgConn().CopyTo(ctx, io.Discard, `COPY (SELECT * FROM orders) TO STDOUT`); err != nil {
		return result{}, fmt.Errorf("copy reference: %w", err)
	}
	return result{name: "reference COPY (SELECT ...) TO STDOUT", seconds: time.Since(start).Seconds(), cpu: "-"}, nil
}

// backfillRun starts procs worker processes (reader role and backfill workers, no processors) on a fresh
// buffer database and slot, and times the backfill of the table until every chunk is in the buffer.
func backfillRun(ctx context.Context, srv *pgtest.Server, binary, src string, procs, round int) (result, error) {
	name := fmt.Sprintf("bench_backfill_%d_%d", procs, round)
	buf, err := srv.CreateDatabase(ctx, name)
	if err != nil {
		return result{}, err
	}
	dir, err := os.MkdirTemp("", "philotes-bench-backfill-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	var cmds []*exec.Cmd
	stopAll := func() {
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range cmds {
			_ = c.Wait()
		}
		cmds = nil
	}
	defer stopAll()
	start := time.Now()
	for i := range procs {
		c := exec.Command(binary, "run")
		c.Env = append(os.Environ(),
			"PHILOTES_SOURCE_URL="+src, "PHILOTES_BUFFER_URL="+buf, "PHILOTES_SLOT="+name, "PHILOTES_PUBLICATION=bench_pub",
			"PHILOTES_PROCESSORS=0", "PHILOTES_HTTP_ADDR=127.0.0.1:0", "PHILOTES_LOG_LEVEL=warn", "PHILOTES_LOG_FORMAT=text",
			"PHILOTES_ICEBERG_WAREHOUSE=file://"+dir)
		logFile, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker-%d.log", i)))
		if err != nil {
			return result{}, err
		}
		defer logFile.Close()
		c.Stdout, c.Stderr = logFile, logFile
		if err := c.Start(); err != nil {
			return result{}, err
		}
		cmds = append(cmds, c)
	}
	conn, err := connectWhenReady(ctx, buf)
	if err != nil {
		return result{}, err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var done bool
		err := conn.QueryRow(ctx, `SELECT count(*) = 1 FROM philotes.backfill_tables WHERE done_at IS NOT NULL`).Scan(&done)
		if err == nil && done {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(dir, "worker-0.log"))
			return result{}, fmt.Errorf("backfill with %d processes did not finish in 10 minutes: %v\n%s", procs, err, logs)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	secs := time.Since(start).Seconds()
	stopAll()
	drop, err := pgx.Connect(ctx, src)
	if err == nil {
		_, err = drop.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name)
		drop.Close(ctx)
	}
	if err != nil {
		return result{}, fmt.Errorf("drop slot %s: %w", name, err)
	}
	return result{name: fmt.Sprintf("worker backfill -> buffer (%d process%s)", procs, map[bool]string{true: "", false: "es"}[procs == 1]),
		seconds: secs, cpu: "-"}, nil
}

// connectWhenReady connects to the buffer database once the worker has created its schema.
func connectWhenReady(ctx context.Context, url string) (*pgx.Conn, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			var ok bool
			if err = conn.QueryRow(ctx, `SELECT to_regclass('philotes.backfill_tables') IS NOT NULL`).Scan(&ok); err == nil && ok {
				return conn, nil
			}
			conn.Close(ctx)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	return nil, errors.New("the worker did not create the buffer schema within a minute")
}

// buildWorker builds the worker binary the backfill phase runs.
func buildWorker(dir string) (string, error) {
	bin := filepath.Join(dir, "philotes-worker")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/philotes-worker")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the worker: %w", err)
	}
	return bin, nil
}

// backfillPhase measures the reference and the backfill with one and two processes in interleaved rounds and
// prints their medians.
func backfillPhase(ctx context.Context, srv *pgtest.Server, src string, rows, rounds int) error {
	dir, err := os.MkdirTemp("", "philotes-bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := buildWorker(dir)
	if err != nil {
		return err
	}
	var refs, ones, twos []result
	for i := 1; i <= rounds; i++ {
		ref, err := copyReference(ctx, src)
		if err != nil {
			return err
		}
		one, err := backfillRun(ctx, srv, bin, src, 1, i)
		if err != nil {
			return err
		}
		two, err := backfillRun(ctx, srv, bin, src, 2, i)
		if err != nil {
			return err
		}
		refs, ones, twos = append(refs, ref), append(ones, one), append(twos, two)
		fmt.Printf("round %d: COPY %.0f rows/s, backfill 1 process %.0f rows/s (%.2fx), 2 processes %.0f rows/s (%.2fx)\n", i,
			float64(rows)/ref.seconds, float64(rows)/one.seconds, ref.seconds/one.seconds,
			float64(rows)/two.seconds, ref.seconds/two.seconds)
	}
	ref := median(refs)
	fmt.Printf("\nbackfill of the same %d existing rows: medians of %d rounds\n", rows, rounds)
	fmt.Printf("%-42s %10s %12s %8s\n", "phase", "seconds", "rows/s", "ratio")
	for _, res := range []result{ref, median(ones), median(twos)} {
		fmt.Printf("%-42s %10.2f %12.0f %7.2fx\n", res.name, res.seconds, float64(rows)/res.seconds, ref.seconds/res.seconds)
	}
	fmt.Println("\nratio = COPY time / backfill time; the backfill runs PHILOTES_BACKFILL_WORKERS=2 chunk readers per process,")
	fmt.Println("10,000-row chunks, and stops timing once every chunk is in the buffer (buffer -> Iceberg is measured above)")
	return nil
}
