//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/philotes/philotes-worker/test/e2e/chart"
	"github.com/philotes/philotes-worker/test/e2e/report"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestScenarios runs the autoscaling scenarios one after another on one
// stack, one release of the real chart and the real worker, each phase
// changing the release's values with `helm upgrade` as a user would:
//
//   - lag: a backlog pushes philotes_cdc_lag_seconds over its threshold,
//     replicas rise (never above max); once caught up they fall back to min;
//   - buffer: a burst gives ceil(peak depth / threshold) replicas, and back to
//     min after the stabilization window;
//   - cooldown: a load that comes and goes never makes replicas fall inside
//     the scale-down stabilization window, and they do fall after it;
//   - fallback: with Prometheus stopped the workers hold the chart's fallback
//     count, never zero, while rows keep arriving; restarted, replicas follow
//     the load again;
//   - backfill: a table with existing rows joins the publication; the
//     backfill of its rows scales the release out through the chart's
//     backfill trigger and back in once they are read, and each of those
//     rows is in the lake exactly once, as a snapshot row;
//   - loss: every row written in all of the above is in the Iceberg tables
//     exactly once (the backfilled table's as snapshot rows).
//
// Scale to zero is TestScaleToZero's. Each phase writes e2e-report/scenario-<phase>.csv and .svg.
func TestScenarios(t *testing.T) {
	sc := newScenarios(t)

	// Thresholds are in events; the worker drains slowly on purpose (one
	// processor per replica capped at 5,000 events/s, small claims), so that a
	// burst stays in the buffer long enough for the autoscaler to react to it.
	const (
		lagRows      = 150_000
		lagThreshold = 5.0 // seconds per replica
		burstRows    = 200_000
		// Buffer threshold: the whole burst would ask for 4 replicas, but the
		// reader appends it over a few seconds while the first replica drains,
		// so the depth peaks near 3 thresholds, and stays above one for
		// several HPA syncs (5 s here).
		perReplica = burstRows / 4.0
		// Cooldown: bursts that four replicas drain well inside the window, and
		// that ask for all four while one replica works on them.
		window             = 30 // cooldown phase's scale-down stabilization, seconds
		cooldownBurst      = 100_000
		cooldownPerReplica = cooldownBurst / 4.0
		// Backfill: the existing rows ask for all four replicas (threshold a
		// quarter of them), and each replica reads at most backfillRate rows a
		// second, so one replica alone would take a minute: long enough for
		// the HPA (5 s syncs) to act while the rows are read.
		backfillRows       = 300_000
		backfillPerReplica = backfillRows / 4.0
		backfillRate       = 5_000
		backfillTable      = "sales.orders" // outside the publication's schema
	)

	t.Run("lag", func(t *testing.T) {
		sc.upgrade(t, knobs{lag: lagThreshold, window: 10})
		sc.settle(t)
		rec := sc.record(t, "lag", fmt.Sprintf("lag: %d rows at once, %.0f s of lag per replica, max %d", lagRows, lagThreshold, scMax))
		start, samples := sc.burst(t, rec, "lag", "lag_events", lagRows)

		over, ok := report.FirstAt(samples, start, func(x report.Sample) bool { return x.Lag > lagThreshold })
		if !ok {
			t.Fatalf("lag never went over %.0f s: the backlog was too small to test lag scaling", lagThreshold)
		}
		out, _ := report.FirstAt(samples, start, func(x report.Sample) bool { return x.Desired > 1 })
		// The lag trigger is the only trigger: scaling out before the lag
		// crossed its threshold would be something else scaling.
		if out.Before(over.Add(-3 * time.Second)) {
			t.Errorf("scaled out at +%s, before the lag crossed %.0f s at +%s", out.Sub(start), lagThreshold, over.Sub(start))
		}
		peak := peakOf(samples, func(x report.Sample) float64 { return float64(x.Replicas) })
		peakLag := peakOf(samples, func(x report.Sample) float64 { return x.Lag })
		t.Logf("peak lag %.1f s, peak replicas %.0f (ceil(lag/threshold) = %.0f, max %d)", peakLag, peak, math.Ceil(peakLag/lagThreshold), scMax)
		if peak > scMax {
			t.Errorf("peak replicas %.0f above maxReplicas %d", peak, scMax)
		}
		if want := math.Min(scMax, math.Ceil(peakLag/lagThreshold)); peak < want-1 {
			t.Errorf("peak replicas %.0f, want about ceil(%.1f/%.0f) = %.0f", peak, peakLag, lagThreshold, want)
		}
	})

	t.Run("buffer", func(t *testing.T) {
		sc.upgrade(t, knobs{buffer: perReplica, window: 10})
		sc.settle(t)
		rec := sc.record(t, "buffer", fmt.Sprintf("buffer: %d rows at once, %.0f events per replica, max %d", burstRows, perReplica, scMax))
		start, samples := sc.burst(t, rec, "buffer", "buffer_events", burstRows)

		peakDepth := peakOf(samples, func(x report.Sample) float64 { return x.Depth })
		peakDesired := peakOf(samples, func(x report.Sample) float64 { return float64(x.Desired) })
		want := math.Min(scMax, math.Ceil(peakDepth/perReplica))
		t.Logf("peak depth %.0f, peak desired replicas %.0f, ceil(depth/threshold) = %.0f", peakDepth, peakDesired, want)
		// The HPA sees the depth a few seconds late, by when the workers have
		// taken some of it: one replica fewer than the peak asks is fine, more
		// than it asks is not (that would be e.g. the depth summed over pods).
		if peakDesired > want || peakDesired < want-1 {
			t.Errorf("peak desired replicas %.0f, want ceil(%.0f/%.0f) = %.0f (or one fewer)", peakDesired, peakDepth, perReplica, want)
		}
		if full, ok := report.FirstAt(samples, start, func(x report.Sample) bool { return float64(x.Ready) >= peakDesired }); ok {
			recordReaction(t, fmt.Sprintf("buffer: write to full scale (%.0f ready)", peakDesired), full.Sub(start))
		}
	})

	t.Run("cooldown", func(t *testing.T) {
		sc.upgrade(t, knobs{buffer: cooldownPerReplica, window: window})
		sc.settle(t)
		rec := sc.record(t, "cooldown", fmt.Sprintf("cooldown: bursts of %d rows (%.0f events per replica) with idle gaps, scale-down window %d s", cooldownBurst, cooldownPerReplica, window))
		// Each round: a burst (into its own table, so that every round drains
		// at the same speed), wait until it is in the lake, then an idle gap in
		// which nothing asks for more than one replica. Without the window,
		// replicas would fall in every gap.
		const rounds, gap = 3, 8 * time.Second
		for i := range rounds {
			sc.insert(t, fmt.Sprintf("cooldown_%d_events", i+1), cooldownBurst)
			if i == 0 {
				sc.waitDesiredAbove(t, 1, 120*time.Second)
			}
			sc.waitCaughtUp(t, 240*time.Second)
			sc.idle(t, gap)
		}
		lastLoad := time.Now()
		took := sc.waitDesiredAtMost(t, 1, time.Duration(window)*time.Second+90*time.Second)
		// The recorder samples once a second: let it record the fall the wait just saw before stopping it.
		rec.waitSample(t, "the timeline to record the scale-in", func(x report.Sample) bool { return x.Desired <= 1 })
		samples := rec.stop(t)
		recordReaction(t, fmt.Sprintf("cooldown: last load to scale-in (window %d s)", window), took)

		// The HPA may scale in only once none of its own recommendations in
		// the last window asked for the count it had. The recorder reads each
		// recommendation (Sample.Recommended, from the metric values the HPA
		// last read) within a second of the sync that made it, hence the small
		// slack. To show the window doing the work, the HPA must also have read
		// a load that asked for fewer replicas than it kept, inside the window.
		const slack = 3 * time.Second
		win := time.Duration(window) * time.Second
		var lastHigh, readAt time.Time
		var downs int
		var heldLow time.Duration
		for i := 1; i < len(samples); i++ {
			prev, cur := samples[i-1], samples[i]
			// A reading shows in every sample until the next sync: it dates
			// from the first sample that showed it.
			if cur.HPAValue != prev.HPAValue || cur.Recommended != prev.Recommended {
				readAt = cur.At
			}
			if cur.Recommended > 0 && cur.Recommended >= prev.Desired || cur.Desired > prev.Desired {
				lastHigh = readAt
			}
			if cur.Recommended > 0 && cur.Recommended < cur.Desired && cur.At.Sub(lastHigh) < win {
				heldLow += cur.At.Sub(prev.At)
			}
			if cur.Desired < prev.Desired && cur.Desired > 0 {
				downs++
				if since := cur.At.Sub(lastHigh); since < win-slack {
					t.Errorf("replicas fell %d -> %d only %s after the HPA last read a load asking for %d (window %d s)",
						prev.Desired, cur.Desired, since.Round(time.Second), prev.Desired, window)
				}
			}
		}
		t.Logf("the HPA read a load asking for fewer replicas than it kept for %s inside the window; %d scale-ins", heldLow.Round(time.Second), downs)
		if heldLow < gap/2 {
			t.Errorf("the HPA read a lower load inside the window for only %s: the bursts did not come and go", heldLow)
		}
		if downs == 0 {
			t.Errorf("replicas never fell after the load stopped at %s", lastLoad.Format(time.TimeOnly))
		}
		// The window must also end: the scale-in comes about window seconds
		// after the last load, not after the HPA's default of 300 s.
		if took > win+60*time.Second {
			t.Errorf("scale-in %s after the last load; the window is %d s", took.Round(time.Second), window)
		}
	})

	t.Run("fallback", func(t *testing.T) {
		sc.upgrade(t, knobs{buffer: perReplica, window: 10})
		sc.settle(t)
		rec := sc.record(t, "fallback", fmt.Sprintf("fallback: Prometheus stopped, fallback %d replicas; rows keep arriving", scFallback))
		stop := sc.trickle(t, "fallback_events", 100, 200*time.Millisecond)
		defer stop()
		if err := sc.s.StopPrometheus(); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		took := eventually(t, 90*time.Second, fmt.Sprintf("the fallback count (%d ready)", scFallback), func(ctx context.Context) error {
			return readyAtLeast(ctx, sc.s, scNS, scName, scFallback)
		})
		recordReaction(t, "fallback: prometheus down to fallback count", took)
		if err := sc.s.StartPrometheus(t.Context()); err != nil {
			t.Fatal(err)
		}
		up := time.Now()
		took = sc.waitDesiredAtMost(t, 1, 120*time.Second)
		recordReaction(t, "fallback: prometheus back to following the load", took)
		n := stop()
		t.Logf("%d rows written while Prometheus was down and back", n)
		waitReady(t, sc.s, scNS, scName, 1, 120*time.Second)
		samples := rec.stop(t)
		for _, x := range samples {
			if !x.At.Before(down) && x.At.Before(up) && x.Replicas == 0 {
				t.Errorf("0 replicas at %s while Prometheus was down", x.At.Format(time.TimeOnly))
			}
		}
	})

	t.Run("backfill", func(t *testing.T) {
		sc.upgrade(t, knobs{backfill: backfillPerReplica, backfillRate: backfillRate, window: 10})
		sc.settle(t)
		sc.checkTriggers(t, "backfill") // the backfill trigger alone: whatever scales, it does
		// The tables written above had a backfill each when the reader first saw them (the stream carried
		// their rows: those backfills must leave them all out, see loss). Start from none running: the gauge
		// then reads this table alone.
		sc.waitBackfillsDone(t, 120*time.Second)
		// The upgrade restarted the pods: wait for the new reader to stream, so that it sees the table in the
		// stream as it would in a running release, not in the publication when its session starts.
		sc.waitStreaming(t, 60*time.Second)
		// Rows that were there before: loaded while the table is outside the publication, so no change of
		// theirs is in the slot's stream; only a backfill brings them to the lake.
		sc.load(t, backfillTable, backfillRows)
		rec := sc.record(t, "backfill", fmt.Sprintf("backfill: %d existing rows, %.0f rows per replica, at most %d rows/s per replica, max %d",
			backfillRows, backfillPerReplica, backfillRate, scMax))
		start := time.Now()
		sc.publish(t, backfillTable, backfillRows+1)
		took := sc.waitDesiredAbove(t, 1, 120*time.Second)
		recordReaction(t, "backfill: table published to first scale-out", took)
		sc.waitBackfillDone(t, backfillTable, 240*time.Second)
		read := time.Now()
		recordReaction(t, "backfill: table published to every row read", read.Sub(start))
		sc.waitCaughtUp(t, 240*time.Second)
		sc.waitDesiredAtMost(t, 1, 120*time.Second)
		waitReady(t, sc.s, scNS, scName, 1, 120*time.Second)
		rec.waitSample(t, "the timeline to record the release back at 1 replica", func(x report.Sample) bool {
			return x.Desired <= 1 && x.Replicas == 1 && x.Backfill == 0
		})
		// Which pods read backfill rows since the table was published (the range keeps the pods scaled in).
		readers, err := sc.s.PromQuery(t.Context(), fmt.Sprintf(`count(increase(philotes_backfill_rows_read_total{namespace="%s"}[%ds]) > 0)`,
			scNS, int(time.Since(start).Seconds())+1))
		if err != nil {
			t.Errorf("pods that read backfill rows: %v", err)
		}
		samples := rec.stop(t)

		out, ok := report.FirstAt(samples, start, func(x report.Sample) bool { return x.Desired > 1 })
		if !ok {
			t.Fatal("the timeline never shows the HPA asking for more than 1 replica")
		}
		var atOut report.Sample
		for _, x := range samples {
			if x.At.Equal(out) {
				atOut = x
			}
		}
		peakRemaining := peakOf(samples, func(x report.Sample) float64 { return x.Backfill })
		peakRead := peakOf(samples, func(x report.Sample) float64 { return x.HPAValue })
		peakDesired := peakOf(samples, func(x report.Sample) float64 { return float64(x.Desired) })
		peakReady := peakOf(samples, func(x report.Sample) float64 { return float64(x.Ready) })
		back, ok := report.FirstAt(samples, out, func(x report.Sample) bool { return x.Desired <= 1 })
		if !ok {
			t.Fatal("the timeline never shows the HPA back at 1 replica")
		}
		t.Logf("scale-out at +%s: the HPA read %.0f rows remaining (%.0f per replica) and recommended %d; peak remaining %.0f (sampled), peak read by the HPA %.0f, peak desired %.0f, peak ready %.0f; %.0f pods read backfill rows",
			out.Sub(start).Round(time.Second), atOut.HPAValue, backfillPerReplica, atOut.Recommended, peakRemaining, peakRead, peakDesired, peakReady, readers)
		if full, ok := report.FirstAt(samples, start, func(x report.Sample) bool { return float64(x.Ready) >= peakDesired }); ok {
			recordReaction(t, fmt.Sprintf("backfill: table published to full scale (%.0f ready)", peakDesired), full.Sub(start))
		}
		recordReaction(t, "backfill: every row read to desired back at 1", max(back.Sub(read), 0))
		recordReaction(t, "backfill: table published to desired back at 1", back.Sub(start))

		// The backfill trigger is the only trigger: the scale-out must come from the HPA's reading of the rows
		// remaining, and ask for what they ask for.
		if peakRemaining <= backfillPerReplica {
			t.Errorf("at most %.0f rows remaining sampled, not above the %.0f per replica: the backfill was too small to scale", peakRemaining, backfillPerReplica)
		}
		if atOut.Recommended <= 1 || atOut.HPAValue <= backfillPerReplica {
			t.Errorf("scaled out at +%s with the HPA reading %.0f rows remaining (recommending %d), not above %.0f per replica",
				out.Sub(start).Round(time.Second), atOut.HPAValue, atOut.Recommended, backfillPerReplica)
		}
		want := math.Min(scMax, math.Ceil(peakRead/backfillPerReplica))
		if peakDesired > want || peakDesired < want-1 {
			t.Errorf("peak desired replicas %.0f, want ceil(%.0f/%.0f) = %.0f (or one fewer), at most %d", peakDesired, peakRead, backfillPerReplica, want, scMax)
		}
		// The replicas KEDA added read chunks too: that is what scaling out on a backfill is for.
		if peakReady > 1 && readers < 2 {
			t.Errorf("%.0f pods read backfill rows while %.0f were Ready: the added replicas did not read chunks", readers, peakReady)
		}
		// Every existing row arrives once, as a snapshot row; the row the application wrote after publishing
		// comes through the stream alone (the chunk that read it leaves it out).
		sc.checkBackfilled(t, backfillTable, backfillRows)
	})

	t.Run("loss", func(t *testing.T) {
		sc.waitCaughtUp(t, 120*time.Second)
		for _, tbl := range sc.tables() {
			sc.mu.Lock()
			n := sc.written[tbl]
			sc.mu.Unlock()
			if err := sc.lk.exactlyOnceAllKinds(t.Context(), tbl, n); err != nil {
				t.Error(err)
				continue
			}
			t.Logf("%s: all %d ids in the lake exactly once", tbl, n)
		}
		sc.mu.Lock()
		backfilled := maps.Clone(sc.backfilled)
		sc.mu.Unlock()
		for _, tbl := range slices.Sorted(maps.Keys(backfilled)) {
			sc.checkBackfilled(t, tbl, backfilled[tbl])
		}
	})
}

