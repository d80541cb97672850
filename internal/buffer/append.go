package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/philotes/philotes-worker/internal/change"
)

// Batch is a run of changes read from the slot, ready to append. Tuple bytes live in one arena so that a batch
// of thousands of rows costs a handful of allocations.
type Batch struct {
	rows  []row
	arena []byte
	// Last is the position of the last change in the batch (meaningful when Len() > 0).
	Last Position
}

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

// Len is the number of changes in the batch.
func (b *Batch) Len() int { return len(b.rows) }

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() {
	b.rows = b.rows[:0]
	b.arena = b.arena[:0]
	b.Last = Position{}
}

// Append writes the batch and the new progress position in one transaction. When it returns nil the changes are
// durable (as durable as the buffer database's commit).
func (b *Buffer) Append(ctx context.Context, batch *Batch) error {
	if batch.Len() == 0 {
		return nil
	}
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("buffer: append: %w", err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("buffer: append: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	data := encodeCopy(b.source, batch)
	_, err = conn.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(data),
		`COPY philotes.events (source, commit_lsn, seq, lsn, commit_time, relation, op, tuple, old_tuple) FROM STDIN (FORMAT binary)`)
	if err != nil {
		return fmt.Errorf("buffer: append %d events: %w", batch.Len(), err)
	}
	_, err = tx.Exec(ctx, `
INSERT INTO philotes.sources (source, commit_lsn, seq) VALUES ($1, $2, $3)
ON CONFLICT (source) DO UPDATE SET commit_lsn = excluded.commit_lsn, seq = excluded.seq, updated_at = now()`,
		b.source, int64(batch.Last.CommitLSN), batch.Last.Seq)
	if err != nil {
		return fmt.Errorf("buffer: record progress: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("buffer: append commit: %w", err)
	}
	return nil
}

// postgresEpoch is the zero of PostgreSQL's binary timestamps.
var postgresEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// encodeCopy renders the batch in PostgreSQL's binary COPY format: cheaper for the server than text or JSON, and
// the row data stays opaque bytes.
func encodeCopy(source string, batch *Batch) []byte {
	const fields = 9
	out := make([]byte, 0, 19+len(batch.arena)+len(batch.rows)*(2+fields*4+48+len(source))+2)
	out = append(out, "PGCOPY\n\xff\r\n\x00"...)
	out = binary.BigEndian.AppendUint32(out, 0) // flags
	out = binary.BigEndian.AppendUint32(out, 0) // header extension length
	for i := range batch.rows {
		r := &batch.rows[i]
		out = binary.BigEndian.AppendUint16(out, fields)
		out = binary.BigEndian.AppendUint32(out, uint32(len(source)))
		out = append(out, source...)
		out = appendInt64(out, int64(r.commitLSN))
		out = binary.BigEndian.AppendUint32(out, 4)
		out = binary.BigEndian.AppendUint32(out, uint32(r.seq))
		out = appendInt64(out, int64(r.lsn))
		out = appendInt64(out, r.commitTime.Sub(postgresEpoch).Microseconds())
		out = appendInt64(out, r.relation)
		out = binary.BigEndian.AppendUint32(out, 1)
		out = append(out, byte(r.op))
		out = appendBytes(out, batch.arena, r.tupleOff, r.tupleN)
		out = appendBytes(out, batch.arena, r.oldOff, r.oldN)
	}
	return binary.BigEndian.AppendUint16(out, 0xffff)
}

func appendInt64(out []byte, v int64) []byte {
	out = binary.BigEndian.AppendUint32(out, 8)
	return binary.BigEndian.AppendUint64(out, uint64(v))
}

func appendBytes(out, arena []byte, off, n int) []byte {
	if n < 0 {
		return binary.BigEndian.AppendUint32(out, 0xffffffff) // NULL
	}
	out = binary.BigEndian.AppendUint32(out, uint32(n))
	return append(out, arena[off:off+n]...)
}
