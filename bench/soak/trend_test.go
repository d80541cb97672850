package main

import (
	"math"
	"testing"
	"time"
)

func TestLinearFitAndExtrapolate(t *testing.T) {
	hours := []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6}
	tests := []struct {
		name      string
		v         []float64
		slope     float64
		flat      bool
		projected float64 // extrapolate(last value, fit, 0.6 h)
	}{
		{"steady growth", []float64{10, 20, 30, 40, 50, 60}, 100, false, 60 + 100*(720-0.6)},
		{"constant", []float64{80, 80, 80, 80, 80, 80}, 0, true, 80},
		{"noise around a level", []float64{80, 82, 79, 81, 80, 81}, 0.2857143, true, 81},
		{"falling is not credited", []float64{60, 50, 40, 30, 20, 10}, -100, false, 10},
		{"tiny but steady growth is negligible", []float64{1e6, 1e6 + 1, 1e6 + 2, 1e6 + 3, 1e6 + 4, 1e6 + 5}, 10, true, 1e6 + 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := linearFit(hours, tc.v)
			if math.Abs(f.slope-tc.slope) > 1e-6*math.Max(1, math.Abs(tc.slope)) {
				t.Errorf("slope = %v, want %v", f.slope, tc.slope)
			}
			if f.flat() != tc.flat {
				t.Errorf("flat = %v, want %v (slope %v, se %v)", f.flat(), tc.flat, f.slope, f.se)
			}
			got := extrapolate(tc.v[len(tc.v)-1], f, hours[len(hours)-1])
			if math.Abs(got-tc.projected) > 1e-6*math.Max(1, tc.projected) {
				t.Errorf("extrapolate = %v, want %v", got, tc.projected)
			}
		})
	}
}

func TestLinearFitTooFewPoints(t *testing.T) {
	for _, tc := range []struct {
		name string
		t, v []float64
	}{
		{"none", nil, nil},
		{"one", []float64{1}, []float64{5}},
		{"same time", []float64{1, 1}, []float64{5, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := linearFit(tc.t, tc.v)
			if f.n >= 2 || f.slope != 0 {
				t.Errorf("fit = %+v, want n < 2 and slope 0", f)
			}
		})
	}
	// Two points: a slope but no error estimate, so growth is not called flat.
	if f := linearFit([]float64{0, 1}, []float64{0, 5}); f.slope != 5 || f.flat() {
		t.Errorf("two points: %+v flat=%v, want slope 5, not flat", f, f.flat())
	}
}

func TestBounded(t *testing.T) {
	tests := []struct {
		name string
		v    []float64
		ok   bool
		ref  float64
	}{
		{"linear growth fails", []float64{10, 20, 30, 40, 50, 60}, false, 30},
		{"plateau passes", []float64{50, 90, 100, 100, 100, 100}, true, 100},
		{"saw-tooth under expiry passes", []float64{60, 100, 70, 100, 80, 105}, true, 100},
		{"small plateau tolerates one commit", []float64{1, 3, 3, 3, 4, 5}, true, 3},
		{"slow growth beyond 10% fails", []float64{100, 105, 110, 115, 120, 125}, false, 110},
		{"too few samples fails", []float64{7}, false, math.NaN()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, ref, _ := bounded(tc.v)
			if ok != tc.ok || !(ref == tc.ref || math.IsNaN(ref) && math.IsNaN(tc.ref)) {
				t.Errorf("bounded = %v (ref %v), want %v (ref %v)", ok, ref, tc.ok, tc.ref)
			}
		})
	}
}

func TestWarmupAndWindows(t *testing.T) {
	for _, tc := range []struct {
		total, want time.Duration
	}{
		{30 * time.Minute, 5 * time.Minute},
		{15 * time.Minute, 5 * time.Minute},
		{3 * time.Minute, time.Minute},
	} {
		if got := warmup(tc.total); got != tc.want {
			t.Errorf("warmup(%v) = %v, want %v", tc.total, got, tc.want)
		}
	}
	elapsed := []time.Duration{30 * time.Second, time.Minute, 90 * time.Second, 2 * time.Minute}
	if got := window(elapsed, 0, time.Minute); len(got) != 2 || got[1] != 1 {
		t.Errorf("window = %v, want [0 1]", got)
	}
	sums, counts := []float64{1, 2, 3, 0}, []float64{10, 10, 20, 0}
	if got := weightedMean(sums, counts, []int{0, 1, 2}); math.Abs(got-0.15) > 1e-12 {
		t.Errorf("weightedMean = %v, want 0.15", got)
	}
	if got := weightedMean(sums, counts, []int{3}); !math.IsNaN(got) {
		t.Errorf("weightedMean with no observations = %v, want NaN", got)
	}
}

// The steady state starts after the retention and one maintenance interval, from the worker's environment or
// its defaults.
func TestSteadyAfter(t *testing.T) {
	cases := []struct {
		env  []string
		want time.Duration
	}{
		{nil, time.Hour + 5*time.Minute},
		{[]string{"PHILOTES_ICEBERG_SNAPSHOT_RETENTION=10m", "PHILOTES_ICEBERG_MAINTENANCE_INTERVAL=1m"}, 11 * time.Minute},
		{[]string{"PHILOTES_ICEBERG_SNAPSHOT_RETENTION=bogus", "OTHER=1s"}, time.Hour + 5*time.Minute},
	}
	for _, tc := range cases {
		if got := steadyAfter(tc.env); got != tc.want {
			t.Errorf("steadyAfter(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}
