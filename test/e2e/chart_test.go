//go:build e2e

package e2e

import (
	"testing"
	"time"

	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestChart installs the real charts/philotes-worker with Helm into the stack
// (with the stand-in worker behind it) and checks that KEDA accepts its
// ScaledObject and scales the chart's Deployment on the buffer-depth trigger.
func TestChart(t *testing.T) {
	s := startStack(t)
	startNode(t, s, fakeWorker(t))

	depthFile, setDepth := fakeDepth(t)

	const ns, name = "e2e", "philotes-worker"
	lakeVals, _ := chartLake(t, s, ns) // the chart refuses a per-pod file:// warehouse under KEDA
	values := map[string]any{
		"image":                         map[string]any{"repository": "philotes-worker", "tag": "e2e"},
		"terminationGracePeriodSeconds": 10,
		"worker": map[string]any{
			"shutdownTimeoutSeconds": 5,
			"iceberg":                lakeVals,
			"extraEnv":               []any{map[string]any{"name": "FAKEWORKER_DEPTH_FILE", "value": depthFile}},
		},
		"database": map[string]any{
			"sourceUrl": stack.PostgresURL(stack.SourceDB),
			"bufferUrl": stack.PostgresURL(stack.BufferDB),
		},
		"keda": map[string]any{
			"enabled":         true,
			"minReplicas":     1,
			"maxReplicas":     5,
			"pollingInterval": 2,
			"cooldownPeriod":  10,
			"advanced":        fastScaleIn(),
			"prometheus": map[string]any{
				"serverAddress": stack.PrometheusURL,
				"lagTrigger":    map[string]any{"enabled": false},
				"bufferTrigger": map[string]any{"threshold": "100", "activationThreshold": "10"},
			},
		},
	}
	installChart(t, s, ns, name, values)

	waitScaledObjectReady(t, s, ns, name)
	waitReady(t, s, ns, name, 1, 90*time.Second)
	checkPodIPs(t, s, ns, name)

	tests := []struct {
		name  string
		depth int
		want  int32
	}{
		{"buffer depth 350 gives ceil(350/100) replicas", 350, 4},
		{"buffer depth 0 gives the minimum", 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setDepth(tc.depth)
			waitReady(t, s, ns, name, tc.want, 120*time.Second)
			checkPodIPs(t, s, ns, name)
		})
	}
}
