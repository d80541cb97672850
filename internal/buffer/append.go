package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/philotes/philotes-worker/internal/change"
)

// Batch is a run of changes read from the slot, ready to append. Tuple bytes live in one arena so that a batch
// of thousands of rows costs a handful of allocations.
type Batch struct {
	rows  []row
	arena []byte
	// Last is the position of the last change in the batch (meaningful when Len() > 0).
	Last Position
	// FirstID is the event ID of the first change; the others follow one by one.
	FirstID int64
	// keys and marks are backfill bookkeeping, written in the same transaction as the changes.
	keys  []KeyChange
	marks []Mark
}

// KeyChange records that a transaction changed a key of a table being backfilled (Key nil: a truncate).
type KeyChange struct {
	Relation  uint32
	Key       []byte
	Op        change.Op
	Xid       uint64
	CommitLSN uint64
}

// Mark is a backfill watermark the reader passed in the stream: a start mark (Attempt zero) begins the
// recording of a table's changed keys; a chunk's high watermark places the chunk's rows.
type Mark struct {
	LSN      uint64
	Relation uint32
	Run      int64
	Attempt  uuid.UUID
}

// AddKey records a changed key; key is copied.
func (b *Batch) AddKey(k KeyChange) {
	if k.Key != nil {
		k.Key = append([]byte{}, k.Key...)
	}
	b.keys = append(b.keys, k)
}

// AddMark records a watermark.
func (b *Batch) AddMark(m Mark) { b.marks = append(b.marks, m) }

// Empty reports whether there is nothing to append.
func (b *Batch) Empty() bool { return len(b.rows) == 0 && len(b.keys) == 0 && len(b.marks) == 0 }

type row struct {
	commitLSN, lsn   uint64
	seq              int32
	commitTime       time.Time
	relation         int64
	op               change.Op
	tupleOff, tupleN int
	oldOff, oldN     int
}

// Add appends one change. tuple and oldTuple are copied (they may point into a reused network buffer); nil means
// absent.
func (b *Batch) Add(pos Position, lsn uint64, commitTime time.Time, relation int64, op change.Op, tuple, oldTuple []byte) {
	r := row{commitLSN: pos.CommitLSN, lsn: lsn, seq: pos.Seq, commitTime: commitTime, relation: relation, op: op,
		tupleN: -1, oldN: -1}
	if tuple != nil {
		r.tupleOff, r.tupleN = len(b.arena), len(tuple)
		b.arena = append(b.arena, tuple...)
	}
	if oldTuple != nil {
		r.oldOff, r.oldN = len(b.arena), len(oldTuple)
		b.arena = append(b.arena, oldTuple...)
	}
	b.rows = append(b.rows, r)
	b.Last = pos
}

// SetRelation sets the relation key of every change in the batch (a backfill chunk's rows all share one).
func (b *Batch) SetRelation(key int64) {
	for i := range b.rows {
		b.rows[i].relation = key
	}
}

// Tuple returns the new tuple of the i-th change (nil when it has none).
func (b *Batch) Tuple(i int) []byte {
	r := &b.rows[i]
	if r.tupleN < 0 {
		return nil
	}
	return b.arena[r.tupleOff : r.tupleOff+r.tupleN]
}

// Len is the number of changes in the batch.
func (b *Batch) Len() int { return len(b.rows) }

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() {
	b.rows = b.rows[:0]
	b.arena = b.arena[:0]
	b.Last = Position{}
	b.FirstID = 0
	b.keys = b.keys[:0]
	b.marks = b.marks[:0]
}

// Append writes the batch and the new progress in one transaction. When it returns nil the changes are durable.
func (b *Buffer) Append(ctx context.Context, batch *Batch) error {
	p, err := b.BeginAppend(ctx, batch)
	if err != nil {
		return err
	}
	return p.Commit(ctx)
}

// PendingAppend is a batch copied into the buffer but not yet committed. Several can be in flight on separate
// connections; committing them in batch order keeps the progress row and the confirmed LSN monotonic.
type PendingAppend struct {
	conn   *pgxpool.Conn
	tx     pgx.Tx
	source string
	last   Position
	next   int64
	rows   int
	marks  []Mark
}

// Appending is a batch copied into the buffer and not yet committed: BeginAppend's result, an interface so that a
// fake store can hand out its own.
type Appending interface {
	// Commit records the progress and commits. Call it only after every earlier batch has committed.
	Commit(ctx context.Context) error
	// Rollback abandons the batch.
	Rollback()
}

