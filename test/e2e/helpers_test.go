//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/source"
	"github.com/philotes/philotes-worker/test/e2e/chart"
	"github.com/philotes/philotes-worker/test/e2e/netns"
	"github.com/philotes/philotes-worker/test/e2e/node"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// testLogger writes slog records to the test log while the test runs, and
// to stderr after it (goroutines may still log while they wind down).
func testLogger(t *testing.T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return os.Stderr.Write(p)
	}
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// TestMain prints the reaction times the tests measured and removes the
// binaries built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	printReactions(os.Stdout)
	for _, p := range []string{fakeWorkerPath, workerPath} {
		if p != "" {
			os.RemoveAll(filepath.Dir(p))
		}
	}
	os.Exit(code)
}

// reaction is one measured reaction time.
type reaction struct {
	test, what string
	took       time.Duration
}

var (
	reactionsMu sync.Mutex
	reactions   []reaction
)

// recordReaction keeps a reaction time for the summary at the end of the run.
func recordReaction(t *testing.T, what string, took time.Duration) {
	t.Logf("reaction: %s %s", what, took.Round(100*time.Millisecond))
	reactionsMu.Lock()
	defer reactionsMu.Unlock()
	reactions = append(reactions, reaction{test: t.Name(), what: what, took: took})
}

func printReactions(w io.Writer) {
	reactionsMu.Lock()
	defer reactionsMu.Unlock()
	if len(reactions) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REACTION TIMES\ttest\tseconds")
	for _, r := range reactions {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\n", r.what, r.test, r.took.Seconds())
	}
	tw.Flush()
}

var (
	fakeWorkerOnce sync.Once
	fakeWorkerPath string
	fakeWorkerErr  error
)

// fakeWorker builds cmd/fakeworker once per test binary.
func fakeWorker(t *testing.T) string {
	t.Helper()
	fakeWorkerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "philotes-e2e-bin-")
		if err != nil {
			fakeWorkerErr = err
			return
		}
		fakeWorkerPath = filepath.Join(dir, "fakeworker")
		out, err := exec.Command("go", "build", "-o", fakeWorkerPath, "./cmd/fakeworker").CombinedOutput()
		if err != nil {
			fakeWorkerErr = fmt.Errorf("build fakeworker: %w: %s", err, out)
		}
	})
	if fakeWorkerErr != nil {
		t.Fatal(fakeWorkerErr)
	}
	return fakeWorkerPath
}

// startStack brings the stack up for one test and tears it down after it;
// with PHILOTES_E2E_KEEP=1 the folder (logs, data) is kept for inspection.
func startStack(t *testing.T) *stack.Stack {
	t.Helper()
	return startStackWith(t, stack.Config{})
}

// startStackWith is startStack with a configuration.
func startStackWith(t *testing.T, cfg stack.Config) *stack.Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cfg.Logger = testLogger(t)
	cfg.KeepDir = os.Getenv("PHILOTES_E2E_KEEP") == "1"
	s, err := stack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(s.Stop)
	t.Logf("stack up in %s; folder %s; kubectl: %s", time.Since(start).Round(100*time.Millisecond), s.Dir, s.KubectlHint())
	return s
}

// startNode runs the local node for pods with binary until the test ends,
// then stops its pods.
func startNode(t *testing.T, s *stack.Stack, binary string) {
	t.Helper()
	runNode(t, node.Config{Kube: s.Kube, NS: s.NS, Dir: s.Dir, DefaultBinary: binary, Logger: testLogger(t),
		ShutdownGrace: 10 * time.Second})
}

// promQuery returns the single value of an instant query.
func promQuery(ctx context.Context, s *stack.Stack, q string) (float64, error) {
	return s.PromQuery(ctx, q)
}

