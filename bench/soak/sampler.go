package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	iofs "io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	iceio "github.com/apache/iceberg-go/io"
	_ "github.com/apache/iceberg-go/io/gocloud/s3" // the -s3 warehouse

	"github.com/philotes/philotes-worker/bench/internal/harness"
)

// tableStats is what one sample reads about one lake table.
type tableStats struct {
	Snapshots int   // snapshots in the table metadata
	MetaBytes int64 // size of the current metadata.json (-1 when not on a file:// warehouse)
	MetaFiles int   // *.metadata.json files in the table's metadata directory (-1 when not file://)
	DataFiles int   // data files in the current snapshot
	DataBytes int64 // their total size
	Manifests int   // manifests in the current snapshot
	Records   int64
}

func (s tableStats) meanFileBytes() float64 {
	if s.DataFiles == 0 {
		return 0
	}
	return float64(s.DataBytes) / float64(s.DataFiles)
}

func lakeStats(ctx context.Context, l *harness.Lake, name string) (tableStats, error) {
	st := tableStats{MetaBytes: -1, MetaFiles: -1}
	tbl, err := l.Load(ctx, name)
	if err != nil || tbl == nil {
		return st, err
	}
	st.Snapshots = len(tbl.Metadata().Snapshots())
	fs, err := tbl.FS(ctx)
	if err != nil {
		return st, fmt.Errorf("lake: %s: %w", name, err)
	}
	// Through the table's own file IO: a file:// folder or an object store alike.
	meta := tbl.MetadataLocation()
	if f, err := fs.Open(strings.TrimPrefix(meta, "file://")); err == nil {
		if fi, err := f.Stat(); err == nil {
			st.MetaBytes = fi.Size()
		}
		f.Close()
	}
	if lister, ok := fs.(iceio.ListableIO); ok {
		n := 0
		dir := meta[:strings.LastIndex(meta, "/")]
		if strings.HasPrefix(dir, "file://") {
			dir = strings.TrimPrefix(dir, "file://")
		}
		if lister.WalkDir(dir, func(p string, d iofs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".metadata.json") {
				n++
			}
			return err
		}) == nil {
			st.MetaFiles = n
		}
	}
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return st, nil
	}
	manifests, err := snap.Manifests(fs)
	if err != nil {
		return st, fmt.Errorf("lake: %s manifests: %w", name, err)
	}
	st.Manifests = len(manifests)
	tasks, err := tbl.Scan().PlanFiles(ctx)
	if err != nil {
		return st, fmt.Errorf("lake: plan %s: %w", name, err)
	}
	st.DataFiles = len(tasks)
	for _, t := range tasks {
		st.DataBytes += t.File.FileSizeBytes()
		st.Records += t.File.Count()
	}
	return st, nil
}

// rssBytes reads VmRSS of pid from /proc.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS of %d: %w", pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// sample is one row of the soak's record.
type sample struct {
	Elapsed     time.Duration
	RSS         int64   // bytes
	Heap        float64 // go_memstats_heap_inuse_bytes, NaN when absent
	CommitSum   float64 // commit histogram _sum delta over the interval
	CommitCount float64 // _count delta
	Lag         float64 // philotes_cdc_lag_seconds at sample time
	LagMax      float64 // max of the per-second polls over the interval
	Depth       float64 // philotes_buffer_depth
	Pending     float64 // philotes_iceberg_pending_files, NaN when absent
	Inserted    int     // rows inserted by the load so far
	Tables      []tableStats
}

func (s sample) commitMeanMs() float64 {
	if s.CommitCount == 0 {
		return math.NaN()
	}
	return 1000 * s.CommitSum / s.CommitCount
}

// lagWatch polls a worker's philotes_cdc_lag_seconds every second and keeps the maximum.
type lagWatch struct {
	mu          sync.Mutex
	intervalMax float64
	overallMax  float64
}

func (w *lagWatch) run(ctx context.Context, p *harness.Worker) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s, err := p.Scrape(ctx)
		if err != nil {
			continue // a missed poll only lowers the resolution of the maximum
		}
		if lag, ok := s.Value("philotes_cdc_lag_seconds", nil); ok {
			w.observe(lag)
		}
	}
}

func (w *lagWatch) observe(lag float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.intervalMax = max(w.intervalMax, lag)
	w.overallMax = max(w.overallMax, lag)
}

// takeInterval returns the interval's maximum and starts a new interval.
func (w *lagWatch) takeInterval() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.intervalMax
	w.intervalMax = 0
	return m
}

// sampler takes samples of the soak worker and the lake.
type sampler struct {
	worker     *harness.Worker
	lake       *harness.Lake
	tables     []string
	ledger     *harness.Ledger
	lag        *lagWatch
	commitName string // which commit histogram the worker has
	prevSum    float64
	prevCount  float64
}

