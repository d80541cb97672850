// Command soak runs the real worker binary for a long time under a steady trickle of small transactions and
// shows the trends that decide whether it can run for a month: worker memory, Iceberg snapshots, metadata and
// data files per table, commit duration and freshness. Then it compares a burst into an old table against the
// same burst into a fresh one, and one writer process against two. Run it with bench/soak.sh or `make soak`.
//
// Everything runs on loopback: a throwaway PostgreSQL (test/pgtest) with a source and a buffer database, a
// file:// warehouse in a temporary directory, and the worker processes, all stopped at the end (also on
// Ctrl-C or an error). The samples go to stdout as a table and to bench/out/soak-<time>.csv; the checks print
// PASS/FAIL and any FAIL makes the exit status 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/philotes/philotes-worker/bench/internal/harness"
	"github.com/philotes/philotes-worker/test/lakecheck"
	"github.com/philotes/philotes-worker/test/pgtest"
	"github.com/philotes/philotes-worker/test/s3test"
)

type config struct {
	duration     time.Duration
	sample       time.Duration
	tables       int
	tps          int
	burst        int
	scaleBurst   int
	burstTimeout time.Duration
	workerEnv    []string
	workerBin    string
	outDir       string
	keep         bool
	s3           bool
}

func main() {
	var cfg config
	var workerEnv string
	flag.DurationVar(&cfg.duration, "duration", 30*time.Minute, "length of the soak phase")
	flag.DurationVar(&cfg.sample, "sample", 30*time.Second, "interval between samples")
	flag.IntVar(&cfg.tables, "tables", 3, "source tables the trickle writes to")
	flag.IntVar(&cfg.tps, "tps", 20, "small transactions per second (1-5 rows each; mostly inserts, some updates and deletes)")
	flag.IntVar(&cfg.burst, "burst", 20000, "rows of the one-transaction burst into an old and a fresh table")
	flag.IntVar(&cfg.scaleBurst, "scale-burst", 200000, "rows of each burst of the writer-scaling phase (1 vs 2 writer processes)")
	flag.DurationVar(&cfg.burstTimeout, "burst-timeout", 30*time.Minute, "longest wait for one burst to be buffered, drained or visible")
	// The soak must outlast the snapshot retention to show that snapshots stop growing, so it shortens the
	// retention (default 1h) and the maintenance interval (default 5m) rather than run for hours.
	flag.StringVar(&workerEnv, "worker-env", "PHILOTES_ICEBERG_SNAPSHOT_RETENTION=10m,PHILOTES_ICEBERG_MAINTENANCE_INTERVAL=1m",
		"extra environment for every worker process: KEY=VALUE,KEY=VALUE")
	flag.StringVar(&cfg.workerBin, "worker-bin", "", "prebuilt philotes-worker binary (default: go build ./cmd/philotes-worker)")
	flag.StringVar(&cfg.outDir, "out", "", "directory of the CSV (default: bench/out in the module root)")
	flag.BoolVar(&cfg.s3, "s3", false, "put the warehouse on a local S3 server (make s3-server builds it) instead of a file:// folder")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the data directory (warehouse, worker logs, binary); PostgreSQL's own directory is always removed")
	flag.Parse()
	for _, kv := range strings.Split(workerEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if !strings.Contains(kv, "=") {
			fmt.Fprintf(os.Stderr, "soak: -worker-env: %q is not KEY=VALUE\n", kv)
			os.Exit(2)
		}
		cfg.workerEnv = append(cfg.workerEnv, kv)
	}
	if cfg.duration <= 0 || cfg.sample <= 0 || cfg.tables < 1 || cfg.tps < 1 || cfg.burst < 1 || cfg.scaleBurst < 1 {
		fmt.Fprintln(os.Stderr, "soak: -duration, -sample, -tables, -tps, -burst and -scale-burst must be positive")
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	failed, err := run(ctx, cfg)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil && interrupted {
		slog.Error("soak interrupted; its worker and PostgreSQL processes are stopped", "err", err)
		os.Exit(130)
	}
	if err != nil {
		slog.Error("soak stopped", "err", err)
		os.Exit(1)
	}
	if failed > 0 {
		fmt.Printf("\n%d check(s) failed\n", failed)
		os.Exit(1)
	}
}

// runner holds what the phases share.
type runner struct {
	cfg       config
	dir       string
	bin       string
	srcURL    string
	bufURL    string
	warehouse string
	s3env     []string          // the worker's S3 settings, with -s3
	s3props   map[string]string // the lake's file IO properties, with -s3
	lake      *harness.Lake
	ledger    *harness.Ledger
	depth     *depthProbe
	procs     []*harness.Worker // every worker started, stopped at the end
}

// start starts a worker process with the soak's environment.
func (r *runner) start(name string, args ...string) (*harness.Worker, error) {
	env := []string{
		"PHILOTES_SOURCE_URL=" + r.srcURL,
		"PHILOTES_BUFFER_URL=" + r.bufURL,
		"PHILOTES_SLOT=soak",
		"PHILOTES_PUBLICATION=soak_pub",
		"PHILOTES_ICEBERG_WAREHOUSE=" + r.warehouse,
		"PHILOTES_LOG_FORMAT=text",
	}
	env = append(env, r.s3env...)
	p, err := harness.StartWorker(r.bin, r.dir, name, append(env, r.cfg.workerEnv...), args...)
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, p)
	return p, nil
}

