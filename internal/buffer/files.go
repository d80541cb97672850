package buffer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A processor writes data files between claiming events and deleting them. Two things keep that exactly once:
//
//   - the claim transaction records the files (pending_files) and deletes the events together, so a file is
//     recorded if and only if its events are gone;
//   - before it writes a claim's files for a table, the processor commits a file_writes row naming the write
//     (its UUID is in every file name) and its lease; the recording transaction deletes that row. The lease is
//     a session advisory lock the processor's connection holds while it lives, so a file_writes row whose lease
//     is free belongs to a write that can never be recorded, and its files are orphans that are safe to remove.
//     That is exact, not a guess by age: a recorded file never has a file_writes row.

// writerLockSQL is the key of the advisory lock that marks lease $1 live: the two-key form, a key space apart
// from the one-key reader and committer locks.
const writerLockSQL = `hashtext('philotes.writer'), (($1::bigint) % 2147483647)::int4`

// committerLockSQL is the key of the advisory lock that marks the committer of source $1.
const committerLockSQL = `hashtext('philotes.committer:' || $1)`

// Lease is one processor's identity for its data-file writes: a dedicated connection that holds the lease's
// advisory lock. Claims taken through a Lease run on that connection. Not safe for concurrent use.
type Lease struct {
	b    *Buffer
	conn *pgxpool.Conn
	id   int64
}

// NewLease takes a dedicated connection and a new lease on it.
func (b *Buffer) NewLease(ctx context.Context) (*Lease, error) {
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("buffer: lease: %w", err)
	}
	// No write names the lease before it is locked, so the gap between the two statements is harmless.
	var id int64
	err = conn.QueryRow(ctx, `SELECT nextval('philotes.writer_leases')`).Scan(&id)
	if err == nil {
		_, err = conn.Exec(ctx, `SELECT pg_advisory_lock(`+writerLockSQL+`)`, id)
	}
	if err != nil {
		destroy(conn)
		return nil, fmt.Errorf("buffer: lease: %w", err)
	}
	return &Lease{b: b, conn: conn, id: id}, nil
}

// ID is the lease number recorded with its writes.
func (l *Lease) ID() int64 { return l.id }

// Close ends the lease: whatever it wrote and did not record becomes removable. A connection that cannot be
// unlocked is closed, which ends the lease too.
func (l *Lease) Close() {
	if l.conn == nil {
		return
	}
	unlock(l.conn, writerLockSQL, l.id)
	l.conn = nil
}

// unlock releases the session advisory lock keyed by keySQL (with args) and returns the dedicated connection
// to the pool; a connection that cannot be unlocked is closed, which releases the lock too.
func unlock(conn *pgxpool.Conn, keySQL string, args ...any) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(`+keySQL+`)`, args...); err != nil {
		destroy(conn)
		return
	}
	conn.Release()
}

// destroy closes a pooled connection instead of returning it (its session state is unknown).
func destroy(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Conn().Close(ctx)
	conn.Release()
}

// Claim is Buffer.Claim on the lease's connection, so that the claim lives exactly as long as the lease.
func (l *Lease) Claim(ctx context.Context, n int) (*Claim, error) {
	return l.b.claim(ctx, l.conn, n)
}

// BeginWrite records (and commits) that the lease is about to write data files named with writeUUID under
// location. It returns the write's ID, to pass to Claim.Commit with the files.
func (l *Lease) BeginWrite(ctx context.Context, writeUUID, location string) (int64, error) {
	var id int64
	err := l.b.pool.QueryRow(ctx, `INSERT INTO philotes.file_writes (source, lease, write_uuid, location)