const (
	scNS, scName = "e2e", "philotes-worker"
	scSlot       = "philotes_cdc"
	scPub        = "philotes_pub"
	scMax        = 4
	scFallback   = 3
)

// knobs are what a phase changes in the release's values.
type knobs struct {
	lag      float64 // lag trigger threshold in seconds; 0 disables the trigger
	buffer   float64 // buffer trigger threshold in events; 0 disables the trigger
	backfill float64 // backfill trigger threshold in rows remaining; 0 disables the trigger
	window   int     // scale-down stabilization window in seconds
	// backfillRate caps the backfill rows one replica reads per second; 0: no cap (the chart's default).
	backfillRate int
}

// scenarios is the state the phases share: one stack, one release, the
// source rows written so far.
type scenarios struct {
	s        *stack.Stack
	rel      *chart.Release
	src, buf *pgx.Conn
	lk       lake
	lakeVals map[string]any // the chart's worker.iceberg values: an s3:// warehouse

	mu         sync.Mutex
	written    map[string]int // source table -> ids 1..n written
	order      []string       // source tables in the order they were created
	backfilled map[string]int // schema.table -> ids 1..n loaded before it was published (n+1 inserted after)
}

func newScenarios(t *testing.T) *scenarios {
	s := startStack(t)
	startNode(t, s, workerBinary(t))
	sc := &scenarios{s: s, written: map[string]int{}, backfilled: map[string]int{}}
	sc.src = connect(t, s, stack.SourceDB)
	sc.buf = connect(t, s, stack.BufferDB)
	var warehouse string
	sc.lakeVals, warehouse = chartLake(t, s, scNS)
	sc.lk = openLake(t, s, warehouse)

	// The publication, as a DBA would create it before installing: the tables of the public schema, those
	// there now and those created later. A table of another schema joins it with ALTER PUBLICATION (the
	// backfill phase). Were it the worker's default FOR ALL TABLES, every row written after the slot was
	// made would reach the lake through the stream, and no phase could have rows from before.
	if _, err := sc.src.Exec(t.Context(), `CREATE PUBLICATION `+scPub+` FOR TABLES IN SCHEMA public`); err != nil {
		t.Fatal(err)
	}

	// Both Prometheus triggers at first; the phases change them.
	sc.rel = installChart(t, s, scNS, scName, sc.values(knobs{lag: 5, buffer: 40000, window: 10}))
	waitScaledObjectReady(t, s, scNS, scName)
	sc.settle(t)
	waitSlot(t, sc.src, scSlot, 60*time.Second)
	return sc
}

