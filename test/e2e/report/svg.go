package report

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// series is one line of a panel.
type series struct {
	name  string
	color string
	value func(Sample) float64
}

// WriteSVG draws the timeline as stacked panels sharing the time axis:
// replicas (actual, ready, desired, the recommendation behind desired), buffer depth, lag, events/s and the
// backfill's rows remaining.
func WriteSVG(path, title string, samples []Sample) error {
	const w, panelH, left, right, top, gap = 900.0, 130.0, 70.0, 20.0, 40.0, 36.0
	panels := []struct {
		title string
		lines []series
	}{
		{"replicas", []series{
			{"replicas", "#1f77b4", func(s Sample) float64 { return float64(s.Replicas) }},
			{"ready", "#2ca02c", func(s Sample) float64 { return float64(s.Ready) }},
			{"desired (HPA)", "#d62728", func(s Sample) float64 { return float64(s.Desired) }},
			{"recommended", "#7f7f7f", func(s Sample) float64 { return float64(s.Recommended) }},
		}},
		{"buffer depth (events)", []series{{"depth", "#9467bd", func(s Sample) float64 { return s.Depth }}}},
		{"lag (seconds)", []series{{"lag", "#ff7f0e", func(s Sample) float64 { return s.Lag }}}},
		{"throughput (events/s)", []series{{"events/s", "#17becf", func(s Sample) float64 { return s.Processed }}}},
		{"backfill (rows remaining)", []series{{"remaining", "#8c564b", func(s Sample) float64 { return s.Backfill }}}},
	}
	h := top + float64(len(panels))*(panelH+gap) + 20
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="22" font-size="16">%s</text>`+"\n", left, escape(title))
	if len(samples) == 0 {
		b.WriteString("</svg>\n")
		return writeFile(path, b.String())
	}
	t0 := samples[0].At
	tMax := math.Max(samples[len(samples)-1].At.Sub(t0).Seconds(), 1)
	x := func(s Sample) float64 { return left + (w-left-right)*s.At.Sub(t0).Seconds()/tMax }
	for i, p := range panels {
		y0 := top + float64(i)*(panelH+gap)
		yMax := 1.0
		for _, l := range p.lines {
			for _, s := range samples {
				if v := l.value(s); !math.IsNaN(v) && v > yMax {
					yMax = v
				}
			}
		}
		y := func(v float64) float64 { return y0 + panelH - panelH*v/yMax }
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#ccc"/>`+"\n", left, y0, w-left-right, panelH)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s</text><text x="%.0f" y="%.0f" text-anchor="end">%s</text><text x="%.0f" y="%.0f" text-anchor="end">0</text>`+"\n",
			left, y0-6, escape(p.title), left-6, y0+10, trimFloat(yMax), left-6, y0+panelH)
		lx := left + 200
		for _, l := range p.lines {
			var pts []string
			for _, s := range samples {
				if v := l.value(s); !math.IsNaN(v) {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s), y(v)))
				}
			}
			if len(pts) > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", l.color, strings.Join(pts, " "))
			}
			fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`+"\n", lx, y0-6, l.color, escape(l.name))
			lx += 110
		}
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%s s</text>`+"\n", w-right, h-6, trimFloat(tMax))
	b.WriteString("</svg>\n")
	return writeFile(path, b.String())
}

func trimFloat(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create report folder: %w", err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
