package worker

import (
	"slices"
	"testing"
	"time"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/internal/source"
)

func TestSnapshotBatchDropsWhatTheStreamSupersedes(t *testing.T) {
	// The chunk saw transactions below 100 and 101, not 102 (running) nor 103 (later).
	snap := source.Snapshot{Xmin: 102, Xmax: 103, Xip: []uint64{102}}
	key := func(s string) []byte { return source.EncodeKey([][]byte{[]byte(s)}) }
	read := &source.ChunkRead{Snapshot: snap, At: time.Unix(0, 0)}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		read.Keys = append(read.Keys, key(k))
		read.Tuples = append(read.Tuples, source.EncodeTuple([][]byte{[]byte(k)}))
	}
	for _, tc := range []struct {
		name    string
		changed []buffer.ChangedKey
		want    []string
	}{
		{"nothing changed", nil, []string{"a", "b", "c", "d", "e"}},
		{"an update the read saw stays", []buffer.ChangedKey{{Key: key("a"), Op: change.Update, Xid: 101}}, []string{"a", "b", "c", "d", "e"}},
		{"an update the read missed drops the row", []buffer.ChangedKey{{Key: key("b"), Op: change.Update, Xid: 102}}, []string{"a", "c", "d", "e"}},
		{"a later transaction drops the row", []buffer.ChangedKey{{Key: key("c"), Op: change.Delete, Xid: 103}}, []string{"a", "b", "d", "e"}},
		{"an insert the read saw is already in the stream", []buffer.ChangedKey{{Key: key("d"), Op: change.Insert, Xid: 50}}, []string{"a", "b", "c", "e"}},
		{"a truncate the read saw keeps the rows", []buffer.ChangedKey{{Op: change.Truncate, Xid: 101}}, []string{"a", "b", "c", "d", "e"}},
		{"a truncate the read missed drops them all", []buffer.ChangedKey{{Op: change.Truncate, Xid: 102}}, nil},
		{"a key the chunk does not hold changes nothing", []buffer.ChangedKey{{Key: key("z"), Op: change.Update, Xid: 102}}, []string{"a", "b", "c", "d", "e"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			batch, dropped := snapshotBatch(read, tc.changed, 777)
			var kept []string
			for i := range batch.Len() {
				vals, err := source.DecodeTuple(batch.Tuple(i), nil)
				if err != nil {
					t.Fatal(err)
				}
				kept = append(kept, string(vals[0].Text))
			}
			if !slices.Equal(kept, tc.want) || dropped != len(read.Tuples)-len(tc.want) {
				t.Fatalf("kept %v (dropped %d), want %v", kept, dropped, tc.want)
			}
		})
	}
}