// values are the release's values for k: the real chart with test-sized
// intervals, a worker that drains slowly (one processor, one 256-event chunk
// per claim: about 5k events/s per replica here), and fallback on.
func (sc *scenarios) values(k knobs) map[string]any {
	prom := map[string]any{
		"serverAddress":   stack.PrometheusURL,
		"lagTrigger":      map[string]any{"enabled": false},
		"bufferTrigger":   map[string]any{"enabled": false},
		"backfillTrigger": map[string]any{"enabled": false},
	}
	if k.lag > 0 {
		prom["lagTrigger"] = map[string]any{"enabled": true, "threshold": ftoa(k.lag), "activationThreshold": "2"} // above the 1 s commit interval
	}
	if k.buffer > 0 {
		prom["bufferTrigger"] = map[string]any{"enabled": true, "threshold": ftoa(k.buffer), "activationThreshold": "100"}
	}
	if k.backfill > 0 {
		prom["backfillTrigger"] = map[string]any{"enabled": true, "threshold": ftoa(k.backfill)} // the chart's activation: any row left
	}
	keda := map[string]any{
		"enabled":         true,
		"minReplicas":     1,
		"maxReplicas":     scMax,
		"pollingInterval": 2,
		"cooldownPeriod":  10,
		"fallback":        map[string]any{"enabled": true, "failureThreshold": 2, "replicas": scFallback},
		"advanced": map[string]any{"horizontalPodAutoscalerConfig": map[string]any{"behavior": map[string]any{
			"scaleDown": map[string]any{"stabilizationWindowSeconds": k.window,
				"policies": []any{map[string]any{"type": "Percent", "value": 100, "periodSeconds": 5}}},
		}}},
		"prometheus": prom,
	}
	return realWorkerValues(sc.lakeVals, map[string]any{
		"slot":        scSlot,
		"publication": scPub,
		"processors":  1,
		"batchSize":   256, // one buffer chunk per claim
		// Writers commit nothing to Iceberg themselves, so one drains tens of thousands of events a second here:
		// faster than the HPA (5 s syncs) can see a burst. The cap holds a replica at 5,000 events/s, as slow
		// object storage would, so that a burst outlasts a few syncs and replicas are what makes it drain faster.
		"extraEnv": []any{map[string]any{"name": "PHILOTES_PROCESSOR_MAX_EVENTS_PER_SECOND", "value": "5000"}},
		"backfill": map[string]any{"maxRowsPerSecond": k.backfillRate},
	}, keda)
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// settle waits for a quiet release at its minimum of one replica, with
// Prometheus answering and no fallback in force. Until Prometheus has scraped
// the first pod its queries are empty, which the chart counts as a failure
// once fallback is on: a new release may run at the fallback count for a few
// polls.
func (sc *scenarios) settle(t *testing.T) {
	t.Helper()
	eventually(t, 60*time.Second, "Prometheus scraping the worker", func(ctx context.Context) error {
		_, err := sc.s.PromQuery(ctx, `max(philotes_buffer_depth{namespace="`+scNS+`"})`)
		return err
	})
	eventually(t, 60*time.Second, "every trigger healthy and no fallback", func(ctx context.Context) error {
		u, err := sc.s.Dynamic.Resource(stack.ScaledObjectGVR).Namespace(scNS).Get(ctx, scName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Fallback" && m["status"] == "True" {
				return fmt.Errorf("fallback in force: %v", m["message"])
			}
		}
		health, _, _ := unstructured.NestedMap(u.Object, "status", "health")
		for metric, h := range health {
			if m, ok := h.(map[string]any); ok && m["status"] != "Happy" {
				return fmt.Errorf("%s: %v", metric, m)
			}
		}
		return nil
	})
	sc.waitDesiredAtMost(t, 1, 120*time.Second)
	waitReady(t, sc.s, scNS, scName, 1, 120*time.Second)
}

