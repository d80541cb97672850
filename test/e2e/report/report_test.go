package report

import (
	"encoding/csv"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestWriteCSVAndFirstAt(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	samples := []Sample{
		{At: t0, Replicas: 1, Ready: 1, Desired: 1, Lag: 0, Depth: 0, Processed: math.NaN(), Backfill: math.NaN(), HPAValue: math.NaN()},
		{At: t0.Add(time.Second), Replicas: 1, Ready: 1, Desired: 4, Recommended: 4, HPAValue: 350, Lag: 12.5, Depth: 350, Processed: 10, Backfill: 300000},
		{At: t0.Add(2 * time.Second), Replicas: 4, Ready: 2, Desired: 4, Recommended: 1, HPAValue: 100, Lag: 3, Depth: 100, Processed: 80, Backfill: 0},
	}
	path := filepath.Join(t.TempDir(), "sub", "timeline.csv")
	if err := WriteCSV(path, samples); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"seconds", "time", "replicas", "ready", "desired", "recommended", "hpa_value", "lag_seconds", "depth", "processed_per_second", "backfill_rows_remaining"},
		{"0.0", "2026-11-27T12:00:00Z", "1", "1", "1", "0", "", "0", "0", "", ""},
		{"1.0", "2026-11-27T12:00:01Z", "1", "1", "4", "4", "350", "12.5", "350", "10", "300000"},
		{"2.0", "2026-11-27T12:00:02Z", "4", "2", "4", "1", "100", "3", "100", "80", "0"},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %v", len(rows), len(want), rows)
	}
	for i := range want {
		for j := range want[i] {
			if rows[i][j] != want[i][j] {
				t.Errorf("row %d col %d = %q, want %q", i, j, rows[i][j], want[i][j])
			}
		}
	}

	tests := []struct {
		name   string
		from   time.Time
		ok     func(Sample) bool
		want   time.Time
		wantOK bool
	}{
		{"first scale-out", t0, func(s Sample) bool { return s.Replicas > 1 }, t0.Add(2 * time.Second), true},
		{"desired before replicas", t0, func(s Sample) bool { return s.Desired > 1 }, t0.Add(time.Second), true},
		{"from excludes earlier samples", t0.Add(1500 * time.Millisecond), func(s Sample) bool { return s.Desired > 1 }, t0.Add(2 * time.Second), true},
		{"never", t0, func(s Sample) bool { return s.Replicas > 4 }, time.Time{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := FirstAt(samples, tc.from, tc.ok)
			if ok != tc.wantOK || !got.Equal(tc.want) {
				t.Errorf("FirstAt = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestWriteSVG(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	samples := []Sample{
		{At: t0, Replicas: 1, Ready: 1, Desired: 1, Lag: math.NaN(), Depth: 0, Processed: math.NaN(), Backfill: 300000},
		{At: t0.Add(time.Second), Replicas: 4, Ready: 2, Desired: 4, Lag: 3, Depth: 350, Processed: 80, Backfill: 0},
	}
	path := filepath.Join(t.TempDir(), "t.svg")
	if err := WriteSVG(path, "a <test>", samples); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName xml.Name
		Lines   []struct {
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not well-formed XML: %v", err)
	}
	if doc.XMLName.Local != "svg" || len(doc.Lines) != 8 {
		t.Fatalf("root %q with %d polylines, want svg with 8 (replicas, ready, desired, recommended, depth, lag, events/s, backfill)", doc.XMLName.Local, len(doc.Lines))
	}
}

func TestRecommendation(t *testing.T) {
	hpa := func(cur int32, avg, target string) *autoscalingv2.HorizontalPodAutoscaler {
		q := resource.MustParse(avg)
		tq := resource.MustParse(target)
		return &autoscalingv2.HorizontalPodAutoscaler{
			Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
				MinReplicas: new(int32(1)),
				MaxReplicas: 4,
				Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ExternalMetricSourceType, External: &autoscalingv2.ExternalMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: "s0-prometheus"},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: &tq},
				}}},
			},
			Status: autoscalingv2.HorizontalPodAutoscalerStatus{
				CurrentReplicas: cur,
				CurrentMetrics: []autoscalingv2.MetricStatus{{Type: autoscalingv2.ExternalMetricSourceType, External: &autoscalingv2.ExternalMetricStatus{
					Metric:  autoscalingv2.MetricIdentifier{Name: "s0-prometheus"},
					Current: autoscalingv2.MetricValueStatus{AverageValue: &q},
				}}},
			},
		}
	}
	tests := []struct {
		name string
		h    *autoscalingv2.HorizontalPodAutoscaler
		want int32
	}{
		{"depth 60000 on 1 replica, 25000 each: 3", hpa(1, "60k", "25k"), 3},
		{"depth 60000 on 3 replicas (20000 each, 0.8 of target): ceil(2.4) = 3", hpa(3, "20k", "25k"), 3},
		{"depth 45000 on 3 replicas: 2", hpa(3, "15k", "25k"), 2},
		{"within 10 %: keep the current count", hpa(2, "23k", "25k"), 2},
		{"idle: the minimum", hpa(3, "0", "25k"), 1},
		{"more than max: max", hpa(1, "500k", "25k"), 4},
		{"no replicas (at zero): unknown", hpa(0, "0", "25k"), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, value := recommendation(tc.h)
			if got != tc.want {
				t.Fatalf("recommendation = %d, want %d", got, tc.want)
			}
			if cur := tc.h.Status.CurrentReplicas; cur > 0 {
				avg := tc.h.Status.CurrentMetrics[0].External.Current.AverageValue.AsApproximateFloat64()
				if want := avg * float64(cur); value != want {
					t.Fatalf("value read = %v, want %v (average times replicas)", value, want)
				}
			} else if !math.IsNaN(value) {
				t.Fatalf("value read = %v at zero, want NaN", value)
			}
		})
	}
}
