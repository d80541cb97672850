package charts

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// pgTrigger is a complete PostgreSQL trigger configuration (the wake-up path), for scenarios that need one.
const pgTrigger = `
  postgresql:
    enabled: true
    host: pg.example
    database: app
    user: keda
    password: s3cret
`

// kedaWith returns values enabling KEDA with extra YAML lines under keda:, and the s3:// warehouse that KEDA's
// several pods need (combine with other worker values through mergeValues).
func kedaWith(lines string) string {
	return s3Lake + "keda:\n  enabled: true\n" + lines
}

// TestScenariosRenderValid checks that every scenario renders and that every object in it passes strict
// validation against the Kubernetes 1.37 and KEDA 2.21 schemas.
func TestScenariosRenderValid(t *testing.T) {
	scenarios := []struct{ name, values string }{
		{"defaults", ``},
		{"keda defaults", kedaWith(``)},
		{"keda with postgresql", kedaWith(pgTrigger)},
		{"scale to zero with postgresql", kedaWith("  minReplicaCount: 0\n" + pgTrigger)},
		{"idle mode", kedaWith("  minReplicaCount: 2\n  idleReplicaCount: 0\n" + pgTrigger)},
		{"all triggers", kedaWith(`
  prometheus:
    throughputTrigger: {enabled: true}
  cpu: {enabled: true}
  memory: {enabled: true, metricType: AverageValue, value: "500Mi"}
` + pgTrigger)},
		{"fallback", kedaWith("  fallback: {enabled: true, failureThreshold: 5, replicas: 4, behavior: currentReplicasIfHigher}\n")},
		{"prometheus auth bearer", kedaWith("  prometheus:\n    authentication: {modes: [bearer], existingSecret: prom}\n")},
		{"prometheus auth basic tls custom", kedaWith("  prometheus:\n    authentication: {modes: [basic, tls, custom], existingSecret: prom}\n")},
		{"prometheus options", kedaWith("  prometheus:\n    unsafeSsl: true\n    timeout: 3s\n    namespace: tenant\n    customHeaders: {X-Scope-OrgID: t1, X-A: b}\n")},
		{"advanced and pause", kedaWith(`
  initialCooldownPeriod: 0
  restoreToOriginalReplicaCount: true
  paused: true
  pausedReplicas: 0
  pausedScaleIn: true
  pausedScaleOut: true
  annotations: {team: data}
  scalingModifiers: {formula: "max(lag, buffer)", target: "1", activationTarget: "0"}
`)},
		{"extra triggers", kedaWith(`
  prometheus: {enabled: false}
  extraTriggers:
    - type: cron
      name: office-hours
      metadata: {timezone: Europe/Berlin, start: "0 8 * * 1-5", end: "0 18 * * 1-5", desiredReplicas: "2"}
`)},
		{"scaled job", s3Lake + "keda:\n  scaledJob: {enabled: true, minReplicaCount: 0, activeDeadlineSeconds: 3600}\n"},
		{"scaled job with auth", s3Lake + "keda:\n  prometheus:\n    authentication: {modes: [bearer], existingSecret: prom}\n  scaledJob: {enabled: true}\n"},
		{"plain hpa", s3Lake + "autoscaling: {enabled: true, targetMemoryUtilizationPercentage: 70, behavior: {scaleDown: {stabilizationWindowSeconds: 600}}}\n"},
		{"service monitor", "metrics: {serviceMonitor: {enabled: true, labels: {release: prom}, relabelings: [{action: labeldrop, regex: foo}]}}\n"},
		{"pod monitor", "metrics: {podMonitor: {enabled: true}}\n"},
		{"network policy", "networkPolicy: {enabled: true, metricsFrom: [{namespaceSelector: {matchLabels: {name: monitoring}}}], egress: [{}]}\n"},
		{"pdb minAvailable", "podDisruptionBudget: {maxUnavailable: null, minAvailable: 1}\n"},
		{"existing secrets and options", `
database: {existingSecret: db}
worker:
  noReader: true
  tables: [public.orders, public.users]
  extraArgs: [--processors, "4"]
  extraEnv: [{name: AWS_REGION, value: eu-central-1}]
  extraEnvFrom: [{secretRef: {name: s3}}]
imagePullSecrets: [{name: regcred}]
serviceAccount: {annotations: {eks.amazonaws.com/role-arn: arn}}
nodeSelector: {disk: ssd}
tolerations: [{key: k, operator: Exists}]
priorityClassName: high
`},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			mustRender(t, workerChart, sc.values)
		})
	}
}