// upgrade runs `helm upgrade` with the values for k and waits until the
// HPA KEDA made reflects it (its metric count and scale-down window).
func (sc *scenarios) upgrade(t *testing.T, k knobs) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := sc.rel.Upgrade(ctx, sc.values(k)); err != nil {
		t.Fatal(err)
	}
	t.Logf("helm upgrade: %+v", k)
	metrics := 0
	for _, on := range []bool{k.lag > 0, k.buffer > 0, k.backfill > 0} {
		if on {
			metrics++
		}
	}
	eventually(t, 60*time.Second, "the HPA updated by KEDA", func(ctx context.Context) error {
		h, err := sc.s.Kube.AutoscalingV2().HorizontalPodAutoscalers(scNS).Get(ctx, "keda-hpa-"+scName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if n := len(h.Spec.Metrics); n != metrics {
			return fmt.Errorf("%d metrics, want %d", n, metrics)
		}
		b := h.Spec.Behavior
		if b == nil || b.ScaleDown == nil || b.ScaleDown.StabilizationWindowSeconds == nil || int(*b.ScaleDown.StabilizationWindowSeconds) != k.window {
			return fmt.Errorf("scale-down behavior %+v, want a %d s window", b, k.window)
		}
		return nil
	})
}

// phaseRecorder is one phase's timeline.
type phaseRecorder struct {
	rec         *report.Recorder
	name, title string
	stopped     bool
}

