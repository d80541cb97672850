package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// Limits of the soak's checks.
const (
	rssLimitMB       = 150
	commitRatioLimit = 1.5
)

// check is one PASS/FAIL line of the report.
type check struct {
	name   string
	pass   bool
	detail string
}

func printChecks(w io.Writer, checks []check) (failed int) {
	for _, c := range checks {
		verdict := "PASS"
		if !c.pass {
			verdict = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "%s  %-44s %s\n", verdict, c.name, c.detail)
	}
	return failed
}

// trend is one metric's post-warm-up series and its fit.
type trend struct {
	name    string
	unit    string
	first   float64 // first sample of the whole run
	last    float64
	min     float64 // post-warm-up
	max     float64
	fit     fit
	level   float64 // what is extrapolated: the last value, or the post-warm-up max for RSS
	project float64 // level extrapolated to the horizon
}

func newTrend(name, unit string, all []sample, post []int, value func(sample) float64, fromMax bool) trend {
	tr := trend{name: name, unit: unit, first: value(all[0]), last: value(all[len(all)-1]), min: math.NaN(), max: math.NaN()}
	var hours, vals []float64
	for _, i := range post {
		v := value(all[i])
		if math.IsNaN(v) {
			continue
		}
		hours = append(hours, all[i].Elapsed.Hours())
		vals = append(vals, v)
	}
	if len(vals) > 0 {
		tr.min, tr.max = slices.Min(vals), slices.Max(vals)
	}
	tr.fit = linearFit(hours, vals)
	tr.level = tr.last
	if fromMax {
		tr.level = tr.max
	}
	tr.project = extrapolate(tr.level, tr.fit, all[len(all)-1].Elapsed.Hours())
	return tr
}

const trendFormat = "%-34s %10s %10s %10s %10s %12s %12s  %s\n"

func (tr trend) print(w io.Writer) {
	note := ""
	switch {
	case tr.fit.n < 2:
		note = "too few samples for a slope"
	case tr.fit.flat():
		note = "flat (slope within noise)"
	case tr.fit.slope < 0:
		note = "falling"
	default:
		note = "GROWING"
	}
	fmt.Fprintf(w, trendFormat, tr.name+" ("+tr.unit+")", g3(tr.first), g3(tr.last), g3(tr.min), g3(tr.max),
		g3(tr.fit.slope), g3(tr.project), note)
}

func g3(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	if math.Abs(v) >= 1e5 {
		return fmt.Sprintf("%.3g", v)
	}
	return fmt.Sprintf("%.4g", v)
}

