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

// egressRules returns the NetworkPolicy's policy types and egress rules (nil when it has no egress key).
func egressRules(t *testing.T, r *Rendered) (types []any, egress []any) {
	t.Helper()
	np := r.one(t, "NetworkPolicy", fullname)
	types = get(t, np, "spec", "policyTypes").([]any)
	if has(np, "spec", "egress") {
		egress, _ = get(t, np, "spec", "egress").([]any)
		if egress == nil {
			egress = []any{}
		}
	}
	return types, egress
}

// TestNetworkPolicyEgress checks how egress is restricted: open by default, the raw egress list alone as before,
// and with restrictEgress DNS plus the databases and the object store (each configurable) plus the raw rules.
func TestNetworkPolicyEgress(t *testing.T) {
	dns := map[string]any{
		"to": []any{map[string]any{
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "kube-system"}},
			"podSelector":       map[string]any{"matchLabels": map[string]any{"k8s-app": "kube-dns"}},
		}},
		"ports": []any{map[string]any{"port": float64(53), "protocol": "UDP"}, map[string]any{"port": float64(53), "protocol": "TCP"}},
	}
	databases := map[string]any{"ports": []any{map[string]any{"port": float64(5432), "protocol": "TCP"}}}
	objectStore := map[string]any{"ports": []any{map[string]any{"port": float64(443), "protocol": "TCP"}}}

	t.Run("open by default", func(t *testing.T) {
		types, egress := egressRules(t, mustRender(t, workerChart, "networkPolicy: {enabled: true}\n"))
		require.Equal(t, []any{"Ingress"}, types)
		require.Nil(t, egress)
	})
	t.Run("raw egress rules alone, as before", func(t *testing.T) {
		types, egress := egressRules(t, mustRender(t, workerChart, "networkPolicy: {enabled: true, egress: [{ports: [{port: 6000}]}]}\n"))
		require.Equal(t, []any{"Ingress", "Egress"}, types)
		require.Equal(t, []any{map[string]any{"ports": []any{map[string]any{"port": float64(6000)}}}}, egress)
	})
	t.Run("restricted: DNS, databases, object store, then the raw rules", func(t *testing.T) {
		types, egress := egressRules(t, mustRender(t, workerChart, "networkPolicy: {enabled: true, restrictEgress: true, egress: [{ports: [{port: 8181}]}]}\n"))
		require.Equal(t, []any{"Ingress", "Egress"}, types)
		require.Equal(t, []any{dns, databases, objectStore, map[string]any{"ports": []any{map[string]any{"port": float64(8181)}}}}, egress)
	})
	t.Run("restricted with every destination emptied: no egress at all", func(t *testing.T) {
		types, egress := egressRules(t, mustRender(t, workerChart, `networkPolicy:
  enabled: true
  restrictEgress: true
  egressDNS: {to: [], ports: []}
  egressTo:
    databases: {to: [], ports: []}
    objectStore: {to: [], ports: []}
`))
		require.Equal(t, []any{"Ingress", "Egress"}, types)
		require.Equal(t, []any{}, egress, "an empty rule would allow everything: it is left out")
	})
	t.Run("the README's worked example", func(t *testing.T) {
		types, egress := egressRules(t, mustRender(t, workerChart, readmeExamples(t)["network-policy"]))
		require.Equal(t, []any{"Ingress", "Egress"}, types)
		require.Len(t, egress, 3)
		require.Equal(t, dns, egress[0])
		require.Equal(t, float64(5432), get(t, egress[1], "ports", 0, "port"))
		require.Equal(t, "databases", get(t, egress[1], "to", 0, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name"))
		require.Equal(t, float64(9000), get(t, egress[2], "ports", 0, "port"))
		require.Equal(t, "minio", get(t, egress[2], "to", 0, "podSelector", "matchLabels", "app"))
	})
	t.Run("values-production.yaml restricts egress", func(t *testing.T) {
		r := mustRender(t, umbrellaChart, umbrellaValues(t, "values-production.yaml"))
		types, egress := egressRules(t, r)
		require.Equal(t, []any{"Ingress", "Egress"}, types)
		require.Len(t, egress, 3)
		require.Equal(t, dns, egress[0])
		require.Equal(t, "databases", get(t, egress[1], "to", 0, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name"))
		require.Equal(t, objectStore, egress[2])
		require.Equal(t, "monitoring", get(t, r.one(t, "NetworkPolicy", fullname), "spec", "ingress", 0, "from", 0, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name"))
	})
}