// TestZeroAndFalseAreNeverSwallowed checks that 0 and false reach the objects instead of being replaced by
// defaults.
func TestZeroAndFalseAreNeverSwallowed(t *testing.T) {
	t.Run("minReplicaCount 0 renders 0", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith("  minReplicaCount: 0\n"+pgTrigger))
		require.Equal(t, float64(0), get(t, r.one(t, "ScaledObject", fullname), "spec", "minReplicaCount"))
	})
	t.Run("minReplicaCount 0 from --set (int64) renders 0", func(t *testing.T) {
		r := mustRenderValues(t, workerChart, mergeMaps(s3LakeMap(), map[string]any{"keda": map[string]any{
			"enabled": true, "minReplicaCount": int64(0),
			"postgresql": map[string]any{"enabled": true, "host": "h", "database": "d", "user": "u", "password": "p"},
		}}))
		require.Equal(t, float64(0), get(t, r.one(t, "ScaledObject", fullname), "spec", "minReplicaCount"))
	})
	t.Run("cooldownPeriod and initialCooldownPeriod 0 render 0", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith("  cooldownPeriod: 0\n  initialCooldownPeriod: 0\n"))
		so := r.one(t, "ScaledObject", fullname)
		require.Equal(t, float64(0), get(t, so, "spec", "cooldownPeriod"))
		require.Equal(t, float64(0), get(t, so, "spec", "initialCooldownPeriod"))
	})
	t.Run("pausedReplicas 0 renders the annotation 0", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith("  pausedReplicas: 0\n"))
		require.Equal(t, "0", get(t, r.one(t, "ScaledObject", fullname), "metadata", "annotations", "autoscaling.keda.sh/paused-replicas"))
	})
	t.Run("replicaCount 0 renders 0 without an autoscaler", func(t *testing.T) {
		r := mustRender(t, workerChart, "replicaCount: 0\n")
		require.Equal(t, float64(0), get(t, r.one(t, "Deployment", fullname), "spec", "replicas"))
	})
	t.Run("worker.processors 0 renders \"0\"", func(t *testing.T) {
		r := mustRender(t, workerChart, "worker: {processors: 0}\n")
		require.Equal(t, "0", get(t, r.one(t, "ConfigMap", fullname), "data", "PHILOTES_PROCESSORS"))
	})
	t.Run("activationThreshold 0 renders \"0\"", func(t *testing.T) {
		// The buffer trigger: the lag trigger's thresholds must exceed the commit interval (at least 1 s).
		r := mustRender(t, workerChart, kedaWith("  prometheus:\n    bufferTrigger: {activationThreshold: 0}\n"))
		require.Equal(t, "0", metadata(t, triggers(t, r)["buffer"])["activationThreshold"])
	})
	t.Run("worker.backfill.workers 0 renders \"0\"", func(t *testing.T) {
		r := mustRender(t, workerChart, "worker: {backfill: {workers: 0, mode: \"off\"}}\n")
		require.Equal(t, "0", get(t, r.one(t, "ConfigMap", fullname), "data", "PHILOTES_BACKFILL_WORKERS"))
	})
	t.Run("maintenanceIntervalSeconds 0 renders \"0s\" (maintenance off)", func(t *testing.T) {
		r := mustRender(t, workerChart, "worker: {iceberg: {maintenanceIntervalSeconds: 0}}\n")
		require.Equal(t, "0s", get(t, r.one(t, "ConfigMap", fullname), "data", "PHILOTES_ICEBERG_MAINTENANCE_INTERVAL"))
	})
	t.Run("ignoreNullValues false renders \"false\"", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith("  prometheus:\n    ignoreNullValues: false\n"))
		require.Equal(t, "false", metadata(t, triggers(t, r)["lag"])["ignoreNullValues"])
	})
}

// TestIdleReplicaCountRendersOnlyWhenSet checks that idleReplicaCount is absent by default and rendered (0
// included) when set below the minimum.
func TestIdleReplicaCountRendersOnlyWhenSet(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith(""))
	require.False(t, has(r.one(t, "ScaledObject", fullname), "spec", "idleReplicaCount"))

	r = mustRender(t, workerChart, kedaWith("  minReplicas: 2\n  idleReplicaCount: 0\n"+pgTrigger))
	require.Equal(t, float64(0), get(t, r.one(t, "ScaledObject", fullname), "spec", "idleReplicaCount"))
	require.Equal(t, float64(2), get(t, r.one(t, "ScaledObject", fullname), "spec", "minReplicaCount"))
}

