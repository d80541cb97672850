//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/source"
	"github.com/philotes/philotes-worker/test/e2e/chart"
	"github.com/philotes/philotes-worker/test/e2e/netns"
	"github.com/philotes/philotes-worker/test/e2e/node"
	"github.com/philotes/philotes-worker/test/e2e/report"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// The helpers shared by the test files. Each test makes its own fixtures (its stack, node, release, connections)
// with the setup functions below and passes them on; the only state shared between tests is the process-wide
// state here, for one run of the test binary:
var (
	// workerBin is the real worker: $PHILOTES_WORKER_BIN (scripts/e2e.sh builds it), or built for the run on
	// first use. TestMain removes what it built.
	workerBin = &goBinary{pkg: "./cmd/philotes-worker", dir: "../..", env: "PHILOTES_WORKER_BIN"}
	// fakeWorkerBin is the stand-in worker (cmd/fakeworker), built for the run on first use.
	fakeWorkerBin = &goBinary{pkg: "./cmd/fakeworker"}
	// reactions are the reaction times the tests measured; TestMain prints them at the end of the run.
	reactions reactionLog
)

// chartDir is the worker chart, relative to this package.
const chartDir = "../../charts/philotes-worker"

// TestMain prints the reaction times the tests measured and removes the
// binaries built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	reactions.print(os.Stdout)
	workerBin.remove()
	fakeWorkerBin.remove()
	os.Exit(code)
}

// goBinary is a program of this repository, built at most once per run of the test binary.
type goBinary struct {
	pkg, dir string // the package, built in folder dir ("" is this module)
	env      string // a variable that names a built binary instead ("" for none)

	once sync.Once
	path string
	err  error
}

// get returns the binary's path, building it on the first call.
func (b *goBinary) get(t *testing.T) string {
	t.Helper()
	if b.env != "" {
		if p := os.Getenv(b.env); p != "" {
			return p
		}
	}
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "philotes-e2e-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(b.pkg))
		cmd := exec.Command("go", "build", "-o", b.path, b.pkg)
		cmd.Dir = b.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build %s: %w: %s", b.pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// remove deletes what get built.
func (b *goBinary) remove() {
	if b.path != "" {
		os.RemoveAll(filepath.Dir(b.path))
	}
}

// workerBinary is the real philotes-worker.
func workerBinary(t *testing.T) string { return workerBin.get(t) }

// fakeWorker is the stand-in worker (cmd/fakeworker).
func fakeWorker(t *testing.T) string { return fakeWorkerBin.get(t) }

// reaction is one measured reaction time.
type reaction struct {
	test, what string
	took       time.Duration
}

// reactionLog collects reaction times from every test of the run.
type reactionLog struct {
	mu   sync.Mutex
	list []reaction
}

// recordReaction keeps a reaction time for the summary at the end of the run.
func recordReaction(t *testing.T, what string, took time.Duration) {
	t.Logf("reaction: %s %s", what, took.Round(100*time.Millisecond))
	reactions.mu.Lock()
	defer reactions.mu.Unlock()
	reactions.list = append(reactions.list, reaction{test: t.Name(), what: what, took: took})
}

func (l *reactionLog) print(w io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.list) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REACTION TIMES\ttest\tseconds")
	for _, r := range l.list {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\n", r.what, r.test, r.took.Seconds())
	}
	tw.Flush()
}

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

