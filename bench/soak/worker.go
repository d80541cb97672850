package main

import "github.com/philotes/philotes-worker/bench/internal/harness"

// commitHistogram is the Iceberg commit duration histogram: philotes_iceberg_commit_duration_seconds when the
// worker has it, else the processor batch stage sink_commit (sink write plus buffer delete).
func commitHistogram(s harness.Metrics) (sum, count float64, name string, ok bool) {
	if sum, count, ok := s.Histogram("philotes_iceberg_commit_duration_seconds", nil); ok {
		return sum, count, "philotes_iceberg_commit_duration_seconds", true
	}
	sum, count, ok = s.Histogram("philotes_batch_duration_seconds", map[string]string{"stage": "sink_commit"})
	return sum, count, `philotes_batch_duration_seconds{stage="sink_commit"}`, ok
}