// TestRefusedWithAClearMessage checks that impossible configurations fail at render time with a message naming
// the value and the fix.
func TestRefusedWithAClearMessage(t *testing.T) {
	cases := []refusal{
		{"no trigger enabled", kedaWith("  prometheus: {enabled: false}\n"),
			[]string{"no trigger is enabled", "keda.postgresql"}},
		{"all prometheus triggers disabled", kedaWith("  prometheus:\n    lagTrigger: {enabled: false}\n    bufferTrigger: {enabled: false}\n    backfillTrigger: {enabled: false}\n"),
			[]string{"no trigger is enabled"}},
		{"cpu/memory only with a minimum of 0", kedaWith("  minReplicaCount: 0\n  prometheus: {enabled: false}\n  cpu: {enabled: true}\n  memory: {enabled: true}\n"),
			[]string{"keda.minReplicaCount is 0 but only cpu/memory triggers", "keda.postgresql"}},
		{"postgresql without host", kedaWith("  postgresql: {enabled: true, database: d, user: u, password: p}\n"),
			[]string{"keda.postgresql.host is empty"}},
		{"postgresql without database", kedaWith("  postgresql: {enabled: true, host: h, user: u, password: p}\n"),
			[]string{"keda.postgresql.database is empty"}},
		{"postgresql without user", kedaWith("  postgresql: {enabled: true, host: h, database: d, password: p}\n"),
			[]string{"keda.postgresql.user is empty"}},
		{"postgresql without password or existingSecret", kedaWith("  postgresql: {enabled: true, host: h, database: d, user: u}\n"),
			[]string{"keda.postgresql.password", "keda.postgresql.existingSecret"}},
		{"idle equal to min", kedaWith("  minReplicaCount: 0\n  idleReplicaCount: 0\n" + pgTrigger),
			[]string{"keda.idleReplicaCount (0) must be less than keda.minReplicaCount (0)", "leave keda.idleReplicaCount null"}},
		{"idle above min", kedaWith("  minReplicas: 1\n  idleReplicaCount: 2\n"),
			[]string{"keda.idleReplicaCount (2) must be less than keda.minReplicas (1)"}},
		{"min greater than max", kedaWith("  minReplicas: 5\n  maxReplicas: 3\n"),
			[]string{"keda.minReplicas (5) is greater than keda.maxReplicas (3)"}},
		{"minReplicaCount greater than max", kedaWith("  minReplicaCount: 11\n"),
			[]string{"keda.minReplicaCount (11) is greater than keda.maxReplicas (10)"}},
		{"fallback with cpu only", kedaWith("  prometheus: {enabled: false}\n  cpu: {enabled: true}\n  fallback: {enabled: true}\n"),
			[]string{"keda.fallback.enabled needs at least one trigger that is not cpu or memory"}},
		{"cpu trigger without cpu request", "resources: {requests: {cpu: null}}\n" + kedaWith("  cpu: {enabled: true}\n"),
			[]string{"keda.cpu.enabled needs resources.requests.cpu"}},
		{"prometheus auth without secret", kedaWith("  prometheus:\n    authentication: {modes: [bearer]}\n"),
			[]string{"keda.prometheus.authentication.existingSecret is empty"}},
		{"bearer and basic together", kedaWith("  prometheus:\n    authentication: {modes: [bearer, basic], existingSecret: s}\n"),
			[]string{"bearer and basic are exclusive"}},
		{"scaling modifiers without target", kedaWith("  scalingModifiers: {formula: \"lag + buffer\"}\n"),
			[]string{"keda.scalingModifiers.target is empty"}},
		{"scaling modifiers with an unnamed extra trigger", kedaWith("  scalingModifiers: {formula: \"lag + cron\", target: \"1\"}\n  extraTriggers: [{type: cron, metadata: {timezone: UTC, start: \"0 8 * * *\", end: \"0 9 * * *\", desiredReplicas: \"1\"}}]\n"),
			[]string{"keda.extraTriggers[0] has no name"}},
		{"scaled job without trigger", "keda:\n  prometheus: {enabled: false}\n  scaledJob: {enabled: true}\n",
			[]string{"keda.scaledJob.enabled needs a trigger"}},
		{"scaled job min greater than max", "worker: {iceberg: {warehouse: 's3://lake/wh'}}\nkeda:\n  scaledJob: {enabled: true, minReplicaCount: 6, maxReplicaCount: 5}\n",
			[]string{"keda.scaledJob.minReplicaCount (6) is greater than keda.scaledJob.maxReplicaCount (5)"}},
		{"grace period not above shutdown timeout", "terminationGracePeriodSeconds: 20\n",
			[]string{"terminationGracePeriodSeconds (20) must be greater than worker.shutdownTimeoutSeconds (25)"}},
		{"pdb with both bounds", "podDisruptionBudget: {minAvailable: 1}\n",
			[]string{"set only one of minAvailable and maxUnavailable"}},
		{"both monitors", "metrics: {serviceMonitor: {enabled: true}, podMonitor: {enabled: true}}\n",
			[]string{"Enable only one"}},
		{"hpa without metrics", "autoscaling: {enabled: true, targetCPUUtilizationPercentage: null}\n",
			[]string{"autoscaling.enabled is true but no metric is set"}},
		{"hpa min greater than max", "autoscaling: {enabled: true, minReplicas: 6, maxReplicas: 5}\n",
			[]string{"autoscaling.minReplicas (6) is greater than autoscaling.maxReplicas (5)"}},
		{"schema: string for an integer", kedaWith("  minReplicaCount: \"zero\"\n"),
			[]string{"minReplicaCount"}},
		{"schema: negative replicas", kedaWith("  maxReplicas: -1\n"),
			[]string{"maxReplicas"}},
		{"schema: unknown key under keda", kedaWith("  minReplica: 1\n"),
			[]string{"minReplica"}},
		{"schema: unknown top-level key", "kedaa: {enabled: true}\n",
			[]string{"kedaa"}},
		{"schema: threshold not a number", kedaWith("  prometheus:\n    lagTrigger: {threshold: \"5m\"}\n"),
			[]string{"threshold"}},
		{"schema: unknown sslMode", kedaWith("  postgresql: {sslMode: off}\n"),
			[]string{"sslMode"}},
		{"schema: unknown auth mode", kedaWith("  prometheus:\n    authentication: {modes: [oauth2]}\n"),
			[]string{"modes"}},
	}
	requireRefused(t, "", cases)
}

