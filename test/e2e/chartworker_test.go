//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestChartWorker installs the real chart with the real worker behind it: the
// chart's default, scoped Prometheus queries (lag, buffer depth, backfill rows
// remaining) return the worker's metrics
// through KEDA to the HPA (no FailedGetExternalMetric), and source rows flow
// through the chart-configured worker (env from the chart's ConfigMap and
// Secret) until the buffer is empty.
func TestChartWorker(t *testing.T) {
	s := startStack(t)
	startNode(t, s, workerBinary(t))
	ctx := t.Context()

	src := connect(t, s, stack.SourceDB)
	if _, err := src.Exec(ctx, `CREATE TABLE public.orders (id bigint PRIMARY KEY, amount numeric NOT NULL)`); err != nil {
		t.Fatal(err)
	}

	const ns, name = "e2e", "philotes-worker"
	lakeVals, _ := chartLake(t, s, ns)
	values := realWorkerValues(lakeVals, nil, map[string]any{
		"enabled":         true,
		"minReplicas":     1,
		"maxReplicas":     3,
		"pollingInterval": 2,
		"cooldownPeriod":  10,
		"prometheus": map[string]any{
			"serverAddress": stack.PrometheusURL,
			"lagTrigger":    map[string]any{"threshold": "30", "activationThreshold": "5"},
			"bufferTrigger": map[string]any{"threshold": "50", "activationThreshold": "5"},
		},
	})
	installChart(t, s, ns, name, values)
	waitScaledObjectReady(t, s, ns, name)
	waitReady(t, s, ns, name, 1, 90*time.Second)

	eventually(t, 60*time.Second, "the HPA reading the chart's three default queries through KEDA", func(ctx context.Context) error {
		h, err := s.Kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "keda-hpa-"+name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range h.Status.Conditions {
			if c.Type == "ScalingActive" && c.Status != corev1.ConditionTrue {
				return fmt.Errorf("ScalingActive %s: %s: %s", c.Status, c.Reason, c.Message)
			}
		}
		if n := len(h.Status.CurrentMetrics); n != 3 {
			return fmt.Errorf("%d current metrics, want 3 (lag, buffer and backfill)", n)
		}
		return nil
	})

	t.Run("the chart's Prometheus queries match the worker's series", func(t *testing.T) {
		n := 0
		for _, m := range scaledObjectTriggers(t, s, ns, name) {
			if m["type"] != "prometheus" {
				continue
			}
			q, _, _ := unstructured.NestedString(m, "metadata", "query")
			n++
			eventually(t, 30*time.Second, "a series for "+q, func(ctx context.Context) error {
				_, err := s.PromQuery(ctx, q)
				return err
			})
		}
		if n != 3 {
			t.Errorf("%d prometheus triggers, want 3 (lag, buffer and backfill)", n)
		}
	})

	const rows = 1000
	if _, err := src.Exec(ctx, `INSERT INTO public.orders SELECT g, g * 1.5 FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}
	waitProcessed(t, s, `{namespace="e2e"}`, rows, 120*time.Second)
}
