package buffer

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The buffer-depth query is written once (DepthSQL): the interface document and the chart README's custom
// trigger example show it as DepthQuery renders it. A change in one place fails here.
func TestDepthQueryIsOneDefinition(t *testing.T) {
	for file, want := range map[string]string{
		"../../docs/worker-interface.md":         DepthQuery("philotes_cdc"),
		"../../charts/philotes-worker/README.md": DepthQuery(`{{ include \"philotes-worker.sourceName\" . }}`),
	} {
		text, err := os.ReadFile(file)
		require.NoError(t, err)
		require.True(t, strings.Contains(string(text), want), "%s does not show the query as the code defines it:\n%s", file, want)
	}
}
