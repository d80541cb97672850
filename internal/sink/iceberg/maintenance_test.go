package iceberg

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/change"
)

// ledger has the types whose values maintenance must carry through a rewrite unchanged.
var ledger = change.Table{Schema: "app", Name: "ledger", Columns: []change.Column{
	{Name: "id", TypeOID: oidInt8, TypeMod: -1, Key: true},
	col("amount", oidNumeric, 12<<16|2+4), col("at", oidTimestamptz, -1), col("day", oidDate, -1),
	col("raw", oidBytea, -1), col("note", oidText, -1), col("f8", oidFloat8, -1), col("u", oidUUID, -1),
}}

const ledgerName = "app_ledger"

// ledgerRows returns inserts of ids lo..hi; every third row has nulls in the data columns.
func ledgerRows(lo, hi int64) change.TableChanges {
	tc := change.TableChanges{Table: ledger}
	for id := lo; id <= hi; id++ {
		vals := []change.Value{
			text(strconv.FormatInt(id, 10)),
			text(fmt.Sprintf("%d.%02d", id*37, id%100)),
			text(time.Date(2026, 1, 1, 0, 0, 0, int(id)*1000, time.UTC).Add(time.Duration(id) * time.Hour).Format("2006-01-02 15:04:05.999999-07")),
			text(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(id)).Format("2006-01-02")),
			text(fmt.Sprintf(`\x%02x00ff`, id%256)),
			text("note " + strconv.FormatInt(id, 10)),
			text(strconv.FormatFloat(float64(id)/3, 'g', -1, 64)),
			text(fmt.Sprintf("00000000-0000-4000-8000-%012d", id)),
		}
		if id%3 == 0 {
			for i := 1; i < len(vals); i++ {
				vals[i] = null
			}
		}
		if id%7 == 0 {
			vals[6] = text("NaN")
		}
		tc.Changes = append(tc.Changes, change.Change{
			EventID: id, Op: change.Insert, LSN: uint64(id), CommitLSN: uint64(id), CommitTime: time.Unix(id, 0),
			Values: vals,
		})
	}
	return tc
}

// ledgerContent reads the whole table as id -> column -> value.
func ledgerContent(t *testing.T, ctx context.Context, s *Sink) (map[int64]map[string]any, *table.Table) {
	t.Helper()
	tbl, got := scan(t, ctx, s, s.ident(ledgerName))
	rows := map[int64]map[string]any{}
	for i, id := range got["id"] {
		row := map[string]any{}
		for name, cells := range got {
			row[name] = cells[i]
		}
		rows[id.(int64)] = row
	}
	require.Len(t, rows, len(got["id"]), "ids are unique")
	return rows, tbl
}

// tableFiles describes what a table's retained snapshots reference and what its folders hold.
type tableFiles struct {
	liveData      int      // data files of the current snapshot
	scanTasks     int      // scan tasks of the current snapshot: more than liveData when large files are split
	dataManifests int      // data manifests of the current snapshot
	referenced    []string // data files referenced (not as deleted) by any retained snapshot, base names
	manifests     []string // manifests of any retained snapshot, base names
	onDisk        []string // parquet files under the data folder
	manifestsDisk []string // manifests (not manifest lists) under the metadata folder
	listsDisk     []string // manifest lists under the metadata folder
	metadataJSON  int      // metadata.json files under the metadata folder
}

func inspectTable(t *testing.T, ctx context.Context, s *Sink, name string) (tableFiles, *table.Table) {
	t.Helper()
	tbl, err := s.cat.LoadTable(ctx, s.ident(name))
	require.NoError(t, err)
	fsys, err := tbl.FS(ctx)
	require.NoError(t, err)
	var tf tableFiles
	tasks, err := tbl.Scan().PlanFiles(ctx)
	require.NoError(t, err)
	live := map[string]bool{}
	for _, task := range tasks {
		live[task.File.FilePath()] = true // a large file may be split into several tasks
	}
	tf.liveData = len(live)
	tf.scanTasks = len(tasks)
	tf.dataManifests, err = dataManifests(ctx, tbl)
	require.NoError(t, err)
	refs, mans := map[string]bool{}, map[string]bool{}
	for _, snap := range tbl.Metadata().Snapshots() {
		manifests, err := snap.Manifests(fsys)
		require.NoError(t, err)
		for _, m := range manifests {
			mans[path.Base(m.FilePath())] = true
			for e, err := range m.Entries(fsys, false) {
				require.NoError(t, err)
				if e.Status() != iceberg.EntryStatusDELETED {
					refs[path.Base(e.DataFile().FilePath())] = true
				}
			}
		}
	}
	tf.referenced = sortedKeys(refs)
	tf.manifests = sortedKeys(mans)
	loc := strings.TrimSuffix(tbl.Location(), "/")
	tf.onDisk = filesUnder(t, loc+"/data", ".parquet")
	for _, f := range filesUnder(t, loc+"/metadata", ".avro") {
		if strings.HasPrefix(f, "snap-") {
			tf.listsDisk = append(tf.listsDisk, f)
		} else {
			tf.manifestsDisk = append(tf.manifestsDisk, f)
		}
	}
	tf.metadataJSON = len(filesUnder(t, loc+"/metadata", ".metadata.json"))
	return tf, tbl
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// snapshotLabels names the retained snapshots from the current one back: "seq N" for a commit, else the
// maintenance operation or the snapshot operation.
func snapshotLabels(tbl *table.Table) []string {
	var out []string
	for snap := tbl.CurrentSnapshot(); snap != nil; {
		p := snap.Summary.Properties
		switch {
		case p[PropCommitSeq] != "":
			out = append(out, "seq "+p[PropCommitSeq])
		case p[PropMaintenance] != "":
			out = append(out, p[PropMaintenance])
		default:
			out = append(out, string(snap.Summary.Operation))
		}
		if snap.ParentSnapshotID == nil {
			break
		}
		snap = tbl.Metadata().SnapshotByID(*snap.ParentSnapshotID)
	}
	return out
}

// TestMaintain proves that maintenance compacts small files or rewrites manifests, and expires snapshots,
// without changing what a reader sees; that it deletes the files only expired snapshots referenced, bounds
// the metadata files, keeps the committed sequence number, and does nothing when there is nothing to do.
func TestMaintain(t *testing.T) {
	const commits, perCommit = 30, 3
	tests := []struct {
		name           string
		minCompact     int
		wantOps        []string
		wantLive       int      // data files of the current snapshot after the first maintenance
		wantSnapshots  []string // retained snapshots after the first maintenance, newest first
		wantOnDisk     int      // parquet files after the first maintenance
		wantOnDiskLast int      // parquet files after three more commits and another maintenance
		props          iceberg.Properties
	}{
		{
			// Compaction merges the manifests too, so they need no rewrite. The two newest commits' snapshots
			// are retained with the compaction's, and hold on to the 30 small files until they expire.
			name: "compact", minCompact: 5,
			wantOps: []string{"compact", "expire_snapshots"}, wantLive: 1,
			wantSnapshots: []string{"compact", "seq 30", "seq 29"},
			wantOnDisk:    commits + 1, wantOnDiskLast: 1 + 3,
		},
		{
			// Too few files for compaction (MinCompactFiles 100): the 30 manifests are rewritten instead.
			name: "rewrite manifests", minCompact: 100,
			wantOps: []string{"rewrite_manifests", "expire_snapshots"}, wantLive: commits,
			wantSnapshots: []string{"replace", "seq 30", "seq 29"},
			wantOnDisk:    commits, wantOnDiskLast: commits + 3,
		},
		{
			// Files of one row group per row, larger than the read split size: scan planning splits each into
			// several tasks, and compaction still rewrites each file once.
			name: "compact split files", minCompact: 5,
			props: iceberg.Properties{
				table.ParquetRowGroupLimitKey: "1",
				table.ReadSplitTargetSizeKey:  "64",
			},
			wantOps: []string{"compact", "expire_snapshots"}, wantLive: 1,
			wantSnapshots: []string{"compact", "seq 30", "seq 29"},
			wantOnDisk:    commits + 1, wantOnDiskLast: 1 + 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t)
			ctx := testContext(t, 4*time.Minute)
			cfg := env.config()
			cfg.Maintenance = MaintenanceConfig{
				SnapshotRetention: time.Millisecond,
				SnapshotsToKeep:   3,
				MinCompactFiles:   tt.minCompact,
				MaxManifests:      4,
				TargetFileBytes:   8 << 20,
				MetadataVersions:  4,
			}
			if tt.props != nil {
				// Created and set up by another Sink, so that s loads the table with its properties.
				setup := newTestSink(t, cfg)
				_, err := setup.Prepare(ctx, ledger)
				require.NoError(t, err)
				tbl, err := setup.cat.LoadTable(ctx, setup.ident(ledgerName))
				require.NoError(t, err)
				txn := tbl.NewTransaction()
				require.NoError(t, txn.SetProperties(tt.props))
				_, err = txn.Commit(ctx)
				require.NoError(t, err)
			}
			s := newTestSink(t, cfg)

			for c := range int64(commits) {
				writeAndCommit(t, ctx, s, c+1, ledgerRows(c*perCommit+1, (c+1)*perCommit))
			}
			before, _ := ledgerContent(t, ctx, s)
			require.Len(t, before, commits*perCommit)
			fb, tbl := inspectTable(t, ctx, s, ledgerName)
			require.Len(t, tbl.Metadata().Snapshots(), commits)
			require.Equal(t, commits, fb.liveData)
			require.Len(t, fb.onDisk, commits)
			require.Equal(t, fb.onDisk, fb.referenced)
			require.Equal(t, commits, fb.dataManifests, "one manifest per fast append")
			if tt.props != nil {
				require.Greater(t, fb.scanTasks, fb.liveData, "files are split into several scan tasks")
			}
			require.Len(t, fb.listsDisk, commits)
			require.LessOrEqual(t, fb.metadataJSON, cfg.Maintenance.MetadataVersions+1, "old metadata files go as commits go")

			time.Sleep(5 * time.Millisecond) // every commit is now older than SnapshotRetention
			m, err := s.Maintain(ctx, ledgerName)
			require.NoError(t, err)
			fa, tbl := inspectTable(t, ctx, s, ledgerName)
			t.Logf("maintenance: %+v", m)
			t.Logf("before: %d live data files, %d data manifests, %d parquet files, %d manifests, %d lists, %d metadata.json",
				fb.liveData, fb.dataManifests, len(fb.onDisk), len(fb.manifestsDisk), len(fb.listsDisk), fb.metadataJSON)
			t.Logf("after:  %d live data files, %d data manifests, %d parquet files, %d manifests, %d lists, %d metadata.json",
				fa.liveData, fa.dataManifests, len(fa.onDisk), len(fa.manifestsDisk), len(fa.listsDisk), fa.metadataJSON)

			after, _ := ledgerContent(t, ctx, s)
			require.Equal(t, before, after, "maintenance changes nothing a reader sees")
			require.Equal(t, tt.wantOps, m.Operations)
			require.Equal(t, tt.wantLive, fa.liveData)
			require.Equal(t, fa.liveData, m.DataFiles)
			require.LessOrEqual(t, fa.dataManifests, cfg.Maintenance.MaxManifests)
			// Expiry keeps the SnapshotsToKeep newest ancestors of the current snapshot, maintenance snapshots
			// among them.
			require.Equal(t, tt.wantSnapshots, snapshotLabels(tbl))
			require.Len(t, tbl.Metadata().Snapshots(), cfg.Maintenance.SnapshotsToKeep)
			require.Equal(t, cfg.Maintenance.SnapshotsToKeep, m.Snapshots)
			require.Equal(t, fa.referenced, fa.onDisk, "on disk: exactly the data files retained snapshots reference")
			require.Len(t, fa.onDisk, tt.wantOnDisk)
			require.Len(t, fa.listsDisk, cfg.Maintenance.SnapshotsToKeep, "the expired snapshots' manifest lists are deleted")
			require.Equal(t, fa.manifests, fa.manifestsDisk, "on disk: exactly the manifests retained snapshots list")
			require.LessOrEqual(t, fa.metadataJSON, cfg.Maintenance.MetadataVersions+1)
			committed, err := s.Committed(ctx, ledgerName)
			require.NoError(t, err)
			require.Equal(t, int64(commits), committed, "the committed sequence number survives maintenance")

			// Right after, there is nothing to do.
			m, err = s.Maintain(ctx, ledgerName)
			require.NoError(t, err)
			require.Empty(t, m.Operations)
			require.Equal(t, cfg.Maintenance.SnapshotsToKeep, m.Snapshots)
			again, _ := inspectTable(t, ctx, s, ledgerName)
			require.Equal(t, fa, again)

			// Commits go on; once the pre-maintenance snapshots expire, the files only they held go too.
			for c := int64(commits); c < commits+3; c++ {
				writeAndCommit(t, ctx, s, c+1, ledgerRows(c*perCommit+1, (c+1)*perCommit))
			}
			committed, err = s.Committed(ctx, ledgerName)
			require.NoError(t, err)
			require.Equal(t, int64(commits+3), committed)
			want, _ := ledgerContent(t, ctx, s)
			require.Len(t, want, (commits+3)*perCommit)
			time.Sleep(5 * time.Millisecond)
			m, err = s.Maintain(ctx, ledgerName)
			require.NoError(t, err)
			t.Logf("maintenance after 3 more commits: %+v", m)
			require.Contains(t, m.Operations, "expire_snapshots")
			require.NotContains(t, m.Operations, "compact", "4 files are fewer than MinCompactFiles")
			got, tbl := ledgerContent(t, ctx, s)
			require.Equal(t, want, got)
			f, _ := inspectTable(t, ctx, s, ledgerName)
			require.Len(t, tbl.Metadata().Snapshots(), cfg.Maintenance.SnapshotsToKeep)
			require.Equal(t, f.referenced, f.onDisk)
			require.Len(t, f.onDisk, tt.wantOnDiskLast)
			require.Len(t, f.listsDisk, cfg.Maintenance.SnapshotsToKeep)
			require.Equal(t, f.manifests, f.manifestsDisk)
			require.LessOrEqual(t, f.metadataJSON, cfg.Maintenance.MetadataVersions+1)
			committed, err = s.Committed(ctx, ledgerName)
			require.NoError(t, err)
			require.Equal(t, int64(commits+3), committed)
		})
	}
}

