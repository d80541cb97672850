package charts

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

const (
	dashboardFile = workerChart + "/dashboards/philotes-worker.json"
	metricsGoFile = "../../internal/metrics/metrics.go"
	// dashboardOn and rulesOn turn on the chart's dashboard and alerts.
	dashboardOn = "grafanaDashboard: {enabled: true}\n"
	rulesOn     = "prometheusRule: {enabled: true}\n"
)

// The scope of this release's queries with the default keda.prometheus.scope: the dashboard matches its namespace
// variable, the alerts the release namespace; both every pod of the release that runs the worker.
const (
	releasePods    = `cdc-philotes-worker-([a-z0-9]+|drain-[a-z0-9]+|backfill-[a-z0-9-]+)-[a-z0-9]+`
	dashboardScope = `{namespace="$namespace",pod=~"` + releasePods + `"`
	kedaScope      = `{namespace="$namespace",scaledObject=~"cdc-philotes-worker|cdc-philotes-worker-drain"`
	rulesScope     = `{namespace="data",pod=~"` + releasePods + `"`
)

// panelQuery is one query of a dashboard panel.
type panelQuery struct{ panel, expr string }

// dashboardOf returns the rendered dashboard ConfigMap (the only one with the sidecar label) and its JSON.
func dashboardOf(t *testing.T, r *Rendered) (cm map[string]any, dash map[string]any) {
	t.Helper()
	for _, o := range r.find("ConfigMap") {
		if has(o, "metadata", "labels", "grafana_dashboard") || strings.HasSuffix(name(o), "-dashboard") {
			require.Nil(t, cm, "two dashboard ConfigMaps")
			cm = o
		}
	}
	require.NotNil(t, cm, "no dashboard ConfigMap")
	data := get(t, cm, "data").(map[string]any)
	require.Len(t, data, 1)
	for _, v := range data {
		require.NoError(t, json.Unmarshal([]byte(v.(string)), &dash), "the dashboard is not JSON")
	}
	return cm, dash
}

// panelQueries returns every query of every panel (rows' nested panels included), in order.
func panelQueries(t *testing.T, dash map[string]any) []panelQuery {
	t.Helper()
	var out []panelQuery
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			p := p.(map[string]any)
			if p["type"] == "row" {
				if nested, ok := p["panels"].([]any); ok {
					walk(nested)
				}
				continue
			}
			title, _ := p["title"].(string)
			require.NotEmpty(t, title, "a panel without a title")
			targets, _ := p["targets"].([]any)
			require.NotEmpty(t, targets, "panel %q has no query", title)
			for _, tg := range targets {
				expr, _ := tg.(map[string]any)["expr"].(string)
				require.NotEmpty(t, expr, "panel %q has a target without expr", title)
				out = append(out, panelQuery{title, expr})
			}
		}
	}
	walk(dash["panels"].([]any))
	return out
}

// selectorRE matches a metric name in PromQL and the label matchers that follow it, if any.
var selectorRE = regexp.MustCompile(`\b((?:philotes|keda)_[a-z0-9_]+)(\{[^}]*\})?`)

// requireScoped checks that every metric selector in expr carries the scope: philotes_* the worker scope,
// keda_* the KEDA scope.
func requireScoped(t *testing.T, where, expr, workerScope, kedaScope string) {
	t.Helper()
	sels := selectorRE.FindAllStringSubmatch(expr, -1)
	require.NotEmpty(t, sels, "%s: no metric in %q", where, expr)
	for _, m := range sels {
		want := workerScope
		if strings.HasPrefix(m[1], "keda_") {
			want = kedaScope
		}
		require.True(t, strings.HasPrefix(m[2], want), "%s: %s is not scoped to the release: want matchers starting %s in %q", where, m[1], want, expr)
	}
}