// TestPrometheusTriggersHaveNoMetricName checks that no Prometheus trigger carries metricName (removed in KEDA
// 2.12) even though each trigger's values keep a metricName key: the chart uses it only to build the default query.
func TestPrometheusTriggersHaveNoMetricName(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith("  prometheus:\n    throughputTrigger: {enabled: true}\n"))
	tr := triggers(t, r)
	require.Len(t, tr, 4)
	for n, trig := range tr {
		require.NotContains(t, metadata(t, trig), "metricName", n)
		require.NotContains(t, trig, "metricName", n)
	}
}

// TestDefaultPromQLIsScopedToTheRelease checks that the default queries match only this release's namespace and
// pods, so a second release in the same cluster does not scale on the first one's metrics.
func TestDefaultPromQLIsScopedToTheRelease(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith("  prometheus:\n    throughputTrigger: {enabled: true}\n"))
	other := mustRender(t, workerChart, "fullnameOverride: other-worker\n"+kedaWith("  prometheus:\n    throughputTrigger: {enabled: true}\n"))
	scope := `namespace="data",pod=~"cdc-philotes-worker-[a-z0-9]+-[a-z0-9]+"`
	want := map[string]string{
		"lag":        "max(philotes_cdc_lag_seconds{" + scope + "})",
		"buffer":     "max(philotes_buffer_depth{" + scope + "})",
		"backfill":   "max(philotes_backfill_rows_remaining{" + scope + "})",
		"throughput": "sum(rate(philotes_buffer_events_processed_total{" + scope + "}[5m]))",
	}
	mine, theirs := triggers(t, r), triggers(t, other)
	for n, q := range want {
		require.Equal(t, q, metadata(t, mine[n])["query"], n)
		require.NotEqual(t, metadata(t, mine[n])["query"], metadata(t, theirs[n])["query"], n)
		require.Contains(t, metadata(t, theirs[n])["query"], `pod=~"other-worker-[a-z0-9]+-[a-z0-9]+"`)
	}
}

// TestPromQLStaysOverridable checks that scope labels are configurable and that a query override is used verbatim
// after tpl.
func TestPromQLStaysOverridable(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith(`
  prometheus:
    scope: {namespaceLabel: kubernetes_namespace, podLabel: "", extraMatchers: 'cluster="eu-1"'}
    bufferTrigger:
      query: 'max(philotes_buffer_depth{job="{{ .Release.Name }}-custom"})'
`))
	tr := triggers(t, r)
	require.Equal(t, `max(philotes_cdc_lag_seconds{kubernetes_namespace="data",cluster="eu-1"})`, metadata(t, tr["lag"])["query"])
	require.Equal(t, `max(philotes_buffer_depth{job="cdc-custom"})`, metadata(t, tr["buffer"])["query"])
}

// TestNumbersRenderAsPlainDecimals checks that numbers from values files (float64) and --set (int64) render as
// the plain strings and integers KEDA wants, never 1e+06.
func TestNumbersRenderAsPlainDecimals(t *testing.T) {
	fromFile := kedaWith(`
  maxReplicas: 1000000
  pollingInterval: 3000000
  prometheus:
    lagTrigger: {threshold: 1000000, activationThreshold: 2500000}
    bufferTrigger: {threshold: 0.5}
  postgresql:
    enabled: true
    host: h
    database: d
    user: u
    password: 1234567
    port: 5432
    targetQueryValue: 10000000
    activationTargetQueryValue: 100000
`)
	fromSet := mergeMaps(s3LakeMap(), map[string]any{"keda": map[string]any{
		"enabled": true, "maxReplicas": int64(1000000),
		"prometheus": map[string]any{"lagTrigger": map[string]any{"threshold": int64(1000000)}},
	}})
	for name, r := range map[string]*Rendered{
		"values file": mustRender(t, workerChart, fromFile),
		"--set":       mustRenderValues(t, workerChart, fromSet),
	} {
		t.Run(name, func(t *testing.T) {
			so := r.one(t, "ScaledObject", fullname)
			require.Equal(t, float64(1000000), get(t, so, "spec", "maxReplicaCount"))
			require.Equal(t, "1000000", metadata(t, triggers(t, r)["lag"])["threshold"])
			for _, trig := range triggers(t, r) {
				for k, v := range metadata(t, trig) {
					require.NotRegexp(t, `^[0-9.]+e[+-][0-9]+$`, v, k)
				}
			}
		})
	}
	r := mustRender(t, workerChart, fromFile)
	tr := triggers(t, r)
	require.Equal(t, "2500000", metadata(t, tr["lag"])["activationThreshold"])
	require.Equal(t, "0.5", metadata(t, tr["buffer"])["threshold"])
	pg := metadata(t, tr["postgresql"])
	require.Equal(t, "10000000", pg["targetQueryValue"])
	require.Equal(t, "100000", pg["activationTargetQueryValue"])
	require.Equal(t, "5432", pg["port"])
	require.Equal(t, float64(3000000), get(t, r.one(t, "ScaledObject", fullname), "spec", "pollingInterval"))
	secret := r.one(t, "Secret", fullname+"-keda-postgres")
	pw, err := base64.StdEncoding.DecodeString(get(t, secret, "data", "password").(string))
	require.NoError(t, err)
	require.Equal(t, "1234567", string(pw), "a numeric password is stored as its digits")
}

// TestPostgresQueryUsesTheConfiguredSlot checks that the default PostgreSQL query reads the worker's slot.
func TestPostgresQueryUsesTheConfiguredSlot(t *testing.T) {
	for _, slot := range []string{"philotes_cdc", "orders_slot"} {
		t.Run(slot, func(t *testing.T) {
			r := mustRender(t, workerChart, mergeValues("worker: {slot: "+slot+"}\n", kedaWith(pgTrigger)))
			q := metadata(t, triggers(t, r)["postgresql"])["query"]
			require.Equal(t, "SELECT COALESCE((SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = '"+slot+"'), "+metadata(t, triggers(t, r)["postgresql"])["targetQueryValue"]+")", q)
			require.Equal(t, slot, get(t, r.one(t, "ConfigMap", fullname), "data", "PHILOTES_SLOT"))
		})
	}
}

// TestPostgresTriggerMetadataIsComplete checks that the PostgreSQL trigger carries host, port, dbName, userName and
// the sslmode KEDA requires, and no password.
func TestPostgresTriggerMetadataIsComplete(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith(pgTrigger))
	pg := triggers(t, r)["postgresql"]
	md := metadata(t, pg)
	require.Equal(t, map[string]string{
		"host": "pg.example", "port": "5432", "dbName": "app", "userName": "keda", "sslmode": "require",
		"query": md["query"], "targetQueryValue": "1000000", "activationTargetQueryValue": "0",
	}, md)
	require.Equal(t, fullname+"-keda-postgres", get(t, pg, "authenticationRef", "name"))
}

// TestPostgresCredentialsOnlyThroughTriggerAuthentication checks that the password reaches KEDA only via a
// TriggerAuthentication, and that the chart renders a Secret for it only when no existingSecret is given.
func TestPostgresCredentialsOnlyThroughTriggerAuthentication(t *testing.T) {
	t.Run("password given: chart Secret", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith(pgTrigger))
		ta := r.one(t, "TriggerAuthentication", fullname+"-keda-postgres")
		require.Equal(t, []any{map[string]any{"parameter": "password", "name": fullname + "-keda-postgres", "key": "password"}},
			get(t, ta, "spec", "secretTargetRef"))
		s := r.one(t, "Secret", fullname+"-keda-postgres")
		require.Equal(t, base64.StdEncoding.EncodeToString([]byte("s3cret")), get(t, s, "data", "password"))
		so := r.one(t, "ScaledObject", fullname)
		require.NotContains(t, fmt.Sprint(so), "s3cret")
	})
	t.Run("existingSecret: no chart Secret", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith(`
  postgresql: {enabled: true, host: h, database: d, user: u, existingSecret: pg-creds, passwordKey: pw}
`))
		ta := r.one(t, "TriggerAuthentication", fullname+"-keda-postgres")
		require.Equal(t, []any{map[string]any{"parameter": "password", "name": "pg-creds", "key": "pw"}},
			get(t, ta, "spec", "secretTargetRef"))
		for _, s := range r.find("Secret") {
			require.NotEqual(t, fullname+"-keda-postgres", name(s))
		}
	})
	t.Run("postgresql off: no TriggerAuthentication", func(t *testing.T) {
		r := mustRender(t, workerChart, kedaWith(""))
		require.Empty(t, r.find("TriggerAuthentication"))
	})
}

// TestHPAAndReplicasFollowTheOwner checks that the plain HPA renders only when autoscaling.enabled and KEDA is off,
// and that the Deployment has no spec.replicas whenever an autoscaler owns it.
func TestHPAAndReplicasFollowTheOwner(t *testing.T) {
	cases := []struct {
		name, values            string
		hpa, scaledObject, reps bool
	}{
		{"no autoscaler", "", false, false, true},
		{"plain hpa", s3Lake + "autoscaling: {enabled: true}\n", true, false, false},
		{"keda", s3Lake + "keda: {enabled: true}\n", false, true, false},
		{"both: keda wins", s3Lake + "autoscaling: {enabled: true}\nkeda: {enabled: true}\n", false, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, workerChart, tc.values)
			require.Equal(t, tc.hpa, len(r.find("HorizontalPodAutoscaler")) == 1)
			require.Equal(t, tc.scaledObject, len(r.find("ScaledObject")) == 1)
			require.Equal(t, tc.reps, has(r.one(t, "Deployment", fullname), "spec", "replicas"))
		})
	}
	r := mustRender(t, workerChart, s3Lake+"autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 7, targetMemoryUtilizationPercentage: 75}\n")
	hpa := r.one(t, "HorizontalPodAutoscaler", fullname)
	require.Equal(t, float64(2), get(t, hpa, "spec", "minReplicas"))
	require.Equal(t, float64(7), get(t, hpa, "spec", "maxReplicas"))
	require.Len(t, get(t, hpa, "spec", "metrics"), 2)
	require.Equal(t, fullname, get(t, hpa, "spec", "scaleTargetRef", "name"))
}

