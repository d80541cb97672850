package iceberg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"

	"github.com/philotes/philotes-worker/internal/change"
)

// File is a data file written by a processor and not yet committed to its table.
type File struct {
	// Table is the table's name inside the namespace (TableName).
	Table string
	// Encoded is the data file's description, for Commit in any process.
	Encoded []byte
	// Bytes and Records are the file's size and row count.
	Bytes, Records int64
	// OldestCommitTime is the source commit time of the oldest change in the file.
	OldestCommitTime time.Time
	// MaxCommitLSN is the largest source commit LSN in the file.
	MaxCommitLSN uint64
}

// TableName is the name, inside the namespace, of the Iceberg table that holds source table t.
func TableName(t change.Table) string { return t.Schema + "_" + t.Name }

// sourceTable identifies a source table. Two source tables may map to the same Iceberg table name; each gets
// its own tableState, and the second one's load fails the source check.
type sourceTable struct{ schema, name string }

func (s *Sink) state(t change.Table) *tableState {
	key := sourceTable{t.Schema, t.Name}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts, ok := s.tables[key]
	if !ok {
		ident := s.ident(TableName(t))
		ts = &tableState{ident: ident, name: strings.Join(ident, ".")}
		s.tables[key] = ts
	}
	return ts
}

// ident is the identifier of the table with the given name in the namespace.
func (s *Sink) ident(name string) table.Identifier {
	return append(append(table.Identifier{}, s.namespace...), name)
}

// Prepare makes the table for t ready to take its changes: loaded, created on first sight, with the source's
// new columns added. It returns the folder where WriteFiles will put the table's data files.
func (s *Sink) Prepare(ctx context.Context, t change.Table) (string, error) {
	ts := s.state(t)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if err := s.prepareLocked(ctx, ts, t); err != nil {
		return "", fmt.Errorf("iceberg table %s (source %s.%s): %w", ts.name, t.Schema, t.Name, err)
	}
	return dataLocation(ts.tbl), nil
}

// dataLocation is where iceberg-go's default location provider puts an unpartitioned table's data files.
func dataLocation(tbl *table.Table) string {
	return strings.TrimSuffix(tbl.Location(), "/") + "/data"
}

func (s *Sink) prepareLocked(ctx context.Context, ts *tableState, t change.Table) error {
	// Checked before anything else: a table that exists already has the change columns, so a source column
	// of the same name added later would otherwise be silently dropped.
	if err := checkColumns(t); err != nil {
		return err
	}
	if ts.tbl == nil {
		tbl, err := s.loadOrCreate(ctx, ts, t)
		if err != nil {
			return err
		}
		ts.tbl = tbl
	}
	for attempt := 1; ; attempt++ {
		add, promote := schemaChanges(ts.tbl.Schema(), t)
		if len(add)+len(promote) == 0 {
			return nil
		}
		err := s.evolveSchema(ctx, ts, add, promote)
		if err == nil {
			continue // look again: the schema now has what t needs
		}
		var ce *commitError
		if ctx.Err() != nil || !errors.As(err, &ce) {
			return err
		}
		// A concurrent commit (another writer's schema change, the committer's append) moved the table:
		// reload and look again.
		fresh, lerr := s.cat.LoadTable(ctx, ts.ident)
		if lerr != nil {
			return errors.Join(err, fmt.Errorf("reload after failed commit: %w", lerr))
		}
		ts.tbl = fresh
		if attempt >= s.cfg.MaxCommitAttempts {
			return fmt.Errorf("gave up after %d commit attempts: %w", attempt, err)
		}
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
	}
}

// WriteFiles writes tc's changes to Parquet data files of the table's current schema, named with writeUUID,
// under the folder Prepare returned. Prepare must have been called for tc.Table. Nothing is committed: the
// files join the table when a committer commits them.
func (s *Sink) WriteFiles(ctx context.Context, tc *change.TableChanges, writeUUID uuid.UUID) ([]File, error) {
	ts := s.state(tc.Table)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	files, err := s.writeFilesLocked(ctx, ts, tc, writeUUID)
	if err != nil {
		return nil, fmt.Errorf("iceberg table %s (source %s.%s): %w", ts.name, tc.Table.Schema, tc.Table.Name, err)
	}
	return files, nil
}

func (s *Sink) writeFilesLocked(ctx context.Context, ts *tableState, tc *change.TableChanges, writeUUID uuid.UUID) ([]File, error) {
	if ts.tbl == nil {
		return nil, errors.New("write before Prepare")
	}
	if len(tc.Changes) == 0 {
		return nil, nil
	}
	sc := ts.tbl.Schema()
	if ts.writer == nil || ts.writer.schemaID != sc.ID {
		if ts.writer != nil {
			ts.writer.release()
			ts.writer = nil
		}
		w, err := newRecordWriter(s.mem, sc)
		if err != nil {
			return nil, change.Unwritable(err)
		}
		ts.writer = w
	}
	rec, err := ts.writer.build(tc.Table, tc.Changes)
	if err != nil {
		return nil, change.Unwritable(err) // a value the column cannot hold: retrying cannot help
	}
	defer rec.Release()
	records := func(yield func(arrow.RecordBatch, error) bool) {
		rec.Retain() // WriteRecords releases what it consumes
		yield(rec, nil)
	}
	oldest, maxLSN := tc.Changes[0].CommitTime, uint64(0)
	for i := range tc.Changes {
		c := &tc.Changes[i]
		if c.CommitTime.Before(oldest) {
			oldest = c.CommitTime
		}
		maxLSN = max(maxLSN, c.CommitLSN)
	}
	name := ts.ident[len(ts.ident)-1]
	var files []File
	for df, err := range table.WriteRecords(ctx, ts.tbl, ts.writer.schema, records, table.WithWriteUUID(writeUUID)) {
		if err != nil {
			return nil, fmt.Errorf("write data files: %w", err)
		}
		enc, err := encodeDataFile(df)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Table: name, Encoded: enc, Bytes: df.FileSizeBytes(), Records: df.Count(),
			OldestCommitTime: oldest, MaxCommitLSN: maxLSN})
	}
	s.log.LogAttrs(ctx, slog.LevelDebug, "wrote data files", slog.String("table", ts.name),
		slog.Int("files", len(files)), slog.Int("changes", len(tc.Changes)))
	return files, nil
}

// commitError marks a failed catalog commit, the failure that a retry on the reloaded table may overcome.
type commitError struct{ err error }

func (e *commitError) Error() string { return e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }
