package charts

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCommitAndMaintenanceSettingsReachTheWorker checks that the worker.iceberg committer and maintenance values
// reach the worker's environment as the worker parses them: intervals as Go durations, sizes as plain decimals.
// The ConfigMap is the environment of both the Deployment and the ScaledJob (envFrom).
func TestCommitAndMaintenanceSettingsReachTheWorker(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		r := mustRender(t, workerChart, s3Lake+"keda: {enabled: true, scaledJob: {enabled: true}}\n")
		cm := get(t, r.one(t, "ConfigMap", fullname), "data").(map[string]any)
		require.Equal(t, "10s", cm["PHILOTES_ICEBERG_COMMIT_INTERVAL"])
		require.Equal(t, "134217728", cm["PHILOTES_ICEBERG_COMMIT_BYTES"])
		require.Equal(t, "300s", cm["PHILOTES_ICEBERG_MAINTENANCE_INTERVAL"])
		require.Equal(t, "1h", cm["PHILOTES_ICEBERG_SNAPSHOT_RETENTION"])
		require.Equal(t, "5", cm["PHILOTES_ICEBERG_SNAPSHOTS_TO_KEEP"])
		require.Equal(t, "134217728", cm["PHILOTES_ICEBERG_TARGET_FILE_BYTES"])
		for _, pod := range []any{
			get(t, r.one(t, "Deployment", fullname), "spec", "template", "spec"),
			get(t, r.one(t, "ScaledJob", fullname+"-drain"), "spec", "jobTargetRef", "template", "spec"),
		} {
			require.Equal(t, fullname, get(t, pod, "containers", 0, "envFrom", 0, "configMapRef", "name"))
		}
	})
	t.Run("overrides, from a values file and from --set", func(t *testing.T) {
		fromFile := mustRender(t, workerChart, `
worker:
  iceberg:
    commitIntervalSeconds: 1
    commitBytes: 1048576
    maintenanceIntervalSeconds: 30
    snapshotRetention: 168h
    snapshotsToKeep: 20
    targetFileBytes: 536870912
`)
		fromSet := mustRenderValues(t, workerChart, map[string]any{"worker": map[string]any{"iceberg": map[string]any{
			"commitIntervalSeconds": int64(1), "commitBytes": int64(1048576), "maintenanceIntervalSeconds": int64(30),
			"snapshotRetention": "168h", "snapshotsToKeep": int64(20), "targetFileBytes": int64(536870912),
		}}})
		for name, r := range map[string]*Rendered{"values file": fromFile, "--set": fromSet} {
			cm := get(t, r.one(t, "ConfigMap", fullname), "data").(map[string]any)
			require.Equal(t, "1s", cm["PHILOTES_ICEBERG_COMMIT_INTERVAL"], name)
			require.Equal(t, "1048576", cm["PHILOTES_ICEBERG_COMMIT_BYTES"], name)
			require.Equal(t, "30s", cm["PHILOTES_ICEBERG_MAINTENANCE_INTERVAL"], name)
			require.Equal(t, "168h", cm["PHILOTES_ICEBERG_SNAPSHOT_RETENTION"], name)
			require.Equal(t, "20", cm["PHILOTES_ICEBERG_SNAPSHOTS_TO_KEEP"], name)
			require.Equal(t, "536870912", cm["PHILOTES_ICEBERG_TARGET_FILE_BYTES"], name)
		}
	})
}