VALUES ($1, $2, $3, $4) RETURNING id`, l.b.source, l.id, writeUUID, location).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("buffer: record file write: %w", err)
	}
	return id, nil
}

// NewFile is a data file to record with a claim.
type NewFile struct {
	// Table is the Iceberg table the file belongs to.
	Table string
	// File is the encoded data file, opaque to the buffer.
	File []byte
	// Bytes and Records are the file's size and row count.
	Bytes, Records int64
	// OldestCommitTime is the source commit time of the oldest change in the file.
	OldestCommitTime time.Time
	// MaxCommitLSN is the largest source commit LSN in the file.
	MaxCommitLSN uint64
}

// PendingFile is a recorded data file not yet committed to its table.
type PendingFile struct {
	ID int64
	NewFile
	// Seq is the commit sequence number the committer gave the file (0: not yet prepared).
	Seq int64
}

// Commit records files, ends the writes that produced them and deletes the claimed events (moving those set
// aside with Park to the parked events), in one transaction: call it only after the files are durable in the
// warehouse.
func (c *Claim) Commit(ctx context.Context, files []NewFile, writes []int64) error {
	if c.tx == nil {
		if len(files) > 0 {
			return errors.New("buffer: commit: claim has no events")
		}
		return nil
	}
	err := c.record(ctx, files, writes)
	if err == nil {
		err = c.settle(ctx)
	}
	if err != nil {
		_ = c.tx.Rollback(ctx)
		c.tx = nil
		return fmt.Errorf("buffer: commit %d claimed events: %w", len(c.Events), err)
	}
	if err := c.tx.Commit(ctx); err != nil {
		c.tx = nil
		return fmt.Errorf("buffer: commit claim: %w", err)
	}
	c.tx = nil
	return nil
}

func (c *Claim) record(ctx context.Context, files []NewFile, writes []int64) error {
	if len(writes) > 0 {
		tag, err := c.tx.Exec(ctx, `DELETE FROM philotes.file_writes WHERE source = $1 AND id = ANY($2)`, c.source, writes)
		if err != nil {
			return fmt.Errorf("end file writes: %w", err)
		}
		if tag.RowsAffected() != int64(len(writes)) {
			// Only a clean-up that found this lease dead removes write rows, and it removes their files too.
			return fmt.Errorf("%d of %d file writes are gone: the lease was lost", int64(len(writes))-tag.RowsAffected(), len(writes))
		}
	}
	if len(files) == 0 {
		return nil
	}
	rows := make([][]any, len(files))
	for i, f := range files {
		rows[i] = []any{c.source, f.Table, f.File, f.Bytes, f.Records, f.OldestCommitTime, int64(f.MaxCommitLSN)}
	}
	_, err := c.tx.CopyFrom(ctx, pgx.Identifier{"philotes", "pending_files"},
		[]string{"source", "table_name", "file", "bytes", "records", "oldest_commit_time", "max_commit_lsn"},
		pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("record %d data files: %w", len(files), err)
	}
	return nil
}

// CommitterLock is the committer role of one source: a dedicated connection holding a session advisory lock.
// Whoever holds it commits the source's pending files and maintains its tables; when the holder dies, the
// database drops its connection and the lock with it.
type CommitterLock struct {
	b    *Buffer
	conn *pgxpool.Conn
}

// TryCommitterLock takes the committer role if it is free; it returns nil, nil when another replica holds it.
func (b *Buffer) TryCommitterLock(ctx context.Context) (*CommitterLock, error) {
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("buffer: committer lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+committerLockSQL+`)`, b.source).Scan(&ok); err != nil {
		destroy(conn)
		return nil, fmt.Errorf("buffer: committer lock: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, nil
	}
	return &CommitterLock{b: b, conn: conn}, nil
}

// Check reports an error once the lock's connection is gone (and with it, perhaps, the lock).
func (l *CommitterLock) Check(ctx context.Context) error {
	if err := l.conn.Ping(ctx); err != nil {
		return fmt.Errorf("buffer: committer lock lost: %w", err)
	}
	return nil
}

// Release gives the role up.
func (l *CommitterLock) Release() {
	if l.conn == nil {
		return
	}
	unlock(l.conn, committerLockSQL, l.b.source)
	l.conn = nil
}

// DeadWrite is a file write whose lease ended before its files were recorded.
type DeadWrite struct {
	ID        int64
	WriteUUID string
	Location  string
}

// CleanDeadWrites finds the writes of ended leases and, for each, calls remove (which deletes the write's
// files) and then forgets the write. It returns how many writes it cleaned. Each dead lease stays locked by
// the committer while it is cleaned, so no lease can come back to life meanwhile.
func (l *CommitterLock) CleanDeadWrites(ctx context.Context, remove func(context.Context, DeadWrite) error) (int, error) {
	leases, err := collect(ctx, l.conn, pgx.RowTo[int64], "list file writes",
		`SELECT DISTINCT lease FROM philotes.file_writes WHERE source = $1`, l.b.source)
	if err != nil {
		return 0, err
	}
	cleaned := 0
	for _, lease := range leases {
		n, err := l.cleanLease(ctx, lease, remove)
		cleaned += n
		if err != nil {
			return cleaned, err
		}
	}
	return cleaned, nil
}

func (l *CommitterLock) cleanLease(ctx context.Context, lease int64, remove func(context.Context, DeadWrite) error) (int, error) {
	var free bool
	if err := l.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+writerLockSQL+`)`, lease).Scan(&free); err != nil {
		return 0, fmt.Errorf("buffer: check lease %d: %w", lease, err)
	}
	if !free {
		return 0, nil // alive
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = l.conn.Exec(uctx, `SELECT pg_advisory_unlock(`+writerLockSQL+`)`, lease)
	}()
	writes, err := collect(ctx, l.conn, pgx.RowToStructByPos[DeadWrite], fmt.Sprintf("read writes of lease %d", lease),
		`SELECT id, write_uuid::text, location FROM philotes.file_writes WHERE source = $1 AND lease = $2`, l.b.source, lease)
	if err != nil {
		return 0, err
	}
	for i, w := range writes {
		if err := remove(ctx, w); err != nil {
			return i, fmt.Errorf("remove files of write %s: %w", w.WriteUUID, err)
		}
		if _, err := l.conn.Exec(ctx, `DELETE FROM philotes.file_writes WHERE id = $1`, w.ID); err != nil {
			return i, fmt.Errorf("buffer: forget write %d: %w", w.ID, err)
		}
	}
	return len(writes), nil
}

// PendingTables lists the tables that have files waiting for a commit, oldest waiting first.
func (b *Buffer) PendingTables(ctx context.Context) ([]string, error) {
	return collect(ctx, b.pool, pgx.RowTo[string], "pending tables", `SELECT table_name FROM philotes.pending_files
