//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/philotes/philotes-worker/test/e2e/report"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestSmoke proves the stack end to end with a stand-in worker: the node runs
// a Deployment's pods on their own loopback addresses, Prometheus discovers
// them through the apiserver, KEDA's Prometheus trigger scales the
// Deployment out to ceil(depth/threshold) and back in, and with Prometheus
// stopped KEDA holds the fallback replica count until it is back.
func TestSmoke(t *testing.T) {
	s := startStack(t)
	startNode(t, s, fakeWorker(t))
	ctx := t.Context()

	depthFile, setDepth := fakeDepth(t)

	const ns, name = "default", "smoke"
	dep := fakeDeployment(ns, name, depthFile)
	if _, err := s.Kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	waitReady(t, s, ns, name, 1, 60*time.Second)
	checkPodIPs(t, s, ns, name)

	eventually(t, 60*time.Second, "prometheus to scrape the pod", func(ctx context.Context) error {
		_, err := s.PromQuery(ctx, "max(philotes_buffer_depth)")
		return err
	})

	so := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "keda.sh/v1alpha1",
		"kind":       "ScaledObject",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"scaleTargetRef":  map[string]any{"name": name},
			"pollingInterval": int64(2),
			"cooldownPeriod":  int64(10),
			"minReplicaCount": int64(1),
			"maxReplicaCount": int64(5),
			"fallback":        map[string]any{"failureThreshold": int64(2), "replicas": int64(3)},
			"advanced": map[string]any{"horizontalPodAutoscalerConfig": map[string]any{"behavior": map[string]any{
				"scaleUp":   map[string]any{"stabilizationWindowSeconds": int64(0)},
				"scaleDown": map[string]any{"stabilizationWindowSeconds": int64(5)},
			}}},
			"triggers": []any{map[string]any{
				"type": "prometheus",
				"metadata": map[string]any{
					"serverAddress":       stack.PrometheusURL,
					"query":               "max(philotes_buffer_depth)",
					"threshold":           "100",
					"activationThreshold": "10",
					"ignoreNullValues":    "false",
				},
			}},
		},
	}}
	if _, err := s.Dynamic.Resource(stack.ScaledObjectGVR).Namespace(ns).Create(ctx, so, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create scaledobject: %v", err)
	}
	waitScaledObjectReady(t, s, ns, name)

	rec := report.Start(report.Config{
		Kube: s.Kube, Namespace: ns, Deployment: name, HPA: "keda-hpa-" + name,
		Query: s.PromQuery,
	})
	tests := []struct {
		name  string
		depth int
		want  int32
	}{
		{"scale out to ceil(350/100)", 350, 4},
		{"scale in to 2", 120, 2},
		{"back to min", 0, 1},
	}
	var loadAt time.Time
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if i == 0 {
				loadAt = time.Now()
			}
			setDepth(tc.depth)
			waitReady(t, s, ns, name, tc.want, 90*time.Second)
			checkPodIPs(t, s, ns, name)
		})
	}
	t.Run("prometheus down gives the fallback replicas", func(t *testing.T) {
		if err := s.StopPrometheus(); err != nil {
			t.Fatal(err)
		}
		waitReady(t, s, ns, name, 3, 90*time.Second)
	})
	t.Run("prometheus back resumes normal scaling", func(t *testing.T) {
		if err := s.StartPrometheus(ctx); err != nil {
			t.Fatal(err)
		}
		waitReady(t, s, ns, name, 1, 90*time.Second)
	})
	samples := rec.Stop()
	writeTimeline(t, "smoke", "smoke: stand-in worker, Prometheus trigger, fallback", samples)
	if at, ok := report.FirstAt(samples, loadAt, func(x report.Sample) bool { return x.Replicas > 1 }); ok {
		recordReaction(t, "load to first scale-out", at.Sub(loadAt))
	}
	if at, ok := report.FirstAt(samples, loadAt, func(x report.Sample) bool { return x.Ready == 4 }); ok {
		recordReaction(t, "load to full scale (4 ready)", at.Sub(loadAt))
	}
}

// fakeDeployment is a Deployment of the stand-in worker, scraped through the
// prometheus.io annotations, its depth read from depthFile.
func fakeDeployment(ns, name, depthFile string) *appsv1.Deployment {
	labels := map[string]string{"app.kubernetes.io/name": name}
	grace := int64(5)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics",
				}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name:  "worker",
						Image: "philotes-worker:e2e",
						Args:  []string{"run"},
						Env: []corev1.EnvVar{
							{Name: "FAKEWORKER_DEPTH_FILE", Value: depthFile},
							{Name: "FAKEWORKER_SHUTDOWN_DELAY", Value: "1s"},
							{Name: "PHILOTES_HTTP_ADDR", Value: ":8080"},
						},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}