// reportDir is e2e-report/ at the repository root (PHILOTES_E2E_REPORT overrides).
func reportDir(t *testing.T) string {
	if d := os.Getenv("PHILOTES_E2E_REPORT"); d != "" {
		return d
	}
	d, err := filepath.Abs("../../e2e-report")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// writeTimeline writes samples to e2e-report/<name>.csv and .svg.
func writeTimeline(t *testing.T, name, title string, samples []report.Sample) {
	t.Helper()
	base := filepath.Join(reportDir(t), name)
	if err := report.WriteCSV(base+".csv", samples); err != nil {
		t.Error(err)
	}
	if err := report.WriteSVG(base+".svg", title, samples); err != nil {
		t.Error(err)
	}
}

// releaseTimeline samples a release of the worker chart (its Deployment, the HPA KEDA made, and the worker's
// metrics of namespace ns) for a report.
func releaseTimeline(s *stack.Stack, ns, name string) report.Config {
	scope := `{namespace="` + ns + `"}`
	return report.Config{
		Kube: s.Kube, Namespace: ns, Deployment: name, HPA: "keda-hpa-" + name,
		Query:          s.PromQuery,
		LagQuery:       `max(philotes_cdc_lag_seconds` + scope + `)`,
		DepthQuery:     `max(philotes_buffer_depth` + scope + `)`,
		ProcessedQuery: `sum(rate(philotes_buffer_events_processed_total` + scope + `[15s]))`,
		BackfillQuery:  `max(philotes_backfill_rows_remaining` + scope + `)`,
	}
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

// runNode runs a node with cfg until the test ends, then stops its pods.
func runNode(t *testing.T, cfg node.Config) {
	t.Helper()
	n, err := node.New(cfg)
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	})
	select {
	case <-n.Ready():
	case err := <-done:
		t.Fatalf("node stopped before ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("node not ready after 60s")
	}
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

// runPod creates pod, waits for it to be Running and Ready, and returns its IP.
func runPod(t *testing.T, s *stack.Stack, pod *corev1.Pod) string {
	t.Helper()
	if _, err := s.Kube.CoreV1().Pods(pod.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	var ip string
	eventually(t, 60*time.Second, "pod "+pod.Name+" Running and Ready", func(ctx context.Context) error {
		p, err := s.Kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ip = p.Status.PodIP
				return nil
			}
		}
		return errors.New("not Ready")
	})
	return ip
}

// waitReady waits until the Deployment has exactly want replicas, all Ready,
// and returns how long that took.
func waitReady(t *testing.T, s *stack.Stack, ns, name string, want int32, timeout time.Duration) time.Duration {
	t.Helper()
	return eventually(t, timeout, fmt.Sprintf("deployment %s at %d ready replicas", name, want), func(ctx context.Context) error {
		d, err := s.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := d.Status
		if *d.Spec.Replicas != want || st.Replicas != want || st.ReadyReplicas != want {
			return fmt.Errorf("spec %d, status %d, ready %d", *d.Spec.Replicas, st.Replicas, st.ReadyReplicas)
		}
		return nil
	})
}

// readyAtLeast is nil once the Deployment wants and has at least n Ready replicas.
func readyAtLeast(ctx context.Context, s *stack.Stack, ns, name string, n int32) error {
	d, err := s.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < n || d.Status.ReadyReplicas < n {
		spec := int32(-1)
		if d.Spec.Replicas != nil {
			spec = *d.Spec.Replicas
		}
		return fmt.Errorf("spec %d, status %d, ready %d", spec, d.Status.Replicas, d.Status.ReadyReplicas)
	}
	return nil
}

// checkPodIPs checks that every running pod of the Deployment has its own
// loopback address.
func checkPodIPs(t *testing.T, s *stack.Stack, ns, name string) {
	t.Helper()
	pods, err := s.Kube.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	seen := map[string]string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		ip := net.ParseIP(p.Status.PodIP)
		if ip == nil || !ip.IsLoopback() {
			t.Errorf("pod %s: podIP %q is not a loopback address", p.Name, p.Status.PodIP)
			continue
		}
		if other, dup := seen[p.Status.PodIP]; dup {
			t.Errorf("pods %s and %s share podIP %s", p.Name, other, p.Status.PodIP)
		}
		seen[p.Status.PodIP] = p.Name
	}
}

// waitScaledObjectReady waits for a ScaledObject's Ready condition.
func waitScaledObjectReady(t *testing.T, s *stack.Stack, ns, name string) {
	t.Helper()
	eventually(t, 60*time.Second, "ScaledObject "+name+" Ready", func(ctx context.Context) error {
		u, err := s.Dynamic.Resource(stack.ScaledObjectGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Ready" && m["status"] == "True" {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", conds)
	})
}

// scaledObjectTriggers are the triggers of a ScaledObject's spec, as rendered.
func scaledObjectTriggers(t *testing.T, s *stack.Stack, ns, name string) []map[string]any {
	t.Helper()
	u, err := s.Dynamic.Resource(stack.ScaledObjectGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	list, _, _ := unstructured.NestedSlice(u.Object, "spec", "triggers")
	var out []map[string]any
	for _, tr := range list {
		if m, ok := tr.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
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

// waitCaughtUp waits until everything written to the source so far is in
// the lake: the slot is confirmed past the server's WAL position at the call
// (the reader confirms only what the buffer holds) and the buffer is empty.
func waitCaughtUp(t *testing.T, src, buf *pgx.Conn, slot string, timeout time.Duration) {
	t.Helper()
	var lsn string
	if err := src.QueryRow(t.Context(), `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the workers caught up with WAL "+lsn, func(ctx context.Context) error {
		var confirmed string
		var past bool
		if err := src.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = $2`, lsn, slot).Scan(&confirmed, &past); err != nil {
			return fmt.Errorf("slot %s: %w", slot, err)
		}
		if !past {
			return fmt.Errorf("slot confirmed up to %s", confirmed)
		}
		depth, err := bufferDepth(ctx, buf, slot)
		if err != nil {
			return err
		}
		if depth != 0 {
			return fmt.Errorf("%d events in the buffer", depth)
		}
		return nil
	})
}

// waitProcessed waits until the workers' metrics (selector scope, e.g. `{namespace="e2e"}`, or "" for all)
// count at least rows processed events and an empty buffer.
func waitProcessed(t *testing.T, s *stack.Stack, scope string, rows int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d events processed and the buffer empty", rows), func(ctx context.Context) error {
		processed, err := s.PromQuery(ctx, "sum(philotes_buffer_events_processed_total"+scope+")")
		if err != nil {
			return err
		}
		depth, err := s.PromQuery(ctx, "max(philotes_buffer_depth"+scope+")")
		if err != nil {
			return err
		}
		if processed < float64(rows) || depth != 0 {
			return fmt.Errorf("processed %v, depth %v", processed, depth)
		}
		return nil
	})
}
