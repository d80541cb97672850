package iceberg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/iceberg-go"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
)

// The committer's marks on a table.
const (
	// PropCommittedSeq is the table property holding the last commit sequence number whose files the table
	// holds. It changes in the same metadata commit as the files it covers, so after a crash anywhere a
	// committer learns from the current table alone which recorded files are in it, without reading history;
	// snapshot expiry cannot take it away.
	PropCommittedSeq = "philotes.committed-seq"
	// PropCommitSeq is the commit sequence number in the summary of the snapshot that added the files.
	PropCommitSeq = "philotes.commit-seq"
	// PropMaxCommitLSN is the largest source commit LSN the snapshot's files hold, for monitoring.
	PropMaxCommitLSN = "philotes.max-commit-lsn"
)

// ErrConflict reports a commit that lost a race with another commit to the same table. The table is
// unchanged by it: read the committed sequence number again and retry what is still missing.
var ErrConflict = errors.New("iceberg commit conflict")

// Committed loads the current state of the table with the given name and returns its committed sequence
// number (0 for a table no committer has touched). The loaded state is what the next Commit to the table
// builds on; each Commit needs a Committed before it.
func (s *Sink) Committed(ctx context.Context, name string) (int64, error) {
	tbl, err := s.load(ctx, name)
	if err != nil {
		return 0, err
	}
	seq, err := committedSeq(tbl)
	if err != nil {
		return 0, fmt.Errorf("iceberg table %s: %w", name, err)
	}
	s.mu.Lock()
	s.committing[name] = tbl
	s.mu.Unlock()
	return seq, nil
}

// load loads the table with the given name afresh from the catalog.
func (s *Sink) load(ctx context.Context, name string) (*table.Table, error) {
	tbl, err := s.cat.LoadTable(ctx, s.ident(name))
	if err != nil {
		return nil, fmt.Errorf("iceberg table %s: load: %w", name, err)
	}
	return tbl, nil
}

func committedSeq(tbl *table.Table) (int64, error) {
	v, ok := tbl.Properties()[PropCommittedSeq]
	if !ok {
		return 0, nil
	}
	seq, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("table property %s=%q: %w", PropCommittedSeq, v, err)
	}
	return seq, nil
}

// Commit adds the encoded data files to the table in one snapshot and sets its committed sequence number to
// seq, both in one metadata commit, on top of the state the last Committed call loaded. It returns an error
// wrapping ErrConflict when the table had moved on since (the SQL catalog reports that either as
// table.ErrCommitFailed or as a failed requirement, depending on when it notices); any other error leaves
// the outcome unknown until the next Committed. Either way the caller retries from a new Committed.
func (s *Sink) Commit(ctx context.Context, name string, seq int64, files [][]byte, maxCommitLSN uint64) error {
	s.mu.Lock()
	tbl := s.committing[name]
	s.mu.Unlock()
	if tbl == nil {
		return fmt.Errorf("iceberg table %s: commit before Committed", name)
	}
	dfs := make([]iceberg.DataFile, len(files))
	for i, b := range files {
		df, err := decodeDataFile(b, tbl.Spec())
		if err != nil {
			return fmt.Errorf("iceberg table %s: %w", name, err)
		}
		dfs[i] = df
	}
	txn := tbl.NewTransaction()
	if err := txn.SetProperties(iceberg.Properties{PropCommittedSeq: strconv.FormatInt(seq, 10)}); err != nil {
		return fmt.Errorf("iceberg table %s: set %s: %w", name, PropCommittedSeq, err)
	}
	props := iceberg.Properties{
		PropCommitSeq:    strconv.FormatInt(seq, 10),
		PropMaxCommitLSN: strconv.FormatUint(maxCommitLSN, 10),
	}
	// The files are new, so the duplicate path check (a scan of every manifest) is pointless.
	if err := txn.AddDataFiles(ctx, dfs, props, table.WithoutDuplicateCheck(), table.WithoutAutoNameMapping()); err != nil {
		return fmt.Errorf("iceberg table %s: add %d data files: %w", name, len(dfs), err)
	}
	staged, stageErr := txn.StagedTable()
	if _, err := txn.Commit(ctx); err != nil {
		cur, lerr := s.cat.LoadTable(ctx, tbl.Identifier())
		if lerr == nil {
			if got, _ := committedSeq(cur); got == seq {
				return nil // it landed; only the answer was lost (sequence numbers are never reused)
			}
			if errors.Is(err, table.ErrCommitFailed) || cur.MetadataLocation() != tbl.MetadataLocation() {
				if stageErr == nil {
					s.removeStaged(ctx, name, staged, cur)
				}
				return fmt.Errorf("iceberg table %s: %w: %w", name, ErrConflict, err)
			}
		}
		return fmt.Errorf("iceberg table %s: commit %d data files: %w", name, len(dfs), err)
	}
	// Keep nothing of the commit: a table returned by Transaction.Commit holds on to the transaction that made
	// it, and so to the table it started from, and so on back through every earlier commit (iceberg-go
	// v0.7.0 points the new snapshot's parent and schema IDs into the transaction). Keeping it made memory
	// grow with the square of the commits; the next Committed loads the table afresh anyway.
	s.mu.Lock()
	delete(s.committing, name)
	s.mu.Unlock()
	return nil
}

