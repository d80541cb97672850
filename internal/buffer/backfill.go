package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/philotes/philotes-worker/internal/change"
)

// A backfill reads a table's existing rows in primary-key chunks while the stream keeps flowing (the DBLog
// algorithm), and places each chunk's rows in the changelog at the chunk's high watermark:
//
//   - The backfill starts with a start mark written through the slot; the reader records it (tracking_from)
//     and from then on records every key the stream changes in the table, with the changing transaction's ID
//     (backfill_keys). xid_floor is a transaction ID taken just after the mark: a chunk snapshot whose xmin is
//     above it sees every transaction that committed before the mark.
//   - A chunk is read in one short REPEATABLE READ transaction on the source, together with its snapshot. Then
//     its high watermark is written through the slot; the reader records where it passed it (backfill_marks),
//     after appending every transaction that committed before it.
//   - Every transaction visible to the snapshot committed before the high watermark. The ones that committed
//     before it but are not visible are exactly the recorded keys whose xid the snapshot does not see: the
//     chunk drops those keys (the stream carries their newer state) and appends the rest as snapshot events
//     at the high watermark's position, in the transaction that marks the chunk done.
//
// So replaying a table's changes in (commit LSN, seq) order gives the source's rows, no transaction on the
// source lasts longer than one chunk read, and chunks run on any replica and are redone whole after a crash.

// BackfillTable is a table whose backfill was requested.
type BackfillTable struct {
	RelationID uint32
	Schema     string
	Name       string
	Run        int64
	// KeyColumns are the columns chunks are ordered by (empty until planning starts).
	KeyColumns []string
	// XidFloor is set once the start mark is written (0 before).
	XidFloor uint64
	// PlannedTo is the upper key of the last planned chunk (nil: none yet).
	PlannedTo []string
}

// RequestBackfill starts (or restarts) the backfill of the given tables; a table whose backfill is running keeps
// it (a request joins it, so a retried request resumes instead of starting over). With onlyNew, tables that
// already had one are left alone: that is the automatic backfill of a table seen for the first time.
func (b *Buffer) RequestBackfill(ctx context.Context, tables []change.TableRef, onlyNew bool) (int, error) {
	n := 0
	for _, t := range tables {
		conflict := `DO UPDATE SET schema_name = excluded.schema_name, table_name = excluded.table_name,
	run = philotes.backfill_tables.run + 1, key_columns = excluded.key_columns, xid_floor = NULL, tracking_from = NULL,
	planned_to = NULL, planned = false, rows_estimate = 0, rows_done = 0, error = NULL, requested_at = now(), done_at = NULL
WHERE philotes.backfill_tables.done_at IS NOT NULL OR philotes.backfill_tables.error IS NOT NULL`
		if onlyNew {
			conflict = `DO NOTHING`
		}
		// A new run starts from a clean record of changed keys: the old run's would drop rows it must copy.
		var added int
		err := b.pool.QueryRow(ctx, `WITH t AS (
	INSERT INTO philotes.backfill_tables (source, relation_id, schema_name, table_name, key_columns)
	VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, relation_id) `+conflict+`
	RETURNING relation_id, run),
k AS (DELETE FROM philotes.backfill_keys k USING t WHERE k.source = $1 AND k.relation_id = t.relation_id),
c AS (DELETE FROM philotes.backfill_chunks c USING t WHERE c.source = $1 AND c.relation_id = t.relation_id AND c.run <> t.run)
SELECT count(*) FROM t`, b.source, t.RelationID, t.Schema, t.Name, t.Key).Scan(&added)
		if err != nil {
			return n, fmt.Errorf("buffer: request backfill of %s.%s: %w", t.Schema, t.Name, err)
		}
		n += added
	}
	return n, nil
}