// record starts the timeline of a phase; stop writes scenario-<name>.csv and .svg.
func (sc *scenarios) record(t *testing.T, name, title string) *phaseRecorder {
	p := &phaseRecorder{name: name, title: title, rec: report.Start(releaseTimeline(sc.s, scNS, scName))}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// waitSample waits until the timeline's latest sample satisfies ok.
func (p *phaseRecorder) waitSample(t *testing.T, what string, ok func(report.Sample) bool) {
	t.Helper()
	eventually(t, 10*time.Second, what, func(context.Context) error {
		samples := p.rec.Samples()
		if len(samples) == 0 || !ok(samples[len(samples)-1]) {
			return errors.New("not yet sampled")
		}
		return nil
	})
}

func (p *phaseRecorder) stop(t *testing.T) []report.Sample {
	if p.stopped {
		return p.rec.Samples()
	}
	p.stopped = true
	samples := p.rec.Stop()
	writeTimeline(t, "scenario-"+p.name, p.title, samples)
	return samples
}

// insert writes the next n ids of tbl (1..n the first time) in one transaction.
func (sc *scenarios) insert(t *testing.T, tbl string, n int) {
	t.Helper()
	sc.mu.Lock()
	from := sc.written[tbl] + 1
	sc.mu.Unlock()
	if from == 1 {
		sc.createTable(t, tbl)
	}
	if err := insertRows(t.Context(), sc.src, tbl, from, from+n-1); err != nil {
		t.Fatal(err)
	}
	sc.mu.Lock()
	sc.written[tbl] = from + n - 1
	sc.mu.Unlock()
	t.Logf("inserted %s ids %d..%d", tbl, from, from+n-1)
}

// trickle writes rows rows into tbl every interval on its own connection
// until the returned stop is called; stop returns how many it wrote.
func (sc *scenarios) trickle(t *testing.T, tbl string, rows int, interval time.Duration) (stop func() int) {
	t.Helper()
	sc.createTable(t, tbl)
	c, err := sc.s.ConnectPostgres(t.Context(), stack.SourceDB)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var wrote int
	go func() {
		defer c.Close(context.Background())
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			sc.mu.Lock()
			from := sc.written[tbl] + 1
			sc.mu.Unlock()
			if err := insertRows(ctx, c, tbl, from, from+rows-1); err != nil {
				if ctx.Err() != nil {
					done <- nil
				} else {
					done <- err
				}
				return
			}
			sc.mu.Lock()
			sc.written[tbl] = from + rows - 1
			sc.mu.Unlock()
			wrote += rows
			select {
			case <-ctx.Done():
				done <- nil
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	stop = func() int {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("trickle into %s: %v", tbl, err)
			}
		})
		return wrote
	}
	t.Cleanup(func() { stop() })
	return stop
}

