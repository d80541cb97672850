// Command quickstart shows the worker at work in about a minute, on loopback only: a throwaway PostgreSQL
// (test/pgtest) with a source and a buffer database, the worker built from this module and run as a real
// process with a file:// warehouse in a temporary directory, and a steady insert/update/delete load on three
// source tables. A status line, refreshed every second, shows the rows written at the source, the worker's
// buffer depth and lag (from its /metrics) and the rows in the lake. After the run it stops the load, waits
// until the lake has caught up, reads every table back from Iceberg, prints a sample and checks that every
// source row is in the lake exactly once, replaying the changelog by (_commit_lsn, _seq). Everything it
// started is stopped and its temporary directories removed at the end, also on Ctrl-C. Exit status 1: the
// check failed or something broke; 130: interrupted. Run it with `make run` (ARGS="-duration 2m").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/philotes/philotes-worker/bench/internal/harness"
	"github.com/philotes/philotes-worker/test/pgtest"
)

type config struct {
	duration       time.Duration
	tables         int
	tps            int
	commitInterval time.Duration
	catchUp        time.Duration
	workerBin      string
	keep           bool
}

// tableNames are the source tables, in the order -tables takes them.
var tableNames = []string{"orders", "customers", "payments", "shipments", "invoices"}

// errCheckFailed is the exit status 1 of a run whose lake does not match the source.
var errCheckFailed = errors.New("the lake does not match the source")

// defaults are the flags' defaults.
var defaults = config{duration: time.Minute, tables: 3, tps: 50, commitInterval: 2 * time.Second, catchUp: 2 * time.Minute}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", defaults.duration, "how long the load runs")
	flag.IntVar(&cfg.tables, "tables", defaults.tables, fmt.Sprintf("source tables under load (1-%d)", len(tableNames)))
	flag.IntVar(&cfg.tps, "tps", defaults.tps, "transactions per second of 1-5 rows each (about 80% inserts, 15% updates, 5% deletes)")
	flag.DurationVar(&cfg.commitInterval, "commit-interval", defaults.commitInterval, "the worker's PHILOTES_ICEBERG_COMMIT_INTERVAL (its own default is 10s)")
	flag.DurationVar(&cfg.catchUp, "catch-up-timeout", defaults.catchUp, "longest wait, after the load stops, for the lake to hold every change")
	flag.StringVar(&cfg.workerBin, "worker-bin", "", "prebuilt philotes-worker binary (default: go build ./cmd/philotes-worker)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (warehouse files, worker log); PostgreSQL's is always removed")
	flag.Parse()
	if cfg.duration <= 0 || cfg.tps < 1 || cfg.tables < 1 || cfg.tables > len(tableNames) || cfg.commitInterval <= 0 || cfg.catchUp <= 0 {
		fmt.Fprintf(os.Stderr, "quickstart: -duration, -tps, -commit-interval and -catch-up-timeout must be positive, -tables 1 to %d\n", len(tableNames))
		os.Exit(2)
	}

	// SIGHUP (the terminal went away) and SIGPIPE (`make run | head` stopped reading) clean up like Ctrl-C.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	err := run(ctx, cfg, os.Stdout)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case err != nil && interrupted:
		fmt.Fprintln(os.Stderr, "quickstart: interrupted; the worker and PostgreSQL are stopped and the temporary files removed")
		os.Exit(130)
	case errors.Is(err, errCheckFailed):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run is the whole quick start, writing to out; it returns errCheckFailed when the lake does not match.
