package charts

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The NetworkPolicy selects every pod of the release that runs the worker: the Deployment's, the drain jobs'
// and the backfill Job's, and no other release's.
func TestNetworkPolicySelectsEveryWorkerPod(t *testing.T) {
	r := mustRender(t, workerChart, `worker: {iceberg: {warehouse: 's3://lake/wh'}}
database: {sourceUrl: 'postgres://u@h/db'}
networkPolicy: {enabled: true}
keda:
  enabled: true
  scaledJob: {enabled: true}
backfillJob: {enabled: true, tables: [public.orders]}
`)
	np := r.one(t, "NetworkPolicy", fullname)
	sel := get(t, np, "spec", "podSelector").(map[string]any)
	selects := func(labels map[string]any) bool {
		for k, v := range sel["matchLabels"].(map[string]any) {
			if labels[k] != v {
				return false
			}
		}
		for _, e := range sel["matchExpressions"].([]any) {
			e := e.(map[string]any)
			found := false
			for _, v := range e["values"].([]any) {
				found = found || labels[e["key"].(string)] == v
			}
			if !found {
				return false
			}
		}
		return true
	}
	pods := map[string]map[string]any{
		"Deployment": get(t, r.one(t, "Deployment", fullname), "spec", "template", "metadata", "labels").(map[string]any),
		"ScaledJob":  get(t, r.one(t, "ScaledJob", fullname+"-drain"), "spec", "jobTargetRef", "template", "metadata", "labels").(map[string]any),
	}
	for _, j := range r.find("Job") {
		pods["Job"] = get(t, j, "spec", "template", "metadata", "labels").(map[string]any)
	}
	require.Len(t, pods, 3)
	for kind, labels := range pods {
		require.True(t, selects(labels), "%s pods %v not selected by %v", kind, labels, sel)
	}
	other := map[string]any{"app.kubernetes.io/instance": "another", "app.kubernetes.io/name": pods["Deployment"]["app.kubernetes.io/name"]}
	require.False(t, selects(other), "another release's pods")
}
