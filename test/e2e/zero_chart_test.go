//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/philotes/philotes-worker/test/e2e/report"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestZeroWakeNoLoss is scale to zero with the real chart and the real
// worker, configured only through the chart's values (minReplicaCount 0, the
// chart's PostgreSQL trigger on the slot's unconfirmed WAL): rows written are
// processed; idle, the Deployment goes to 0 after the cooldown; rows written
// while at zero wake it through the PostgreSQL trigger (no worker metric
// exists then); and every row of both batches is in the Iceberg table exactly
// once.
func TestZeroWakeNoLoss(t *testing.T) {
	s := startStack(t)
	startNode(t, s, workerBinary(t))
	ctx := t.Context()

	src := connect(t, s, stack.SourceDB)
	const srcTable = "zero_events"
	if err := createEventsTable(ctx, src, srcTable); err != nil {
		t.Fatal(err)
	}

	const (
		ns, name   = "e2e", "philotes-worker"
		slot       = "philotes_cdc"
		activation = 20000 // unconfirmed WAL bytes that wake it
	)
	lakeVals, warehouse := chartLake(t, s, ns)
	values := realWorkerValues(lakeVals, map[string]any{"slot": slot}, map[string]any{
		"enabled":         true,
		"minReplicaCount": 0,
		"maxReplicas":     2,
		"pollingInterval": 2,
		"cooldownPeriod":  10,
		// The first pod gets this long to create the slot and work before the first scale to zero.
		"initialCooldownPeriod": 15,
		"advanced":              fastScaleIn(),
		"prometheus": map[string]any{
			"serverAddress": stack.PrometheusURL,
			"lagTrigger":    map[string]any{"threshold": "30", "activationThreshold": "5"},
			"bufferTrigger": map[string]any{"threshold": "500", "activationThreshold": "10"},
		},
		"postgresql": chartPostgresTrigger(strconv.Itoa(activation)),
	})
	installChart(t, s, ns, name, values)
	waitScaledObjectReady(t, s, ns, name)
	checkChartPostgresTrigger(t, s, ns, name, slot)

	rec := report.Start(report.Config{
		Kube: s.Kube, Namespace: ns, Deployment: name, HPA: "keda-hpa-" + name,
		Query:          func(ctx context.Context, q string) (float64, error) { return promQuery(ctx, s, q) },
		LagQuery:       `max(philotes_cdc_lag_seconds{namespace="e2e"})`,
		DepthQuery:     `max(philotes_buffer_depth{namespace="e2e"})`,
		ProcessedQuery: `sum(rate(philotes_buffer_events_processed_total{namespace="e2e"}[15s]))`,
	})
	defer func() {
		samples := rec.Stop()
		if err := report.WriteCSV(filepath.Join(reportDir(t), "zero-chart.csv"), samples); err != nil {
			t.Error(err)
		}
		if err := report.WriteSVG(filepath.Join(reportDir(t), "zero-chart.svg"),
			"zero: real chart + worker, idle to 0, woken by the PostgreSQL trigger", samples); err != nil {
			t.Error(err)
		}
	}()

	lk := openLake(t, s, warehouse)
	insert := func(t *testing.T, from, to int) {
		t.Helper()
		if err := insertRows(ctx, src, srcTable, from, to); err != nil {
			t.Fatal(err)
		}
		t.Logf("inserted ids %d..%d", from, to)
	}
	const n1, n2 = 1000, 2000

	t.Run("rows written are processed by a worker", func(t *testing.T) {
		// The slot is where CDC starts: rows written before it exists are not
		// captured. The Deployment's first pod creates it within
		// initialCooldownPeriod, before KEDA may scale it to zero; should it be at
		// zero already, these rows wake it (a missing slot reads as the trigger's
		// target and wakes it too).
		waitSlot(t, src, slot, 90*time.Second)

		if d, err := s.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{}); err == nil && d.Spec.Replicas != nil {
			t.Logf("deployment wants %d replicas (%d ready) when the first rows are written", *d.Spec.Replicas, d.Status.ReadyReplicas)
		}
		start := time.Now()
		insert(t, 1, n1)
		eventually(t, 90*time.Second, "a worker Ready", func(ctx context.Context) error {
			return readyAtLeast(ctx, s, ns, name, 1)
		})
		waitInLake(t, lk, srcTable, n1, 120*time.Second)
		recordReaction(t, "first batch: write to in the lake", time.Since(start))
	})

	t.Run("idle goes to zero after the cooldown", func(t *testing.T) {
		took := waitReady(t, s, ns, name, 0, 120*time.Second)
		recordReaction(t, "idle to zero", took)
		eventually(t, 30*time.Second, "no worker pod left", func(ctx context.Context) error {
			pods, err := s.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + name})
			if err != nil {
				return err
			}
			if len(pods.Items) != 0 {
				return fmt.Errorf("%d pods", len(pods.Items))
			}
			return nil
		})
		lag, err := slotUnconfirmed(ctx, src, slot)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("unconfirmed WAL at zero: %d bytes (activation %d)", lag, activation)
		if lag > activation {
			t.Errorf("unconfirmed WAL %d bytes at zero is above the activation %d: it would wake at once", lag, activation)
		}
	})

	t.Run("rows written at zero wake it through the PostgreSQL trigger", func(t *testing.T) {
		start := time.Now()
		insert(t, n1+1, n1+n2)
		took := eventually(t, 90*time.Second, "a worker Ready again", func(ctx context.Context) error {
			return readyAtLeast(ctx, s, ns, name, 1)
		})
		recordReaction(t, "write to wake (1 ready)", took)
		waitInLake(t, lk, srcTable, n1+n2, 180*time.Second)
		recordReaction(t, "write at zero to in the lake", time.Since(start))
	})

	t.Run("every row is in the lake exactly once", func(t *testing.T) {
		buf := connect(t, s, stack.BufferDB)
		eventually(t, 60*time.Second, "an empty buffer", func(ctx context.Context) error {
			depth, err := bufferDepth(ctx, buf, slot)
			if err != nil {
				return err
			}
			if depth != 0 {
				return fmt.Errorf("depth %d", depth)
			}
			return nil
		})
		if err := lk.exactlyOnce(ctx, srcTable, n1+n2); err != nil {
			t.Fatal(err)
		}
		t.Logf("all %d ids in %s exactly once", n1+n2, "philotes.public_"+srcTable)
	})
}

// checkChartPostgresTrigger checks that the chart rendered its own PostgreSQL
// trigger (the slot's unconfirmed WAL), so the wake-up below is the chart's.
func checkChartPostgresTrigger(t *testing.T, s *stack.Stack, ns, name, slot string) {
	t.Helper()
	u, err := s.Dynamic.Resource(stack.ScaledObjectGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	minReplicas, _, _ := unstructured.NestedInt64(u.Object, "spec", "minReplicaCount")
	if minReplicas != 0 {
		t.Fatalf("minReplicaCount %d, want 0", minReplicas)
	}
	triggers, _, _ := unstructured.NestedSlice(u.Object, "spec", "triggers")
	for _, tr := range triggers {
		m, _ := tr.(map[string]any)
		if m["type"] != "postgresql" {
			continue
		}
		md, _ := m["metadata"].(map[string]any)
		t.Logf("chart's postgresql trigger query: %v", md["query"])
		return
	}
	t.Fatalf("no postgresql trigger in %v", triggers)
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
