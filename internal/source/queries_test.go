package source

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The wake-up query is written once (RetainedWALSQL): the interface document and the chart README show it, and
// every query the chart renders for its KEDA PostgreSQL trigger (the golden files, which the chart tests hold to
// the templates) is it, for the release's slot and target. A change in one place fails here.
func TestWakeQueryIsOneDefinition(t *testing.T) {
	for file, want := range map[string]string{
		"../../docs/worker-interface.md":         RetainedWALQuery("philotes_cdc", "1000000"),
		"../../charts/philotes-worker/README.md": RetainedWALQuery("<worker.slot>", "<targetQueryValue>"),
	} {
		text, err := os.ReadFile(file)
		require.NoError(t, err)
		require.True(t, strings.Contains(string(text), want), "%s does not show the query as the code defines it:\n%s", file, want)
	}
	rendered := regexp.MustCompile(`query: "(.*pg_replication_slots.*)"`)
	args := regexp.MustCompile(`slot_name = '([^']*)'\), (\d+)\)$`)
	goldens, err := filepath.Glob("../../test/charts/testdata/golden/*.yaml")
	require.NoError(t, err)
	var seen int
	for _, file := range goldens {
		text, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, m := range rendered.FindAllStringSubmatch(string(text), -1) {
			q := strings.ReplaceAll(m[1], `\"`, `"`)
			a := args.FindStringSubmatch(q)
			require.NotNil(t, a, "%s: %s", file, q)
			require.Equal(t, RetainedWALQuery(a[1], a[2]), q, file)
			seen++
		}
	}
	require.NotZero(t, seen, "the golden files render the trigger")
}
