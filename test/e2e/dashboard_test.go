//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// dashboardQuery is one query of one panel of the rendered dashboard.
type dashboardQuery struct{ panel, expr string }

// TestDashboardQueries proves that every query of the chart's Grafana dashboard returns data from a real
// Prometheus: it installs the real chart (grafanaDashboard on, KEDA's ScaledObject on the Prometheus triggers)
// with the real worker, scrapes the KEDA operator too, writes rows to a table and to a table the worker must park
// (a column named _op clashes with the lake's change column), then runs the query of every panel of the dashboard
// the chart put into its ConfigMap (read back from the cluster), with the dashboard's variables substituted,
// against the stack's Prometheus HTTP API until each has returned at least one series. A query that never does
// fails the test, naming its panel.
func TestDashboardQueries(t *testing.T) {
	s := startStack(t)
	startNode(t, s, workerBinary(t))
	scrapeKEDAOperator(t, s)
	ctx := t.Context()

	src := connect(t, s, stack.SourceDB)
	const (
		ns, name  = "e2e-dash", "philotes-worker" // release name = full name: pods philotes-worker-<rs>-<pod>
		slot      = "philotes_cdc"
		rowsTable = "dash_events"
		// Parked: its _op column clashes with the lake table's change column of that name, which the worker
		// cannot write and parks (philotes_parked_tables, philotes_parked_events).
		parkedTable = "dash_parked"
	)
	if err := createEventsTable(ctx, src, rowsTable); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(ctx, `CREATE TABLE public.`+parkedTable+` (id bigint PRIMARY KEY, _op text NOT NULL)`); err != nil {
		t.Fatal(err)
	}

	lakeVals, _ := chartLake(t, s, ns)
	values := realWorkerValues(lakeVals, map[string]any{"slot": slot}, map[string]any{
		"enabled":         true,
		"minReplicas":     1,
		"maxReplicas":     2,
		"pollingInterval": 2,
		"prometheus": map[string]any{
			"serverAddress": stack.PrometheusURL,
			"lagTrigger":    map[string]any{"threshold": "30", "activationThreshold": "5"},
			"bufferTrigger": map[string]any{"threshold": "20000", "activationThreshold": "10"},
		},
	})
	values["grafanaDashboard"] = map[string]any{"enabled": true}
	installChart(t, s, ns, name, values)
	waitScaledObjectReady(t, s, ns, name)
	waitSlot(t, src, slot, 90*time.Second)

	queries := renderedDashboardQueries(t, s, ns, name)
	t.Logf("the dashboard has %d queries", len(queries))

	if err := insertRows(ctx, src, rowsTable, 1, 20000); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(ctx, `INSERT INTO public.`+parkedTable+` SELECT g, 'op ' || g FROM generate_series(1, 100) g`); err != nil {
		t.Fatal(err)
	}
	// Keep changes flowing while the queries run, so the rates have something to count.
	stopTrickle := make(chan struct{})
	trickleDone := make(chan struct{})
	go func() {
		defer close(trickleDone)
		for id := 20001; ; id += 100 {
			select {
			case <-stopTrickle:
				return
			case <-time.After(time.Second):
			}
			if err := insertRows(ctx, src, rowsTable, id, id+99); err != nil {
				t.Logf("trickle: %v", err)
				return
			}
		}
	}()
	defer func() { close(stopTrickle); <-trickleDone }()

	// Grafana fills these in; $__rate_interval is at least four scrape intervals (1 s here).
	vars := strings.NewReplacer("$namespace", ns, "${namespace}", ns, "$__rate_interval", "30s")
	answered := map[int]int{} // query index -> series in its first non-empty answer
	lastErr := map[int]string{}
	deadline := time.Now().Add(4 * time.Minute)
	for len(answered) < len(queries) && time.Now().Before(deadline) {
		for i, q := range queries {
			if _, ok := answered[i]; ok {
				continue
			}
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := promSeries(qctx, s, vars.Replace(q.expr))
			cancel()
			switch {
			case err != nil:
				lastErr[i] = err.Error()
			case n == 0:
				lastErr[i] = "no series"
			default:
				answered[i] = n
				t.Logf("panel %q: %d series: %s", q.panel, n, vars.Replace(q.expr))
			}
		}
		if len(answered) < len(queries) {
			time.Sleep(2 * time.Second)
		}
	}
	for i, q := range queries {
		if _, ok := answered[i]; !ok {
			t.Errorf("panel %q: its query returned no data within 4 minutes (%s): %s", q.panel, lastErr[i], vars.Replace(q.expr))
		}
	}

	// The namespace variable lists the label values of philotes_cdc_reader_active: the release's namespace must be
	// among them.
	t.Run("the namespace variable offers the release namespace", func(t *testing.T) {
		vals, err := promLabelValues(ctx, s, "namespace", "philotes_cdc_reader_active")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(vals, ns) {
			t.Fatalf("label_values(philotes_cdc_reader_active, namespace) = %v, without %s", vals, ns)
		}
	})
}