// TestScaleToZeroMustBeAbleToWake checks that the chart refuses a ScaledObject that can reach zero replicas
// but has no trigger that works without worker pods (helm template and GitOps tools never show NOTES), and
// renders the others.
func TestScaleToZeroMustBeAbleToWake(t *testing.T) {
	const refusal = "can scale to zero (keda.minReplicaCount or keda.idleReplicaCount is 0) but no trigger can wake it"
	cases := []struct {
		name, values string
		refused      bool
	}{
		{"prometheus only, min 0", kedaWith("  minReplicaCount: 0\n"), true},
		{"prometheus only, idle 0", kedaWith("  minReplicas: 1\n  idleReplicaCount: 0\n"), true},
		{"postgresql wakes, min 0", kedaWith("  minReplicaCount: 0\n" + pgTrigger), false},
		{"postgresql wakes, idle 0", kedaWith("  minReplicas: 2\n  idleReplicaCount: 0\n" + pgTrigger), false},
		{"min 1 never sleeps", kedaWith(""), false},
		{"overridden backfill query may wake, min 0", kedaWith("  minReplicaCount: 0\n  prometheus:\n    backfillTrigger: {query: 'max(other_metric)'}\n"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.refused {
				err := renderErr(t, workerChart, tc.values)
				require.Contains(t, err.Error(), refusal)
				require.Contains(t, err.Error(), "Enable keda.postgresql")
				return
			}
			mustRender(t, workerChart, tc.values)
		})
	}
}

// TestFallbackMakesPrometheusReportMissingMetrics checks that fallback turns ignoreNullValues off on every
// Prometheus trigger (or fallback could never engage), and that an explicit setting wins.
func TestFallbackMakesPrometheusReportMissingMetrics(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith("  fallback: {enabled: true, failureThreshold: 3, replicas: 0}\n  prometheus:\n    throughputTrigger: {enabled: true}\n"+pgTrigger))
	so := r.one(t, "ScaledObject", fullname)
	require.Equal(t, map[string]any{"failureThreshold": float64(3), "replicas": float64(0), "behavior": "static"}, get(t, so, "spec", "fallback"))
	for n, trig := range triggers(t, r) {
		if trig["type"] == "prometheus" {
			require.Equal(t, "false", metadata(t, trig)["ignoreNullValues"], n)
		} else {
			require.NotContains(t, metadata(t, trig), "ignoreNullValues", n)
		}
	}

	r = mustRender(t, workerChart, kedaWith(""))
	require.False(t, has(r.one(t, "ScaledObject", fullname), "spec", "fallback"))
	require.NotContains(t, metadata(t, triggers(t, r)["lag"]), "ignoreNullValues")

	r = mustRender(t, workerChart, kedaWith("  fallback: {enabled: true}\n  prometheus: {ignoreNullValues: true}\n"))
	require.Equal(t, "true", metadata(t, triggers(t, r)["lag"])["ignoreNullValues"])
}

// TestDefaultsMatchTheWorkerMetrics checks the default triggers against the worker contract: lag and depth are the
// same on every replica (max, never sum), throughput is per replica (sum of rates), thresholds as documented.
func TestDefaultsMatchTheWorkerMetrics(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith("  prometheus:\n    throughputTrigger: {enabled: true}\n"))
	tr := triggers(t, r)
	lag, buf, tp := metadata(t, tr["lag"]), metadata(t, tr["buffer"]), metadata(t, tr["throughput"])
	bf := metadata(t, tr["backfill"])
	require.True(t, strings.HasPrefix(lag["query"], "max(philotes_cdc_lag_seconds{"))
	require.True(t, strings.HasPrefix(buf["query"], "max(philotes_buffer_depth{"))
	require.True(t, strings.HasPrefix(bf["query"], "max(philotes_backfill_rows_remaining{"))
	require.True(t, strings.HasPrefix(tp["query"], "sum(rate(philotes_buffer_events_processed_total{"))
	for _, q := range []string{lag["query"], buf["query"], bf["query"]} {
		require.NotContains(t, q, "sum(")
	}
	require.Equal(t, []string{"300", "60"}, []string{lag["threshold"], lag["activationThreshold"]})
	require.Equal(t, []string{"8000", "1000"}, []string{buf["threshold"], buf["activationThreshold"]})
	require.Equal(t, []string{"1000000", "0"}, []string{bf["threshold"], bf["activationThreshold"]}, "any running backfill activates")
	require.Equal(t, "1000", tp["threshold"])
	require.NotContains(t, tp, "activationThreshold")
	for _, trig := range tr {
		require.NotContains(t, trig, "metricType", "Prometheus triggers use KEDA's AverageValue default")
	}
}

// TestPrometheusAuthenticationModes checks the TriggerAuthentication and authModes for each mode.
func TestPrometheusAuthenticationModes(t *testing.T) {
	cases := []struct {
		modes  string
		params []string
	}{
		{"[bearer]", []string{"bearerToken"}},
		{"[basic]", []string{"username", "password"}},
		{"[tls]", []string{"cert", "key", "ca"}},
		{"[custom]", []string{"customAuthHeader", "customAuthValue"}},
		{"[basic, tls]", []string{"username", "password", "cert", "key", "ca"}},
	}
	for _, tc := range cases {
		t.Run(tc.modes, func(t *testing.T) {
			r := mustRender(t, workerChart, kedaWith("  prometheus:\n    authentication: {modes: "+tc.modes+", existingSecret: prom}\n"))
			ta := r.one(t, "TriggerAuthentication", fullname+"-keda-prometheus")
			var params []string
			for _, ref := range get(t, ta, "spec", "secretTargetRef").([]any) {
				m := ref.(map[string]any)
				require.Equal(t, "prom", m["name"])
				params = append(params, m["parameter"].(string))
			}
			require.Equal(t, tc.params, params)
			for _, trig := range triggers(t, r) {
				require.Equal(t, strings.ReplaceAll(strings.Trim(tc.modes, "[]"), " ", ""), metadata(t, trig)["authModes"])
				require.Equal(t, fullname+"-keda-prometheus", get(t, trig, "authenticationRef", "name"))
			}
		})
	}
}