// TestDashboardQueriesAreScoped checks that every query of every panel selects only this release's series: the
// dashboard's namespace variable and the release's pods (KEDA's metrics: its ScaledObject and ScaledJob), with the
// chart's scope values.
func TestDashboardQueriesAreScoped(t *testing.T) {
	_, dash := dashboardOf(t, mustRender(t, workerChart, dashboardOn))
	qs := panelQueries(t, dash)
	require.GreaterOrEqual(t, len(qs), 20)
	for _, q := range qs {
		requireScoped(t, "panel "+q.panel, q.expr, dashboardScope, kedaScope)
	}

	t.Run("the scope values apply", func(t *testing.T) {
		_, dash := dashboardOf(t, mustRender(t, workerChart, dashboardOn+`keda:
  prometheus:
    scope: {namespaceLabel: kubernetes_namespace, podLabel: kubernetes_pod_name, podRegex: 'cdc-.*', extraMatchers: 'cluster="eu-1"', kedaNamespaceLabel: exported_namespace}
`))
		for _, q := range panelQueries(t, dash) {
			requireScoped(t, "panel "+q.panel, q.expr,
				`{kubernetes_namespace="$namespace",kubernetes_pod_name=~"cdc-.*",cluster="eu-1"`,
				`{exported_namespace="$namespace",scaledObject=~"cdc-philotes-worker|cdc-philotes-worker-drain",cluster="eu-1"`)
		}
		ns := templateVar(t, dash, "namespace")
		require.Equal(t, "label_values(philotes_cdc_reader_active, kubernetes_namespace)", ns["definition"])
	})

	t.Run("the pod regex matches the release's pods only", func(t *testing.T) {
		re := regexp.MustCompile(`^(?:` + releasePods + `)$`) // Prometheus anchors regex matchers
		for _, pod := range []string{"cdc-philotes-worker-6d4cf56db6-x7k2p", "cdc-philotes-worker-drain-h5j7k-2kq9d", "cdc-philotes-worker-backfill-2-q8m4n", "cdc-philotes-worker-backfill-slot-lost-1-q8m4n"} {
			require.True(t, re.MatchString(pod), pod)
		}
		for _, pod := range []string{"orders-philotes-worker-6d4cf56db6-x7k2p", "cdc-philotes-worker-6d4cf56db6", "xcdc-philotes-worker-6d4cf56db6-x7k2p"} {
			require.False(t, re.MatchString(pod), pod)
		}
	})
}

// templateVar returns the dashboard variable of that name.
func templateVar(t *testing.T, dash map[string]any, varName string) map[string]any {
	t.Helper()
	for _, v := range get(t, dash, "templating", "list").([]any) {
		if v := v.(map[string]any); v["name"] == varName {
			return v
		}
	}
	t.Fatalf("no dashboard variable %q", varName)
	return nil
}

