package iceberg

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/apache/iceberg-go/table/compaction"
)

// MaintenanceConfig bounds what a table keeps over months of commits.
type MaintenanceConfig struct {
	// SnapshotRetention is the age past which snapshots expire. Default 1h.
	SnapshotRetention time.Duration
	// SnapshotsToKeep are kept whatever their age. Default 5.
	SnapshotsToKeep int
	// TargetFileBytes is the size compaction merges small data files toward. Default 128 MiB.
	TargetFileBytes int64
	// MinCompactFiles is the fewest small files worth a compaction. Default 5.
	MinCompactFiles int
	// MaxManifests is the most data manifests the current snapshot may have before they are rewritten.
	// Default 8.
	MaxManifests int
	// MetadataVersions is how many previous metadata.json files a table keeps. Default 10.
	MetadataVersions int
}

func (c *MaintenanceConfig) setDefaults() {
	if c.SnapshotRetention == 0 {
		c.SnapshotRetention = time.Hour
	}
	if c.SnapshotsToKeep == 0 {
		c.SnapshotsToKeep = 5
	}
	if c.TargetFileBytes == 0 {
		c.TargetFileBytes = 128 << 20
	}
	if c.MinCompactFiles == 0 {
		c.MinCompactFiles = 5
	}
	if c.MaxManifests == 0 {
		c.MaxManifests = 8
	}
	if c.MetadataVersions == 0 {
		c.MetadataVersions = 10
	}
}

// Maintenance reports one table's maintenance.
type Maintenance struct {
	// Operations are the operations that changed the table: compact, rewrite_manifests, expire_snapshots,
	// table_properties.
	Operations []string
	// Snapshots and DataFiles are what the table retains afterwards.
	Snapshots, DataFiles int
	// Took is the time it took.
	Took time.Duration
}

// PropMaintenance names, in a snapshot summary, the maintenance operation that made the snapshot.
const PropMaintenance = "philotes.maintenance"

// tableProperties are the properties every table this package writes must have; maintenance sets them on
// tables created before they were introduced.
func (s *Sink) tableProperties() iceberg.Properties {
	return iceberg.Properties{
		// No refresh-and-replay inside the library: the committer decides what to retry.
		table.CommitNumRetriesKey: "0",
		// One metadata file per commit adds up; keep the last few.
		table.MetadataDeleteAfterCommitEnabledKey: "true",
		table.MetadataPreviousVersionsMaxKey:      strconv.Itoa(s.cfg.Maintenance.MetadataVersions),
		table.WriteTargetFileSizeBytesKey:         strconv.FormatInt(s.cfg.Maintenance.TargetFileBytes, 10),
	}
}