// TestPrometheusConnectionOptions checks unsafeSsl, timeout, customHeaders and the tenant namespace.
func TestPrometheusConnectionOptions(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith("  prometheus:\n    unsafeSsl: true\n    timeout: 2500\n    namespace: tenant-a\n    customHeaders: {X-Scope-OrgID: t1, Accept: text/plain}\n"))
	md := metadata(t, triggers(t, r)["lag"])
	require.Equal(t, "true", md["unsafeSsl"])
	require.Equal(t, "2500", md["timeout"])
	require.Equal(t, "tenant-a", md["namespace"])
	require.Equal(t, "Accept=text/plain,X-Scope-OrgID=t1", md["customHeaders"])
}

// TestAdvancedScaledObjectOptions checks initialCooldownPeriod, restoreToOriginalReplicaCount, scalingModifiers,
// the HPA behavior pass-through and the pause annotations.
func TestAdvancedScaledObjectOptions(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith(`
  initialCooldownPeriod: 600
  restoreToOriginalReplicaCount: true
  paused: true
  pausedReplicas: 3
  pausedScaleIn: true
  pausedScaleOut: true
  scalingModifiers: {formula: "max(lag, buffer)", target: 2, activationTarget: "0", metricType: Value}
`))
	so := r.one(t, "ScaledObject", fullname)
	require.Equal(t, float64(600), get(t, so, "spec", "initialCooldownPeriod"))
	require.Equal(t, true, get(t, so, "spec", "advanced", "restoreToOriginalReplicaCount"))
	require.Equal(t, map[string]any{"formula": "max(lag, buffer)", "target": "2", "activationTarget": "0", "metricType": "Value"},
		get(t, so, "spec", "advanced", "scalingModifiers"))
	require.Equal(t, float64(300), get(t, so, "spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown", "stabilizationWindowSeconds"))
	require.Equal(t, map[string]any{
		"autoscaling.keda.sh/paused": "true", "autoscaling.keda.sh/paused-replicas": "3",
		"autoscaling.keda.sh/paused-scale-in": "true", "autoscaling.keda.sh/paused-scale-out": "true",
	}, get(t, so, "metadata", "annotations"))

	r = mustRender(t, workerChart, kedaWith(""))
	so = r.one(t, "ScaledObject", fullname)
	require.False(t, has(so, "metadata", "annotations"))
	require.False(t, has(so, "spec", "advanced", "scalingModifiers"))
	require.False(t, has(so, "spec", "advanced", "restoreToOriginalReplicaCount"))
	require.Equal(t, float64(60), get(t, so, "spec", "initialCooldownPeriod"), "the first pod gets a minute before the first scale to zero")
}

// TestScaledJobRunsDrain checks that the ScaledJob runs `philotes-worker drain` once per job on the buffer depth.
func TestScaledJobRunsDrain(t *testing.T) {
	r := mustRender(t, workerChart, s3Lake+"keda:\n  scaledJob: {enabled: true, maxReplicaCount: 4}\n")
	require.Empty(t, r.find("ScaledObject"), "keda.enabled stays independent of the ScaledJob")
	sj := r.one(t, "ScaledJob", fullname+"-drain")
	pod := get(t, sj, "spec", "jobTargetRef", "template", "spec")
	require.Equal(t, "Never", get(t, pod, "restartPolicy"))
	require.Equal(t, []any{"drain"}, get(t, pod, "containers", 0, "args"))
	require.False(t, has(get(t, pod, "containers", 0), "readinessProbe"))
	require.Equal(t, float64(4), get(t, sj, "spec", "maxReplicaCount"))
	trig := get(t, sj, "spec", "triggers", 0).(map[string]any)
	require.Equal(t, "prometheus", trig["type"])
	require.True(t, strings.HasPrefix(metadata(t, trig)["query"], "max(philotes_buffer_depth{"))
	require.Equal(t, "drain", get(t, sj, "spec", "jobTargetRef", "template", "metadata", "labels", "app.kubernetes.io/component"))
}

// TestExtraTriggersAreAppended checks that extraTriggers reach the ScaledObject after the chart's own triggers.
func TestExtraTriggersAreAppended(t *testing.T) {
	r := mustRender(t, workerChart, kedaWith(`
  extraTriggers:
    - type: cron
      name: office-hours
      metadata: {timezone: UTC, start: "0 8 * * *", end: "0 18 * * *", desiredReplicas: "2"}
`))
	tr := get(t, r.one(t, "ScaledObject", fullname), "spec", "triggers").([]any)
	require.Len(t, tr, 4)
	require.Equal(t, "office-hours", tr[3].(map[string]any)["name"])
}

