//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestWorkerPod runs the real philotes-worker as a pod on the node against
// the stack's PostgreSQL: it turns Ready through /readyz, Prometheus scrapes
// it, and rows written to the source reach the sink (the buffer drains and
// the processed counter counts them).
func TestWorkerPod(t *testing.T) {
	s := startStackWith(t, stack.Config{WithoutKEDA: true})
	startNode(t, s, workerBinary(t))
	ctx := t.Context()

	src := connect(t, s, stack.SourceDB)
	if _, err := src.Exec(ctx, `CREATE TABLE public.items (id bigint PRIMARY KEY, note text NOT NULL)`); err != nil {
		t.Fatalf("create source table: %v", err)
	}

	if err := s.CreateBucket(ctx, "worker"); err != nil {
		t.Fatal(err)
	}
	const warehouse = "s3://worker/lake"
	grace := int64(30)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: "default", Annotations: map[string]string{
			"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics",
		}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name:  "worker",
				Image: "philotes-worker:e2e",
				Args:  []string{"run"},
				Env: []corev1.EnvVar{
					{Name: "PHILOTES_SOURCE_URL", Value: stack.PostgresURL(stack.SourceDB)},
					{Name: "PHILOTES_BUFFER_URL", Value: stack.PostgresURL(stack.BufferDB)},
					{Name: "PHILOTES_ICEBERG_WAREHOUSE", Value: warehouse},
					{Name: "PHILOTES_S3_ENDPOINT", Value: stack.S3Endpoint},
					{Name: "PHILOTES_S3_REGION", Value: stack.S3Region},
					{Name: "PHILOTES_S3_ACCESS_KEY_ID", Value: s.S3.AccessKeyID},
					{Name: "PHILOTES_S3_SECRET_ACCESS_KEY", Value: s.S3.SecretAccessKey},
					{Name: "PHILOTES_HTTP_ADDR", Value: ":8080"},
					{Name: "PHILOTES_SHUTDOWN_TIMEOUT", Value: "10s"},
				},
				Ports: []corev1.ContainerPort{{Name: "http-metrics", ContainerPort: 8080}},
			}},
		},
	}
	runPod(t, s, pod)

	eventually(t, 60*time.Second, "prometheus to scrape the worker", func(ctx context.Context) error {
		_, err := s.PromQuery(ctx, "max(philotes_buffer_depth)")
		return err
	})
	const rows = 200
	if _, err := src.Exec(ctx, `INSERT INTO public.items SELECT g, 'row ' || g FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatalf("insert: %v", err)
	}
	waitProcessed(t, s, "", rows, 120*time.Second)
}
