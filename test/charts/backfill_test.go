package charts

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// backfillJobValues enables the backfill Job for the given tables (YAML list), with the source URL in the chart's
// Secret and the s3:// warehouse that the Job, a second pod next to the Deployment's, needs.
func backfillJobValues(tables string) string {
	return s3Lake + "database: {sourceUrl: 'postgres://u:p@h:5432/db'}\nbackfillJob: {enabled: true, tables: " + tables + "}\n"
}

// TestBackfillSettingsReachTheWorker checks that worker.backfill reaches the worker's environment (the ConfigMap
// that the Deployment, the ScaledJob and the backfill Job read) as the worker parses it.
func TestBackfillSettingsReachTheWorker(t *testing.T) {
	cases := []struct {
		name   string
		values string
		set    map[string]any // --set style values (int64); used instead of values when not nil
		want   map[string]string
	}{
		{name: "defaults", values: "",
			want: map[string]string{"PHILOTES_BACKFILL": "auto", "PHILOTES_BACKFILL_WORKERS": "2",
				"PHILOTES_BACKFILL_CHUNK_ROWS": "10000", "PHILOTES_BACKFILL_MAX_ROWS_PER_SECOND": "0"}},
		{name: "values file", values: "worker:\n  backfill: {mode: \"off\", workers: 8, chunkRows: 1000000, maxRowsPerSecond: 2500000}\n",
			want: map[string]string{"PHILOTES_BACKFILL": "off", "PHILOTES_BACKFILL_WORKERS": "8",
				"PHILOTES_BACKFILL_CHUNK_ROWS": "1000000", "PHILOTES_BACKFILL_MAX_ROWS_PER_SECOND": "2500000"}},
		{name: "--set", set: map[string]any{"worker": map[string]any{"backfill": map[string]any{
			"mode": "off", "workers": int64(0), "chunkRows": int64(100), "maxRowsPerSecond": int64(1000000)}}},
			want: map[string]string{"PHILOTES_BACKFILL": "off", "PHILOTES_BACKFILL_WORKERS": "0",
				"PHILOTES_BACKFILL_CHUNK_ROWS": "100", "PHILOTES_BACKFILL_MAX_ROWS_PER_SECOND": "1000000"}},
		{name: "unquoted off (YAML false) means off", values: "worker:\n  backfill:\n    mode: off\n",
			want: map[string]string{"PHILOTES_BACKFILL": "off"}},
		{name: "auto stays auto", values: "worker: {backfill: {mode: auto}}\n",
			want: map[string]string{"PHILOTES_BACKFILL": "auto"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireConfigMap(t, tc.values, tc.set, tc.want)
		})
	}
}