// BeginAppend copies the batch into the buffer inside a new transaction, without committing it.
func (b *Buffer) BeginAppend(ctx context.Context, batch *Batch) (Appending, error) {
	if batch.FirstID <= 0 {
		return nil, fmt.Errorf("buffer: append: batch has no event IDs assigned")
	}
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("buffer: append: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("buffer: append: %w", err)
	}
	p := &PendingAppend{conn: conn, tx: tx, source: b.source, last: batch.Last, next: batch.FirstID + int64(batch.Len()),
		rows: batch.Len(), marks: append([]Mark(nil), batch.marks...)}
	if batch.Len() > 0 {
		_, err = conn.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(encodeCopy(b.source, batch)),
			`COPY philotes.event_chunks (source, id, events, oldest_commit_time, data) FROM STDIN (FORMAT binary)`)
	}
	if err == nil && len(batch.keys) > 0 {
		_, err = tx.CopyFrom(ctx, pgx.Identifier{"philotes", "backfill_keys"}, []string{"source", "relation_id", "key", "op", "xid", "commit_lsn"},
			pgx.CopyFromSlice(len(batch.keys), func(i int) ([]any, error) {
				k := &batch.keys[i]
				return []any{b.source, k.Relation, k.Key, byte(k.Op), int64(k.Xid), int64(k.CommitLSN)}, nil
			}))
	}
	if err != nil {
		p.Rollback()
		return nil, fmt.Errorf("buffer: append %d events: %w", batch.Len(), err)
	}
	return p, nil
}

// Commit records the progress and commits. Call it only after every earlier batch has committed.
func (p *PendingAppend) Commit(ctx context.Context) error {
	defer p.Rollback()
	for _, m := range p.marks {
		var err error
		if m.Attempt == uuid.Nil {
			_, err = p.tx.Exec(ctx, `UPDATE philotes.backfill_tables SET tracking_from = $4
WHERE source = $1 AND relation_id = $2 AND run = $3 AND tracking_from IS NULL`, p.source, m.Relation, m.Run, int64(m.LSN))
		} else {
			_, err = p.tx.Exec(ctx, `INSERT INTO philotes.backfill_marks (attempt, source, lsn) VALUES ($1, $2, $3)
ON CONFLICT (attempt) DO NOTHING`, m.Attempt, p.source, int64(m.LSN))
		}
		if err != nil {
			return fmt.Errorf("buffer: record backfill mark: %w", err)
		}
	}
	if p.rows == 0 {
		if err := p.tx.Commit(ctx); err != nil {
			return fmt.Errorf("buffer: append commit: %w", err)
		}
		p.tx = nil
		return nil
	}
	_, err := p.tx.Exec(ctx, `
INSERT INTO philotes.sources (source, commit_lsn, seq, next_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (source) DO UPDATE
SET commit_lsn = excluded.commit_lsn, seq = excluded.seq, next_id = excluded.next_id, updated_at = now()`,
		p.source, int64(p.last.CommitLSN), p.last.Seq, p.next)
	if err != nil {
		return fmt.Errorf("buffer: record progress: %w", err)
	}
	if err := p.tx.Commit(ctx); err != nil {
		return fmt.Errorf("buffer: append commit: %w", err)
	}
	p.tx = nil
	return nil
}

// Rollback abandons the append (a no-op after Commit) and returns the connection.
func (p *PendingAppend) Rollback() {
	if p.conn == nil {
		return
	}
	if p.tx != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = p.tx.Rollback(ctx)
		cancel()
		p.tx = nil
	}
	p.conn.Release()
	p.conn = nil
}

// postgresEpoch is the zero of PostgreSQL's binary timestamps.
var postgresEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// encodeCopy renders the batch as event chunks in PostgreSQL's binary COPY format.
func encodeCopy(source string, batch *Batch) []byte {
	const fields = 5
	size := 19 + 2
	for i := range batch.rows {
		size += batch.rows[i].packedLen()
	}
	size += (len(batch.rows)/ChunkEvents + 1) * (2 + 4 + len(source) + 12 + 8 + 12 + 4)
	out := make([]byte, 0, size)
	out = append(out, "PGCOPY\n\xff\r\n\x00"...)
	out = binary.BigEndian.AppendUint32(out, 0) // flags
	out = binary.BigEndian.AppendUint32(out, 0) // header extension length
	for start := 0; start < len(batch.rows); {
		// Decide the chunk's extent first, so its data is written once, straight into the COPY stream.
		end, dataLen := start, 0
		for end < len(batch.rows) && end-start < ChunkEvents && (end == start || dataLen < chunkBytes) {
			dataLen += batch.rows[end].packedLen()
			end++
		}
		out = binary.BigEndian.AppendUint16(out, fields)
		out = binary.BigEndian.AppendUint32(out, uint32(len(source)))
		out = append(out, source...)
		out = appendInt64(out, batch.FirstID+int64(start))
		out = binary.BigEndian.AppendUint32(out, 4)
		out = binary.BigEndian.AppendUint32(out, uint32(end-start))
		out = appendInt64(out, batch.rows[start].commitTime.Sub(postgresEpoch).Microseconds())
		out = binary.BigEndian.AppendUint32(out, uint32(dataLen))
		for i := start; i < end; i++ {
			out = appendPacked(out, &batch.rows[i], batch.arena)
		}
		start = end
	}
	return binary.BigEndian.AppendUint16(out, 0xffff)
}

func appendInt64(out []byte, v int64) []byte {
	out = binary.BigEndian.AppendUint32(out, 8)
	return binary.BigEndian.AppendUint64(out, uint64(v))
}
