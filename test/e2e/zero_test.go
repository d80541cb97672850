//go:build e2e

package e2e

import (
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestScaleToZero proves the path the zero scenario needs: KEDA's PostgreSQL
// trigger reaches the stack's PostgreSQL (it works at zero replicas, when no
// worker metric exists), scales an idle Deployment to 0 after the cooldown,
// wakes it when rows arrive and sends it back to 0 once they are gone.
func TestScaleToZero(t *testing.T) {
	s := startStack(t)
	startNode(t, s, fakeWorker(t))
	ctx := t.Context()

	src := connect(t, s, stack.SourceDB)
	if _, err := src.Exec(ctx, `CREATE TABLE public.pending (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}

	const ns, name = "default", "zero"
	if _, err := s.Kube.AppsV1().Deployments(ns).Create(ctx, fakeDeployment(ns, name, filepath.Join(t.TempDir(), "depth")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s, ns, name, 1, 60*time.Second)
	so := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "keda.sh/v1alpha1",
		"kind":       "ScaledObject",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"scaleTargetRef":  map[string]any{"name": name},
			"pollingInterval": int64(2),
			"cooldownPeriod":  int64(5),
			"minReplicaCount": int64(0),
			"maxReplicaCount": int64(5),
			"triggers": []any{map[string]any{
				"type": "postgresql",
				"metadata": map[string]any{
					"host": stack.PostgresHost, "port": "5432", "userName": "postgres", "dbName": stack.SourceDB,
					"sslmode":                    "disable",
					"query":                      "SELECT count(*) FROM public.pending",
					"targetQueryValue":           "100",
					"activationTargetQueryValue": "0",
				},
			}},
		},
	}}
	if _, err := s.Dynamic.Resource(stack.ScaledObjectGVR).Namespace(ns).Create(ctx, so, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create scaledobject: %v", err)
	}
	waitScaledObjectReady(t, s, ns, name)

	phases := []struct {
		name     string
		sql      string
		want     int32
		reaction string
	}{
		{"idle goes to zero", "", 0, ""},
		{"250 rows wake it to ceil(250/100)", "INSERT INTO public.pending SELECT generate_series(1, 250)", 3, "write to wake (3 ready)"},
		{"rows gone sends it back to zero", "DELETE FROM public.pending", 0, "idle to zero"},
	}
	for _, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			if ph.sql != "" {
				if _, err := src.Exec(ctx, ph.sql); err != nil {
					t.Fatal(err)
				}
			}
			took := waitReady(t, s, ns, name, ph.want, 90*time.Second)
			if ph.reaction != "" {
				recordReaction(t, ph.reaction, took)
			}
		})
	}
}