// TestBackfillTrigger checks the ScaledObject's backfill trigger: on by default with the release-scoped max()
// query and its thresholds, overridable, absent when disabled, and never on the ScaledJob (drain jobs do not
// backfill).
func TestBackfillTrigger(t *testing.T) {
	scope := `namespace="data",pod=~"cdc-philotes-worker-[a-z0-9]+-[a-z0-9]+"`
	cases := []struct {
		name, values string
		want         map[string]string // nil: no backfill trigger on the ScaledObject
	}{
		{"defaults", kedaWith(""), map[string]string{
			"query": "max(philotes_backfill_rows_remaining{" + scope + "})", "threshold": "1000000", "activationThreshold": "0",
			"serverAddress": "http://prometheus:9090"}},
		{"thresholds as numbers", kedaWith("  prometheus:\n    backfillTrigger: {threshold: 5000000, activationThreshold: 100000}\n"), map[string]string{
			"query": "max(philotes_backfill_rows_remaining{" + scope + "})", "threshold": "5000000", "activationThreshold": "100000",
			"serverAddress": "http://prometheus:9090"}},
		{"query override with tpl", kedaWith("  prometheus:\n    backfillTrigger:\n      query: 'max(philotes_backfill_rows_remaining{job=\"{{ .Release.Name }}\"})'\n"), map[string]string{
			"query": `max(philotes_backfill_rows_remaining{job="cdc"})`, "threshold": "1000000", "activationThreshold": "0",
			"serverAddress": "http://prometheus:9090"}},
		{"fallback reports missing metrics", kedaWith("  fallback: {enabled: true}\n"), map[string]string{
			"query": "max(philotes_backfill_rows_remaining{" + scope + "})", "threshold": "1000000", "activationThreshold": "0",
			"serverAddress": "http://prometheus:9090", "ignoreNullValues": "false"}},
		{"disabled", kedaWith("  prometheus:\n    backfillTrigger: {enabled: false}\n"), nil},
		{"prometheus disabled", kedaWith("  prometheus: {enabled: false}\n" + pgTrigger), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := triggers(t, mustRender(t, workerChart, tc.values))
			if tc.want == nil {
				require.NotContains(t, tr, "backfill")
				return
			}
			require.Equal(t, "prometheus", tr["backfill"]["type"])
			require.Equal(t, tc.want, metadata(t, tr["backfill"]))
		})
	}

	t.Run("scalingModifiers may name it", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith("  scalingModifiers: {formula: \"max(lag, buffer, backfill)\", target: \"1\"}\n"))
		require.Equal(t, "max(lag, buffer, backfill)", get(t, r.one(t, "ScaledObject", fullname), "spec", "advanced", "scalingModifiers", "formula"))
	})
	t.Run("never on the ScaledJob", func(t *testing.T) {
		for _, values := range []string{
			s3Lake + "keda:\n  scaledJob: {enabled: true}\n",
			s3Lake + "keda:\n  enabled: true\n  scaledJob: {enabled: true}\n  prometheus:\n    backfillTrigger: {enabled: true, query: 'max(x)'}\n",
		} {
			r := mustRender(t, workerChart, values)
			sj := r.one(t, "ScaledJob", fullname+"-drain")
			for _, trig := range get(t, sj, "spec", "triggers").([]any) {
				m := trig.(map[string]any)
				require.NotEqual(t, "backfill", m["name"])
				require.NotContains(t, metadata(t, m)["query"], "backfill")
			}
		}
	})
	t.Run("the only enabled trigger suffices", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith("  prometheus:\n    lagTrigger: {enabled: false}\n    bufferTrigger: {enabled: false}\n"))
		require.Equal(t, []string{"backfill"}, keysOfTriggers(triggers(t, r)))
	})
}

