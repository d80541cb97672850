package iceberg

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/change"
)

// writeDataFiles writes the changes to the table's data files with the library, as WriteFiles does, and
// returns the library's own DataFiles (WriteFiles only hands out their encoding).
func writeDataFiles(t *testing.T, ctx context.Context, s *Sink, tc change.TableChanges) []iceberg.DataFile {
	t.Helper()
	_, err := s.Prepare(ctx, tc.Table)
	require.NoError(t, err)
	tbl, err := s.cat.LoadTable(ctx, s.ident(TableName(tc.Table)))
	require.NoError(t, err)
	w, err := newRecordWriter(memory.DefaultAllocator, tbl.Schema())
	require.NoError(t, err)
	defer w.release()
	rec, err := w.build(tc.Table, tc.Changes)
	require.NoError(t, err)
	records := iter.Seq2[arrow.RecordBatch, error](func(yield func(arrow.RecordBatch, error) bool) { yield(rec, nil) })
	var out []iceberg.DataFile
	for df, err := range table.WriteRecords(ctx, tbl, w.schema, records, table.WithWriteUUID(uuid.New())) {
		require.NoError(t, err)
		out = append(out, df)
	}
	return out
}

// TestDataFileEncoding proves that a written data file's description survives encodeDataFile and
// decodeDataFile field for field, and that decoding refuses a file of another partition spec.
func TestDataFileEncoding(t *testing.T) {
	env := newTestEnv(t)
	s := newTestSink(t, env.config())
	ctx := testContext(t, time.Minute)

	tbl := change.Table{Schema: "app", Name: "measures", Columns: []change.Column{
		{Name: "id", TypeOID: oidInt8, TypeMod: -1, Key: true}, col("f8", oidFloat8, -1), col("f4", oidFloat4, -1),
		col("n", oidNumeric, 10<<16|2+4), col("ts", oidTimestamptz, -1), col("by", oidBytea, -1), col("t", oidText, -1),
	}}
	row := func(id int, vals ...string) change.Change {
		c := change.Change{EventID: int64(id), Op: change.Insert, LSN: uint64(id), CommitLSN: uint64(id), CommitTime: time.Unix(int64(id), 0)}
		c.Values = append(c.Values, text(strconv.Itoa(id)))
		for _, v := range vals {
			if v == "NULL" {
				c.Values = append(c.Values, null)
			} else {
				c.Values = append(c.Values, text(v))
			}
		}
		return c
	}
	tests := []struct {
		name    string
		changes []change.Change
	}{
		{"values, NaNs and nulls", []change.Change{
			row(1, "1.5", "NaN", "12.50", "2026-01-01 00:00:00+00", `\x00ff`, "a"),
			row(2, "NaN", "2.5", "-3.25", "2026-06-01 12:00:00+00", "NULL", "zz"),
			row(3, "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
		}},
		{"one row", []change.Change{row(4, "-Infinity", "1", "0.01", "1970-01-01 00:00:00+00", `\x`, "")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dfs := writeDataFiles(t, ctx, s, change.TableChanges{Table: tbl, Changes: tt.changes})
			require.Len(t, dfs, 1)
			df := dfs[0]
			require.NotEmpty(t, df.ColumnSizes(), "the library fills the statistics this test compares")
			require.NotEmpty(t, df.LowerBoundValues())
			require.NotEmpty(t, df.NullValueCounts())

			b, err := encodeDataFile(df)
			require.NoError(t, err)
			got, err := decodeDataFile(b, *iceberg.UnpartitionedSpec)
			require.NoError(t, err)
			requireSameDataFile(t, df, got)
			require.Equal(t, int64(len(tt.changes)), got.Count())
			require.Empty(t, got.Partition())

			// The table's spec is the unpartitioned spec 0; a table whose spec changed cannot take the file.
			_, err = decodeDataFile(b, iceberg.NewPartitionSpecID(1))
			require.ErrorContains(t, err, "partition spec 0, the table's is 1")
		})
	}

	// The library's Parquet writer leaves NaN counts empty (and may leave split offsets or the sort order out):
	// a file built with every field set proves they are carried too.
	t.Run("every field set", func(t *testing.T) {
		fb, err := iceberg.NewDataFileBuilder(*iceberg.UnpartitionedSpec, iceberg.EntryContentData,
			"s3://bucket/wh/ns.db/t/data/00000-0-"+uuid.NewString()+"-00000.parquet", iceberg.ParquetFile,
			nil, nil, nil, 42, 4242)
		require.NoError(t, err)
		fb.ColumnSizes(map[int]int64{1: 100, 2: 200}).ValueCounts(map[int]int64{1: 42, 2: 42}).
			NullValueCounts(map[int]int64{1: 0, 2: 3}).NaNValueCounts(map[int]int64{2: 5}).
			LowerBoundValues(map[int][]byte{1: {1, 0, 0, 0, 0, 0, 0, 0}, 2: {0}}).
			UpperBoundValues(map[int][]byte{1: {9, 0, 0, 0, 0, 0, 0, 0}, 2: {0xff, 0xfe}}).
			SplitOffsets([]int64{4, 2048}).SortOrderID(0)
		df := fb.Build()
		b, err := encodeDataFile(df)
		require.NoError(t, err)
		got, err := decodeDataFile(b, *iceberg.UnpartitionedSpec)
		require.NoError(t, err)
		requireSameDataFile(t, df, got)
		require.Equal(t, map[int]int64{2: 5}, got.NaNValueCounts())
		require.Equal(t, []int64{4, 2048}, got.SplitOffsets())
		require.NotNil(t, got.SortOrderID())
		require.Equal(t, 0, *got.SortOrderID())
	})

	t.Run("refuses delete files and garbage", func(t *testing.T) {
		fb, err := iceberg.NewDataFileBuilder(*iceberg.UnpartitionedSpec, iceberg.EntryContentPosDeletes,
			"file:///x/deletes.parquet", iceberg.ParquetFile, nil, nil, nil, 1, 10)
		require.NoError(t, err)
		_, err = encodeDataFile(fb.Build())
		require.ErrorContains(t, err, "want data")
		_, err = decodeDataFile([]byte("{"), *iceberg.UnpartitionedSpec)
		require.Error(t, err)
	})
}

// TestNothingVisibleUntilCommit proves that writers commit nothing, and that one Commit adds the files of
// several writers (here three replicas) in exactly one snapshot.
func TestNothingVisibleUntilCommit(t *testing.T) {
	env := newTestEnv(t)
	ctx := testContext(t, 2*time.Minute)
	committer := newTestSink(t, env.config())
	writeAndCommit(t, ctx, committer, 1, idTC(idRange(1, 3)...))
	_, before := writtenIDs(t, ctx, committer)
	snapBefore := before.CurrentSnapshot().SnapshotID

	var files []File
	var loc string
	for w := range 3 {
		s := newTestSink(t, env.config())
		var err error
		loc, err = s.Prepare(ctx, idTable)
		require.NoError(t, err)
		lo := int64(10 * (w + 1))
		tc := idTC(idRange(lo, lo+4)...)
		written, err := s.WriteFiles(ctx, &tc, uuid.New())
		require.NoError(t, err)
		require.Len(t, written, 1)
		require.Equal(t, idTableName, written[0].Table)
		require.Equal(t, int64(5), written[0].Records)
		require.Equal(t, uint64(lo+4)*10, written[0].MaxCommitLSN)
		require.True(t, time.Unix(lo, 0).Equal(written[0].OldestCommitTime))
		files = append(files, written...)
	}
	require.Len(t, filesUnder(t, loc, ".parquet"), 4, "the writers' files are on disk")

	ids, tbl := writtenIDs(t, ctx, committer)
	require.Equal(t, idRange(1, 3), ids, "no written row is visible before Commit")
	require.Equal(t, snapBefore, tbl.CurrentSnapshot().SnapshotID, "no new snapshot")
	require.Len(t, tbl.Metadata().Snapshots(), 1)
	committed, err := committer.Committed(ctx, idTableName)
	require.NoError(t, err)
	require.Equal(t, int64(1), committed)

	require.NoError(t, committer.Commit(ctx, idTableName, 2, encoded(files), maxLSN(files)))

	ids, tbl = writtenIDs(t, ctx, committer)
	want := append(idRange(1, 3), append(idRange(10, 14), append(idRange(20, 24), idRange(30, 34)...)...)...)
	require.Equal(t, want, ids)
	require.Len(t, tbl.Metadata().Snapshots(), 2, "one snapshot for the three writers' files")
	snap := tbl.CurrentSnapshot()
	require.Equal(t, snapBefore, *snap.ParentSnapshotID)
	require.Equal(t, "3", snap.Summary.Properties["added-data-files"])
	require.Equal(t, "15", snap.Summary.Properties["added-records"])
	require.Equal(t, "2", snap.Summary.Properties[PropCommitSeq])
	require.Equal(t, "340", snap.Summary.Properties[PropMaxCommitLSN])
	committed, err = newTestSink(t, env.config()).Committed(ctx, idTableName)
	require.NoError(t, err)
	require.Equal(t, int64(2), committed)
}

// TestExactlyOnce proves the committer's protocol: a Commit on a stale view loses with ErrConflict and leaves
// the table as it was, the committed sequence number tells what landed, and Committed of a fresh table is 0.
func TestExactlyOnce(t *testing.T) {
	env := newTestEnv(t)
	ctx := testContext(t, 2*time.Minute)
	writer := newTestSink(t, env.config())
	write := func(ids ...int64) []byte {
		t.Helper()
		_, err := writer.Prepare(ctx, idTable)
		require.NoError(t, err)
		tc := idTC(ids...)
		files, err := writer.WriteFiles(ctx, &tc, uuid.New())
		require.NoError(t, err)
		require.Len(t, files, 1)
		return files[0].Encoded
	}
	a := newTestSink(t, env.config())
	b := newTestSink(t, env.config())

	t.Run("commit before Committed", func(t *testing.T) {
		err := a.Commit(ctx, idTableName, 1, [][]byte{write(100)}, 0)
		require.ErrorContains(t, err, "commit before Committed")
	})

	t.Run("stale view loses", func(t *testing.T) {
		committed, err := a.Committed(ctx, idTableName)
		require.NoError(t, err)
		require.Zero(t, committed, "a table no committer touched")
		committed, err = b.Committed(ctx, idTableName)
		require.NoError(t, err)
		require.Zero(t, committed)
		require.NoError(t, b.Commit(ctx, idTableName, 1, [][]byte{write(6, 7)}, 70))
		_, afterB := writtenIDs(t, ctx, b)

		// Sequence numbers are never reused: the loser's is another one.
		err = a.Commit(ctx, idTableName, 2, [][]byte{write(1, 2)}, 20)
		require.ErrorIs(t, err, ErrConflict)
		t.Log(err)
		ids, tbl := writtenIDs(t, ctx, a)
		require.Equal(t, []int64{6, 7}, ids, "the table is unchanged by the loser")
		require.Equal(t, afterB.MetadataLocation(), tbl.MetadataLocation())
		require.Equal(t, "1", tbl.Properties()[PropCommittedSeq])
		// The refused commit's manifest list and manifest are removed: nothing references them.
		require.Len(t, filesUnder(t, tbl.Location()+"/metadata", ".avro"), 2*len(tbl.Metadata().Snapshots()),
			"one manifest list and one manifest per snapshot on disk")

		// The loser reads the committed number again and commits what is still missing.
		committed, err = a.Committed(ctx, idTableName)
		require.NoError(t, err)
		require.Equal(t, int64(1), committed, "the loser sees the winner's commit")
		require.NoError(t, a.Commit(ctx, idTableName, committed+1, [][]byte{write(1, 2)}, 20))
		ids, _ = writtenIDs(t, ctx, a)
		require.Equal(t, []int64{1, 2, 6, 7}, ids)
	})

	t.Run("a landed commit is recognised", func(t *testing.T) {
		committed, err := a.Committed(ctx, idTableName)
		require.NoError(t, err)
		seq := committed + 1
		f := write(8, 9)
		require.NoError(t, a.Commit(ctx, idTableName, seq, [][]byte{f}, 90))
		// The committer stops before forgetting the files; the next one (another replica) must not commit them
		// again: the table says they landed.
		c := newTestSink(t, env.config())
		committed, err = c.Committed(ctx, idTableName)
		require.NoError(t, err)
		require.GreaterOrEqual(t, committed, seq, "the caller's rule: files of a seq <= Committed are in the table")
		ids, _ := writtenIDs(t, ctx, c)
		require.Equal(t, []int64{1, 2, 6, 7, 8, 9}, ids)
	})

	t.Run("each Commit needs its own Committed", func(t *testing.T) {
		committed, err := b.Committed(ctx, idTableName)
		require.NoError(t, err)
		require.NoError(t, b.Commit(ctx, idTableName, committed+1, [][]byte{write(10)}, 100))
		// The Sink keeps no view after a commit (holding the committed table would hold every earlier metadata
		// version): a Commit without a Committed before it is refused, and changes nothing.
		err = b.Commit(ctx, idTableName, committed+2, [][]byte{write(99)}, 990)
		require.ErrorContains(t, err, "commit before Committed")
		got, err := b.Committed(ctx, idTableName)
		require.NoError(t, err)
		require.Equal(t, committed+1, got)
		require.NoError(t, b.Commit(ctx, idTableName, got+1, [][]byte{write(11)}, 110))
		got, err = a.Committed(ctx, idTableName)
		require.NoError(t, err)
		require.Equal(t, committed+2, got)
		ids, _ := writtenIDs(t, ctx, a)
		require.Equal(t, []int64{1, 2, 6, 7, 8, 9, 10, 11}, ids)
	})

	t.Run("a writer's schema change does not revert or lose", func(t *testing.T) {
		committed, err := a.Committed(ctx, idTableName)
		require.NoError(t, err)
		f := write(20)
		// Between Committed and Commit a writer adds a column: the table's metadata moves, its data does not.
		v2 := idTable
		v2.Columns = append(slices.Clone(idTable.Columns), col("added", oidText, -1))
		_, err = writer.Prepare(ctx, v2)
		require.NoError(t, err)
		err = a.Commit(ctx, idTableName, committed+1, [][]byte{f}, 200)
		t.Logf("commit after a concurrent schema change: %v", err)
		if errors.Is(err, ErrConflict) {
			// Also correct: the committer reloads and retries.
			_, err = a.Committed(ctx, idTableName)
			require.NoError(t, err)
			err = a.Commit(ctx, idTableName, committed+1, [][]byte{f}, 200)
		}
		require.NoError(t, err)
		ids, tbl := writtenIDs(t, ctx, a)
		require.Equal(t, []int64{1, 2, 6, 7, 8, 9, 10, 11, 20}, ids)
		_, ok := tbl.Schema().FindFieldByName("added")
		require.True(t, ok, "the commit kept the writer's new column")
		got, err := a.Committed(ctx, idTableName)
		require.NoError(t, err)
		require.Equal(t, committed+1, got)
	})

	t.Run("conflict with maintenance", func(t *testing.T) {
		committed, err := a.Committed(ctx, idTableName)
		require.NoError(t, err)
		// Another table change that replaces the current snapshot (here: a data file rewrite by maintenance
		// on another replica) moves the table underneath the committer.
		cfg := env.config()
		cfg.Maintenance = MaintenanceConfig{MinCompactFiles: 2}
		m, err := newTestSink(t, cfg).Maintain(ctx, idTableName)
		require.NoError(t, err)
		require.Contains(t, m.Operations, "compact")
		err = a.Commit(ctx, idTableName, committed+1, [][]byte{write(12)}, 120)
		require.ErrorIs(t, err, ErrConflict)
		t.Log(err)
		got, err := a.Committed(ctx, idTableName)
		require.NoError(t, err)
		require.Equal(t, committed, got, "the lost commit did not land")
		ids, _ := writtenIDs(t, ctx, a)
		require.Equal(t, []int64{1, 2, 6, 7, 8, 9, 10, 11, 20}, ids)
	})
}

// TestConcurrentWriters proves that writers on several Sinks, starting together on a fresh catalog, can
// create, evolve (one adds a column) and write the same table at the same time, and that one Commit of all
// their files holds every row exactly once.
func TestConcurrentWriters(t *testing.T) {
	env := newTestEnv(t)
	ctx := testContext(t, 4*time.Minute)
	const (
		sinks     = 3
		writers   = 6
		batches   = 4
		batchSize = 25
	)
	// v2 is idTable with a column more, as the relation after an ALTER TABLE ADD COLUMN at the source.
	v2 := idTable
	v2.Columns = append(slices.Clone(idTable.Columns), col("extra", oidText, -1))

	ss := make([]*Sink, sinks)
	startErrs := make([]error, sinks)
	var starting sync.WaitGroup
	for i := range ss {
		starting.Go(func() {
			cfg := env.config()
			cfg.MaxCommitAttempts = 50
			ss[i], startErrs[i] = New(ctx, cfg)
		})
	}
	starting.Wait()
	for i, s := range ss {
		require.NoError(t, startErrs[i], "start sink %d", i)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
	}

	var (
		mu    sync.Mutex
		files []File
		wg    sync.WaitGroup
	)
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			s := ss[w%sinks]
			for k := range int64(batches) {
				lo := int64(w)*1000 + k*batchSize + 1
				tc := idTC(idRange(lo, lo+batchSize-1)...)
				if w == writers-1 && k >= 1 {
					// The last writer sees the new relation from its second batch on.
					tc.Table = v2
					for i := range tc.Changes {
						tc.Changes[i].Values = append(tc.Changes[i].Values, text(fmt.Sprintf("x%d", lo+int64(i))))
					}
				}
				if _, err := s.Prepare(ctx, tc.Table); err != nil {
					errs <- fmt.Errorf("writer %d batch %d: prepare: %w", w, k, err)
					return
				}
				written, err := s.WriteFiles(ctx, &tc, uuid.New())
				if err != nil {
					errs <- fmt.Errorf("writer %d batch %d: write: %w", w, k, err)
					return
				}
				mu.Lock()
				files = append(files, written...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, files, writers*batches)

	commitFiles(t, ctx, ss[0], idTableName, 1, files)

	var want []int64
	extra := map[int64]any{}
	for w := range int64(writers) {
		for k := range int64(batches) {
			lo := w*1000 + k*batchSize + 1
			for id := lo; id < lo+batchSize; id++ {
				want = append(want, id)
				extra[id] = nil
				if w == writers-1 && k >= 1 {
					extra[id] = fmt.Sprintf("x%d", id)
				}
			}
		}
	}
	tbl, got := scan(t, ctx, ss[1], table.Identifier{"philotes", idTableName})
	ids := make([]int64, len(got["id"]))
	gotExtra := map[int64]any{}
	for i, v := range got["id"] {
		ids[i] = v.(int64)
		gotExtra[ids[i]] = got["extra"][i]
		require.Equal(t, "payload "+strconv.FormatInt(ids[i], 10), got["payload"][i])
	}
	slices.Sort(ids)
	require.Equal(t, want, ids, "every row exactly once")
	require.Equal(t, extra, gotExtra, "the added column holds the new relation's values, nulls elsewhere")
	require.Len(t, tbl.Metadata().Snapshots(), 1, "one commit")
	_, ok := tbl.Schema().FindFieldByName("extra")
	require.True(t, ok)
}

// TestRemoveWrite proves that RemoveWrite deletes exactly the files of one write, tolerates a folder that
// does not exist, and refuses to run without a location or a full write ID.
func TestRemoveWrite(t *testing.T) {
	env := newTestEnv(t)
	s := newTestSink(t, env.config())
	ctx := testContext(t, time.Minute)

	loc, err := s.Prepare(ctx, idTable)
	require.NoError(t, err)
	write := func(ids ...int64) (uuid.UUID, []File) {
		id := uuid.New()
		tc := idTC(ids...)
		files, err := s.WriteFiles(ctx, &tc, id)
		require.NoError(t, err)
		return id, files
	}
	dead, _ := write(1, 2)
	live, liveFiles := write(3, 4)
	_, committedFiles := write(5, 6)
	commitFiles(t, ctx, s, idTableName, 1, committedFiles)
	all := filesUnder(t, loc, ".parquet")
	require.Len(t, all, 3)

	tests := []struct {
		name      string
		location  string
		writeUUID string
		wantN     int
		wantErr   string
	}{
		{"empty location", "", dead.String(), 0, "refusing"},
		{"empty write ID", loc, "", 0, "refusing"},
		{"short write ID", loc, dead.String()[:8], 0, "refusing"},
		{"unknown write", loc, uuid.NewString(), 0, ""},
		{"missing folder", strings.TrimSuffix(loc, "/data") + "_nope/data", dead.String(), 0, ""},
		{"the dead write", loc, dead.String(), 1, ""},
		{"again", loc, dead.String(), 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := s.RemoveWrite(ctx, tt.location, tt.writeUUID)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tt.wantN, n)
		})
	}
	left := filesUnder(t, loc, ".parquet")
	require.Len(t, left, 2, "only the dead write's file went")
	for _, f := range left {
		require.False(t, strings.Contains(f, dead.String()), f)
	}
	require.True(t, slices.ContainsFunc(left, func(f string) bool { return strings.Contains(f, live.String()) }))

	// The committed write is intact, and the live write can still be committed.
	commitFiles(t, ctx, s, idTableName, 2, liveFiles)
	ids, _ := writtenIDs(t, ctx, s)
	require.Equal(t, idRange(3, 6), ids)
}