// eventually polls check every interval until it returns nil; at the
// deadline it fails the test naming what it waited for and the last error.
func eventually(t *testing.T, timeout time.Duration, what string, check func(ctx context.Context) error) time.Duration {
	t.Helper()
	start := time.Now()
	err := netns.Poll(t.Context(), timeout, 500*time.Millisecond, what, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		return check(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("%s: after %s", what, took.Round(100*time.Millisecond))
	return took
}

// installChart installs the worker chart (chartDir) with values through Helm and uninstalls it at cleanup.
func installChart(t *testing.T, s *stack.Stack, ns, name string, values map[string]any) *chart.Release {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	rel, err := chart.Install(ctx, s, chartDir, name, ns, values, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rel.Uninstall(); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	return rel
}

// fakeDepth returns the file the stand-in worker reads its buffer depth from, and a setter; the depth starts at 0.
// It is a test's control channel, not a volume: it lives outside /tmp, which every chart pod has as its own
// emptyDir.
func fakeDepth(t *testing.T) (string, func(int)) {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "philotes-e2e-depth-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	file := filepath.Join(dir, "depth")
	set := func(v int) {
		t.Helper()
		if err := os.WriteFile(file, fmt.Appendf(nil, "%d\n", v), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("depth set to %d", v)
	}
	set(0)
	return file, set
}

// fastScaleIn is the chart's keda.advanced for the scenarios: scale in completely within 5 s, so scale-in phases
// finish inside their deadlines.
func fastScaleIn() map[string]any {
	return map[string]any{"horizontalPodAutoscalerConfig": map[string]any{"behavior": map[string]any{
		"scaleDown": map[string]any{"stabilizationWindowSeconds": 5,
			"policies": []any{map[string]any{"type": "Percent", "value": 100, "periodSeconds": 5}}},
	}}}
}

// chartPostgresTrigger is the chart's keda.postgresql for the stack's source
// database: ceil(unconfirmed WAL / 500000) replicas (a missing slot reads as
// 500000: one replica), waking above activation bytes ("" keeps the chart's
// default).
func chartPostgresTrigger(activation string) map[string]any {
	pg := map[string]any{
		"enabled":          true,
		"host":             stack.PostgresHost,
		"port":             strconv.Itoa(stack.PostgresPort),
		"database":         stack.SourceDB,
		"user":             "postgres",
		"password":         "unused-trust-auth", // the stack's PostgreSQL trusts loopback
		"sslMode":          "disable",
		"targetQueryValue": "500000",
	}
	if activation != "" {
		pg["activationTargetQueryValue"] = activation
	}
	return pg
}

// realWorkerValues are the worker chart's values for the real worker against
// the stack's databases (20 s grace, 10 s shutdown timeout, the lake's
// worker.iceberg values from chartLake, 1 s commit interval, maintenance every
// 30 s), with worker settings merged in (an "iceberg" map replaces these) and
// keda as given.
func realWorkerValues(lake map[string]any, worker, keda map[string]any) map[string]any {
	ice := map[string]any{
		// A 1 s commit interval keeps philotes_cdc_lag_seconds (which includes up to one commit interval) far
		// below the scenarios' lag thresholds of a few seconds; the chart refuses lag thresholds at or below it.
		"commitIntervalSeconds":      1,
		"maintenanceIntervalSeconds": 30,
	}
	for k, v := range lake {
		ice[k] = v
	}
	w := map[string]any{"shutdownTimeoutSeconds": 10, "iceberg": ice}
	for k, v := range worker {
		w[k] = v
	}
	return map[string]any{
		"image":                         map[string]any{"repository": "philotes-worker", "tag": "e2e"},
		"terminationGracePeriodSeconds": 20,
		"worker":                        w,
		"database": map[string]any{
			"sourceUrl": stack.PostgresURL(stack.SourceDB),
			"bufferUrl": stack.PostgresURL(stack.BufferDB),
		},
		"keda": keda,
	}
}

// createEventsTable creates public.<tbl> (id, note) in the source database.
func createEventsTable(ctx context.Context, c *pgx.Conn, tbl string) error {
	if _, err := c.Exec(ctx, `CREATE TABLE public.`+tbl+` (id bigint PRIMARY KEY, note text NOT NULL)`); err != nil {
		return fmt.Errorf("create %s: %w", tbl, err)
	}
	return nil
}

// insertRows writes ids from..to into public.<tbl> in one transaction.
func insertRows(ctx context.Context, c *pgx.Conn, tbl string, from, to int) error {
	return insertRowsInto(ctx, c, "public."+tbl, from, to)
}

// insertRowsInto writes ids from..to into the events table qualified
// (schema.table) in one statement; each row's note is eventNote(id).
func insertRowsInto(ctx context.Context, c *pgx.Conn, qualified string, from, to int) error {
	_, err := c.Exec(ctx, `INSERT INTO `+qualified+` SELECT g, 'row ' || g || ' ' || repeat('x', 100) FROM generate_series($1::bigint, $2::bigint) g`, from, to)
	if err != nil {
		return fmt.Errorf("insert %s %d..%d: %w", qualified, from, to, err)
	}
	return nil
}

// eventNote is the note insertRowsInto writes for id.
func eventNote(id int64) string { return fmt.Sprintf("row %d %s", id, strings.Repeat("x", 100)) }

// waitSlot waits until the worker has created its replication slot.
func waitSlot(t *testing.T, src *pgx.Conn, slot string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "the worker's slot created", func(ctx context.Context) error {
		var n int
		if err := src.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("no slot %s", slot)
		}
		return nil
	})
}

// slotUnconfirmed is the WAL the slot has not confirmed, in bytes (-1 when
// the slot has never confirmed anything).
func slotUnconfirmed(ctx context.Context, src *pgx.Conn, slot string) (int64, error) {
	var n int64
	err := src.QueryRow(ctx, source.RetainedWALSQL, slot, -1).Scan(&n)
	return n, err
}

// bufferDepth is the number of events of source in the buffer database.
func bufferDepth(ctx context.Context, buf *pgx.Conn, source string) (int64, error) {
	var n int64
	err := buf.QueryRow(ctx, buffer.DepthSQL, source).Scan(&n)
	return n, err
}

// connect opens a connection to one of the stack's databases for the rest of
// the test.
func connect(t *testing.T, s *stack.Stack, db string) *pgx.Conn {
	t.Helper()
	c, err := s.ConnectPostgres(t.Context(), db)
	if err != nil {
		t.Fatalf("connect to %s: %v", db, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}
