package charts

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// umbrellaValues reads one of the umbrella's values files.
func umbrellaValues(t *testing.T, file string) string {
	t.Helper()
	return readFile(t, umbrellaChart+"/"+file)
}

// TestUmbrellaDependsOnTheWorkerChartByPath checks the file:// dependency that `helm dependency build` resolves
// offline, and that what that command writes stays out of the repository. The umbrella README has users run
// `helm dependency build charts/philotes`, which leaves charts/philotes/charts/philotes-worker-<version>.tgz and
// charts/philotes/Chart.lock in the working tree: so the test asks git what it tracks and ignores, not what the
// folder holds, and passes after following the README.
func TestUmbrellaDependsOnTheWorkerChartByPath(t *testing.T) {
	var c struct {
		APIVersion   string `json:"apiVersion"`
		Dependencies []struct {
			Name, Version, Repository string
		} `json:"dependencies"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(readFile(t, umbrellaChart+"/Chart.yaml")), &c))
	require.Equal(t, "v2", c.APIVersion)
	require.Len(t, c.Dependencies, 1)
	require.Equal(t, "philotes-worker", c.Dependencies[0].Name)
	require.Equal(t, "file://../philotes-worker", c.Dependencies[0].Repository)

	built := []string{"charts/philotes/charts/philotes-worker-" + c.Dependencies[0].Version + ".tgz", "charts/philotes/Chart.lock"}
	tracked, err := gitAtRoot("ls-files", "--", "charts/philotes/charts", "charts/philotes/Chart.lock")
	if err != nil {
		t.Skipf("not in a git checkout, cannot ask git what it tracks: %v", err)
	}
	require.Empty(t, strings.Fields(tracked), "helm dependency build output is tracked by git; it is built, never committed: git rm --cached it")
	for _, p := range built {
		_, err := gitAtRoot("check-ignore", "-q", "--no-index", p)
		require.NoError(t, err, "git does not ignore %s, which helm dependency build writes: add it to charts/philotes/.gitignore", p)
	}
}

// gitAtRoot runs git in the repository root and returns its standard output.
func gitAtRoot(args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-C", "../.."}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// TestUmbrellaRendersItsValuesFiles checks that the umbrella renders, valid, with its defaults and both shipped
// values files.
func TestUmbrellaRendersItsValuesFiles(t *testing.T) {
	for _, f := range []string{"values.yaml", "values-dev.yaml", "values-production.yaml"} {
		t.Run(f, func(t *testing.T) {
			mustRender(t, umbrellaChart, umbrellaValues(t, f))
		})
	}
}

// TestUmbrellaPassesKedaThrough checks that philotes-worker.keda.* reaches the worker's ScaledObject unchanged.
func TestUmbrellaPassesKedaThrough(t *testing.T) {
	r := mustRenderValues(t, umbrellaChart, map[string]any{"philotes-worker": mergeMaps(s3LakeMap(), map[string]any{"keda": map[string]any{
		"enabled": true, "maxReplicas": int64(7), "minReplicaCount": int64(0), "cooldownPeriod": int64(0),
		"postgresql": map[string]any{"enabled": true, "host": "h", "database": "d", "user": "u", "password": "p"},
	}})})
	so := r.one(t, "ScaledObject", fullname)
	require.Equal(t, float64(7), get(t, so, "spec", "maxReplicaCount"))
	require.Equal(t, float64(0), get(t, so, "spec", "minReplicaCount"))
	require.Equal(t, float64(0), get(t, so, "spec", "cooldownPeriod"))

	_, err := render(umbrellaChart, "philotes-worker:\n  keda: {enabled: true, minReplicas: 3, maxReplicas: 2}\n")
	require.ErrorContains(t, err, "keda.minReplicas (3) is greater than keda.maxReplicas (2)", "the worker's guards apply through the umbrella")
}

// TestDevValuesScaleToZeroAndWake checks that values-dev.yaml sleeps at zero and has the PostgreSQL wake-up path.
func TestDevValuesScaleToZeroAndWake(t *testing.T) {
	r := mustRender(t, umbrellaChart, umbrellaValues(t, "values-dev.yaml"))
	so := r.one(t, "ScaledObject", fullname)
	require.Equal(t, float64(0), get(t, so, "spec", "minReplicaCount"))
	require.False(t, has(so, "spec", "idleReplicaCount"))
	pg := metadata(t, triggers(t, r)["postgresql"])
	require.Contains(t, pg["query"], "slot_name = 'philotes_cdc'")
	require.Equal(t, "disable", pg["sslmode"])
	require.NotContains(t, r.Notes, "can never wake up")
	require.Contains(t, r.Notes, "Scale to zero: on")
}

// TestProductionValuesAreConservative checks values-production.yaml: several trigger kinds, fallback with
// ignoreNullValues off, a slow scale-in, a minimum above one, and credentials only from existing Secrets.
func TestProductionValuesAreConservative(t *testing.T) {
	r := mustRender(t, umbrellaChart, umbrellaValues(t, "values-production.yaml"))
	so := r.one(t, "ScaledObject", fullname)
	tr := triggers(t, r)
	require.Contains(t, tr, "lag")
	require.Contains(t, tr, "buffer")
	require.Contains(t, tr, "postgresql")
	require.Contains(t, tr, "cpu")
	require.Equal(t, "false", metadata(t, tr["lag"])["ignoreNullValues"])
	require.True(t, has(so, "spec", "fallback"))
	require.GreaterOrEqual(t, get(t, so, "spec", "minReplicaCount").(float64), float64(2))
	down := get(t, so, "spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown")
	require.GreaterOrEqual(t, get(t, down, "stabilizationWindowSeconds").(float64), float64(600))
	require.Equal(t, "Pods", get(t, down, "policies", 0, "type"))
	require.Equal(t, float64(1), get(t, down, "policies", 0, "value"))
	require.Empty(t, r.find("Secret"), "production reads every credential from existing Secrets")
	require.Len(t, r.find("ServiceMonitor"), 1)
}