func keysOfTriggers(m map[string]map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestBackfillJob checks the on-demand Job: `backfill --tables a,b` in the Deployment's pod setup, restartPolicy
// Never with exit 2 failing the Job at once, no replicas, no autoscaler, and a name that changes with the id.
func TestBackfillJob(t *testing.T) {
	t.Run("absent by default", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith(""))
		require.Empty(t, r.find("Job"))
	})

	r := mustRender(t, workerChart, mergeValues(backfillJobValues("[public.orders, sales.customers]"),
		"keda: {enabled: true, scaledJob: {enabled: true}}\nautoscaling: {enabled: true}\npodLabels: {team: data}\nworker: {extraEnvFrom: [{secretRef: {name: s3}}]}\n"))
	job := r.one(t, "Job", fullname+"-backfill-1")
	pod := get(t, job, "spec", "template", "spec").(map[string]any)
	c := get(t, pod, "containers", 0).(map[string]any)

	t.Run("args and restart policy", func(t *testing.T) {
		require.Equal(t, []any{"backfill", "--tables", "public.orders,sales.customers"}, c["args"])
		require.Equal(t, "Never", pod["restartPolicy"])
		require.False(t, has(c, "readinessProbe"))
		require.False(t, has(c, "livenessProbe"))
		require.Equal(t, float64(2), get(t, job, "spec", "backoffLimit"))
		require.False(t, has(job, "spec", "ttlSecondsAfterFinished"))
		rule := get(t, job, "spec", "podFailurePolicy", "rules", 0)
		require.Equal(t, "FailJob", get(t, rule, "action"))
		require.Equal(t, map[string]any{"containerName": "worker", "operator": "In", "values": []any{float64(2)}}, get(t, rule, "onExitCodes"))
	})
	t.Run("the Deployment's image, environment, Secret, security context and volumes", func(t *testing.T) {
		dpod := get(t, r.one(t, "Deployment", fullname), "spec", "template", "spec").(map[string]any)
		dc := get(t, dpod, "containers", 0).(map[string]any)
		for _, k := range []string{"image", "imagePullPolicy", "envFrom", "env", "resources", "securityContext", "volumeMounts", "ports"} {
			require.Equal(t, dc[k], c[k], k)
		}
		for _, k := range []string{"securityContext", "volumes", "serviceAccountName", "automountServiceAccountToken", "terminationGracePeriodSeconds"} {
			require.Equal(t, dpod[k], pod[k], k)
		}
		require.Equal(t, fullname, get(t, c, "envFrom", 0, "configMapRef", "name"))
		require.Equal(t, fullname+"-db", get(t, c, "env", 0, "valueFrom", "secretKeyRef", "name"))
		require.Equal(t, "PHILOTES_SOURCE_URL", get(t, c, "env", 0, "name"))
	})
	t.Run("no replicas and no autoscaler target", func(t *testing.T) {
		require.False(t, has(job, "spec", "replicas"))
		require.False(t, has(job, "spec", "parallelism"))
		require.Equal(t, map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": fullname},
			get(t, r.one(t, "ScaledObject", fullname), "spec", "scaleTargetRef"))
		require.Empty(t, r.find("HorizontalPodAutoscaler"), "KEDA owns the HPA")
		hpa := mustRender(t, workerChart, backfillJobValues("[public.orders]")+"autoscaling: {enabled: true}\n")
		require.Equal(t, "Deployment", get(t, hpa.one(t, "HorizontalPodAutoscaler", fullname), "spec", "scaleTargetRef", "kind"))
		require.Len(t, hpa.find("Job"), 1)
	})
	t.Run("pods outside the Deployment's selector", func(t *testing.T) {
		labels := get(t, job, "spec", "template", "metadata", "labels").(map[string]any)
		require.Equal(t, "philotes-worker-backfill", labels["app.kubernetes.io/name"])
		require.Equal(t, "backfill", labels["app.kubernetes.io/component"])
		require.Equal(t, "data", labels["team"])
		require.Equal(t, "backfill", get(t, job, "metadata", "labels", "app.kubernetes.io/component"))
		sel := get(t, r.one(t, "Deployment", fullname), "spec", "selector", "matchLabels").(map[string]any)
		require.NotEqual(t, sel["app.kubernetes.io/name"], labels["app.kubernetes.io/name"])
	})
	t.Run("notes", func(t *testing.T) {
		require.Contains(t, r.Notes, "Job "+fullname+"-backfill-1 runs `philotes-worker backfill --tables public.orders,sales.customers`")
		require.Contains(t, r.Notes, "kubectl -n data logs -f job/"+fullname+"-backfill-1")
	})

	names := []struct{ name, values, want string }{
		{"a string id", "id: orders-2024-06}\n", fullname + "-backfill-orders-2024-06"},
		{"a number id", "id: 7}\n", fullname + "-backfill-7"},
		{"a long full name keeps the id", "id: abcdefghij0123456789}\nfullnameOverride: " + strings.Repeat("x", 63) + "\n",
			strings.Repeat("x", 33) + "-backfill-abcdefghij0123456789"},
	}
	for _, tc := range names {
		t.Run("name: "+tc.name, func(t *testing.T) {
			r := mustRender(t, workerChart, s3Lake+"database: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders], "+tc.values)
			require.Len(t, r.find("Job"), 1)
			require.Equal(t, tc.want, name(r.find("Job")[0]))
			require.LessOrEqual(t, len(tc.want), 63)
		})
	}
	t.Run("ttl and backoffLimit, 0 included, from --set", func(t *testing.T) {
		r := mustRenderValues(t, workerChart, mergeMaps(s3LakeMap(), map[string]any{
			"database":    map[string]any{"existingSecret": "db"},
			"backfillJob": map[string]any{"enabled": true, "tables": []any{"public.orders"}, "id": int64(3), "ttlSecondsAfterFinished": int64(0), "backoffLimit": int64(0)},
		}))
		job := r.one(t, "Job", fullname+"-backfill-3")
		require.Equal(t, float64(0), get(t, job, "spec", "ttlSecondsAfterFinished"))
		require.Equal(t, float64(0), get(t, job, "spec", "backoffLimit"))
	})
	t.Run("through the umbrella", func(t *testing.T) {
		r := mustRender(t, umbrellaChart, "philotes-worker:\n  worker: {iceberg: {warehouse: "+s3Warehouse+"}}\n  database: {existingSecret: db}\n  backfillJob: {enabled: true, tables: [public.orders]}\n")
		c := get(t, r.one(t, "Job", fullname+"-backfill-1"), "spec", "template", "spec", "containers", 0)
		require.Equal(t, []any{"backfill", "--tables", "public.orders"}, get(t, c, "args"))
		require.Contains(t, r.Notes, "job/"+fullname+"-backfill-1")
	})
}