// removeStaged deletes the manifest list and the new manifests that a refused commit wrote for its snapshot:
// no table state references them (cur, the table after the refusal, does not hold that snapshot). The data
// files stay: they are still pending and go into the next commit.
func (s *Sink) removeStaged(ctx context.Context, name string, staged *table.StagedTable, cur *table.Table) {
	snap := staged.CurrentSnapshot()
	if snap == nil || cur.Metadata().SnapshotByID(snap.SnapshotID) != nil {
		return
	}
	fsys, err := staged.FS(ctx)
	if err != nil {
		return
	}
	var paths []string
	if manifests, err := snap.Manifests(fsys); err == nil {
		for _, mf := range manifests {
			if mf.SnapshotID() == snap.SnapshotID {
				paths = append(paths, mf.FilePath())
			}
		}
	}
	paths = append(paths, snap.ManifestList)
	for _, p := range paths {
		if err := fsys.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.LogAttrs(ctx, slog.LevelWarn, "could not remove the metadata of a refused commit",
				slog.String("table", name), slog.String("file", p), slog.Any("err", err))
		}
	}
}

// RemoveWrite deletes the data files that the write writeUUID left under location. Call it only for a write
// that can never be recorded (see buffer.CommitterLock.CleanDeadWrites): its files are in no table.
func (s *Sink) RemoveWrite(ctx context.Context, location, writeUUID string) (int, error) {
	if location == "" || len(writeUUID) < 32 {
		return 0, fmt.Errorf("remove write %q under %q: refusing an empty location or write ID", writeUUID, location)
	}
	fsys, err := iceio.LoadFS(ctx, s.props, location)
	if err != nil {
		return 0, fmt.Errorf("remove write %s: %w", writeUUID, err)
	}
	lister, ok := fsys.(iceio.ListableIO)
	if !ok {
		return 0, fmt.Errorf("remove write %s: the file IO for %s cannot list files", writeUUID, location)
	}
	var victims []string
	err = lister.WalkDir(location, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(path.Base(p), writeUUID) {
			victims = append(victims, p)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("remove write %s: list %s: %w", writeUUID, location, err)
	}
	for i, p := range victims {
		if err := fsys.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return i, fmt.Errorf("remove write %s: %w", writeUUID, err)
		}
	}
	return len(victims), nil
}

// Protected lists what a sweep must keep although no snapshot references it yet: the encoded data files waiting
// for a commit, and the write UUIDs of writes in flight or not yet cleaned up.
type Protected func(ctx context.Context) (pending [][]byte, writeUUIDs []string, err error)

// SweepOrphans deletes the files under the table's location that no retained snapshot, no metadata file, no
// pending data file and no write in flight accounts for, and that are older than olderThan: what a commit
// refused or interrupted at an unknown point, or an interrupted compaction, left behind. The references come
// from iceberg-go's orphan clean-up; protect is asked only after the folder was listed, so a file recorded or
// started meanwhile is kept. Call it from the committer, between commits; olderThan (hours, not seconds) also
// keeps files of a writer's schema change that is committing right now. It returns how many files it deleted.
func (s *Sink) SweepOrphans(ctx context.Context, name string, olderThan time.Duration, protect Protected) (int, error) {
	tbl, err := s.load(ctx, name)
	if err != nil {
		return 0, err
	}
	fsys, err := tbl.FS(ctx)
	if err != nil {
		return 0, fmt.Errorf("iceberg table %s: file IO: %w", name, err)
	}
	var (
		once    sync.Once
		keep    map[string]bool // base names of pending files
		writes  []string
		loadErr error
		deleted int
	)
	del := func(p string) error {
		once.Do(func() {
			var pending [][]byte
			pending, writes, loadErr = protect(ctx)
			keep = make(map[string]bool, len(pending))
			for _, b := range pending {
				if fp, err := dataFilePath(b); err == nil {
					keep[path.Base(fp)] = true
				} else if loadErr == nil {
					loadErr = err
				}
			}
		})
		if loadErr != nil {
			return loadErr
		}
		base := path.Base(p)
		if keep[base] {
			return nil
		}
		for _, w := range writes {
			if strings.Contains(base, w) {
				return nil
			}
		}
		if err := fsys.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		deleted++
		return nil
	}
	_, err = tbl.DeleteOrphanFiles(ctx, table.WithFilesOlderThan(olderThan), table.WithDeleteFunc(del),
		table.WithCleanupMaxConcurrency(1))
	if err != nil {
		return deleted, fmt.Errorf("iceberg table %s: sweep orphan files: %w", name, err)
	}
	return deleted, nil
}
