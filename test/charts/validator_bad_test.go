package charts

import (
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// TestValidatorRejectsKnownBadObjects checks that the validator is strict and really runs: each object below is
// wrong in one way the API server (or KEDA's CRD) would reject, so a validator that silently skipped would fail.
func TestValidatorRejectsKnownBadObjects(t *testing.T) {
	v, err := sharedValidator()
	require.NoError(t, err)
	cases := []struct {
		name, yaml, wantErr string
	}{
		{"unknown top-level Deployment field", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replica: 1
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}
`, "replica"},
		{"unknown field deep in a container", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i, imagePolicy: Always}]}}
`, "imagePolicy"},
		{"unknown ObjectMeta field", `
apiVersion: v1
kind: ConfigMap
metadata: {name: x, labelz: {a: b}}
`, "labelz"},
		{"wrong type for a Service port", `
apiVersion: v1
kind: Service
metadata: {name: x}
spec: {ports: [{port: "http"}]}
`, "port"},
		{"metricName at trigger level of a ScaledObject", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: d}
  triggers: [{type: prometheus, metricName: m, metadata: {query: q}}]
`, "metricName"},
		{"ScaledObject minReplicaCount as a string", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: d}
  minReplicaCount: "0"
  triggers: [{type: cpu, metricType: Utilization, metadata: {value: "80"}}]
`, "minReplicaCount"},
		{"ScaledObject without triggers", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: d}
`, "triggers"},
		{"number in trigger metadata", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: d}
  triggers: [{type: prometheus, metadata: {threshold: 300}}]
`, "threshold"},
		{"TriggerAuthentication secretTargetRef without key", `
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: x}
spec:
  secretTargetRef: [{parameter: password, name: s}]
`, "key"},
		{"unknown ScaledJob field", `
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: x}
spec:
  jobTargetRef: {template: {spec: {containers: [{name: c, image: i}]}}}
  maxReplicas: 3
`, "maxReplicas"},
		{"unknown ServiceMonitor field", `
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: x}
spec:
  selector: {}
  endpoint: [{port: http}]
`, "endpoint"},
		{"kind without a schema", `
apiVersion: keda.sh/v1alpha1
kind: ScaledThing
metadata: {name: x}
`, "no schema"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := map[string]any{}
			require.NoError(t, yaml.Unmarshal([]byte(tc.yaml), &obj))
			err := v.Validate(obj)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

// TestValidatorAcceptsMinimalObjects checks that the strictness does not reject well-formed objects.
func TestValidatorAcceptsMinimalObjects(t *testing.T) {
	v, err := sharedValidator()
	require.NoError(t, err)
	for _, doc := range []string{`
apiVersion: apps/v1
kind: Deployment
metadata: {name: x, labels: {a: b}}
spec:
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i, resources: {requests: {cpu: 1, memory: 1Gi}}}]}}
`, `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: d}
  minReplicaCount: 0
  triggers: [{type: postgresql, name: pg, metadata: {query: q, targetQueryValue: "1"}, authenticationRef: {name: a}}]
`} {
		obj := map[string]any{}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &obj))
		require.NoError(t, v.Validate(obj))
	}
	require.Contains(t, v.Kinds(), "keda.sh/v1alpha1/ScaledObject")
	require.Contains(t, v.Kinds(), "apps/v1/Deployment")
}
