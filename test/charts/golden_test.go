package charts

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.yaml from the current charts")

// volatile matches lines that change with every chart or image version bump; they are dropped from golden files
// so that a review shows what a values or template change does, not version noise.
var volatile = regexp.MustCompile(`(?m)^\s*(helm\.sh/chart|app\.kubernetes\.io/version|checksum/[a-z]+|image): .*\n`)

// TestGoldenManifests checks the full rendered manifests of the main scenarios against
// testdata/golden/<scenario>.yaml. After an intended change run `go test ./... -run TestGoldenManifests -update`
// and review the diff.
func TestGoldenManifests(t *testing.T) {
	scenarios := []struct{ name, chart, values string }{
		{"worker-defaults", workerChart, ""},
		{"worker-keda-defaults", workerChart, s3Lake + "keda: {enabled: true}\n"},
		{"worker-readme-scale-to-zero", workerChart, ""},
		{"worker-scaledjob", workerChart, s3Lake + "keda: {scaledJob: {enabled: true}}\n"},
		{"worker-backfill-job", workerChart, s3Lake + "database: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders, public.customers], id: \"2\"}\n"},
		{"umbrella-dev", umbrellaChart, "@values-dev.yaml"},
		{"umbrella-production", umbrellaChart, "@values-production.yaml"},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			values := sc.values
			switch {
			case sc.name == "worker-readme-scale-to-zero":
				values = readmeExamples(t)["scale-to-zero"]
			case len(values) > 0 && values[0] == '@':
				values = umbrellaValues(t, values[1:])
			}
			r := mustRender(t, sc.chart, values)
			got := volatile.ReplaceAllString(r.Manifest, "")
			path := filepath.Join("testdata", "golden", sc.name+".yaml")
			if *update {
				require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
				require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "missing golden file: run go test ./... -run TestGoldenManifests -update")
			require.Equal(t, string(want), got, "rendered manifest differs from %s; if intended, rerun with -update and review the diff", path)
		})
	}
}