func run(ctx context.Context, cfg config, out io.Writer) (err error) {
	began := time.Now()
	tables := tableNames[:cfg.tables]
	dir, err := os.MkdirTemp("", "philotes-quickstart-")
	if err != nil {
		return err
	}
	if cfg.keep {
		defer fmt.Fprintf(out, "kept %s (warehouse files, worker log)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	warehouse := filepath.Join(dir, "warehouse")
	if err := os.MkdirAll(warehouse, 0o755); err != nil {
		return err
	}

	// PostgreSQL starts while the worker builds.
	type started struct {
		srv *pgtest.Server
		err error
	}
	pg := make(chan started, 1)
	go func() {
		srv, err := pgtest.Start(ctx, pgtest.Options{})
		pg <- started{srv, err}
	}()
	bin := cfg.workerBin
	var buildErr error
	if bin == "" {
		bin = filepath.Join(dir, "philotes-worker")
		fmt.Fprintln(out, "building the worker (go build ./cmd/philotes-worker)...")
		root, err := harness.ModuleRoot()
		if err == nil {
			err = harness.BuildWorker(ctx, root, bin)
		}
		buildErr = err
	}
	s := <-pg
	if s.err != nil {
		return errors.Join(buildErr, s.err)
	}
	srv := s.srv
	stopPG := sync.OnceFunc(srv.Stop)
	defer stopPG()
	if buildErr != nil {
		return buildErr
	}

	srcURL, err := srv.CreateDatabase(ctx, "quickstart")
	if err != nil {
		return err
	}
	bufURL, err := srv.CreateDatabase(ctx, "quickstart_buffer")
	if err != nil {
		return err
	}
	if err := harness.WithConn(ctx, srcURL, func(conn *pgx.Conn) error {
		for _, t := range tables {
			if err := harness.CreateTable(ctx, conn, t); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "PostgreSQL %s on 127.0.0.1:%d: source database quickstart (tables %s), buffer database quickstart_buffer\n",
		serverVersion(ctx, srcURL), srv.Port, strings.Join(tables, ", "))

	w, err := harness.StartWorker(bin, dir, "philotes-worker", []string{
		"PHILOTES_SOURCE_URL=" + srcURL,
		"PHILOTES_BUFFER_URL=" + bufURL,
		"PHILOTES_ICEBERG_WAREHOUSE=file://" + warehouse,
		"PHILOTES_ICEBERG_COMMIT_INTERVAL=" + cfg.commitInterval.String(),
		"PHILOTES_STATS_INTERVAL=1s",
		"PHILOTES_LOG_FORMAT=text",
	}, "run")
	if err != nil {
		return err
	}
	// Runs before srv.Stop: the worker stops while its databases are still there.
	defer func() {
		if serr := w.Stop(time.Minute); serr != nil && err == nil {
			err = serr
		}
	}()
	if err := w.WaitReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	if err := waitStreaming(ctx, w, bufURL, len(tables)); err != nil {
		return err
	}
	fmt.Fprintf(out, "worker (pid %d) streaming after %.1fs: metrics on http://%s/metrics, warehouse file://%s, commits every %v\n",
		w.Pid(), time.Since(w.Started).Seconds(), w.Addr, warehouse, cfg.commitInterval)
	lake, err := harness.OpenLake(bufURL, "file://"+warehouse, nil)
	if err != nil {
		return err
	}
	defer lake.Close()

	ledger := harness.NewLedger()
	st := &status{out: out, tty: isTerminal(out), worker: w, lake: lake, ledger: ledger, tables: tables, start: time.Now()}
	fmt.Fprintf(out, "load for %v: %d transactions/s of 1-5 rows (about 80%% inserts, 15%% updates, 5%% deletes)\n",
		cfg.duration, cfg.tps)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan error, 1)
	gen := &harness.LoadGen{SrcURL: srcURL, Tables: tables, TPS: cfg.tps, Ledger: ledger}
	go func() { loadDone <- gen.Run(loadCtx) }()
	statusCtx, stopStatus := context.WithCancel(ctx)
	statusDone := make(chan struct{})
	go func() { defer close(statusDone); st.run(statusCtx) }()
	endStatus := func() {
		stopStatus()
		<-statusDone
	}
	defer endStatus()

	timer := time.NewTimer(cfg.duration)
	select {
	case <-ctx.Done():
		timer.Stop()
		return ctx.Err()
	case err := <-loadDone:
		timer.Stop()
		return fmt.Errorf("the load stopped: %w", err)
	case <-w.Done():
		timer.Stop()
		if err := w.ExitErr(); err != nil {
			return err
		}
		return errors.New("the worker exited (status 0) during the load")
	case <-timer.C:
	}
	stopLoad()
	if err := <-loadDone; err != nil {
		return err
	}
	loadEnd := time.Now()
	st.setPhase("catching up")
	err = harness.Poll(ctx, cfg.catchUp, 250*time.Millisecond, func() (bool, error) {
		if w.Exited() {
			return false, w.ExitErr()
		}
		for _, t := range tables {
			ins, upd, del := ledger.Changes(t)
			n, err := lake.Records(ctx, t)
			if err != nil || n < int64(ins+upd+del) {
				return false, err
			}
		}
		// And the worker says so too (its gauges refresh every PHILOTES_STATS_INTERVAL).
		m, err := w.Scrape(ctx)
		if err != nil {
			return false, nil
		}
		depth, _ := m.Value("philotes_buffer_depth", nil)
		lag, _ := m.Value("philotes_cdc_lag_seconds", nil)
		return depth == 0 && lag == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the lake to catch up: %w", err)
	}
	caughtUp := time.Since(loadEnd)
	st.setPhase("caught up")
	endStatus()
	ins, upd, del, txs := ledger.Totals()
	fmt.Fprintf(out, "load: %d transactions, %d rows written (%d inserts, %d updates, %d deletes); the lake caught up %.1fs after the load stopped\n",
		txs, ins+upd+del, ins, upd, del, caughtUp.Seconds())

	fmt.Fprintf(out, "\nreading the lake back (namespace %s)...\n", harness.Namespace)
	ok, err := verify(ctx, out, srcURL, lake, ledger, tables)
	if err != nil {
		return err
	}
	if err := w.Stop(time.Minute); err != nil {
		return fmt.Errorf("stopping the worker: %w", err)
	}
	stopPG()
	removed := ""
	if !cfg.keep {
		os.RemoveAll(dir)
		removed = ", removed " + dir
	}
	fmt.Fprintf(out, "stopped the worker and PostgreSQL%s; %.0fs in all\n", removed, time.Since(began).Seconds())
	if !ok {
		return errCheckFailed
	}
	return nil
}

// waitStreaming waits until the worker's reader streams from the slot and has finished the backfill of the n
// (still empty) tables, the first thing it does with tables it has not seen. A load started earlier could
// commit rows before the slot exists: those would reach the lake as backfill snapshot rows, not as inserts.
func waitStreaming(ctx context.Context, w *harness.Worker, bufURL string, n int) error {
	var failed string
	err := harness.Poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
		if w.Exited() {
			return false, fmt.Errorf("the worker exited during start-up: %w", w.ExitErr())
		}
		var total, done int
		err := harness.WithConn(ctx, bufURL, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT count(*), count(done_at), coalesce(string_agg(
  schema_name || '.' || table_name || ': ' || error, '; ') FILTER (WHERE error IS NOT NULL), '')
FROM philotes.backfill_tables`).Scan(&total, &done, &failed)
		})
		if err != nil {
			return false, nil // the worker has not created its schema yet
		}
		if failed != "" {
			return false, fmt.Errorf("the worker could not backfill: %s", failed)
		}
		return total >= n && done == total, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the worker to stream (philotes.backfill_tables done for %d tables): %w", n, err)
	}
	return nil
}

// serverVersion is the server's version number, or "?".
func serverVersion(ctx context.Context, url string) string {
	v := "?"
	_ = harness.WithConn(ctx, url, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SHOW server_version").Scan(&v)
	})
	return v
}

// isTerminal reports whether w is a terminal, where the status line rewrites itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// status prints one line about once a second: on a terminal it rewrites itself, elsewhere a line every five
// seconds.
type status struct {
	out    io.Writer
	tty    bool
	worker *harness.Worker
	lake   *harness.Lake
	ledger *harness.Ledger
	tables []string
	start  time.Time

	mu    sync.Mutex
	phase string
}

func (s *status) setPhase(p string) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// run prints the status until ctx ends, and once more then.
func (s *status) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			line := s.line(context.Background())
			if s.tty {
				fmt.Fprintf(s.out, "\r\033[K%s\n", line)
			} else {
				fmt.Fprintln(s.out, line)
			}
			return
		case <-t.C:
		}
		line := s.line(ctx)
		if s.tty {
			fmt.Fprintf(s.out, "\r\033[K%s", line)
		} else if n%5 == 0 {
			fmt.Fprintln(s.out, line)
		}
	}
}

func (s *status) line(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s.mu.Lock()
	phase := s.phase
	s.mu.Unlock()
	if phase == "" {
		phase = "load"
	}
	ins, upd, del, _ := s.ledger.Totals()
	depth, lag := "-", "-"
	if m, err := s.worker.Scrape(ctx); err == nil {
		if v, ok := m.Value("philotes_buffer_depth", nil); ok {
			depth = fmt.Sprintf("%.0f", v)
		}
		if v, ok := m.Value("philotes_cdc_lag_seconds", nil); ok {
			lag = fmt.Sprintf("%.1fs", v)
		}
	}
	var inLake int64
	lake := ""
	for _, t := range s.tables {
		n, err := s.lake.Records(ctx, t)
		if err != nil {
			lake = "-"
			break
		}
		inLake += n
	}
	if lake == "" {
		lake = fmt.Sprint(inLake)
	}
	return fmt.Sprintf("%4.0fs %-11s source: %d rows written (%d ins, %d upd, %d del) | worker: buffer %s, lag %s | lake: %s rows",
		time.Since(s.start).Seconds(), phase, ins+upd+del, ins, upd, del, depth, lag, lake)
}
