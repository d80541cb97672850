//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/philotes/philotes-worker/internal/source"
	"github.com/philotes/philotes-worker/test/e2e/report"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestScaleToZero is scale to zero with the real chart and the real worker, configured only through the chart's
// values (minReplicaCount 0 and the chart's PostgreSQL trigger, which works while no worker runs and no worker
// metric exists), on one release that each phase changes with `helm upgrade` as a user would:
//
//   - the chart renders the worker contract's wake-up query (the slot's unconfirmed WAL);
//   - rows written are processed; idle, the release goes to 0 after the cooldown, its pods gone and the slot
//     confirmed below the wake-up threshold;
//   - rows written at zero cross a raised wake-up threshold (20,000 bytes) and wake it; it goes back to 0;
//   - a PostgreSQL trigger wakes it straight to ceil(value / target) replicas, and sends it back to 0 once the
//     value is 0 (a count query through the chart's query override: 250 rows, 100 per replica, 3 replicas);
//   - with the chart's default wake-up threshold (any unconfirmed WAL), once it has settled at zero a single row
//     wakes it and reaches the lake; it goes back to 0;
//   - at the end, at zero, the slot and the buffer hold nothing, and every row written is in the Iceberg table
//     exactly once: one insert row per id, with the source's values.
//
// Writes e2e-report/zero.{csv,svg}.
func TestScaleToZero(t *testing.T) {
	s := startStack(t)
	startNode(t, s, workerBinary(t))
	ctx := t.Context()
	src := connect(t, s, stack.SourceDB)
	buf := connect(t, s, stack.BufferDB)

	const (
		ns, name = "e2e", "philotes-worker"
		slot     = "philotes_cdc"
		events   = "zero_events"  // the rows followed into the lake
		pending  = "zero_pending" // what the count query counts
		raised   = 20000          // a raised wake-up threshold, in unconfirmed WAL bytes
		maxPods  = 3
	)
	if err := createEventsTable(ctx, src, events); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(ctx, `CREATE TABLE public.`+pending+` (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	walQuery := source.RetainedWALQuery(slot, "500000") // the chart's default query for chartPostgresTrigger
	countQuery := `SELECT count(*) FROM public.` + pending

	lakeVals, warehouse := chartLake(t, s, ns)
	// values are the release's values with the PostgreSQL trigger pg beside the chart's Prometheus triggers.
	values := func(pg map[string]any) map[string]any {
		return realWorkerValues(lakeVals, map[string]any{"slot": slot}, map[string]any{
			"enabled":         true,
			"minReplicaCount": 0,
			"maxReplicas":     maxPods,
			"pollingInterval": 2,
			"cooldownPeriod":  10,
			// The first pod gets this long to create the slot and work before the first scale to zero.
			"initialCooldownPeriod": 15,
			"advanced":              fastScaleIn(),
			"prometheus": map[string]any{
				"serverAddress": stack.PrometheusURL,
				"lagTrigger":    map[string]any{"threshold": "30", "activationThreshold": "5"},
				"bufferTrigger": map[string]any{"threshold": "500", "activationThreshold": "10"},
			},
			"postgresql": pg,
		})
	}
	rel := installChart(t, s, ns, name, values(chartPostgresTrigger(strconv.Itoa(raised))))
	upgrade := func(t *testing.T, pg map[string]any) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		if err := rel.Upgrade(ctx, values(pg)); err != nil {
			t.Fatal(err)
		}
	}
	waitScaledObjectReady(t, s, ns, name)

	rec := report.Start(releaseTimeline(s, ns, name))
	defer func() {
		writeTimeline(t, "zero", "zero: real chart + worker, idle to 0, woken by the PostgreSQL trigger", rec.Stop())
	}()

	lk := openLake(t, s, warehouse)
	insert := func(t *testing.T, from, to int) {
		t.Helper()
		if err := insertRows(ctx, src, events, from, to); err != nil {
			t.Fatal(err)
		}
		t.Logf("inserted ids %d..%d", from, to)
	}
	const n1, n2 = 1000, 2000
	const single = n1 + n2 + 1 // the one row of the default threshold's phase
	// Each phase starts where the one before left the release: stop at the first that fails.
	phase := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	phase("the chart renders the wake-up query", func(t *testing.T) {
		checkWakeTrigger(t, s, ns, name, walQuery, strconv.Itoa(raised))
	})

	phase("rows written are processed by a worker", func(t *testing.T) {
		// The slot is where CDC starts: rows written before it exists are not
		// captured. The Deployment's first pod creates it within
		// initialCooldownPeriod, before KEDA may scale it to zero; should it be at
		// zero already, these rows wake it (a missing slot reads as the trigger's
		// target and wakes it too).
		waitSlot(t, src, slot, 90*time.Second)

		if d, err := s.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{}); err == nil && d.Spec.Replicas != nil {
			t.Logf("deployment wants %d replicas (%d ready) when the first rows are written", *d.Spec.Replicas, d.Status.ReadyReplicas)
		}
		start := time.Now()
		insert(t, 1, n1)
		eventually(t, 90*time.Second, "a worker Ready", func(ctx context.Context) error {
			return readyAtLeast(ctx, s, ns, name, 1)
		})
		waitInLake(t, lk, events, n1, 120*time.Second)
		recordReaction(t, "first batch: write to in the lake", time.Since(start))
	})

	phase("idle goes to zero after the cooldown", func(t *testing.T) {
		took := waitReady(t, s, ns, name, 0, 120*time.Second)
		recordReaction(t, "idle to zero", took)
		eventually(t, 30*time.Second, "no worker pod left", func(ctx context.Context) error {
			return noPods(ctx, s, ns, name)
		})
		lag, err := slotUnconfirmed(ctx, src, slot)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("unconfirmed WAL at zero: %d bytes (activation %d)", lag, raised)
		if lag > raised {
			t.Errorf("unconfirmed WAL %d bytes at zero is above the activation %d: it would wake at once", lag, raised)
		}
	})

	phase("rows written at zero cross the raised threshold and wake it", func(t *testing.T) {
		start := time.Now()
		insert(t, n1+1, n1+n2)
		took := eventually(t, 90*time.Second, "a worker Ready again", func(ctx context.Context) error {
			return readyAtLeast(ctx, s, ns, name, 1)
		})
		recordReaction(t, "write to wake (1 ready)", took)
		waitInLake(t, lk, events, n1+n2, 180*time.Second)
		recordReaction(t, "write at zero to in the lake", time.Since(start))
		back := time.Now()
		waitReady(t, s, ns, name, 0, 180*time.Second)
		recordReaction(t, "in the lake to asleep again", time.Since(back))
	})

	phase("a count query wakes it to ceil(250/100) replicas, rows gone send it back to zero", func(t *testing.T) {
		pg := chartPostgresTrigger("") // the chart's default threshold: a count above 0
		pg["query"], pg["targetQueryValue"] = countQuery, "100"
		upgrade(t, pg)
		checkWakeTrigger(t, s, ns, name, countQuery, "0")
		waitReady(t, s, ns, name, 0, 60*time.Second) // nothing counted yet: still asleep
		if _, err := src.Exec(ctx, `INSERT INTO public.`+pending+` SELECT generate_series(1, 250)`); err != nil {
			t.Fatal(err)
		}
		took := waitReady(t, s, ns, name, 3, 90*time.Second)
		recordReaction(t, "count: write to wake (3 ready)", took)
		if _, err := src.Exec(ctx, `DELETE FROM public.`+pending); err != nil {
			t.Fatal(err)
		}
		took = waitReady(t, s, ns, name, 0, 120*time.Second)
		recordReaction(t, "count: rows gone to zero", took)
	})

	phase("with the default threshold one row written at zero wakes it", func(t *testing.T) {
		upgrade(t, chartPostgresTrigger("")) // the chart's default query and threshold: any unconfirmed WAL
		checkWakeTrigger(t, s, ns, name, walQuery, "0")
		// WAL written after the worker last confirmed the slot (a checkpoint
		// or standby-snapshot record) may wake it once; it then confirms the
		// slot and sleeps again. Wait for that quiet state before the write.
		settling := time.Now()
		eventually(t, 300*time.Second, "asleep: 0 replicas and nothing unconfirmed in the slot", func(ctx context.Context) error {
			d, err := s.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if *d.Spec.Replicas != 0 || d.Status.Replicas != 0 {
				return fmt.Errorf("%d replicas", d.Status.Replicas)
			}
			unconfirmed, err := slotUnconfirmed(ctx, src, slot)
			if err != nil {
				return err
			}
			if unconfirmed != 0 {
				return fmt.Errorf("%d bytes unconfirmed", unconfirmed)
			}
			return nil
		})
		t.Logf("woke %d times without a write before settling at zero", wakesFromZero(rec.Samples(), settling))
		start := time.Now()
		insert(t, single, single) // one row: the first change must wake it
		took := eventually(t, 90*time.Second, "a worker Ready again", func(ctx context.Context) error {
			return readyAtLeast(ctx, s, ns, name, 1)
		})
		recordReaction(t, "one row written to wake (1 ready)", took)
		waitInLake(t, lk, events, single, 120*time.Second)
		recordReaction(t, "one row written at zero to in the lake", time.Since(start))
		// Housekeeping WAL (autovacuum, standby snapshots) may wake it again on
		// its way down: each such wake ends one cooldown after the worker
		// confirmed the slot.
		back := time.Now()
		waitReady(t, s, ns, name, 0, 300*time.Second)
		recordReaction(t, "one row: in the lake to asleep again", time.Since(back))
		t.Logf("woke %d times since the row was written, one of them for the row", wakesFromZero(rec.Samples(), start))
	})

	phase("at zero every row is in the lake exactly once", func(t *testing.T) {
		waitCaughtUp(t, src, buf, slot, 120*time.Second)
		if err := lk.exactlyOnceAllKinds(ctx, events, single); err != nil {
			t.Fatal(err)
		}
		t.Logf("all %d ids in philotes.public_%s exactly once, as inserts with the source's values", single, events)
	})
}

// checkWakeTrigger checks the release's rendered ScaledObject: minReplicaCount 0 and a PostgreSQL trigger with
// query and activation threshold, so that a wake-up is the chart's.
func checkWakeTrigger(t *testing.T, s *stack.Stack, ns, name, query, activation string) {
	t.Helper()
	u, err := s.Dynamic.Resource(stack.ScaledObjectGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if minReplicas, _, _ := unstructured.NestedInt64(u.Object, "spec", "minReplicaCount"); minReplicas != 0 {
		t.Fatalf("minReplicaCount %d, want 0", minReplicas)
	}
	for _, m := range scaledObjectTriggers(t, s, ns, name) {
		if m["type"] != "postgresql" {
			continue
		}
		md, _ := m["metadata"].(map[string]any)
		if md["query"] != query || md["activationTargetQueryValue"] != activation {
			t.Fatalf("postgresql trigger query %q, activation %v; want %q, %s", md["query"], md["activationTargetQueryValue"], query, activation)
		}
		return
	}
	t.Fatal("no postgresql trigger")
}

// noPods is nil once the release has no pod, not even a terminating one.
func noPods(ctx context.Context, s *stack.Stack, ns, name string) error {
	pods, err := s.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + name})
	if err != nil {
		return err
	}
	if len(pods.Items) != 0 {
		return fmt.Errorf("%d pods", len(pods.Items))
	}
	return nil
}

// wakesFromZero counts the times the Deployment went from 0 replicas to more since from.
func wakesFromZero(samples []report.Sample, from time.Time) int {
	n := 0
	for i := 1; i < len(samples); i++ {
		if !samples[i].At.Before(from) && samples[i-1].Replicas == 0 && samples[i].Replicas > 0 {
			n++
		}
	}
	return n
}