// TestLagThresholdsMustExceedTheCommitInterval checks the guard: philotes_cdc_lag_seconds includes up to one commit
// interval, so a lag trigger whose threshold or activation is not above worker.iceberg.commitIntervalSeconds is
// refused with a message naming both settings, their values, the reason and the fix; sensible combinations render.
func TestLagThresholdsMustExceedTheCommitInterval(t *testing.T) {
	refused := []refusal{
		{"activation below the default interval", kedaWith("  prometheus:\n    lagTrigger: {activationThreshold: \"5\"}\n"),
			[]string{"keda.prometheus.lagTrigger.activationThreshold (5) must be greater than worker.iceberg.commitIntervalSeconds (10)",
				"includes up to one commit interval", "never look idle", "lower worker.iceberg.commitIntervalSeconds"}},
		{"activation equal to the interval", kedaWith("  prometheus:\n    lagTrigger: {activationThreshold: 10}\n"),
			[]string{"keda.prometheus.lagTrigger.activationThreshold (10) must be greater than worker.iceberg.commitIntervalSeconds (10)"}},
		{"activation unset means KEDA's 0", kedaWith("  prometheus:\n    lagTrigger: {activationThreshold: null}\n"),
			[]string{"keda.prometheus.lagTrigger.activationThreshold (unset, KEDA's default 0) must be greater than worker.iceberg.commitIntervalSeconds (10)"}},
		{"threshold below the interval", kedaWith("  prometheus:\n    lagTrigger: {threshold: \"9.5\", activationThreshold: \"20\"}\n"),
			[]string{"keda.prometheus.lagTrigger.threshold (9.5) must be greater than worker.iceberg.commitIntervalSeconds (10)",
				"keep the release scaled out", "Set keda.prometheus.lagTrigger.threshold to several commit intervals"}},
		{"interval raised to the default activation", mergeValues("worker: {iceberg: {commitIntervalSeconds: 60}}\n", kedaWith("")),
			[]string{"keda.prometheus.lagTrigger.activationThreshold (60) must be greater than worker.iceberg.commitIntervalSeconds (60)"}},
		{"interval raised above the default threshold", mergeValues("worker: {iceberg: {commitIntervalSeconds: 600}}\n", kedaWith("  prometheus:\n    lagTrigger: {activationThreshold: \"1200\"}\n")),
			[]string{"keda.prometheus.lagTrigger.threshold (300) must be greater than worker.iceberg.commitIntervalSeconds (600)"}},
		{"numbers instead of strings", mergeValues("worker: {iceberg: {commitIntervalSeconds: 2}}\n", kedaWith("  prometheus:\n    lagTrigger: {threshold: 2, activationThreshold: 3}\n")),
			[]string{"keda.prometheus.lagTrigger.threshold (2) must be greater than worker.iceberg.commitIntervalSeconds (2)"}},
		{"schema: commit interval 0", "worker: {iceberg: {commitIntervalSeconds: 0}}\n", []string{"commitIntervalSeconds"}},
		{"schema: commit interval as a duration string", "worker: {iceberg: {commitIntervalSeconds: 10s}}\n", []string{"commitIntervalSeconds"}},
		{"schema: negative maintenance interval", "worker: {iceberg: {maintenanceIntervalSeconds: -1}}\n", []string{"maintenanceIntervalSeconds"}},
		{"schema: zero snapshot retention", "worker: {iceberg: {snapshotRetention: 0s}}\n", []string{"snapshotRetention"}},
		{"schema: snapshot retention not a Go duration", "worker: {iceberg: {snapshotRetention: 1 day}}\n", []string{"snapshotRetention"}},
		{"schema: snapshotsToKeep 0", "worker: {iceberg: {snapshotsToKeep: 0}}\n", []string{"snapshotsToKeep"}},
		{"schema: tiny commitBytes", "worker: {iceberg: {commitBytes: 100}}\n", []string{"commitBytes"}},
		{"schema: tiny targetFileBytes", "worker: {iceberg: {targetFileBytes: 1024}}\n", []string{"targetFileBytes"}},
		{"schema: unknown key under worker.iceberg", "worker: {iceberg: {commitInterval: 10s}}\n", []string{"commitInterval"}},
	}
	requireRefused(t, "refused: ", refused)

	t.Run("refused: values from --set (int64)", func(t *testing.T) {
		_, err := renderValues(workerChart, map[string]any{
			"worker": map[string]any{"iceberg": map[string]any{"commitIntervalSeconds": int64(60)}},
			"keda":   map[string]any{"enabled": true},
		})
		require.ErrorContains(t, err, "keda.prometheus.lagTrigger.activationThreshold (60) must be greater than worker.iceberg.commitIntervalSeconds (60)")
	})
	t.Run("refused: values from --set (int64), threshold", func(t *testing.T) {
		_, err := renderValues(workerChart, map[string]any{
			"worker": map[string]any{"iceberg": map[string]any{"commitIntervalSeconds": int64(30)}},
			"keda": map[string]any{"enabled": true, "prometheus": map[string]any{"lagTrigger": map[string]any{
				"threshold": int64(30), "activationThreshold": int64(90)}}},
		})
		require.ErrorContains(t, err, "keda.prometheus.lagTrigger.threshold (30) must be greater than worker.iceberg.commitIntervalSeconds (30)")
	})

	rendered := []struct{ name, values string }{
		{"the defaults (300 s / 60 s over 10 s)", kedaWith("")},
		{"a 1 s interval with a 5 s lag threshold", mergeValues("worker: {iceberg: {commitIntervalSeconds: 1}}\n", kedaWith("  prometheus:\n    lagTrigger: {threshold: \"5\", activationThreshold: \"2\"}\n"))},
		{"the lag trigger disabled", kedaWith("  prometheus:\n    lagTrigger: {enabled: false, threshold: \"1\", activationThreshold: null}\n")},
		{"the Prometheus triggers disabled", kedaWith("  prometheus: {enabled: false, lagTrigger: {threshold: \"1\"}}\n" + pgTrigger)},
		{"KEDA off (no ScaledObject reads lag)", "keda:\n  prometheus:\n    lagTrigger: {threshold: \"1\", activationThreshold: \"0\"}\n"},
		{"the ScaledJob alone scales on the buffer", s3Lake + "keda:\n  scaledJob: {enabled: true}\n  prometheus:\n    lagTrigger: {threshold: \"1\"}\n"},
		{"maintenance off", mergeValues("worker: {iceberg: {maintenanceIntervalSeconds: 0, snapshotRetention: 1h30m}}\n", kedaWith(""))},
	}
	for _, tc := range rendered {
		t.Run("renders: "+tc.name, func(t *testing.T) {
			mustRender(t, workerChart, tc.values)
		})
	}
}
