//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/philotes/philotes-worker/test/e2e/chart"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestLakeSurvivesPodLoss is why the lake lives in an object store: on this node, as on a real cluster, each pod
// has its own emptyDir, deleted with the pod.
//   - The chart refuses a file:// warehouse on a per-pod volume with more than one pod.
//   - With one pod and a file:// warehouse on its emptyDir, the lake's files are gone once the pod is replaced
//     (an eviction, a node drain, a rollout), while the catalog still points at them.
//   - The same with an s3:// warehouse loses nothing: the replacement pod goes on, and every row is in the
//     lake once.
func TestLakeSurvivesPodLoss(t *testing.T) {
	s := startStack(t)
	startNode(t, s, workerBinary(t))
	ctx := t.Context()
	src := connect(t, s, stack.SourceDB)
	buf := connect(t, s, stack.BufferDB)

	// release installs one replica of the real worker for table public.<tbl> (its own slot and publication).
	release := func(t *testing.T, ns, tbl string, lakeVals map[string]any) {
		t.Helper()
		if err := createEventsTable(ctx, src, tbl); err != nil {
			t.Fatal(err)
		}
		values := realWorkerValues(lakeVals, map[string]any{"slot": tbl, "publication": tbl + "_pub",
			"tables": []any{"public." + tbl}}, map[string]any{"enabled": false})
		installChart(t, s, ns, "philotes-worker", values)
		waitReady(t, s, ns, "philotes-worker", 1, 2*time.Minute)
		waitSlot(t, src, tbl, time.Minute)
	}
	// replacePod deletes the release's pod, as a drain or an eviction would, and waits for its replacement.
	replacePod := func(t *testing.T, ns string) (old, replacement string) {
		t.Helper()
		old = onlyPod(t, s, ns)
		if err := s.Kube.CoreV1().Pods(ns).Delete(ctx, old, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "a replacement pod Ready", func(ctx context.Context) error {
			live, err := livePods(ctx, s, ns)
			if err != nil {
				return err
			}
			if len(live) != 1 || live[0] == old {
				return fmt.Errorf("pods %v", live)
			}
			pod, err := s.Kube.CoreV1().Pods(ns).Get(ctx, live[0], metav1.GetOptions{})
			if err != nil {
				return err
			}
			p := live[0]
			for _, c := range pod.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
			return fmt.Errorf("%s not Ready", p)
		})
		return old, onlyPod(t, s, ns)
	}

	t.Run("the chart refuses a per-pod file:// warehouse for several pods", func(t *testing.T) {
		values := realWorkerValues(map[string]any{"warehouse": "file:///var/lib/philotes/warehouse"}, nil, map[string]any{"enabled": false})
		values["replicaCount"] = 2
		ictx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		rel, err := chart.Install(ictx, s, chartDir, "refused", "e2e-refused", values, testLogger(t))
		if err == nil {
			_ = rel.Uninstall()
			t.Fatal("helm install accepted a file:// warehouse on an emptyDir with replicaCount 2")
		}
		if !strings.Contains(err.Error(), "per-pod volume") {
			t.Fatalf("refused for another reason: %v", err)
		}
		t.Logf("refused: %v", err)
	})

	t.Run("file:// on the pod's emptyDir: the lake goes with the pod", func(t *testing.T) {
		const ns, tbl = "e2e-file", "file_events"
		release(t, ns, tbl, map[string]any{"warehouse": "file:///var/lib/philotes/warehouse"})
		if err := insertRows(ctx, src, tbl, 1, 100); err != nil {
			t.Fatal(err)
		}
		// The catalog (in the buffer database, which outlives pods) records the table's metadata file.
		var metadata string
		eventually(t, 2*time.Minute, "the table committed", func(ctx context.Context) error {
			return buf.QueryRow(ctx, `SELECT metadata_location FROM iceberg_tables WHERE table_name = $1 AND metadata_location IS NOT NULL`,
				"public_"+tbl).Scan(&metadata)
		})
		rel, ok := strings.CutPrefix(metadata, "file:///var/lib/philotes/")
		if !ok {
			t.Fatalf("metadata at %s, not on the data volume", metadata)
		}
		inPod := func(pod string) string {
			return filepath.Join(s.Dir, "pods", ns+"_"+pod, "volumes", "data", filepath.FromSlash(rel))
		}
		old := onlyPod(t, s, ns)
		if _, err := os.Stat(inPod(old)); err != nil {
			t.Fatalf("the committed metadata is not on pod %s's data volume: %v", old, err)
		}
		old, replacement := replacePod(t, ns)
		for _, pod := range []string{old, replacement} {
			if _, err := os.Stat(inPod(pod)); !os.IsNotExist(err) {
				t.Fatalf("pod %s: metadata %s: %v, want it gone", pod, rel, err)
			}
		}
		t.Logf("the catalog still points at %s; no pod has it: the lake is lost", metadata)
	})

	t.Run("s3:// warehouse: nothing lost", func(t *testing.T) {
		const ns, tbl = "e2e-s3", "s3_events"
		lakeVals, warehouse := chartLake(t, s, ns)
		release(t, ns, tbl, lakeVals)
		lk := openLake(t, s, warehouse)
		if err := insertRows(ctx, src, tbl, 1, 100); err != nil {
			t.Fatal(err)
		}
		waitInLake(t, lk, tbl, 100, 2*time.Minute)
		replacePod(t, ns)
		if err := insertRows(ctx, src, tbl, 101, 200); err != nil {
			t.Fatal(err)
		}
		waitInLake(t, lk, tbl, 200, 2*time.Minute)
		if err := lk.exactlyOnce(ctx, tbl, 200); err != nil {
			t.Fatal(err)
		}
	})
}

// onlyPod is the name of the one pod of namespace ns that is not being deleted.
func onlyPod(t *testing.T, s *stack.Stack, ns string) string {
	t.Helper()
	live, err := livePods(t.Context(), s, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 {
		t.Fatalf("pods in %s: %v, want one", ns, live)
	}
	return live[0]
}

// livePods are the names of the pods of namespace ns that are not being deleted.
func livePods(ctx context.Context, s *stack.Stack, ns string) ([]string, error) {
	pods, err := s.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var live []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p.Name)
		}
	}
	return live, nil
}