// take samples the worker and the lake; at is the sample's scheduled time into the run, which the trends use
// (taking the sample itself may add a moment).
func (s *sampler) take(ctx context.Context, at time.Duration) (sample, error) {
	out := sample{Elapsed: at, Heap: math.NaN(), Pending: math.NaN(), Lag: math.NaN(), Depth: math.NaN()}
	if s.worker.Exited() {
		return out, fmt.Errorf("the soak worker exited: %v; log tail:\n%s", s.worker.Err(), s.worker.LogTail())
	}
	rss, err := rssBytes(s.worker.Pid())
	if err != nil {
		return out, err
	}
	out.RSS = rss
	m, err := s.worker.Scrape(ctx)
	if err != nil {
		return out, err
	}
	if v, ok := m.Value("go_memstats_heap_inuse_bytes", nil); ok {
		out.Heap = v
	}
	if sum, count, name, ok := commitHistogram(m); ok {
		s.commitName = name
		out.CommitSum, out.CommitCount = sum-s.prevSum, count-s.prevCount
		s.prevSum, s.prevCount = sum, count
	}
	if v, ok := m.Value("philotes_cdc_lag_seconds", nil); ok {
		out.Lag = v
		s.lag.observe(v)
	}
	out.LagMax = s.lag.takeInterval()
	if v, ok := m.Value("philotes_buffer_depth", nil); ok {
		out.Depth = v
	}
	if v, ok := m.Value("philotes_iceberg_pending_files", nil); ok {
		out.Pending = v
	}
	out.Inserted, _, _, _ = s.ledger.Totals()
	for _, t := range s.tables {
		st, err := lakeStats(ctx, s.lake, t)
		if err != nil {
			return out, err
		}
		out.Tables = append(out.Tables, st)
	}
	return out, nil
}

// The printed row aggregates the tables (max snapshots, metadata size and files, manifests; total data files and
// their mean size); the CSV has every table's figures.
const rowFormat = "%8s %7s %7s %9s %6s %7s %7s %7s %8s %6s %8s %6s %7s %8s %5s\n"

func printHeader(w io.Writer) {
	fmt.Fprintf(w, rowFormat, "elapsed", "rss_mb", "heap_mb", "commit_ms", "lag_s", "lagmax", "depth", "pending",
		"inserted", "snaps", "meta_kb", "metaf", "files", "mean_kb", "mani")
}

func printRow(w io.Writer, s sample) {
	var snaps, metaFiles, files, manifests int
	var metaBytes, dataBytes int64
	for _, t := range s.Tables {
		snaps = max(snaps, t.Snapshots)
		metaBytes = max(metaBytes, t.MetaBytes)
		metaFiles = max(metaFiles, t.MetaFiles)
		manifests = max(manifests, t.Manifests)
		files += t.DataFiles
		dataBytes += t.DataBytes
	}
	mean := 0.0
	if files > 0 {
		mean = float64(dataBytes) / float64(files)
	}
	fmt.Fprintf(w, rowFormat, s.Elapsed.Round(time.Second).String(), f1(float64(s.RSS)/1e6), f1(s.Heap/1e6),
		f1(s.commitMeanMs()), f1(s.Lag), f1(s.LagMax), f0(s.Depth), f0(s.Pending), strconv.Itoa(s.Inserted),
		strconv.Itoa(snaps), f1(float64(metaBytes)/1e3), strconv.Itoa(metaFiles), strconv.Itoa(files),
		f1(mean/1e3), strconv.Itoa(manifests))
}

func f1(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func f0(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// csvLog writes the samples, one row each, flushed as they come.
type csvLog struct {
	f *os.File
	w *csv.Writer
}

func newCSV(path string, tables []string) (*csvLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("csv: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("csv: %w", err)
	}
	header := []string{"elapsed_s", "rss_bytes", "heap_inuse_bytes", "commit_mean_ms", "commits", "lag_s", "lag_max_s",
		"buffer_depth", "pending_files", "inserted"}
	for _, t := range tables {
		for _, c := range []string{"snapshots", "metadata_json_bytes", "metadata_files", "data_files", "data_mean_bytes", "manifests", "records"} {
			header = append(header, t+"_"+c)
		}
	}
	c := &csvLog{f: f, w: csv.NewWriter(f)}
	if err := c.w.Write(header); err != nil {
		f.Close()
		return nil, fmt.Errorf("csv: %w", err)
	}
	c.w.Flush()
	return c, c.w.Error()
}

func (c *csvLog) write(s sample) error {
	g := func(v float64) string {
		if math.IsNaN(v) {
			return ""
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	row := []string{g(s.Elapsed.Seconds()), strconv.FormatInt(s.RSS, 10), g(s.Heap), g(s.commitMeanMs()), g(s.CommitCount),
		g(s.Lag), g(s.LagMax), g(s.Depth), g(s.Pending), strconv.Itoa(s.Inserted)}
	for _, t := range s.Tables {
		row = append(row, strconv.Itoa(t.Snapshots), strconv.FormatInt(t.MetaBytes, 10), strconv.Itoa(t.MetaFiles),
			strconv.Itoa(t.DataFiles), g(t.meanFileBytes()), strconv.Itoa(t.Manifests), strconv.FormatInt(t.Records, 10))
	}
	if err := c.w.Write(row); err != nil {
		return fmt.Errorf("csv: %w", err)
	}
	c.w.Flush()
	return c.w.Error()
}

func (c *csvLog) close() error { return c.f.Close() }