// summarize prints the trends of the soak's samples and returns their checks.
// steady is when the tables reach their steady state (snapshot retention plus one maintenance interval); the
// commit-duration check compares the first window after it with the last one.
func summarize(w io.Writer, samples []sample, tables []string, commitName string, steady time.Duration) []check {
	if len(samples) == 0 {
		return []check{{name: "samples", detail: "no sample was taken"}}
	}
	total := samples[len(samples)-1].Elapsed
	// The trends start after the warm-up, or after the steady state when the run holds 10 minutes of it: before
	// the retention is reached, snapshots and metadata grow by design, and a line through that ramp would
	// project growth that stops at the retention.
	warm := warmup(total).Round(time.Second)
	if steady > warm && steady+10*time.Minute <= total {
		warm = steady
	}
	post := window(elapsedOf(samples), warm+time.Nanosecond, total)
	fmt.Fprintf(w, "\ntrends over %v: the first %v (warm-up, or until the steady state) excluded from min/max/slope "+
		"(%d samples left); 30-day projection = level + slope x remaining time (level: max for RSS, last value otherwise)\n",
		total.Round(time.Second), warm, len(post))
	fmt.Fprintf(w, trendFormat, "metric", "first", "last", "min", "max", "slope/h", "at 30 days", "")

	rss := newTrend("worker RSS", "MB", samples, post, func(s sample) float64 { return float64(s.RSS) / 1e6 }, true)
	heap := newTrend("Go heap in use", "MB", samples, post, func(s sample) float64 { return s.Heap / 1e6 }, true)
	rss.print(w)
	heap.print(w)
	var snapTrends []trend
	for i, t := range tables {
		col := func(f func(tableStats) float64) func(sample) float64 {
			return func(s sample) float64 {
				if i >= len(s.Tables) {
					return math.NaN()
				}
				return f(s.Tables[i])
			}
		}
		st := newTrend(t+" snapshots", "n", samples, post, col(func(s tableStats) float64 { return float64(s.Snapshots) }), false)
		snapTrends = append(snapTrends, st)
		st.print(w)
		newTrend(t+" metadata.json", "KB", samples, post, col(func(s tableStats) float64 { return float64(s.MetaBytes) / 1e3 }), false).print(w)
		newTrend(t+" data files", "n", samples, post, col(func(s tableStats) float64 { return float64(s.DataFiles) }), false).print(w)
		newTrend(t+" mean data file", "KB", samples, post, col(func(s tableStats) float64 { return s.meanFileBytes() / 1e3 }), false).print(w)
	}
	// Metadata files on disk and manifests per snapshot: the largest table's (every table's are in the CSV).
	newTrend("max metadata files per table", "n", samples, post, maxOver(func(s tableStats) float64 { return float64(s.MetaFiles) }), false).print(w)
	newTrend("max manifests per table", "n", samples, post, maxOver(func(s tableStats) float64 { return float64(s.Manifests) }), false).print(w)
	lagMax := 0.0
	for _, s := range samples {
		lagMax = max(lagMax, s.LagMax)
	}
	newTrend("lag at sample time", "s", samples, post, func(s sample) float64 { return s.Lag }, false).print(w)
	fmt.Fprintf(w, "max lag seen (polled every second): %.1f s\n", lagMax)

	// Commit duration: a commit reads and writes the table metadata, whose size follows the snapshots retained,
	// so it grows until the retention is reached and must stay flat from then on. The check compares the first
	// window W after the steady state with the last W of the run, W = 5 minutes or a third of a short run; a
	// run too short to reach the steady state compares its first W. The first W of the run is printed as well.
	win := min(5*time.Minute, total/3).Round(time.Second)
	from := time.Duration(0)
	if steady > 0 && steady+2*win <= total {
		from = steady
	}
	sums, counts := make([]float64, len(samples)), make([]float64, len(samples))
	for i, s := range samples {
		sums[i], counts[i] = s.CommitSum, s.CommitCount
	}
	// A sample's commit figures cover the interval that ends at it.
	startIdx := window(elapsedOf(samples), 0, win)
	firstIdx := window(elapsedOf(samples), from+time.Nanosecond, from+win)
	if from == 0 {
		firstIdx = startIdx
	}
	lastIdx := window(elapsedOf(samples), total-win+time.Nanosecond, total)
	start, first, last := weightedMean(sums, counts, startIdx), weightedMean(sums, counts, firstIdx), weightedMean(sums, counts, lastIdx)
	ratio := last / first
	if commitName == "" {
		commitName = "no commit histogram found"
	}
	fmt.Fprintf(w, "mean commit duration (%s): first %v of the run %.1f ms (%g commits), of the steady state "+
		"(from %v: retention + maintenance interval) %.1f ms (%g commits), last %v %.1f ms (%g commits), ratio last/steady %.2fx\n",
		commitName, win, 1000*start, sumOf(counts, startIdx), from, 1000*first, sumOf(counts, firstIdx), win,
		1000*last, sumOf(counts, lastIdx), ratio)

	checks := []check{
		{name: "RSS after warm-up < 150 MB", pass: rss.max < rssLimitMB,
			detail: fmt.Sprintf("max %.1f MB (min %.1f)", rss.max, rss.min)},
		{name: "RSS projected to 30 days < 150 MB", pass: rss.fit.n >= 2 && rss.project < rssLimitMB,
			detail: fmt.Sprintf("%.1f MB (slope %+.1f MB/h, %s)", rss.project, rss.fit.slope, flatWord(rss.fit))},
		{name: "commit duration last/steady-state start <= 1.5x", pass: ratio <= commitRatioLimit,
			detail: fmt.Sprintf("%.1f ms (from %v) -> %.1f ms = %.2fx", 1000*first, from, 1000*last, ratio)},
	}
	for i, t := range tables {
		var vals []float64
		for _, j := range post {
			if i < len(samples[j].Tables) {
				vals = append(vals, float64(samples[j].Tables[i].Snapshots))
			}
		}
		ok, ref, lastSnap := bounded(vals)
		checks = append(checks, check{name: t + " snapshots bounded", pass: ok,
			detail: fmt.Sprintf("last %.0f vs first-half max %.0f (limit +10%%, min +2); slope %+.0f/h, 30 days: %.0f",
				lastSnap, ref, snapTrends[i].fit.slope, snapTrends[i].project)})
	}
	return checks
}

// maxOver is a sample's largest per-table value.
func maxOver(f func(tableStats) float64) func(sample) float64 {
	return func(s sample) float64 {
		m := math.NaN()
		for _, t := range s.Tables {
			if v := f(t); math.IsNaN(m) || v > m {
				m = v
			}
		}
		return m
	}
}

func flatWord(f fit) string {
	if f.flat() {
		return "flat within noise"
	}
	return "not flat"
}

func elapsedOf(samples []sample) []time.Duration {
	out := make([]time.Duration, len(samples))
	for i, s := range samples {
		out[i] = s.Elapsed
	}
	return out
}

func sumOf(v []float64, idx []int) float64 {
	var s float64
	for _, i := range idx {
		s += v[i]
	}
	return s
}