// TrackedTables returns the tables whose changed keys the reader must record: those with a backfill running,
// keyed by relation ID, with their key columns (nil while planning has not chosen them). It also drops the keys
// recorded for backfills that finished since the reader last asked (it records them until it asks again).
func (b *Buffer) TrackedTables(ctx context.Context) (map[uint32][]string, error) {
	_, err := b.pool.Exec(ctx, `DELETE FROM philotes.backfill_keys k USING philotes.backfill_tables t
WHERE k.source = $1 AND t.source = $1 AND t.relation_id = k.relation_id AND (t.done_at IS NOT NULL OR t.error IS NOT NULL)`, b.source)
	if err != nil {
		return nil, fmt.Errorf("buffer: drop the keys of finished backfills: %w", err)
	}
	rows, err := b.pool.Query(ctx, `SELECT relation_id, COALESCE(key_columns, '{}') FROM philotes.backfill_tables
WHERE source = $1 AND done_at IS NULL AND error IS NULL`, b.source)
	if err != nil {
		return nil, fmt.Errorf("buffer: tracked tables: %w", err)
	}
	out := map[uint32][]string{}
	var id uint32
	var cols []string
	_, err = pgx.ForEachRow(rows, []any{&id, &cols}, func() error {
		out[id] = cols
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: tracked tables: %w", err)
	}
	return out, nil
}

// BackfillStatus is one table's backfill as an operator sees it.
type BackfillStatus struct {
	Schema, Name        string
	Run                 int64
	RowsDone, RowsToGo  int64
	ChunksDone, Chunks  int64
	Done                bool
	Error               string
	RequestedAt, DoneAt time.Time
}

// BackfillStatuses lists every table's backfill.
func (b *Buffer) BackfillStatuses(ctx context.Context) ([]BackfillStatus, error) {
	return collect(ctx, b.pool, func(row pgx.CollectableRow) (BackfillStatus, error) {
		var s BackfillStatus
		var errText *string
		var done *time.Time
		err := row.Scan(&s.Schema, &s.Name, &s.Run, &s.RowsDone, &s.RowsToGo, &s.ChunksDone, &s.Chunks, &errText, &s.RequestedAt, &done)
		if errText != nil {
			s.Error = *errText
		}
		if done != nil {
			s.Done, s.DoneAt = true, *done
		}
		return s, err
	}, "list backfills", `SELECT t.schema_name, t.table_name, t.run, t.rows_done, greatest(t.rows_estimate - t.rows_done, 0),
	(SELECT count(*) FROM philotes.backfill_chunks c WHERE c.source = t.source AND c.relation_id = t.relation_id AND c.run = t.run AND c.done),
	(SELECT count(*) FROM philotes.backfill_chunks c WHERE c.source = t.source AND c.relation_id = t.relation_id AND c.run = t.run),
	t.error, t.requested_at, t.done_at
FROM philotes.backfill_tables t WHERE t.source = $1 ORDER BY t.schema_name, t.table_name`, b.source)
}

// Planning is a table's chunk planning, locked for one planner until Commit or Rollback.
type Planning struct {
	BackfillTable
	tx     pgx.Tx
	source string
}

// ClaimPlanning locks a table whose chunks are not all planned yet (nil when there is none).
func (b *Buffer) ClaimPlanning(ctx context.Context) (*Planning, error) {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("buffer: claim planning: %w", err)
	}
	p := &Planning{tx: tx, source: b.source}
	var floor *int64
	err = tx.QueryRow(ctx, `SELECT relation_id, schema_name, table_name, run, COALESCE(key_columns, '{}'), xid_floor, planned_to
FROM philotes.backfill_tables WHERE source = $1 AND NOT planned AND error IS NULL AND done_at IS NULL
ORDER BY requested_at, relation_id LIMIT 1 FOR UPDATE SKIP LOCKED`, b.source).
		Scan(&p.RelationID, &p.Schema, &p.Name, &p.Run, &p.KeyColumns, &floor, &p.PlannedTo)
	if errors.Is(err, pgx.ErrNoRows) {
		_ = tx.Rollback(ctx)
		return nil, nil
	}
	if err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("buffer: claim planning: %w", err)
	}
	if floor != nil {
		p.XidFloor = uint64(*floor)
	}
	return p, nil
}

// Started records the key columns, the row estimate and the xid floor taken after the start mark.
func (p *Planning) Started(ctx context.Context, keyColumns []string, rowsEstimate int64, xidFloor uint64) error {
	_, err := p.tx.Exec(ctx, `UPDATE philotes.backfill_tables SET key_columns = $3, rows_estimate = $4, xid_floor = $5
WHERE source = $1 AND relation_id = $2`, p.source, p.RelationID, keyColumns, rowsEstimate, int64(xidFloor))
	if err != nil {
		return fmt.Errorf("buffer: start backfill of %s.%s: %w", p.Schema, p.Name, err)
	}
	p.KeyColumns, p.XidFloor = keyColumns, xidFloor
	return nil
}