// TestDeploymentFollowsTheWorkerContract checks command, env names, port, probes, security context, requests and
// the grace period against docs/worker-interface.md.
func TestDeploymentFollowsTheWorkerContract(t *testing.T) {
	r := mustRender(t, workerChart, "database: {sourceUrl: 'postgres://u:p@h:5432/db?sslmode=require', bufferUrl: 'postgres://u:p@b:5432/buf'}\n")
	dep := r.one(t, "Deployment", fullname)
	pod := get(t, dep, "spec", "template", "spec")
	c := get(t, pod, "containers", 0)
	require.Equal(t, []any{"run"}, get(t, c, "args"))
	require.Equal(t, float64(8080), get(t, c, "ports", 0, "containerPort"))
	require.Equal(t, "/readyz", get(t, c, "readinessProbe", "httpGet", "path"))
	require.Equal(t, "/healthz", get(t, c, "livenessProbe", "httpGet", "path"))
	require.Equal(t, "250m", get(t, c, "resources", "requests", "cpu"))
	require.Equal(t, false, get(t, c, "securityContext", "allowPrivilegeEscalation"))
	require.Equal(t, []any{"ALL"}, get(t, c, "securityContext", "capabilities", "drop"))
	require.Equal(t, true, get(t, pod, "securityContext", "runAsNonRoot"))
	require.Equal(t, "RuntimeDefault", get(t, pod, "securityContext", "seccompProfile", "type"))
	require.Equal(t, float64(30), get(t, pod, "terminationGracePeriodSeconds"))

	env := map[string]string{}
	for _, e := range get(t, c, "env").([]any) {
		m := e.(map[string]any)
		env[m["name"].(string)] = get(t, m, "valueFrom", "secretKeyRef", "key").(string)
	}
	require.Equal(t, map[string]string{"PHILOTES_SOURCE_URL": "PHILOTES_SOURCE_URL", "PHILOTES_BUFFER_URL": "PHILOTES_BUFFER_URL"}, env)
	// Which value feeds which variable is TestChartMapsValuesToVariables' question; here only a few defaults.
	cm := get(t, r.one(t, "ConfigMap", fullname), "data").(map[string]any)
	require.Equal(t, "25s", cm["PHILOTES_SHUTDOWN_TIMEOUT"])
	require.Equal(t, ":8080", cm["PHILOTES_HTTP_ADDR"])
	require.Equal(t, "philotes_cdc", cm["PHILOTES_SOURCE_NAME"])
	sec := r.one(t, "Secret", fullname+"-db")
	require.Len(t, get(t, sec, "data"), 2)

	r = mustRender(t, workerChart, "database: {existingSecret: db}\nworker: {noReader: true}\n")
	require.Empty(t, r.find("Secret"))
	c = get(t, r.one(t, "Deployment", fullname), "spec", "template", "spec", "containers", 0)
	require.Equal(t, []any{"run", "--no-reader"}, get(t, c, "args"))
	require.Equal(t, "db", get(t, c, "env", 0, "valueFrom", "secretKeyRef", "name"))
	require.Equal(t, true, get(t, c, "env", 1, "valueFrom", "secretKeyRef", "optional"))
}

// TestPodDisruptionBudgetNeverBlocksADrainByDefault checks that the default PDB allows evicting the only pod.
func TestPodDisruptionBudgetNeverBlocksADrainByDefault(t *testing.T) {
	r := mustRender(t, workerChart, "")
	pdb := r.one(t, "PodDisruptionBudget", fullname)
	require.Equal(t, float64(1), get(t, pdb, "spec", "maxUnavailable"))
	require.False(t, has(pdb, "spec", "minAvailable"))
}

// TestLabelsAndScrapeAnnotations checks the app.kubernetes.io labels and the Prometheus scrape annotations.
func TestLabelsAndScrapeAnnotations(t *testing.T) {
	r := mustRender(t, workerChart, "")
	for _, o := range r.Objects {
		labels := get(t, o, "metadata", "labels").(map[string]any)
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			require.Contains(t, labels, k, "%s %s", o["kind"], name(o))
		}
	}
	ann := get(t, r.one(t, "Deployment", fullname), "spec", "template", "metadata", "annotations").(map[string]any)
	require.Equal(t, "true", ann["prometheus.io/scrape"])
	require.Equal(t, "8080", ann["prometheus.io/port"])
	require.Equal(t, "/metrics", ann["prometheus.io/path"])
}

// TestPostgresQueryOverrideIsTemplated checks that a PostgreSQL query override is rendered with tpl, e.g. the
// buffer-depth query of the worker contract for this release's source.
func TestPostgresQueryOverrideIsTemplated(t *testing.T) {
	r := mustRender(t, workerChart, mergeValues("worker: {sourceName: orders}\n", kedaWith(pgTrigger+`    query: "SELECT COALESCE(sum(events), 0) FROM philotes.event_chunks WHERE source = '{{ include \"philotes-worker.sourceName\" . }}'"
`)))
	require.Equal(t, "SELECT COALESCE(sum(events), 0) FROM philotes.event_chunks WHERE source = 'orders'", metadata(t, triggers(t, r)["postgresql"])["query"])
}