func run(ctx context.Context, cfg config) (failed int, err error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return 0, err
	}
	if cfg.outDir == "" {
		cfg.outDir = filepath.Join(root, "bench", "out")
	}
	dir, err := os.MkdirTemp("", "philotes-soak-")
	if err != nil {
		return 0, err
	}
	if cfg.keep {
		defer fmt.Printf("kept %s (warehouse, worker logs)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	r := &runner{cfg: cfg, dir: dir, bin: cfg.workerBin, warehouse: "file://" + filepath.Join(dir, "warehouse"), ledger: harness.NewLedger()}
	if r.bin == "" {
		r.bin = filepath.Join(dir, "philotes-worker")
		fmt.Println("building the worker...")
		if err := harness.BuildWorker(ctx, root, r.bin); err != nil {
			return 0, fmt.Errorf("%w (use -worker-bin for a prebuilt one)", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "warehouse"), 0o755); err != nil {
		return 0, err
	}

	if cfg.s3 {
		s3srv, err := s3test.Start(ctx)
		if err != nil {
			return 0, err
		}
		defer s3srv.Stop()
		if err := s3srv.CreateBucket(ctx, "soak"); err != nil {
			return 0, err
		}
		r.warehouse, r.s3env, r.s3props = "s3://soak/warehouse", s3srv.Env(), s3srv.Properties()
	}
	fmt.Println("soak: warehouse", r.warehouse)

	srv, err := pgtest.Start(ctx, pgtest.Options{Durable: true})
	if err != nil {
		return 0, err
	}
	defer srv.Stop()
	// Runs before srv.Stop: the workers stop while their database is still there.
	defer func() {
		for _, p := range r.procs {
			if serr := p.Stop(time.Minute); serr != nil {
				slog.Warn("stopping worker", "worker", p.Name, "err", serr)
			}
		}
		if r.lake != nil {
			r.lake.Close()
		}
	}()
	if r.srcURL, err = srv.CreateDatabase(ctx, "soak_src"); err != nil {
		return 0, err
	}
	if r.bufURL, err = srv.CreateDatabase(ctx, "soak_buf"); err != nil {
		return 0, err
	}
	var tables []string
	for i := range cfg.tables {
		tables = append(tables, fmt.Sprintf("soak_%d", i+1))
	}
	if err := harness.WithConn(ctx, r.srcURL, func(conn *pgx.Conn) error {
		for _, t := range tables {
			if err := harness.CreateTable(ctx, conn, t); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}

	checks, err := r.soak(ctx, tables)
	if err != nil {
		return 0, err
	}
	more, err := r.bursts(ctx, tables)
	if err != nil {
		return 0, err
	}
	checks = append(checks, more...)
	fmt.Println("\nchecks")
	return printChecks(os.Stdout, checks), nil
}

// soak is phase 1-3: one worker under the trickle, sampled; returns the trend checks.
func (r *runner) soak(ctx context.Context, tables []string) ([]check, error) {
	cfg := r.cfg
	fmt.Printf("soak: worker environment %s\n", strings.Join(r.cfg.workerEnv, " "))
	fmt.Printf("soak: %v, %d tables, %d tx/s of 1-5 rows, sample every %v; worker %s\n",
		cfg.duration, cfg.tables, cfg.tps, cfg.sample, r.bin)
	w, err := r.start("soak", "run")
	if err != nil {
		return nil, err
	}
	if err := w.WaitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	// The worker created the SQL catalog's tables when it started; open the lake only now, so the two do not
	// race to create them.
	if r.lake, err = harness.OpenLake(r.bufURL, r.warehouse, r.s3props); err != nil {
		return nil, err
	}
	r.depth = &depthProbe{bufURL: r.bufURL, fallback: w}

	csvPath := filepath.Join(cfg.outDir, "soak-"+time.Now().Format("20060102-150405")+".csv")
	out, err := newCSV(csvPath, tables)
	if err != nil {
		return nil, err
	}
	defer out.close()

	start := time.Now()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan error, 1)
	gen := &harness.LoadGen{SrcURL: r.srcURL, Tables: tables, TPS: cfg.tps, Ledger: r.ledger}
	go func() { loadDone <- gen.Run(loadCtx) }()
	lag := &lagWatch{}
	go lag.run(loadCtx, w)

	s := &sampler{worker: w, lake: r.lake, tables: tables, ledger: r.ledger, lag: lag}
	var samples []sample
	printHeader(os.Stdout)
	for k := 1; ; k++ {
		at := min(time.Duration(k)*cfg.sample, cfg.duration)
		timer := time.NewTimer(time.Until(start.Add(at)))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case err := <-loadDone:
			timer.Stop()
			return nil, fmt.Errorf("the load generator stopped: %w", err)
		case <-timer.C:
		}
		smp, err := s.take(ctx, at)
		if err != nil {
			return nil, fmt.Errorf("sample at %v: %w", at, err)
		}
		samples = append(samples, smp)
		printRow(os.Stdout, smp)
		if err := out.write(smp); err != nil {
			return nil, err
		}
		if at >= cfg.duration {
			break
		}
	}
	stopLoad()
	if err := <-loadDone; err != nil {
		return nil, err
	}
	ins, upd, del, txs := r.ledger.Totals()
	fmt.Printf("load: %d transactions (%.1f/s), %d inserts, %d updates, %d deletes; samples in %s\n",
		txs, float64(txs)/time.Since(start).Seconds(), ins, upd, del, csvPath)
	return summarize(os.Stdout, samples, tables, s.commitName, steadyAfter(r.cfg.workerEnv)), nil
}

// bursts is phase 4: a burst into an old table against a fresh one, then one writer process against two; and
// the final exactly-once check of everything inserted.
func (r *runner) bursts(ctx context.Context, tables []string) ([]check, error) {
	cfg := r.cfg
	old, fresh := tables[0], "soak_fresh"
	soakWorker := r.procs[0]
	fmt.Printf("\nbursts: %d rows into old table %s and into fresh table %s; then %d rows into %s with 1 and with 2 writer processes\n",
		cfg.burst, old, fresh, cfg.scaleBurst, old)
	// The fresh table gets one row through the soak worker first, so that both lake tables exist and the
	// burst times count writing, not table creation.
	if err := harness.WithConn(ctx, r.srcURL, func(conn *pgx.Conn) error { return harness.CreateTable(ctx, conn, fresh) }); err != nil {
		return nil, err
	}
	if _, err := burst(ctx, r.srcURL, fresh, 1, r.ledger); err != nil {
		return nil, err
	}
	err := harness.Poll(ctx, 5*time.Minute, 250*time.Millisecond, func() (bool, error) {
		n, err := r.lake.Records(ctx, fresh)
		if err != nil || n < 1 {
			return false, err
		}
		d, err := r.depth.depth(ctx)
		return d == 0, err
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for the soak worker to drain and create %s: %w", fresh, err)
	}
	if err := soakWorker.Stop(time.Minute); err != nil {
		return nil, fmt.Errorf("stopping the soak worker: %w", err)
	}
	reader, err := r.start("reader", "run", "--processors", "0")
	if err != nil {
		return nil, err
	}
	r.depth.fallback = reader
	err = harness.Poll(ctx, 2*time.Minute, 100*time.Millisecond, func() (bool, error) {
		if reader.Exited() {
			return false, fmt.Errorf("reader exited: %v; log tail:\n%s", reader.Err(), reader.LogTail())
		}
		s, err := reader.Scrape(ctx)
		if err != nil {
			return false, nil
		}
		v, _ := s.Value("philotes_cdc_reader_active", nil)
		return v == 1, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for the reader-only worker to take the reader role: %w", err)
	}

	fmt.Println("(a) table age: reader-only worker buffers the burst, then one drain worker (1 processor) writes and commits it")
	oldRes, err := r.measureBurst(ctx, old, cfg.burst, 1)
	if err != nil {
		return nil, err
	}
	printBurst(oldRes)
	freshRes, err := r.measureBurst(ctx, fresh, cfg.burst, 1)
	if err != nil {
		return nil, err
	}
	printBurst(freshRes)
	fmt.Printf("  old/fresh: rows visible %.2fx, buffer drained %.2fx (1.00x = the old table costs nothing extra)\n",
		oldRes.visible.Seconds()/freshRes.visible.Seconds(), oldRes.drained.Seconds()/freshRes.drained.Seconds())

	fmt.Printf("(b) writer scaling on %s: 1 drain process vs 2 (1 processor each)\n", old)
	one, err := r.measureBurst(ctx, old, cfg.scaleBurst, 1)
	if err != nil {
		return nil, err
	}
	printBurst(one)
	two, err := r.measureBurst(ctx, old, cfg.scaleBurst, 2)
	if err != nil {
		return nil, err
	}
	printBurst(two)
	fmt.Printf("  2 writers / 1 writer: %.2fx rows/s (2.00x = perfect scaling)\n", two.rowsPerSecond()/one.rowsPerSecond())
	if err := reader.Stop(time.Minute); err != nil {
		return nil, fmt.Errorf("stopping the reader: %w", err)
	}

	fmt.Println("\nreading every table back from the lake...")
	c, err := r.exactlyOnce(ctx, append(append([]string(nil), tables...), fresh))
	if err != nil {
		return nil, err
	}
	return []check{c}, nil
}

// exactlyOnce compares the insert rows in the lake with the ids the soak inserted.
func (r *runner) exactlyOnce(ctx context.Context, tables []string) (check, error) {
	var ids int
	var sum lakecheck.Tally
	for _, t := range tables {
		counts, err := lakecheck.Arrivals(ctx, r.lake.Catalog(), harness.Namespace, t)
		if err != nil {
			return check{}, err
		}
		want := r.ledger.IDs(t)
		ids += len(want)
		tally := lakecheck.Compare(counts, want)
		sum.Missing += tally.Missing
		sum.Duplicated += tally.Duplicated
		sum.Unexpected += tally.Unexpected
	}
	return check{
		name: "every inserted id in the lake exactly once",
		pass: sum.OK(),
		detail: fmt.Sprintf("%d ids in %d tables: %d missing, %d more than once, %d not inserted by the soak",
			ids, len(tables), sum.Missing, sum.Duplicated, sum.Unexpected),
	}, nil
}

// steadyAfter is when the worker's tables reach their steady state: the snapshot retention plus one maintenance
// interval, read from the worker environment (or the worker's defaults, 1h and 5m).
func steadyAfter(env []string) time.Duration {
	retention, interval := time.Hour, 5*time.Minute
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		d, err := time.ParseDuration(v)
		if err != nil {
			continue
		}
		switch k {
		case "PHILOTES_ICEBERG_SNAPSHOT_RETENTION":
			retention = d
		case "PHILOTES_ICEBERG_MAINTENANCE_INTERVAL":
			interval = d
		}
	}
	return retention + interval
}