// scrapeKEDAOperator makes the stack's Prometheus scrape the KEDA operator's metrics: a second file_sd file next to
// the pods' (the scrape job reads every *.json there). It has no namespace label, so the operator's own namespace
// label (the ScaledObject's namespace) stays as it is, as with honor_labels.
func scrapeKEDAOperator(t *testing.T, s *stack.Stack) {
	t.Helper()
	dir := filepath.Join(s.Dir, "prometheus", "targets")
	if _, err := os.Stat(filepath.Join(dir, "pods.json")); err != nil {
		t.Fatalf("the stack's Prometheus file_sd folder moved: %v", err)
	}
	target := []map[string]any{{"targets": []string{stack.KEDAOperatorMetrics}, "labels": map[string]string{"job": "keda-operator"}}}
	b, err := json.Marshal(target)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keda-operator.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "Prometheus scrapes the KEDA operator", func(ctx context.Context) error {
		up, err := s.PromQuery(ctx, `up{job="keda-operator"}`)
		if err != nil {
			return err
		}
		if up != 1 {
			return fmt.Errorf("up = %v", up)
		}
		return nil
	})
}

// renderedDashboardQueries reads the dashboard ConfigMap the chart installed and returns every query of every
// panel.
func renderedDashboardQueries(t *testing.T, s *stack.Stack, ns, fullname string) []dashboardQuery {
	t.Helper()
	cm, err := s.Kube.CoreV1().ConfigMaps(ns).Get(t.Context(), fullname+"-dashboard", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the chart's dashboard ConfigMap: %v", err)
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Fatalf("the dashboard ConfigMap lacks the sidecar label: %v", cm.Labels)
	}
	raw, ok := cm.Data[ns+"-"+fullname+".json"]
	if !ok {
		t.Fatalf("the dashboard ConfigMap has no %s-%s.json: keys %v", ns, fullname, keys(cm.Data))
	}
	var dash struct{ Panels []dashboardPanel }
	if err := json.Unmarshal([]byte(raw), &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	var out []dashboardQuery
	var walk func([]dashboardPanel)
	walk = func(panels []dashboardPanel) {
		for _, p := range panels {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				out = append(out, dashboardQuery{p.Title, tg.Expr})
			}
		}
	}
	walk(dash.Panels)
	if len(out) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return out
}

// dashboardPanel is the part of a Grafana panel the test reads.
type dashboardPanel struct {
	Type, Title string
	Panels      []dashboardPanel
	Targets     []struct{ Expr string }
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// promSeries runs an instant query on the stack's Prometheus and returns how many series it answered (a panel
// shows data when it is at least one).
func promSeries(ctx context.Context, s *stack.Stack, q string) (int, error) {
	var data struct {
		ResultType string
		Result     []json.RawMessage
	}
	if err := promAPI(ctx, s, "/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return 0, err
	}
	if data.ResultType != "vector" {
		return 0, fmt.Errorf("result type %s, want vector", data.ResultType)
	}
	return len(data.Result), nil
}

// promLabelValues returns the values of a label on the series of a metric (what Grafana's label_values does).
func promLabelValues(ctx context.Context, s *stack.Stack, label, metric string) ([]string, error) {
	var vals []string
	err := promAPI(ctx, s, "/api/v1/label/"+url.PathEscape(label)+"/values?match[]="+url.QueryEscape(metric), &vals)
	return vals, err
}

// promAPI GETs a Prometheus HTTP API path and decodes its data into out.
func promAPI(ctx context.Context, s *stack.Stack, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, stack.PrometheusURL+path, nil)
	if err != nil {
		return err
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status, Error string
		Data          json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", path, body.Error)
	}
	return json.Unmarshal(body.Data, out)
}