// TestDashboardConfigMapForTheSidecar checks the ConfigMap Grafana's sidecar loads: its label (configurable), its
// namespace and name, and a dashboard with a data source and a namespace variable that is unique per release.
func TestDashboardConfigMapForTheSidecar(t *testing.T) {
	r := mustRender(t, workerChart, "")
	for _, cm := range r.find("ConfigMap") {
		require.NotEqual(t, fullname+"-dashboard", name(cm), "no dashboard unless grafanaDashboard.enabled")
	}

	cm, dash := dashboardOf(t, mustRender(t, workerChart, dashboardOn))
	require.Equal(t, fullname+"-dashboard", name(cm))
	require.Equal(t, releaseNS, get(t, cm, "metadata", "namespace"))
	require.Equal(t, "1", get(t, cm, "metadata", "labels", "grafana_dashboard"))
	require.Contains(t, get(t, cm, "data"), "data-cdc-philotes-worker.json")
	require.Equal(t, "Philotes worker data/cdc-philotes-worker", dash["title"])
	uid := dash["uid"].(string)
	require.Regexp(t, `^philotes-[0-9a-f]{20}$`, uid, "Grafana uids are at most 40 characters")

	ds := templateVar(t, dash, "datasource")
	require.Equal(t, "datasource", ds["type"])
	require.Equal(t, "prometheus", ds["query"])
	ns := templateVar(t, dash, "namespace")
	require.Equal(t, "label_values(philotes_cdc_reader_active, namespace)", ns["definition"])
	require.Equal(t, releaseNS, get(t, ns, "current", "value"), "the namespace variable starts at the release's")
	raw, err := json.Marshal(dash)
	require.NoError(t, err)
	require.NotRegexp(t, `__[A-Z_]+__`, string(raw), "a placeholder was left unfilled")
	for _, p := range dash["panels"].([]any) {
		p := p.(map[string]any)
		if p["type"] != "row" {
			require.Equal(t, "${datasource}", get(t, p, "datasource", "uid"), p["title"])
		}
	}

	t.Run("label, labels, annotations and another namespace", func(t *testing.T) {
		cm, other := dashboardOf(t, mustRender(t, workerChart, `grafanaDashboard:
  enabled: true
  namespace: monitoring
  label: dashboards
  labelValue: philotes
  labels: {team: data}
  annotations: {grafana_folder: Philotes}
`))
		require.Equal(t, "data-"+fullname+"-dashboard", name(cm), "release namespace in the name: Grafana's namespace holds several releases' dashboards")
		require.Equal(t, "monitoring", get(t, cm, "metadata", "namespace"))
		labels := get(t, cm, "metadata", "labels").(map[string]any)
		require.Equal(t, "philotes", labels["dashboards"])
		require.Equal(t, "data", labels["team"])
		require.NotContains(t, labels, "grafana_dashboard")
		require.Equal(t, map[string]any{"grafana_folder": "Philotes"}, get(t, cm, "metadata", "annotations"))
		require.Equal(t, uid, other["uid"], "the uid depends on the release, not on where the ConfigMap lives")
	})

	t.Run("another release has another uid and title", func(t *testing.T) {
		_, other := dashboardOf(t, mustRender(t, workerChart, dashboardOn+"fullnameOverride: orders\n"))
		require.NotEqual(t, uid, other["uid"])
		require.Equal(t, "Philotes worker data/orders", other["title"])
	})

	t.Run("through the umbrella", func(t *testing.T) {
		_, dash := dashboardOf(t, mustRender(t, umbrellaChart, "philotes-worker:\n  grafanaDashboard: {enabled: true}\n"))
		require.Equal(t, uid, dash["uid"])
	})
}

// definedMetrics returns the worker's metric names: the `Name: "philotes_..."` fields of internal/metrics/metrics.go,
// read as text (the chart tests' module does not import the worker's).
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`Name:\s*"(philotes_[a-z0-9_]+)"`).FindAllStringSubmatch(readFile(t, metricsGoFile), -1) {
		out[m[1]] = true
	}
	require.GreaterOrEqual(t, len(out), 15, "found too few metrics in %s: has its layout changed?", metricsGoFile)
	return out
}

// kedaMetrics returns KEDA's own Prometheus metric names (keda_<subsystem>_<name>), read from the source of the
// KEDA version the charts are validated against.
func kedaMetrics(t *testing.T) map[string]bool {
	t.Helper()
	dir, err := moduleDir(kedaModule)
	require.NoError(t, err)
	src := readFile(t, filepath.Join(dir, "pkg", "metricscollector", "prommetrics.go"))
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`Namespace:\s*DefaultPromMetricsNamespace,\s*Subsystem:\s*"([a-z_]+)",\s*Name:\s*"([a-z_]+)"`).FindAllStringSubmatch(src, -1) {
		out["keda_"+m[1]+"_"+m[2]] = true
	}
	require.GreaterOrEqual(t, len(out), 5, "found too few KEDA metrics in %s", dir)
	return out
}