// requireSameDataFile compares every field the package encodes; an empty map or slice equals a missing one.
func requireSameDataFile(t *testing.T, want, got iceberg.DataFile) {
	t.Helper()
	same := func(name string, w, g any) {
		t.Helper()
		if isEmpty(w) && isEmpty(g) {
			return
		}
		require.Equal(t, w, g, name)
	}
	require.Equal(t, iceberg.EntryContentData, got.ContentType())
	require.Equal(t, want.FilePath(), got.FilePath())
	require.Equal(t, want.FileFormat(), got.FileFormat())
	require.Equal(t, want.SpecID(), got.SpecID())
	require.Equal(t, want.Count(), got.Count())
	require.Equal(t, want.FileSizeBytes(), got.FileSizeBytes())
	same("column sizes", want.ColumnSizes(), got.ColumnSizes())
	same("value counts", want.ValueCounts(), got.ValueCounts())
	same("null counts", want.NullValueCounts(), got.NullValueCounts())
	same("NaN counts", want.NaNValueCounts(), got.NaNValueCounts())
	same("lower bounds", want.LowerBoundValues(), got.LowerBoundValues())
	same("upper bounds", want.UpperBoundValues(), got.UpperBoundValues())
	same("split offsets", want.SplitOffsets(), got.SplitOffsets())
	require.Equal(t, want.SortOrderID(), got.SortOrderID(), "sort order ID")
	require.Empty(t, got.Partition())
}

