// Package buffer is the durable, shared queue between the single slot reader and the processors of every
// replica: a PostgreSQL table that the reader appends to with COPY and processors claim from with
// FOR UPDATE SKIP LOCKED.
package buffer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/philotes/philotes-worker/internal/change"
)

// Buffer is one source's view of the buffer database.
type Buffer struct {
	pool   *pgxpool.Pool
	source string
	id     string

	mu        sync.RWMutex
	relations map[int64]change.Table
}

// Position orders changes: commit LSN of the transaction, then the change's ordinal within it.
type Position struct {
	CommitLSN uint64
	Seq       int32
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	return p.CommitLSN < q.CommitLSN || (p.CommitLSN == q.CommitLSN && p.Seq < q.Seq)
}

// Open connects to the buffer database and migrates its schema. maxConns bounds the pool (processors + reader +
// stats need one each).
func Open(ctx context.Context, url, source string, maxConns int) (*Buffer, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("buffer: PHILOTES_BUFFER_URL: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "philotes-worker"
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("buffer: connect: %w", err)
	}
	b := &Buffer{pool: pool, source: source, relations: map[int64]change.Table{}}
	if err := b.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := pool.QueryRow(ctx, `SELECT buffer_id::text FROM philotes.meta`).Scan(&b.id); err != nil {
		pool.Close()
		return nil, fmt.Errorf("buffer: read buffer id: %w", err)
	}
	return b, nil
}

// Close releases the connections.
func (b *Buffer) Close() { b.pool.Close() }

// ID identifies this buffer database instance (survives restarts, changes if the buffer is recreated).
func (b *Buffer) ID() string { return b.id }

// EventScope names the space in which this source's event IDs are unique: the buffer instance and the source.
// The sink records it with the IDs it has written.
func (b *Buffer) EventScope() string { return b.id + "/" + b.source }

// Source is the source name this buffer view serves.
func (b *Buffer) Source() string { return b.source }

// Ping checks the connection.
func (b *Buffer) Ping(ctx context.Context) error { return b.pool.Ping(ctx) }

