package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// The exposition passes Prometheus' metric lint (names, units, _total on counters, help texts).
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "orders")
	m.ObserveSink(time.Second, 10)
	m.ObserveAppend(time.Millisecond)
	m.ObserveCommit(time.Second, 3)
	m.SetTable("public_orders", 12, 4)
	m.Maintained("expire_snapshots")
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// Lag is the age of the oldest buffered change, computed at scrape time, and 0 once the buffer is empty; depth
// and processed follow what the worker reports.
func TestLagDepthAndProcessed(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "orders")
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }

	cases := []struct {
		name   string
		depth  int64
		oldest time.Time
		want   string
	}{
		{"empty buffer", 0, time.Time{}, "0"},
		{"oldest change 90s old", 1234, now.Add(-90 * time.Second), "90"},
		{"clock behind the source never goes negative", 1, now.Add(5 * time.Second), "0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m.SetBuffer(tc.depth, tc.oldest)
			require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP philotes_cdc_lag_seconds Seconds since the source commit of the oldest change not yet visible in Iceberg, whether it waits in the buffer or in a data file the committer has not committed yet; 0 when nothing waits. Includes up to one commit interval. Read from the shared buffer, so every replica reports the same value: aggregate with max, never sum.
# TYPE philotes_cdc_lag_seconds gauge
philotes_cdc_lag_seconds{source="orders"} `+tc.want+`
`), "philotes_cdc_lag_seconds"))
			require.Equal(t, float64(tc.depth), testutil.ToFloat64(m.depth))
		})
	}
	m.ObserveSink(time.Second, 500)
	m.ObserveSink(time.Second, 250)
	require.Equal(t, 750.0, testutil.ToFloat64(m.processed))
	m.SetReaderActive(true)
	m.SetRetainedWAL(4096)
	require.Equal(t, 1.0, testutil.ToFloat64(m.readerActive))
	m.SetReaderActive(false)
	require.Equal(t, 0.0, testutil.ToFloat64(m.readerActive))
	require.Equal(t, 0.0, testutil.ToFloat64(m.retainedWAL), "only the reader reports retained WAL")
}