// TestBackfillRefusals checks that backfill values that cannot work are refused: by the chart with a message
// naming the value and the fix, or by the values schema.
func TestBackfillRefusals(t *testing.T) {
	cases := []refusal{
		{"job without tables", "database: {sourceUrl: x}\nbackfillJob: {enabled: true}\n",
			[]string{"backfillJob.enabled is true but backfillJob.tables is empty", "backfillJob.tables: [public.orders]"}},
		{"job with an empty table list", "database: {sourceUrl: x}\nbackfillJob: {enabled: true, tables: []}\n",
			[]string{"backfillJob.tables is empty"}},
		{"job without the source database", mergeValues(s3Lake, "database: {sourceUrl: '', bufferUrl: 'postgres://u@b/buf'}\nworker: {noReader: true}\nbackfillJob: {enabled: true, tables: [public.orders]}\n"),
			[]string{"backfillJob.enabled needs the source database", "database.sourceUrl", "database.existingSecret"}},
		{"schema: unknown mode", "worker: {backfill: {mode: sometimes}}\n", []string{"mode"}},
		{"schema: mode true", "worker: {backfill: {mode: true}}\n", []string{"mode"}},
		{"schema: negative workers", "worker: {backfill: {workers: -1}}\n", []string{"workers"}},
		{"schema: too many workers", "worker: {backfill: {workers: 65}}\n", []string{"workers"}},
		{"schema: negative chunkRows", "worker: {backfill: {chunkRows: -10000}}\n", []string{"chunkRows"}},
		{"schema: tiny chunkRows", "worker: {backfill: {chunkRows: 99}}\n", []string{"chunkRows"}},
		{"schema: huge chunkRows", "worker: {backfill: {chunkRows: 1000001}}\n", []string{"chunkRows"}},
		{"schema: negative maxRowsPerSecond", "worker: {backfill: {maxRowsPerSecond: -1}}\n", []string{"maxRowsPerSecond"}},
		{"schema: maxRowsPerSecond as a string", "worker: {backfill: {maxRowsPerSecond: \"1k\"}}\n", []string{"maxRowsPerSecond"}},
		{"schema: unknown key under worker.backfill", "worker: {backfill: {chunks: 10}}\n", []string{"chunks"}},
		{"schema: negative backoffLimit", "backfillJob: {backoffLimit: -1}\n", []string{"backoffLimit"}},
		{"schema: negative ttl", "backfillJob: {ttlSecondsAfterFinished: -1}\n", []string{"ttlSecondsAfterFinished"}},
		{"schema: id not a DNS label", "backfillJob: {id: Orders_1}\n", []string{"id"}},
		{"schema: id too long", "backfillJob: {id: " + strings.Repeat("a", 21) + "}\n", []string{"id"}},
		{"schema: negative id", "backfillJob: {id: -1}\n", []string{"id"}},
		{"schema: table without schema", "backfillJob: {tables: [orders]}\n", []string{"tables"}},
		{"schema: unknown key under backfillJob", "backfillJob: {table: [public.orders]}\n", []string{"table"}},
		{"schema: backfill threshold not a number", kedaWith("  prometheus:\n    backfillTrigger: {threshold: 1M}\n"), []string{"threshold"}},
	}
	requireRefused(t, "", cases)
}

// TestBackfillWithoutReadersIsWarned checks the install notes' warning for automatic backfills that no replica
// reads.
func TestBackfillWithoutReadersIsWarned(t *testing.T) {
	const warning = "no replica reads its chunks"
	cases := []struct {
		name, values string
		warn         bool
	}{
		{"defaults", "", false},
		{"auto with 0 workers", "worker: {backfill: {workers: 0}}\n", true},
		{"off with 0 workers", "worker: {backfill: {mode: \"off\", workers: 0}}\n", false},
		{"0 workers without a reader", "database: {existingSecret: db}\nworker: {noReader: true, backfill: {workers: 0}}\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, workerChart, tc.values)
			if tc.warn {
				require.Contains(t, r.Notes, warning)
			} else {
				require.NotContains(t, r.Notes, warning)
			}
		})
	}
}
