//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/philotes/philotes-worker/test/e2e/stack"
)

var (
	workerOnce sync.Once
	workerPath string
	workerErr  error
)

// workerBinary is $PHILOTES_WORKER_BIN, or philotes-worker built from this
// repository once per test binary.
func workerBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PHILOTES_WORKER_BIN"); p != "" {
		return p
	}
	workerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "philotes-e2e-worker-")
		if err != nil {
			workerErr = err
			return
		}
		workerPath = filepath.Join(dir, "philotes-worker")
		cmd := exec.Command("go", "build", "-o", workerPath, "./cmd/philotes-worker")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			workerErr = fmt.Errorf("build philotes-worker: %w: %s", err, out)
		}
	})
	if workerErr != nil {
		t.Fatal(workerErr)
	}
	return workerPath
}

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
		_, err := promQuery(ctx, s, "max(philotes_buffer_depth)")
		return err
	})
	const rows = 200
	if _, err := src.Exec(ctx, `INSERT INTO public.items SELECT g, 'row ' || g FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatalf("insert: %v", err)
	}
	eventually(t, 120*time.Second, fmt.Sprintf("%d events processed and the buffer empty", rows), func(ctx context.Context) error {
		processed, err := promQuery(ctx, s, "sum(philotes_buffer_events_processed_total)")
		if err != nil {
			return err
		}
		depth, err := promQuery(ctx, s, "max(philotes_buffer_depth)")
		if err != nil {
			return err
		}
		if processed < rows || depth != 0 {
			return fmt.Errorf("processed %v, depth %v", processed, depth)
		}
		return nil
	})
}