// AddChunks records chunks with the given upper keys after PlannedTo; last adds the final, unbounded chunk and
// ends planning.
func (p *Planning) AddChunks(ctx context.Context, uppers [][]string, last bool) error {
	lower := p.PlannedTo
	add := func(upper []string) error {
		_, err := p.tx.Exec(ctx, `INSERT INTO philotes.backfill_chunks (source, relation_id, run, lower_key, upper_key)
VALUES ($1, $2, $3, $4, $5)`, p.source, p.RelationID, p.Run, lower, upper)
		lower = upper
		return err
	}
	for _, u := range uppers {
		if err := add(u); err != nil {
			return fmt.Errorf("buffer: plan %s.%s: %w", p.Schema, p.Name, err)
		}
	}
	if last {
		if err := add(nil); err != nil {
			return fmt.Errorf("buffer: plan %s.%s: %w", p.Schema, p.Name, err)
		}
	}
	_, err := p.tx.Exec(ctx, `UPDATE philotes.backfill_tables SET planned_to = $3, planned = $4 WHERE source = $1 AND relation_id = $2`,
		p.source, p.RelationID, lower, last)
	if err != nil {
		return fmt.Errorf("buffer: plan %s.%s: %w", p.Schema, p.Name, err)
	}
	p.PlannedTo = lower
	return nil
}

// Fail records why the table cannot be backfilled; it stays failed until it is requested again.
func (p *Planning) Fail(ctx context.Context, reason string) error {
	_, err := p.tx.Exec(ctx, `UPDATE philotes.backfill_tables SET error = $3 WHERE source = $1 AND relation_id = $2`,
		p.source, p.RelationID, reason)
	if err != nil {
		return fmt.Errorf("buffer: record backfill error for %s.%s: %w", p.Schema, p.Name, err)
	}
	return nil
}

// Commit ends the planning step.
func (p *Planning) Commit(ctx context.Context) error {
	if err := p.tx.Commit(ctx); err != nil {
		return fmt.Errorf("buffer: plan %s.%s: %w", p.Schema, p.Name, err)
	}
	return nil
}

// Rollback abandons the planning step.
func (p *Planning) Rollback() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.tx.Rollback(ctx)
}

// Chunk is a backfill chunk locked by one lease until Done or Release.
type Chunk struct {
	ID int64
	BackfillTable
	// Lower and Upper bound the chunk's keys: lower < key <= upper, nil meaning unbounded.
	Lower, Upper []string
	tx           pgx.Tx
	lease        *Lease
}

// ClaimChunk locks the oldest chunk not yet done whose table's start mark the reader has recorded (nil when
// there is none). It runs on the lease's connection.
func (l *Lease) ClaimChunk(ctx context.Context) (*Chunk, error) {
	tx, err := l.conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("buffer: claim chunk: %w", err)
	}
	c := &Chunk{tx: tx, lease: l}
	var floor int64
	err = tx.QueryRow(ctx, `SELECT c.id, c.relation_id, t.schema_name, t.table_name, c.run, t.key_columns, t.xid_floor, c.lower_key, c.upper_key
FROM philotes.backfill_chunks c
JOIN philotes.backfill_tables t ON t.source = c.source AND t.relation_id = c.relation_id AND t.run = c.run
WHERE c.source = $1 AND NOT c.done AND t.tracking_from IS NOT NULL AND t.error IS NULL
ORDER BY c.id LIMIT 1 FOR UPDATE OF c SKIP LOCKED`, l.b.source).
		Scan(&c.ID, &c.RelationID, &c.Schema, &c.Name, &c.Run, &c.KeyColumns, &floor, &c.Lower, &c.Upper)
	if errors.Is(err, pgx.ErrNoRows) {
		_ = tx.Rollback(ctx)
		return nil, nil
	}
	if err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("buffer: claim chunk: %w", err)
	}
	c.XidFloor = uint64(floor)
	return c, nil
}

// Release gives the chunk back undone (for another attempt, here or on another replica).
func (c *Chunk) Release() {
	if c.tx == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.tx.Rollback(ctx)
	c.tx = nil
}

// Mark returns the LSN at which the reader passed the attempt's high watermark (ok false: not yet).
func (c *Chunk) Mark(ctx context.Context, attempt uuid.UUID) (lsn uint64, ok bool, err error) {
	var v int64
	err = c.lease.b.pool.QueryRow(ctx, `SELECT lsn FROM philotes.backfill_marks WHERE attempt = $1`, attempt).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("buffer: read chunk mark: %w", err)
	}
	return uint64(v), true, nil
}

// ChangedKey is a change the stream made to a key of a table being backfilled.
type ChangedKey struct {
	// Key is the encoded key (nil: a truncate, which covers every key).
	Key []byte
	Op  change.Op
	Xid uint64
}

// ChangedKeys returns the recorded changes to the given keys of the chunk's table (and its truncates) that
// committed before lsn.
func (c *Chunk) ChangedKeys(ctx context.Context, keys [][]byte, lsn uint64) ([]ChangedKey, error) {
	return collect(ctx, c.tx, func(row pgx.CollectableRow) (ChangedKey, error) {
		var k ChangedKey
		var xid int64
		var op byte
		err := row.Scan(&k.Key, &op, &xid)
		k.Xid, k.Op = uint64(xid), change.Op(op)
		return k, err
	}, "read changed keys", `SELECT key, op, xid FROM philotes.backfill_keys
WHERE source = $1 AND relation_id = $2 AND key = ANY($3) AND commit_lsn < $4
UNION ALL
SELECT key, op, xid FROM philotes.backfill_keys
WHERE source = $1 AND relation_id = $2 AND key IS NULL AND commit_lsn < $4`,
		c.lease.b.source, c.RelationID, keys, int64(lsn))
}

// Done appends the chunk's rows (a batch of snapshot events, without IDs) and marks the chunk done, in one
// transaction.
func (c *Chunk) Done(ctx context.Context, attempt uuid.UUID, batch *Batch, rows int64) error {
	defer c.Release()
	b := c.lease.b
	var err error
	if batch.Len() > 0 {
		err = b.copyEvents(ctx, c.tx, batch)
	}
	if err == nil {
		_, err = c.tx.Exec(ctx, `UPDATE philotes.backfill_chunks SET done = true, rows = $2 WHERE id = $1`, c.ID, rows)
	}
	if err == nil {
		_, err = c.tx.Exec(ctx, `DELETE FROM philotes.backfill_marks WHERE attempt = $1 OR (source = $2 AND created_at < now() - interval '1 day')`, attempt, b.source)
	}
	if err == nil {
		// Lock the table's row first: two chunks that finish together then decide one after the other, and the
		// second (a new statement, a new snapshot) sees the first one's chunk done. Deciding in one statement,
		// both would see the other's chunk undone, and the table would never be done.
		_, err = c.tx.Exec(ctx, `SELECT 1 FROM philotes.backfill_tables WHERE source = $1 AND relation_id = $2 FOR UPDATE`, b.source, c.RelationID)
	}
	if err == nil {
		// The table is done when its planning is and no chunk is left; its recorded keys go with it.
		_, err = c.tx.Exec(ctx, `
WITH t AS (
	UPDATE philotes.backfill_tables t SET rows_done = t.rows_done + $4,
		done_at = CASE WHEN t.planned AND NOT EXISTS (
			SELECT 1 FROM philotes.backfill_chunks c
			WHERE c.source = t.source AND c.relation_id = t.relation_id AND c.run = t.run AND NOT c.done)
		THEN now() ELSE t.done_at END
	WHERE t.source = $1 AND t.relation_id = $2 AND t.run = $3
	RETURNING done_at)
DELETE FROM philotes.backfill_keys k USING t
WHERE t.done_at IS NOT NULL AND k.source = $1 AND k.relation_id = $2`, b.source, c.RelationID, c.Run, rows)
	}
	if err == nil {
		err = c.tx.Commit(ctx)
	}
	if err != nil {
		return fmt.Errorf("buffer: finish chunk %d of %s.%s: %w", c.ID, c.Schema, c.Name, err)
	}
	c.tx = nil
	return nil
}

// copyEvents appends a batch of snapshot events under IDs from philotes.snapshot_event_ids, in blocks.
func (b *Buffer) copyEvents(ctx context.Context, tx pgx.Tx, batch *Batch) error {
	const block = 1 << 20 // the sequence's increment
	var err error
	part := *batch
	for start := 0; start < batch.Len() && err == nil; start += block {
		part.rows = batch.rows[start:min(start+block, batch.Len())]
		if err = tx.QueryRow(ctx, `SELECT nextval('philotes.snapshot_event_ids')`).Scan(&part.FirstID); err != nil {
			break
		}
		_, err = tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(encodeCopy(b.source, &part)),
			`COPY philotes.event_chunks (source, id, events, oldest_commit_time, data) FROM STDIN (FORMAT binary)`)
	}
	if err != nil {
		return fmt.Errorf("append snapshot events: %w", err)
	}
	return nil
}

// backfillRemaining is the Stats subquery for the rows left to backfill (an estimate from the tables' sizes).
const backfillRemaining = `(SELECT COALESCE(sum(greatest(rows_estimate - rows_done, 0)), 0)::bigint FROM philotes.backfill_tables
	WHERE source = $1 AND done_at IS NULL AND error IS NULL)`
