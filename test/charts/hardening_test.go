package charts

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSourceDatabaseIsRequired checks that a release without the source database is refused at render time,
// naming the values to set, and that every way of giving it (or of not needing it) renders.
func TestSourceDatabaseIsRequired(t *testing.T) {
	requireRefused(t, "", []refusal{
		{"no source URL and no Secret", "database: {sourceUrl: ''}\n",
			[]string{"database.sourceUrl is empty and database.existingSecret is not set", "Set database.sourceUrl", "database.existingSecret naming a Secret with the key PHILOTES_SOURCE_URL", "worker.noReader"}},
		{"no reader, but no buffer URL either", "database: {sourceUrl: ''}\nworker: {noReader: true}\n",
			[]string{"database.sourceUrl is empty", "database.bufferUrl"}},
		{"a renamed key is named", "database: {sourceUrl: '', sourceUrlKey: SRC}\n",
			[]string{"the key SRC"}},
	})
	for name, values := range map[string]string{
		"source URL":                "database: {sourceUrl: 'postgres://u@h/db'}\n",
		"existing Secret":           "database: {sourceUrl: '', existingSecret: db}\n",
		"no reader with buffer URL": "database: {sourceUrl: '', bufferUrl: 'postgres://u@b/buf'}\nworker: {noReader: true}\n",
	} {
		t.Run(name, func(t *testing.T) { mustRender(t, workerChart, values) })
	}
	_, err := render(umbrellaChart, "philotes-worker:\n  database: {sourceUrl: ''}\n")
	require.ErrorContains(t, err, "database.sourceUrl is empty", "through the umbrella")
}

// TestWorkerContainersReportWhyTheyExited checks terminationMessagePolicy FallbackToLogsOnError on every worker
// container (Deployment, drain jobs, backfill Job): the worker writes no termination log, so the last log lines, e.g.
// why it exited with status 2, become the message `kubectl describe pod` shows.
func TestWorkerContainersReportWhyTheyExited(t *testing.T) {
	r := mustRender(t, workerChart, s3Lake+"keda: {scaledJob: {enabled: true}}\nbackfillJob: {enabled: true, tables: [public.orders]}\n")
	pods := map[string]any{
		"Deployment": get(t, r.one(t, "Deployment", fullname), "spec", "template", "spec"),
		"ScaledJob":  get(t, r.one(t, "ScaledJob", fullname+"-drain"), "spec", "jobTargetRef", "template", "spec"),
		"Job":        get(t, r.one(t, "Job", fullname+"-backfill-1"), "spec", "template", "spec"),
	}
	for kind, pod := range pods {
		for _, c := range get(t, pod, "containers").([]any) {
			require.Equal(t, "FallbackToLogsOnError", get(t, c, "terminationMessagePolicy"), kind)
		}
	}
}