// undefinedNames returns the names in text matching re that are not in defined (a histogram's _bucket, _sum and
// _count count as its name).
func undefinedNames(text string, re *regexp.Regexp, defined map[string]bool) []string {
	var missing []string
	for _, n := range re.FindAllString(text, -1) {
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && defined[b] {
				base = b
			}
		}
		if !defined[base] && !slices.Contains(missing, n) {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	return missing
}

// TestDashboardAndAlertsUseOnlyWorkerMetrics checks that every philotes_* name in the dashboard (queries, variables
// and texts) and in the alert rules (expressions and annotations) is a metric of internal/metrics/metrics.go, and
// every keda_* name one of KEDA's: a typo in a panel or an alert fails here.
func TestDashboardAndAlertsUseOnlyWorkerMetrics(t *testing.T) {
	defined := definedMetrics(t)
	philotesRE := regexp.MustCompile(`philotes_[a-z0-9_]+`)
	kedaRE := regexp.MustCompile(`keda_[a-z0-9_]+`)

	dash := readFile(t, dashboardFile)
	require.Empty(t, undefinedNames(dash, philotesRE, defined), "%s uses metrics %s does not define", dashboardFile, metricsGoFile)
	require.Empty(t, undefinedNames(dash, kedaRE, kedaMetrics(t)), "%s uses KEDA metrics KEDA %s does not define", dashboardFile, kedaModule)
	for _, n := range []string{"philotes_slot_wal_status", "philotes_parked_tables", "philotes_parked_events", "keda_scaler_metrics_value", "keda_scaler_active"} {
		require.Contains(t, dash, n)
	}

	// The slot and source names appear in the annotations: keep them clear of the philotes_ prefix here.
	r := mustRender(t, workerChart, rulesOn+"worker: {slot: cdc_slot}\n")
	spec, err := yaml.Marshal(get(t, r.one(t, "PrometheusRule", fullname), "spec"))
	require.NoError(t, err)
	require.Empty(t, undefinedNames(string(spec), philotesRE, defined), "the PrometheusRule uses metrics %s does not define", metricsGoFile)

	t.Run("a typo is caught", func(t *testing.T) {
		require.Equal(t, []string{"philotes_cdc_lag_second"}, undefinedNames("max(philotes_cdc_lag_second{a=\"b\"}) + philotes_iceberg_commit_duration_seconds_bucket", philotesRE, defined))
	})
}

// alertRule is one rendered alerting rule.
type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// alertRules returns the rendered PrometheusRule's alerts by name.
func alertRules(t *testing.T, r *Rendered) map[string]alertRule {
	t.Helper()
	var spec struct {
		Groups []struct {
			Name  string      `json:"name"`
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	b, err := json.Marshal(get(t, r.one(t, "PrometheusRule", fullname), "spec"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &spec))
	require.Len(t, spec.Groups, 1)
	out := map[string]alertRule{}
	for _, rule := range spec.Groups[0].Rules {
		out[rule.Alert] = rule
	}
	return out
}

var allAlerts = []string{"PhilotesLagHigh", "PhilotesNoReader", "PhilotesRetainedWALHigh", "PhilotesRetainedWALGrowing",
	"PhilotesSlotWALAtRisk", "PhilotesErrorsPersistent", "PhilotesTableParked"}

// TestPrometheusRuleAlerts checks the alerts: all of them by default, each scoped to the release, labelled, with a
// summary, a description and a runbook_url whose anchor is a section of the chart README.
func TestPrometheusRuleAlerts(t *testing.T) {
	require.Empty(t, mustRender(t, workerChart, "").find("PrometheusRule"), "no rules unless prometheusRule.enabled")
	r := mustRender(t, workerChart, rulesOn)
	rules := alertRules(t, r)
	require.ElementsMatch(t, allAlerts, keysOfRules(rules))
	readme := readFile(t, workerChart+"/README.md")
	for n, rule := range rules {
		requireScoped(t, n, rule.Expr, rulesScope, "")
		require.NotEmpty(t, rule.For, n)
		require.Contains(t, []string{"warning", "critical"}, rule.Labels["severity"], n)
		require.Equal(t, releaseNS, rule.Labels["namespace"], n)
		require.NotEmpty(t, rule.Annotations["summary"], n)
		require.NotEmpty(t, rule.Annotations["description"], n)
		url := rule.Annotations["runbook_url"]
		require.Equal(t, "https://github.com/philotes/philotes-worker/blob/main/charts/philotes-worker/README.md#"+strings.ToLower(n), url, n)
		require.Contains(t, readme, "\n#### "+n+"\n", "the runbook section of %s (a heading GitHub anchors as #%s) is missing from the README", n, strings.ToLower(n))
	}
	require.Contains(t, rules["PhilotesSlotWALAtRisk"].Expr, `status=~"unreserved|lost"}[10m]`)
	require.Contains(t, rules["PhilotesSlotWALAtRisk"].Expr, "max_over_time(")
	require.Contains(t, rules["PhilotesNoReader"].Expr, "or on() vector(0)", "no pod at all is no reader too")
	require.Equal(t, releaseNS, get(t, r.one(t, "PrometheusRule", fullname), "metadata", "namespace"))

	t.Run("thresholds, durations, severities, labels and namespace from the values", func(t *testing.T) {
		r := mustRender(t, workerChart, `prometheusRule:
  enabled: true
  namespace: monitoring
  additionalLabels: {release: kube-prometheus-stack}
  runbookUrl: https://wiki.example/philotes
  alerts:
    lagHigh: {seconds: 900, for: 20m, severity: critical}
    retainedWALHigh: {bytes: 2147483648}
    retainedWALGrowing: {window: 1h, floorBytes: 0}
    slotWALAtRisk: {window: 30m, for: 1m}
    errorsPersistent: {window: 10m, for: 30m}
    tableParked: {enabled: false}
`)
		pr := r.one(t, "PrometheusRule", fullname)
		require.Equal(t, "monitoring", get(t, pr, "metadata", "namespace"))
		require.Equal(t, "kube-prometheus-stack", get(t, pr, "metadata", "labels", "release"))
		rules := alertRules(t, r)
		require.NotContains(t, rules, "PhilotesTableParked")
		require.True(t, strings.HasSuffix(rules["PhilotesLagHigh"].Expr, ") > 900"), rules["PhilotesLagHigh"].Expr)
		require.Equal(t, "20m", rules["PhilotesLagHigh"].For)
		require.Equal(t, "critical", rules["PhilotesLagHigh"].Labels["severity"])
		require.Equal(t, "https://wiki.example/philotes#philoteslaghigh", rules["PhilotesLagHigh"].Annotations["runbook_url"])
		require.True(t, strings.HasSuffix(rules["PhilotesRetainedWALHigh"].Expr, ") > 2147483648"), "no 2.147483648e+09: %s", rules["PhilotesRetainedWALHigh"].Expr)
		require.Contains(t, rules["PhilotesRetainedWALGrowing"].Expr, "[1h:1m]) > 0 and ")
		require.True(t, strings.HasSuffix(rules["PhilotesRetainedWALGrowing"].Expr, ") > 0"))
		require.Contains(t, rules["PhilotesSlotWALAtRisk"].Expr, "[30m]")
		require.Equal(t, "1m", rules["PhilotesSlotWALAtRisk"].For)
		require.Contains(t, rules["PhilotesErrorsPersistent"].Expr, "[10m]")
		require.Equal(t, "30m", rules["PhilotesErrorsPersistent"].For)
	})

	t.Run("no reader: a release that may sleep at zero counts only running pods", func(t *testing.T) {
		for _, values := range []string{kedaWith("  minReplicaCount: 0\n" + pgTrigger), kedaWith("  minReplicas: 2\n  idleReplicaCount: 0\n" + pgTrigger), "replicaCount: 0\n"} {
			expr := alertRules(t, mustRender(t, workerChart, mergeValues(rulesOn, values)))["PhilotesNoReader"].Expr
			require.NotContains(t, expr, "vector(0)", values)
			require.Contains(t, expr, "max_over_time(philotes_cdc_reader_active{", values)
		}
		require.Contains(t, alertRules(t, mustRender(t, workerChart, mergeValues(rulesOn, kedaWith(""))))["PhilotesNoReader"].Expr, "vector(0)")
	})

	t.Run("no reader alert for a release without a reader", func(t *testing.T) {
		rules := alertRules(t, mustRender(t, workerChart, rulesOn+"worker: {noReader: true}\n"))
		require.NotContains(t, rules, "PhilotesNoReader")
		require.Len(t, rules, len(allAlerts)-1)
	})

	t.Run("through the umbrella and in values-production.yaml", func(t *testing.T) {
		r := mustRender(t, umbrellaChart, umbrellaValues(t, "values-production.yaml"))
		require.Len(t, alertRules(t, r), len(allAlerts))
		cm, _ := dashboardOf(t, r)
		require.Equal(t, "monitoring", get(t, cm, "metadata", "namespace"))
	})
}

func keysOfRules(m map[string]alertRule) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestObservabilityRefusals checks the dashboard's and the alerts' refusals.
func TestObservabilityRefusals(t *testing.T) {
	requireRefused(t, "", []refusal{
		{"lag alert at the commit interval", rulesOn + "worker: {iceberg: {commitIntervalSeconds: 600}}\n",
			[]string{"prometheusRule.alerts.lagHigh.seconds (600) must be greater than worker.iceberg.commitIntervalSeconds (600)"}},
		{"every alert off", `prometheusRule:
  enabled: true
  alerts:
    lagHigh: {enabled: false}
    noReader: {enabled: false}
    retainedWALHigh: {enabled: false}
    retainedWALGrowing: {enabled: false}
    slotWALAtRisk: {enabled: false}
    errorsPersistent: {enabled: false}
    tableParked: {enabled: false}
`, []string{"every alert in prometheusRule.alerts is disabled"}},
		{"dashboard without a namespace label", dashboardOn + "keda: {prometheus: {scope: {namespaceLabel: ''}}}\n",
			[]string{"grafanaDashboard.enabled needs keda.prometheus.scope.namespaceLabel"}},
		{"schema: a duration without a unit", "prometheusRule: {alerts: {lagHigh: {for: '10'}}}\n", []string{"for"}},
		{"schema: bytes as text", "prometheusRule: {alerts: {retainedWALHigh: {bytes: 10GiB}}}\n", []string{"bytes"}},
		{"schema: unknown alert", "prometheusRule: {alerts: {lagHihg: {enabled: true}}}\n", []string{"lagHihg"}},
		{"schema: unknown dashboard key", "grafanaDashboard: {folder: x}\n", []string{"folder"}},
	})
	// The lag alert's threshold is checked only while the alert is on.
	mustRender(t, workerChart, "prometheusRule: {enabled: true, alerts: {lagHigh: {enabled: false}}}\nworker: {iceberg: {commitIntervalSeconds: 600}}\n")
}

// TestAlertTestsCoverEveryAlert checks that the promtool unit tests (run by scripts/chart-alerts-test.sh) test each
// alert both firing and silent.
func TestAlertTestsCoverEveryAlert(t *testing.T) {
	var suite struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	files, err := filepath.Glob("testdata/alerts*_test.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, yaml.Unmarshal(b, &suite), f)
		for _, tc := range suite.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					silent[a.Alertname] = true
				}
			}
		}
	}
	for _, a := range allAlerts {
		require.True(t, fires[a], "no promtool test where %s fires", a)
		require.True(t, silent[a], "no promtool test where %s stays silent", a)
	}
}
