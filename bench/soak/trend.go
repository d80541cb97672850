package main

import (
	"math"
	"time"
)

// horizon is how far the trends are extrapolated: 30 days.
const horizon = 30 * 24 * time.Hour

// warmup is the part of a run left out of the trends: the first 5 minutes, or the first third of a run shorter
// than 15 minutes.
func warmup(total time.Duration) time.Duration {
	return min(5*time.Minute, total/3)
}

// fit is a least-squares line through (t, v) points, with t in hours.
type fit struct {
	n         int
	slope     float64 // units per hour
	intercept float64
	se        float64 // standard error of the slope; +Inf when it cannot be estimated
	mean      float64 // mean of v
}

// linearFit fits v = intercept + slope*t. With fewer than two distinct t it returns n < 2 and a zero slope.
func linearFit(t, v []float64) fit {
	n := len(t)
	f := fit{n: n, se: math.Inf(1)}
	if n == 0 {
		return f
	}
	var st, sv float64
	for i := range t {
		st += t[i]
		sv += v[i]
	}
	mt, mv := st/float64(n), sv/float64(n)
	f.mean, f.intercept = mv, mv
	var sxx, sxy float64
	for i := range t {
		sxx += (t[i] - mt) * (t[i] - mt)
		sxy += (t[i] - mt) * (v[i] - mv)
	}
	if n < 2 || sxx == 0 {
		f.n = min(n, 1)
		return f
	}
	f.slope = sxy / sxx
	f.intercept = mv - f.slope*mt
	if n > 2 {
		var rss float64
		for i := range t {
			r := v[i] - (f.intercept + f.slope*t[i])
			rss += r * r
		}
		f.se = math.Sqrt(rss / float64(n-2) / sxx)
	}
	return f
}

// flat reports whether the slope is within noise: not distinguishable from zero (|slope| under two standard
// errors, about 95%), or so small that over the horizon it would move the level by less than 1%. A fit of
// fewer than three points has no error estimate and is never called flat unless it is exactly flat.
func (f fit) flat() bool {
	if f.slope == 0 {
		return true
	}
	if !math.IsInf(f.se, 1) && math.Abs(f.slope) < 2*f.se {
		return true
	}
	return math.Abs(f.slope*horizon.Hours()) < 0.01*math.Abs(f.mean)
}

// extrapolate projects from the level at elapsed (hours into the run) to the horizon along the slope; a flat or
// falling slope projects the level itself (a falling trend is not credited).
func extrapolate(level float64, f fit, elapsedHours float64) float64 {
	if f.flat() || f.slope < 0 {
		return level
	}
	return level + f.slope*max(horizon.Hours()-elapsedHours, 0)
}

// bounded judges whether a series that must stay bounded (snapshots kept by a table) stopped growing.
//
// The series is cut into halves. Literally comparing the last value with the maximum of the second half is
// always true (the last value is part of that half), so the reference is the maximum of the FIRST half: a
// series that reached its plateau (snapshot expiry keeping the count steady, or a saw-tooth between expiries)
// ends no higher than that maximum plus 10% (at least 2, so a plateau of a handful of snapshots does not fail
// on one extra commit); a series that keeps growing linearly ends at about twice the first half's maximum and
// fails. A run too short to reach the plateau in its first half fails too: it has not shown a bound.
func bounded(v []float64) (ok bool, ref, last float64) {
	if len(v) < 2 {
		return false, math.NaN(), math.NaN()
	}
	half := len(v) / 2
	ref = v[0]
	for _, x := range v[:half] {
		ref = max(ref, x)
	}
	last = v[len(v)-1]
	return last <= ref+max(0.1*ref, 2), ref, last
}

// window is the samples within [from, to] of elapsed time.
func window(elapsed []time.Duration, from, to time.Duration) []int {
	var idx []int
	for i, e := range elapsed {
		if e >= from && e <= to {
			idx = append(idx, i)
		}
	}
	return idx
}

// weightedMean is sum(sums)/sum(counts) over idx: the mean of a histogram over several sample intervals
// (NaN when no observation fell in them).
func weightedMean(sums, counts []float64, idx []int) float64 {
	var s, c float64
	for _, i := range idx {
		s += sums[i]
		c += counts[i]
	}
	if c == 0 {
		return math.NaN()
	}
	return s / c
}
