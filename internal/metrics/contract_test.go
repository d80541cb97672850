package metrics

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// collecting records the collectors New registers, so that every metric is known by name, also a vector that
// has no series yet.
type collecting struct{ cs []prometheus.Collector }

func (c *collecting) Register(x prometheus.Collector) error   { c.cs = append(c.cs, x); return nil }
func (c *collecting) MustRegister(xs ...prometheus.Collector) { c.cs = append(c.cs, xs...) }
func (c *collecting) Unregister(prometheus.Collector) bool    { return false }

var fqName = regexp.MustCompile(`fqName: "([a-z_]+)"`)

// registered lists the names of every metric the worker registers, sorted.
func registered(t *testing.T) []string {
	t.Helper()
	var reg collecting
	New(&reg, "src")
	var names []string
	for _, c := range reg.cs {
		ch := make(chan *prometheus.Desc, 8)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			require.NotNil(t, m, d.String())
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return names
}

// The interface document lists exactly the metrics the worker registers, and nothing else in the repository's
// documentation names a metric the worker does not have: a metric renamed or added in one place fails here.
func TestDocumentedMetricsAreTheRegisteredOnes(t *testing.T) {
	names := registered(t)
	mention := regexp.MustCompile("`(philotes_[a-z_]+)`")
	doc, err := os.ReadFile("../../docs/worker-interface.md")
	require.NoError(t, err)
	var documented []string
	inTable := regexp.MustCompile("(?m)^\\| `(philotes_[a-z_]+)` \\|")
	for _, m := range inTable.FindAllStringSubmatch(string(doc), -1) {
		documented = append(documented, m[1])
	}
	slices.Sort(documented)
	require.Equal(t, names, slices.Compact(documented), "docs/worker-interface.md's metric table against metrics.New")

	// Names that are not metrics: the default slot and publication.
	notMetrics := map[string]bool{"philotes_cdc": true, "philotes_pub": true}
	known := func(name string) bool {
		if notMetrics[name] {
			return true
		}
		for _, n := range names {
			// A histogram's series and a shortened family (philotes_iceberg_pending_files, `_pending_bytes`).
			if name == n || name == n+"_bucket" || name == n+"_sum" || name == n+"_count" {
				return true
			}
		}
		return false
	}
	for _, file := range []string{"../../README.md", "../../docs/worker-interface.md", "../../charts/philotes-worker/README.md"} {
		text, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, m := range mention.FindAllStringSubmatch(string(text), -1) {
			require.True(t, known(m[1]), "%s names %s, which the worker does not register", file, m[1])
		}
	}
}

// Every error kind is named in the errors metric's help text and in the interface document's row for it.
func TestErrorKindsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/worker-interface.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `philotes_errors_total` \\|.*$").FindString(string(doc))
	require.NotEmpty(t, row)
	var reg collecting
	New(&reg, "src")
	help := ""
	for _, c := range reg.cs {
		ch := make(chan *prometheus.Desc, 8)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if strings.Contains(d.String(), `"philotes_errors_total"`) {
				help = d.String()
			}
		}
	}
	for _, kind := range ErrorKinds {
		require.Contains(t, row, "`"+kind+"`", "docs/worker-interface.md, philotes_errors_total")
		require.Contains(t, help, kind, "the help text of philotes_errors_total")
	}
}
