// Package report records a scenario's timeline: once per interval it samples
// the Deployment's replicas, the desired replicas of the HPA that KEDA made
// and the recommendation behind them, and the worker's lag, buffer depth,
// throughput and backfill rows remaining from Prometheus, and writes them as
// CSV (time, replicas, ready, desired, recommended, lag, depth, processed,
// backfill).
package report

import (
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Sample is one row of the timeline. Metrics Prometheus did not have are NaN.
type Sample struct {
	At       time.Time
	Replicas int32 // Deployment status.replicas
	Ready    int32 // Deployment status.readyReplicas
	Desired  int32 // HPA status.desiredReplicas (0 when there is no HPA, e.g. at zero)
	// Recommended is what the HPA's last metric readings ask for before
	// stabilization and rate policies: per external metric ceil(value /
	// target), or the current count within the HPA's 10 % tolerance; the
	// largest, within the HPA's bounds. 0 when unknown.
	Recommended int32
	// HPAValue is the sum of the external metric values the HPA last read
	// (per-replica average times current replicas); it changes at each HPA
	// sync that read something new. NaN when unknown.
	HPAValue  float64
	Lag       float64
	Depth     float64
	Processed float64 // events/s committed by the whole release
	Backfill  float64 // rows running backfills have yet to read from the source
}

// Query runs an instant PromQL query with a single result.
type Query func(ctx context.Context, q string) (float64, error)

// Config says what to sample.
type Config struct {
	Kube       kubernetes.Interface
	Query      Query
	Namespace  string
	Deployment string
	// HPA is the HorizontalPodAutoscaler KEDA made: keda-hpa-<ScaledObject name>.
	HPA      string
	Interval time.Duration // default 1s
	// Queries; defaults aggregate the worker's metrics as the interface says.
	LagQuery, DepthQuery, ProcessedQuery, BackfillQuery string
}

// Recorder samples until Stop.
type Recorder struct {
	cfg     Config
	mu      sync.Mutex
	samples []Sample
	cancel  context.CancelFunc
	done    chan struct{}
}

// Start begins sampling.
func Start(cfg Config) *Recorder {
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.LagQuery == "" {
		cfg.LagQuery = "max(philotes_cdc_lag_seconds)"
	}
	if cfg.DepthQuery == "" {
		cfg.DepthQuery = "max(philotes_buffer_depth)"
	}
	if cfg.ProcessedQuery == "" {
		cfg.ProcessedQuery = "sum(rate(philotes_buffer_events_processed_total[15s]))"
	}
	if cfg.BackfillQuery == "" {
		cfg.BackfillQuery = "max(philotes_backfill_rows_remaining)" // every replica reports the same value
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{cfg: cfg, cancel: cancel, done: make(chan struct{})}
	go r.run(ctx)
	return r
}

func (r *Recorder) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		r.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Recorder) sample(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, r.cfg.Interval)
	defer cancel()
	s := Sample{At: time.Now(), Lag: math.NaN(), Depth: math.NaN(), Processed: math.NaN(), Backfill: math.NaN(), HPAValue: math.NaN()}
	d, err := r.cfg.Kube.AppsV1().Deployments(r.cfg.Namespace).Get(ctx, r.cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return // no replica count: a gap, not a false zero
	}
	s.Replicas, s.Ready = d.Status.Replicas, d.Status.ReadyReplicas
	if r.cfg.HPA != "" {
		if h, err := r.cfg.Kube.AutoscalingV2().HorizontalPodAutoscalers(r.cfg.Namespace).Get(ctx, r.cfg.HPA, metav1.GetOptions{}); err == nil {
			s.Desired = h.Status.DesiredReplicas
			s.Recommended, s.HPAValue = recommendation(h)
		}
	}
	for q, dst := range map[string]*float64{r.cfg.LagQuery: &s.Lag, r.cfg.DepthQuery: &s.Depth, r.cfg.ProcessedQuery: &s.Processed, r.cfg.BackfillQuery: &s.Backfill} {
		if v, err := r.cfg.Query(ctx, q); err == nil {
			*dst = v
		}
	}
	if parent.Err() != nil {
		return // stopped while sampling: values may be partial
	}
	r.mu.Lock()
	r.samples = append(r.samples, s)
	r.mu.Unlock()
}

// Stop ends sampling and returns the timeline.
func (r *Recorder) Stop() []Sample {
	r.cancel()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sample(nil), r.samples...)
}

// Samples returns the timeline so far.
func (r *Recorder) Samples() []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sample(nil), r.samples...)
}

func formatFloat(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// WriteCSV writes the timeline to path (folders created), seconds relative to
// the first sample.
func WriteCSV(path string, samples []Sample) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create report folder: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"seconds", "time", "replicas", "ready", "desired", "recommended", "hpa_value", "lag_seconds", "depth", "processed_per_second", "backfill_rows_remaining"})
	var t0 time.Time
	if len(samples) > 0 {
		t0 = samples[0].At
	}
	for _, s := range samples {
		_ = w.Write([]string{
			strconv.FormatFloat(s.At.Sub(t0).Seconds(), 'f', 1, 64),
			s.At.UTC().Format(time.RFC3339Nano),
			strconv.Itoa(int(s.Replicas)), strconv.Itoa(int(s.Ready)), strconv.Itoa(int(s.Desired)), strconv.Itoa(int(s.Recommended)), formatFloat(s.HPAValue),
			formatFloat(s.Lag), formatFloat(s.Depth), formatFloat(s.Processed), formatFloat(s.Backfill),
		})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// FirstAt returns the time of the first sample at or after from for which ok
// holds, and whether there was one: the basis of reaction times such as
// "load to first scale-out".
func FirstAt(samples []Sample, from time.Time, ok func(Sample) bool) (time.Time, bool) {
	for _, s := range samples {
		if !s.At.Before(from) && ok(s) {
			return s.At, true
		}
	}
	return time.Time{}, false
}

// tolerance is the HPA's default: no change while value/target is within 10 %.
const tolerance = 0.1

// recommendation is what the HPA's last readings of its external AverageValue
// metrics ask for, and the sum of the values read (see Sample).
func recommendation(h *autoscalingv2.HorizontalPodAutoscaler) (int32, float64) {
	cur := h.Status.CurrentReplicas
	if cur == 0 {
		return 0, math.NaN()
	}
	targets := map[string]float64{}
	for _, m := range h.Spec.Metrics {
		if m.External != nil && m.External.Target.AverageValue != nil {
			targets[m.External.Metric.Name] = m.External.Target.AverageValue.AsApproximateFloat64()
		}
	}
	var best int32
	found := false
	total := 0.0
	for _, m := range h.Status.CurrentMetrics {
		if m.External == nil || m.External.Current.AverageValue == nil {
			continue
		}
		target := targets[m.External.Metric.Name]
		if target <= 0 {
			continue
		}
		avg := m.External.Current.AverageValue.AsApproximateFloat64()
		total += avg * float64(cur)
		ratio := avg / target // value per replica over target
		rec := cur
		if math.Abs(ratio-1) > tolerance {
			rec = int32(math.Ceil(ratio * float64(cur)))
		}
		best = max(best, rec)
		found = true
	}
	if !found {
		return 0, math.NaN()
	}
	lo := int32(1)
	if h.Spec.MinReplicas != nil {
		lo = *h.Spec.MinReplicas
	}
	return min(max(best, lo), h.Spec.MaxReplicas), total
}
