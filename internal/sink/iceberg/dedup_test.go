package iceberg

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/change"
)

func TestRanges(t *testing.T) {
	tests := []struct {
		name string
		ids  []int64
		want string
	}{
		{"one", []int64{7}, "7-7"},
		{"run", []int64{3, 1, 2}, "1-3"},
		{"gaps", []int64{10, 1, 2, 3, 5, 11, 12}, "1-3,5-5,10-12"},
		{"duplicates", []int64{4, 4, 5}, "4-5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := formatRanges(toRanges(tt.ids))
			require.Equal(t, tt.want, s)
			back, err := parseRanges(nil, s)
			require.NoError(t, err)
			require.Equal(t, toRanges(tt.ids), back)
		})
	}

	for _, bad := range []string{"x", "1-", "5-3", "1-2,,3-4"} {
		t.Run("bad "+bad, func(t *testing.T) {
			_, err := parseRanges(nil, bad)
			require.Error(t, err)
		})
	}
}

func TestPendingChanges(t *testing.T) {
	changes := func(ids ...int64) []change.Change {
		out := make([]change.Change, len(ids))
		for i, id := range ids {
			out[i].EventID = id
		}
		return out
	}
	ids := func(cs []change.Change) []int64 {
		out := []int64{}
		for _, c := range cs {
			out = append(out, c.EventID)
		}
		return out
	}
	tests := []struct {
		name    string
		written []idRange
		in      []int64
		want    []int64
	}{
		{"nothing written", nil, []int64{1, 2, 3}, []int64{1, 2, 3}},
		{"all written", []idRange{{1, 10}}, []int64{1, 2, 3}, []int64{}},
		{"overlap", []idRange{{1, 5}}, []int64{4, 5, 6, 7}, []int64{6, 7}},
		{"holes", []idRange{{2, 2}, {5, 6}, {9, 20}}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9}, []int64{1, 3, 4, 7, 8}},
		{"unsorted input", []idRange{{5, 6}}, []int64{9, 5, 1, 6}, []int64{9, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			written := mergeRanges(append([]idRange{}, tt.written...))
			require.Equal(t, tt.want, ids(pendingChanges(changes(tt.in...), written)))
		})
	}
}

func TestMergeRanges(t *testing.T) {
	got := mergeRanges([]idRange{{10, 12}, {1, 3}, {2, 5}, {6, 6}, {20, 30}, {21, 22}})
	require.Equal(t, []idRange{{1, 6}, {10, 12}, {20, 30}}, got)
}