// createTable creates a source table; each phase (and each cooldown round)
// writes its own, so the loss check can name where a row went missing.
func (sc *scenarios) createTable(t *testing.T, tbl string) {
	t.Helper()
	if err := createEventsTable(t.Context(), sc.src, tbl); err != nil {
		t.Fatal(err)
	}
	sc.mu.Lock()
	sc.order = append(sc.order, tbl)
	sc.mu.Unlock()
}

// tables are the source tables written to, in the order they were created.
func (sc *scenarios) tables() []string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]string(nil), sc.order...)
}

// burst writes rows into tbl in one transaction, waits for the HPA to scale
// out, for the workers to catch up and for the release to be back at one
// replica, records those reaction times, and returns when it wrote and the
// phase's timeline.
func (sc *scenarios) burst(t *testing.T, rec *phaseRecorder, phase, tbl string, rows int) (time.Time, []report.Sample) {
	t.Helper()
	start := time.Now()
	sc.insert(t, tbl, rows)
	took := sc.waitDesiredAbove(t, 1, 120*time.Second)
	recordReaction(t, phase+": write to first scale-out", took)
	sc.waitCaughtUp(t, 240*time.Second)
	caughtUp := time.Now()
	waitReady(t, sc.s, scNS, scName, 1, 120*time.Second)
	recordReaction(t, phase+": caught up to back at min", time.Since(caughtUp))
	return start, rec.stop(t)
}

// waitCaughtUp waits until everything written to the source so far is in the lake.
func (sc *scenarios) waitCaughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	waitCaughtUp(t, sc.src, sc.buf, scSlot, timeout)
}