func (b *Buffer) migrate(ctx context.Context) error {
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("buffer: connect: %w", err)
	}
	defer conn.Release()
	// Serialise migrations across replicas with a transaction-level advisory lock.
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("buffer: migrate: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after commit this is a no-op
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('philotes.migrate'))`); err != nil {
		return fmt.Errorf("buffer: migrate lock: %w", err)
	}
	// schema_version has no key; with a replica identity its UPDATE works even where a FOR ALL TABLES publication
	// publishes it (a buffer in the source database).
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS philotes;
CREATE TABLE IF NOT EXISTS philotes.schema_version (version integer NOT NULL);
DO $$ BEGIN
  IF (SELECT relreplident FROM pg_class WHERE oid = 'philotes.schema_version'::regclass) <> 'f' THEN
    ALTER TABLE philotes.schema_version REPLICA IDENTITY FULL;
  END IF;
END $$`); err != nil {
		return fmt.Errorf("buffer: migrate: %w", err)
	}
	var version int
	err = tx.QueryRow(ctx, `SELECT version FROM philotes.schema_version`).Scan(&version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO philotes.schema_version VALUES (0)`); err != nil {
			return fmt.Errorf("buffer: migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("buffer: read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("buffer: schema version %d is newer than this worker knows (%d): upgrade the worker", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.Exec(ctx, migrations[i]); err != nil {
			return fmt.Errorf("buffer: migration %d: %w", i+1, err)
		}
	}
	if version != len(migrations) {
		if _, err := tx.Exec(ctx, `UPDATE philotes.schema_version SET version = $1`, len(migrations)); err != nil {
			return fmt.Errorf("buffer: migrate: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("buffer: migrate: %w", err)
	}
	return nil
}

// Progress is how far a source's reader has got.
type Progress struct {
	// Last is the position of the last change appended (zero when none).
	Last Position
	// NextID is the event ID the next appended change gets.
	NextID int64
}

// Progress returns this source's progress.
func (b *Buffer) Progress(ctx context.Context) (Progress, error) {
	var commitLSN, next int64
	var seq int32
	err := b.pool.QueryRow(ctx, `SELECT commit_lsn, seq, next_id FROM philotes.sources WHERE source = $1`, b.source).Scan(&commitLSN, &seq, &next)
	if errors.Is(err, pgx.ErrNoRows) {
		return Progress{NextID: 1}, nil
	}
	if err != nil {
		return Progress{}, fmt.Errorf("buffer: read progress: %w", err)
	}
	return Progress{Last: Position{CommitLSN: uint64(commitLSN), Seq: seq}, NextID: next}, nil
}

// SaveRelation records a table schema and returns its key; the same schema always gets the same key.
func (b *Buffer) SaveRelation(ctx context.Context, relationID uint32, t change.Table) (int64, error) {
	cols, err := json.Marshal(t.Columns)
	if err != nil {
		return 0, fmt.Errorf("buffer: encode relation %s.%s: %w", t.Schema, t.Name, err)
	}
	var key int64
	err = b.pool.QueryRow(ctx, `
WITH ins AS (
	INSERT INTO philotes.relations (source, relation_id, schema_name, table_name, columns)
	VALUES ($1, $2, $3, $4, $5)
	ON CONFLICT (source, relation_id, schema_name, table_name, columns) DO NOTHING
	RETURNING id)
SELECT id FROM ins
UNION ALL
SELECT id FROM philotes.relations
WHERE source = $1 AND relation_id = $2 AND schema_name = $3 AND table_name = $4 AND columns = $5::jsonb
LIMIT 1`, b.source, relationID, t.Schema, t.Name, cols).Scan(&key)
	if err != nil {
		return 0, fmt.Errorf("buffer: save relation %s.%s: %w", t.Schema, t.Name, err)
	}
	b.mu.Lock()
	b.relations[key] = t
	b.mu.Unlock()
	return key, nil
}

// Relation returns the table schema stored under key.
func (b *Buffer) Relation(ctx context.Context, key int64) (change.Table, error) {
	b.mu.RLock()
	t, ok := b.relations[key]
	b.mu.RUnlock()
	if ok {
		return t, nil
	}
	var cols []byte
	err := b.pool.QueryRow(ctx, `SELECT schema_name, table_name, columns FROM philotes.relations WHERE id = $1`, key).
		Scan(&t.Schema, &t.Name, &cols)
	if err != nil {
		return change.Table{}, fmt.Errorf("buffer: read relation %d: %w", key, err)
	}
	if err := json.Unmarshal(cols, &t.Columns); err != nil {
		return change.Table{}, fmt.Errorf("buffer: decode relation %d: %w", key, err)
	}
	b.mu.Lock()
	b.relations[key] = t
	b.mu.Unlock()
	return t, nil
}

// Stats are the buffer figures the metrics report.
type Stats struct {
	// Depth is the number of events not yet written to data files: the processors' work queue.
	Depth int64
	// PendingFiles and PendingBytes are the data files written but not yet committed to their tables: the
	// committer's queue.
	PendingFiles, PendingBytes int64
	// BackfillRemaining estimates the rows that backfills still have to read (from the tables' sizes).
	BackfillRemaining int64
	// Oldest is the commit time of the oldest change not yet visible in Iceberg, whether it waits as an event
	// or in a pending file (zero when there is none). Parked tables' events count in neither Depth nor Oldest:
	// no processor can write them until their cause is fixed, so they are no work to scale for.
	Oldest time.Time
	// Parked maps each parked table ("schema.name") to the events waiting for it.
	Parked map[string]int64
}

// Stats reads depth, pending files and the oldest commit time for this source.
func (b *Buffer) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	var oldestEvent, oldestFile *time.Time
	err := b.pool.QueryRow(ctx, `
SELECT (`+DepthSQL+`),
       (SELECT oldest_commit_time FROM philotes.event_chunks WHERE source = $1 ORDER BY id LIMIT 1),
       f.n, f.bytes, f.oldest, `+backfillRemaining+`
FROM (SELECT count(*) AS n, COALESCE(sum(bytes), 0) AS bytes, min(oldest_commit_time) AS oldest
      FROM philotes.pending_files WHERE source = $1) f`, b.source).Scan(&s.Depth, &oldestEvent, &s.PendingFiles, &s.PendingBytes, &oldestFile, &s.BackfillRemaining)
	if err != nil {
		return Stats{}, fmt.Errorf("buffer: stats: %w", err)
	}
	if oldestEvent != nil && s.Depth > 0 {
		s.Oldest = *oldestEvent
	}
	if oldestFile != nil && (s.Oldest.IsZero() || oldestFile.Before(s.Oldest)) {
		s.Oldest = *oldestFile
	}
	parked, err := b.ParkedTables(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("buffer: stats: %w", err)
	}
	s.Parked = make(map[string]int64, len(parked))
	for _, p := range parked {
		s.Parked[p.String()] = p.Events
	}
	return s, nil
}