// Maintain keeps the table small over months of commits: it compacts small data files toward the target size,
// rewrites the current snapshot's manifests when there are many, and expires old snapshots, deleting the files
// only they referenced. None of it changes what a reader of the current snapshot sees. Call it from the
// committer, between commits: its commits would otherwise conflict with the committer's.
func (s *Sink) Maintain(ctx context.Context, name string) (Maintenance, error) {
	start := time.Now()
	var m Maintenance
	tbl, err := s.load(ctx, name)
	if err != nil {
		return m, err
	}
	commit := func(op string, txn *table.Transaction) error {
		next, err := txn.Commit(ctx)
		if err != nil && next == nil {
			return fmt.Errorf("iceberg table %s: commit %s: %w", name, op, err)
		}
		if err != nil {
			// Committed, but deleting the files it made unreachable failed: they stay behind, harmlessly.
			s.log.LogAttrs(ctx, slog.LevelWarn, "table maintenance: could not delete unreachable files",
				slog.String("table", name), slog.String("operation", op), slog.Any("err", err))
		}
		tbl = next
		m.Operations = append(m.Operations, op)
		return nil
	}

	if want := s.missingProperties(tbl); len(want) > 0 {
		txn := tbl.NewTransaction()
		if err := txn.SetProperties(want); err != nil {
			return m, fmt.Errorf("iceberg table %s: set properties: %w", name, err)
		}
		if err := commit("table_properties", txn); err != nil {
			return m, err
		}
	}

	cfg := s.cfg.Maintenance
	ccfg := compaction.DefaultConfig()
	ccfg.TargetFileSizeBytes = cfg.TargetFileBytes
	ccfg.MinFileSizeBytes = cfg.TargetFileBytes * 3 / 4
	ccfg.MaxFileSizeBytes = cfg.TargetFileBytes * 9 / 5
	ccfg.MinInputFiles = uint(cfg.MinCompactFiles)
	plan, err := planCompaction(ctx, tbl, ccfg)
	if err != nil {
		return m, fmt.Errorf("iceberg table %s: plan compaction: %w", name, err)
	}
	m.DataFiles = plan.TotalInputFiles
	if len(plan.Groups) > 0 {
		groups := make([]table.CompactionTaskGroup, len(plan.Groups))
		for i, g := range plan.Groups {
			groups[i] = table.CompactionTaskGroup{PartitionKey: g.PartitionKey, Tasks: g.Tasks, TotalSizeBytes: g.TotalSizeBytes}
		}
		txn := tbl.NewTransaction()
		res, err := txn.RewriteDataFiles(ctx, groups, table.RewriteDataFilesOptions{
			SnapshotProps: iceberg.Properties{PropMaintenance: "compact"},
			GroupOptions:  []table.CompactionGroupOption{table.WithCompactionTargetFileSize(cfg.TargetFileBytes)},
		})
		if err != nil {
			return m, fmt.Errorf("iceberg table %s: compact %d groups: %w", name, len(groups), err)
		}
		if err := commit("compact", txn); err != nil {
			return m, err
		}
		m.DataFiles += res.AddedDataFiles - res.RemovedDataFiles
	}

	if n, err := dataManifests(ctx, tbl); err != nil {
		return m, fmt.Errorf("iceberg table %s: %w", name, err)
	} else if n > cfg.MaxManifests {
		txn := tbl.NewTransaction()
		res, err := txn.RewriteManifests(ctx)
		if err != nil {
			return m, fmt.Errorf("iceberg table %s: rewrite %d manifests: %w", name, n, err)
		}
		if !res.IsNoOp() {
			if err := commit("rewrite_manifests", txn); err != nil {
				return m, err
			}
		}
	}

	before := len(tbl.Metadata().Snapshots())
	txn := tbl.NewTransaction()
	err = txn.ExpireSnapshots(table.WithOlderThan(cfg.SnapshotRetention), table.WithRetainLast(cfg.SnapshotsToKeep),
		table.WithPostCommit(true))
	if err != nil {
		return m, fmt.Errorf("iceberg table %s: expire snapshots: %w", name, err)
	}
	staged, err := txn.StagedTable()
	if err != nil {
		return m, fmt.Errorf("iceberg table %s: expire snapshots: %w", name, err)
	}
	if len(staged.Metadata().Snapshots()) < before {
		if err := commit("expire_snapshots", txn); err != nil {
			return m, err
		}
	}
	m.Snapshots = len(tbl.Metadata().Snapshots())
	m.Took = time.Since(start)
	return m, nil
}

// planCompaction is compaction.Analyze with one task per data file. Scan planning splits a file larger than
// read.split.target-size into byte ranges, and the rewrite refuses a file that appears in several tasks;
// whole files are what compaction replaces anyway.
func planCompaction(ctx context.Context, tbl *table.Table, cfg compaction.Config) (compaction.Plan, error) {
	tasks, err := tbl.Scan().PlanFiles(ctx)
	if err != nil {
		return compaction.Plan{}, err
	}
	seen := make(map[string]int, len(tasks))
	whole := tasks[:0]
	for _, t := range tasks {
		path := t.File.FilePath()
		if i, ok := seen[path]; ok {
			whole[i].Start, whole[i].Length = 0, t.File.FileSizeBytes()
			continue
		}
		seen[path] = len(whole)
		whole = append(whole, t)
	}
	return cfg.PlanCompaction(whole)
}

// missingProperties returns the table properties the table lacks or has otherwise.
func (s *Sink) missingProperties(tbl *table.Table) iceberg.Properties {
	want := iceberg.Properties{}
	have := tbl.Properties()
	for k, v := range s.tableProperties() {
		if have[k] != v {
			want[k] = v
		}
	}
	return want
}

// dataManifests counts the data manifests of the table's current snapshot.
func dataManifests(ctx context.Context, tbl *table.Table) (int, error) {
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return 0, nil
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return 0, fmt.Errorf("file IO: %w", err)
	}
	manifests, err := snap.Manifests(fs)
	if err != nil {
		return 0, fmt.Errorf("read manifest list: %w", err)
	}
	n := 0
	for _, mf := range manifests {
		if mf.ManifestContent() == iceberg.ManifestContentData {
			n++
		}
	}
	return n, nil
}