// checkTriggers checks that the release's ScaledObject has exactly the
// named triggers, in any order.
func (sc *scenarios) checkTriggers(t *testing.T, names ...string) {
	t.Helper()
	var got []string
	for _, m := range scaledObjectTriggers(t, sc.s, scNS, scName) {
		got = append(got, fmt.Sprint(m["name"]))
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(got, want) {
		t.Fatalf("ScaledObject triggers %v, want %v", got, want)
	}
}

// waitStreaming waits until the release runs one pod, Ready and not
// terminating, and that pod's reader streams from the slot
// (philotes_cdc_reader_active, set once the session has listed the
// publication and started replication).
func (sc *scenarios) waitStreaming(t *testing.T, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "one pod, its reader streaming", func(ctx context.Context) error {
		pods, err := sc.s.Kube.CoreV1().Pods(scNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + scName})
		if err != nil {
			return err
		}
		if n := len(pods.Items); n != 1 {
			return fmt.Errorf("%d pods", n)
		}
		p := pods.Items[0]
		if p.DeletionTimestamp != nil {
			return fmt.Errorf("pod %s terminating", p.Name)
		}
		active, err := sc.s.PromQuery(ctx, `max(philotes_cdc_reader_active{namespace="`+scNS+`",pod="`+p.Name+`"})`)
		if err != nil {
			return fmt.Errorf("pod %s: %w", p.Name, err)
		}
		if active != 1 {
			return fmt.Errorf("pod %s: reader not streaming", p.Name)
		}
		return nil
	})
}

// backfillsRunning counts the backfills the release has neither finished
// nor given up, and describes them.
func (sc *scenarios) backfillsRunning(ctx context.Context) (int, string, error) {
	rows, err := sc.buf.Query(ctx, `SELECT schema_name || '.' || table_name || ' run ' || run || ': ' || rows_done || ' of about ' || rows_estimate || ' rows read'
FROM philotes.backfill_tables WHERE source = $1 AND done_at IS NULL AND error IS NULL ORDER BY 1`, scSlot)
	if err != nil {
		return 0, "", err
	}
	running, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return len(running), strings.Join(running, "; "), err
}

// waitBackfillsDone waits until no backfill runs.
func (sc *scenarios) waitBackfillsDone(t *testing.T, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "no backfill running", func(ctx context.Context) error {
		n, which, err := sc.backfillsRunning(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d running: %s", n, which)
		}
		return nil
	})
}

// waitBackfillDone waits until the backfill of qualified (schema.table) has
// read every row; a backfill that gave up fails the test at once.
func (sc *scenarios) waitBackfillDone(t *testing.T, qualified string, timeout time.Duration) {
	t.Helper()
	schema, name, _ := strings.Cut(qualified, ".")
	var failed string
	eventually(t, timeout, "the backfill of "+qualified+" done", func(ctx context.Context) error {
		var done bool
		var runs, rowsDone, estimate int64
		err := sc.buf.QueryRow(ctx, `SELECT done_at IS NOT NULL, COALESCE(error, ''), run, rows_done, rows_estimate
FROM philotes.backfill_tables WHERE source = $1 AND schema_name = $2 AND table_name = $3`, scSlot, schema, name).Scan(&done, &failed, &runs, &rowsDone, &estimate)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return errors.New("not registered")
		case err != nil:
			return err
		case failed != "":
			return nil
		case !done:
			return fmt.Errorf("run %d: %d of about %d rows read", runs, rowsDone, estimate)
		}
		t.Logf("backfill of %s: run %d, %d rows read (estimate %d)", qualified, runs, rowsDone, estimate)
		return nil
	})
	if failed != "" {
		t.Fatalf("the backfill of %s gave up: %s", qualified, failed)
	}
}

// load creates the events table qualified (schema.table, its schema too)
// and writes ids 1..n into it in one statement: a table that has rows
// before the worker knows of it.
func (sc *scenarios) load(t *testing.T, qualified string, n int) {
	t.Helper()
	schema, _, _ := strings.Cut(qualified, ".")
	if _, err := sc.src.Exec(t.Context(), `CREATE SCHEMA IF NOT EXISTS `+schema); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.src.Exec(t.Context(), `CREATE TABLE `+qualified+` (id bigint PRIMARY KEY, note text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := insertRowsInto(t.Context(), sc.src, qualified, 1, n); err != nil {
		t.Fatal(err)
	}
	var published bool
	if err := sc.src.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname || '.' || tablename = $2)`,
		scPub, qualified).Scan(&published); err != nil {
		t.Fatal(err)
	}
	if published {
		t.Fatalf("%s is in publication %s already: its rows went through the stream, not a backfill", qualified, scPub)
	}
	sc.mu.Lock()
	sc.backfilled[qualified] = n
	sc.mu.Unlock()
	t.Logf("loaded %s ids 1..%d outside publication %s", qualified, n, scPub)
}