func isEmpty(v any) bool {
	switch v := v.(type) {
	case map[int]int64:
		return len(v) == 0
	case map[int][]byte:
		return len(v) == 0
	case []int64:
		return len(v) == 0
	}
	return false
}

// TestCommitReadsNoOldManifests proves that a Commit (and the Committed before it) reads the table's metadata
// and manifest list only, never the manifests of earlier commits, whose number grows with every commit until
// maintenance: with every earlier manifest moved away, the commit still succeeds.
func TestCommitReadsNoOldManifests(t *testing.T) {
	env := newTestEnv(t)
	s := newTestSink(t, env.config())
	ctx := testContext(t, time.Minute)
	for c := range int64(5) {
		writeAndCommit(t, ctx, s, c+1, idTC(c*2+1, c*2+2))
	}
	tbl, err := s.cat.LoadTable(ctx, s.ident(idTableName))
	require.NoError(t, err)
	metaDir := localPath(strings.TrimSuffix(tbl.Location(), "/")) + "/metadata"
	aside := t.TempDir()
	var moved []string
	for _, f := range filesUnder(t, "file://"+metaDir, ".avro") {
		if strings.HasPrefix(f, "snap-") {
			continue // manifest lists stay
		}
		require.NoError(t, os.Rename(filepath.Join(metaDir, f), filepath.Join(aside, f)))
		moved = append(moved, f)
	}
	require.Len(t, moved, 5)

	_, err = s.Prepare(ctx, idTable)
	require.NoError(t, err)
	tc := idTC(11, 12)
	files, err := s.WriteFiles(ctx, &tc, uuid.New())
	require.NoError(t, err)
	commitFiles(t, ctx, s, idTableName, 6, files)

	for _, f := range moved {
		require.NoError(t, os.Rename(filepath.Join(aside, f), filepath.Join(metaDir, f)))
	}
	ids, tbl := writtenIDs(t, ctx, s)
	require.Equal(t, idRange(1, 12), ids)
	require.Equal(t, "12", tbl.CurrentSnapshot().Summary.Properties["total-records"])
}

