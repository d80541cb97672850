package charts

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// readmeExamples returns the YAML blocks of the chart README that follow an `<!-- example: NAME -->` marker.
func readmeExamples(t *testing.T) map[string]string {
	t.Helper()
	re := regexp.MustCompile("(?s)<!-- example: ([a-z-]+) -->\\s*```yaml\\n(.*?)```")
	out := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(readFile(t, workerChart+"/README.md"), -1) {
		out[m[1]] = m[2]
	}
	return out
}

// TestReadmeExamplesRenderValid checks that every example of the worker README (the YAML blocks after an
// `<!-- example: NAME -->` marker) renders and passes the schema, the chart's own checks and the Kubernetes and KEDA
// schemas, so that a reader who copies one gets a working release.
func TestReadmeExamplesRenderValid(t *testing.T) {
	ex := readmeExamples(t)
	require.ElementsMatch(t, []string{"basic", "scale-to-zero", "multi-metric", "object-storage", "network-policy"}, keysOf(ex))
	for n, values := range ex {
		t.Run(n, func(t *testing.T) {
			r := mustRender(t, workerChart, values)
			require.NotContains(t, r.Notes, "can never wake up")
		})
	}
}

// TestReadmeScaleToZeroExampleWakes checks that the README's scale-to-zero example sleeps at zero and carries the
// PostgreSQL trigger that wakes it.
func TestReadmeScaleToZeroExampleWakes(t *testing.T) {
	r := mustRender(t, workerChart, readmeExamples(t)["scale-to-zero"])
	so := r.one(t, "ScaledObject", fullname)
	require.Equal(t, float64(0), get(t, so, "spec", "minReplicaCount"))
	require.False(t, has(so, "spec", "idleReplicaCount"))
	tr := triggers(t, r)
	require.Equal(t, "postgresql", tr["postgresql"]["type"])
	require.Equal(t, "0", metadata(t, tr["postgresql"])["activationTargetQueryValue"], "wakes on the first change")
	require.Contains(t, r.Notes, "Scale to zero: on")
	require.Contains(t, r.Notes, "wakes the worker on the first change")
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