// publish adds qualified to the release's publication, as a user starting
// to capture an existing table would, and then writes id as the
// application's first change to it: the reader sees the table with that
// change (it lists the publication only when its session starts) and
// registers it for a backfill.
func (sc *scenarios) publish(t *testing.T, qualified string, id int) {
	t.Helper()
	if _, err := sc.src.Exec(t.Context(), `ALTER PUBLICATION `+scPub+` ADD TABLE `+qualified); err != nil {
		t.Fatal(err)
	}
	if err := insertRowsInto(t.Context(), sc.src, qualified, id, id); err != nil {
		t.Fatal(err)
	}
	t.Logf("added %s to publication %s, then inserted id %d", qualified, scPub, id)
}

// checkBackfilled checks the lake table of qualified (schema.table) after
// a backfill of its ids 1..n and one insert of id n+1 after it was
// published: ids 1..n have one row each, a snapshot row with the source's
// note, id n+1 has one insert row, and nothing else is there.
func (sc *scenarios) checkBackfilled(t *testing.T, qualified string, n int) {
	t.Helper()
	rows, err := sc.lk.rows(t.Context(), strings.Replace(qualified, ".", "_", 1))
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[int64]string, n+1)
	for id := int64(1); id <= int64(n); id++ {
		want[id] = "snapshot"
	}
	want[int64(n)+1] = "insert"
	err = onlyOnce(rows, want)
	if err != nil {
		t.Errorf("%s in the lake: %v", qualified, err)
	}
	wrong := wrongNotes(rows)
	if wrong > 0 {
		t.Errorf("%s: %d rows with a note the source never had", qualified, wrong)
	}
	if err == nil && wrong == 0 {
		t.Logf("%s: ids 1..%d in the lake once each as snapshot rows with the source's values, id %d once as an insert", qualified, n, n+1)
	}
}

// hpaDesired is the desired replica count of the HPA KEDA made.
func (sc *scenarios) hpaDesired(ctx context.Context) (int32, error) {
	n, _, err := sc.hpaStatus(ctx)
	return n, err
}

// hpaStatus is the desired replica count of the HPA KEDA made and, for
// messages, what the HPA last read and why it did what it did.
func (sc *scenarios) hpaStatus(ctx context.Context) (int32, string, error) {
	h, err := sc.s.Kube.AutoscalingV2().HorizontalPodAutoscalers(scNS).Get(ctx, "keda-hpa-"+scName, metav1.GetOptions{})
	if err != nil {
		return 0, "", err
	}
	var b strings.Builder
	for _, m := range h.Status.CurrentMetrics {
		if m.External != nil {
			fmt.Fprintf(&b, "%s average %s; ", m.External.Metric.Name, m.External.Current.AverageValue)
		}
	}
	for _, c := range h.Status.Conditions {
		fmt.Fprintf(&b, "%s=%s (%s: %s); ", c.Type, c.Status, c.Reason, c.Message)
	}
	return h.Status.DesiredReplicas, b.String(), nil
}

// waitDesiredAbove waits until the HPA asks for more than n replicas.
func (sc *scenarios) waitDesiredAbove(t *testing.T, n int32, timeout time.Duration) time.Duration {
	t.Helper()
	return sc.waitDesired(t, fmt.Sprintf("more than %d", n), func(d int32) bool { return d > n }, timeout)
}

// waitDesiredAtMost waits until the HPA asks for at most n replicas.
func (sc *scenarios) waitDesiredAtMost(t *testing.T, n int32, timeout time.Duration) time.Duration {
	t.Helper()
	return sc.waitDesired(t, fmt.Sprintf("at most %d", n), func(d int32) bool { return d <= n }, timeout)
}

// waitDesired waits until the HPA's desired count satisfies ok; its last
// readings and conditions explain a timeout.
func (sc *scenarios) waitDesired(t *testing.T, what string, ok func(int32) bool, timeout time.Duration) time.Duration {
	t.Helper()
	return eventually(t, timeout, "the HPA asking for "+what+" replicas", func(ctx context.Context) error {
		d, why, err := sc.hpaStatus(ctx)
		if err != nil {
			return err
		}
		if !ok(d) {
			return fmt.Errorf("desired %d; %s", d, why)
		}
		return nil
	})
}

// idle writes nothing for d: the quiet part of an oscillating load (a load
// shape, not a wait for something to happen). It logs what the HPA asks for
// meanwhile.
func (sc *scenarios) idle(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-t.Context().Done():
		t.Fatal(t.Context().Err())
	case <-time.After(d):
	}
	if n, err := sc.hpaDesired(t.Context()); err == nil {
		t.Logf("idle %s; the HPA asks for %d replicas", d, n)
	}
}

// peakOf is the largest non-NaN value of f over samples (0 if none).
func peakOf(samples []report.Sample, f func(report.Sample) float64) float64 {
	peak := 0.0
	for _, x := range samples {
		if v := f(x); !math.IsNaN(v) && v > peak {
			peak = v
		}
	}
	return peak
}