// SweepOrphans removes exactly the old files that nothing accounts for: not what a snapshot references, not a
// pending file, not a write in flight, and not a file younger than the age.
func TestSweepOrphans(t *testing.T) {
	env := newTestEnv(t)
	ctx := testContext(t, 2*time.Minute)
	s := newTestSink(t, env.config())
	writeAndCommit(t, ctx, s, 1, idTC(1, 2))
	writeAndCommit(t, ctx, s, 2, idTC(3, 4))

	// A pending file: written and recorded, not committed yet.
	loc, err := s.Prepare(ctx, idTable)
	require.NoError(t, err)
	tc := idTC(5, 6)
	pending, err := s.WriteFiles(ctx, &tc, uuid.New())
	require.NoError(t, err)
	require.Len(t, pending, 1)
	// A write in flight, a leftover of a refused commit, and a young leftover.
	inFlight := uuid.NewString()
	dir := localPath(loc)
	plant := func(name string, age time.Duration) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("x"), 0o644))
		at := time.Now().Add(-age)
		require.NoError(t, os.Chtimes(p, at, at))
		return name
	}
	plant("00000-0-"+inFlight+"-00001.parquet", 48*time.Hour)
	orphan := plant("00000-0-"+uuid.NewString()+"-00001.parquet", 48*time.Hour)
	plant("00000-0-"+uuid.NewString()+"-00002.parquet", time.Minute)
	// Everything else, the committed files and the table's metadata included, is old too.
	require.NoError(t, filepath.WalkDir(localPath(strings.TrimSuffix(loc, "/data")), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "-00002.parquet") {
			return err
		}
		at := time.Now().Add(-48 * time.Hour)
		return os.Chtimes(p, at, at)
	}))
	before := filesUnder(t, loc, ".parquet")

	protect := func(context.Context) ([][]byte, []string, error) {
		return [][]byte{pending[0].Encoded}, []string{inFlight}, nil
	}
	n, err := s.SweepOrphans(ctx, idTableName, 24*time.Hour, protect)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	after := filesUnder(t, loc, ".parquet")
	require.ElementsMatch(t, slices.DeleteFunc(slices.Clone(before), func(f string) bool { return f == orphan }), after)

	// The table still reads, and the pending file can still be committed.
	committed, err := s.Committed(ctx, idTableName)
	require.NoError(t, err)
	require.NoError(t, s.Commit(ctx, idTableName, committed+1, [][]byte{pending[0].Encoded}, 0))
	ids, _ := writtenIDs(t, ctx, s)
	require.Equal(t, []int64{1, 2, 3, 4, 5, 6}, ids)

	// A sweep that cannot learn what to protect deletes nothing.
	_, err = s.SweepOrphans(ctx, idTableName, 24*time.Hour, func(context.Context) ([][]byte, []string, error) {
		return nil, nil, errors.New("buffer down")
	})
	require.ErrorContains(t, err, "buffer down", "no protection, no sweep")
}