// TestMaintainProperties proves that maintenance restores the table properties the package relies on, and
// that a table without snapshots is left alone.
func TestMaintainProperties(t *testing.T) {
	env := newTestEnv(t)
	ctx := testContext(t, time.Minute)
	s := newTestSink(t, env.config())

	_, err := s.Prepare(ctx, idTable)
	require.NoError(t, err)
	m, err := s.Maintain(ctx, idTableName)
	require.NoError(t, err)
	require.Empty(t, m.Operations, "a new table has its properties and nothing to compact or expire")
	require.Zero(t, m.Snapshots)

	// A table from before the properties were introduced (or edited by hand).
	tbl, err := s.cat.LoadTable(ctx, s.ident(idTableName))
	require.NoError(t, err)
	txn := tbl.NewTransaction()
	require.NoError(t, txn.SetProperties(iceberg.Properties{table.MetadataPreviousVersionsMaxKey: "100"}))
	require.NoError(t, txn.RemoveProperties([]string{table.MetadataDeleteAfterCommitEnabledKey}))
	_, err = txn.Commit(ctx)
	require.NoError(t, err)

	m, err = s.Maintain(ctx, idTableName)
	require.NoError(t, err)
	require.Equal(t, []string{"table_properties"}, m.Operations)
	tbl, err = s.cat.LoadTable(ctx, s.ident(idTableName))
	require.NoError(t, err)
	for k, v := range s.tableProperties() {
		require.Equal(t, v, tbl.Properties()[k], k)
	}
	m, err = s.Maintain(ctx, idTableName)
	require.NoError(t, err)
	require.Empty(t, m.Operations)

	// Commits still work on the maintained table.
	writeAndCommit(t, ctx, s, 1, idTC(1, 2))
	ids, _ := writtenIDs(t, ctx, s)
	require.Equal(t, []int64{1, 2}, ids)
}