WHERE source = $1 GROUP BY table_name ORDER BY min(id)`, b.source)
}

// PendingFiles returns up to limit files waiting for a commit to table: those already prepared by an earlier
// commit attempt first, then the oldest.
func (b *Buffer) PendingFiles(ctx context.Context, table string, limit int) ([]PendingFile, error) {
	rows, err := b.pool.Query(ctx, `SELECT id, file, bytes, records, oldest_commit_time, max_commit_lsn, coalesce(commit_seq, 0)
FROM philotes.pending_files WHERE source = $1 AND table_name = $2
ORDER BY commit_seq NULLS LAST, id LIMIT $3`, b.source, table, limit)
	if err != nil {
		return nil, fmt.Errorf("buffer: pending files of %s: %w", table, err)
	}
	defer rows.Close()
	var out []PendingFile
	for rows.Next() {
		f := PendingFile{NewFile: NewFile{Table: table}}
		var lsn int64
		if err := rows.Scan(&f.ID, &f.File, &f.Bytes, &f.Records, &f.OldestCommitTime, &lsn, &f.Seq); err != nil {
			return nil, fmt.Errorf("buffer: pending files of %s: %w", table, err)
		}
		f.MaxCommitLSN = uint64(lsn)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("buffer: pending files of %s: %w", table, err)
	}
	return out, nil
}

// PrepareCommit hands out the source's next commit sequence number, at least atLeast, and gives it to those
// of the files ids that have none yet; files prepared earlier keep theirs. When it returns, the numbers are
// durable: only then may the commit that carries them reach the table.
func (b *Buffer) PrepareCommit(ctx context.Context, ids []int64, atLeast int64) (int64, error) {
	var seq int64
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO philotes.commit_seqs AS c (source, last) VALUES ($1, greatest($2::bigint, 1))
ON CONFLICT (source) DO UPDATE SET last = greatest(c.last + 1, $2::bigint) RETURNING last`, b.source, atLeast).Scan(&seq)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE philotes.pending_files SET commit_seq = $3
WHERE source = $1 AND id = ANY($2) AND commit_seq IS NULL`, b.source, ids, seq)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("buffer: prepare commit: %w", err)
	}
	return seq, nil
}

// DeleteFiles forgets files that are committed to their table.
func (b *Buffer) DeleteFiles(ctx context.Context, ids []int64) error {
	if _, err := b.pool.Exec(ctx, `DELETE FROM philotes.pending_files WHERE source = $1 AND id = ANY($2)`, b.source, ids); err != nil {
		return fmt.Errorf("buffer: delete %d committed files: %w", len(ids), err)
	}
	return nil
}

// WriteUUIDs lists the writes of this source that have begun and are neither recorded nor cleaned up yet.
func (b *Buffer) WriteUUIDs(ctx context.Context) ([]string, error) {
	return collect(ctx, b.pool, pgx.RowTo[string], "list file writes",
		`SELECT write_uuid::text FROM philotes.file_writes WHERE source = $1`, b.source)
}

// collect runs a query and scans every row with scan; errors name what it was doing.
func collect[T any](ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, scan pgx.RowToFunc[T], what, sql string, args ...any) ([]T, error) {
	rows, err := db.Query(ctx, sql, args...)
	if err == nil {
		var out []T
		if out, err = pgx.CollectRows(rows, scan); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("buffer: %s: %w", what, err)
}
