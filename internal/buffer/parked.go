package buffer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/philotes/philotes-worker/internal/change"
)

// Parking isolates a table whose changes cannot be written (a column the lake cannot take, a lake table that
// refuses them). Its events move from the chunks into parked_events in the claim transaction that writes the
// other tables' events, so nothing is lost and every other table keeps flowing; later claims park the table's
// new events too. Processors retry a parked table on a backoff (ClaimParked): when all its events are written,
// it is unparked. The lake is a changelog ordered by (_commit_lsn, _seq), so a parked table's events may land
// after newer ones of other tables, or of its own once unparked.

// TableName names a source table.
type TableName struct{ Schema, Name string }

func (t TableName) String() string { return t.Schema + "." + t.Name }

// ParkedTable is a parked table and why.
type ParkedTable struct {
	TableName
	Reason   string
	ParkedAt time.Time
	Attempts int
	RetryAt  time.Time
	// Events waiting for it.
	Events int64
}

// A parked table is retried ParkedRetryFirst after it was parked, then twice as long after each failed retry, at
// most ParkedRetryMax apart: a fixed cause resumes the table within minutes.
const (
	ParkedRetryFirst = 15 * time.Second
	ParkedRetryMax   = 5 * time.Minute
)

// Park records that table cannot be written, and why. A table parked already keeps its place in the retry
// order, with the new reason and the next retry pushed back.
func (b *Buffer) Park(ctx context.Context, t TableName, reason string) error {
	_, err := b.pool.Exec(ctx, `
INSERT INTO philotes.parked_tables AS p (source, schema_name, table_name, reason, attempts, retry_at)
VALUES ($1, $2, $3, $4, 0, now() + $5::interval)
ON CONFLICT (source, schema_name, table_name) DO UPDATE
SET reason = EXCLUDED.reason, attempts = p.attempts + 1,
    retry_at = now() + least($5::interval * 2 ^ least(p.attempts + 1, 20), $6::interval)`,
		b.source, t.Schema, t.Name, reason, ParkedRetryFirst, ParkedRetryMax)
	if err != nil {
		return fmt.Errorf("buffer: park %s: %w", t, err)
	}
	return nil
}

// ParkedTables lists this source's parked tables with the events waiting for each.
func (b *Buffer) ParkedTables(ctx context.Context) ([]ParkedTable, error) {
	rows, err := b.pool.Query(ctx, `
SELECT p.schema_name, p.table_name, p.reason, p.parked_at, p.attempts, p.retry_at,
       (SELECT count(*) FROM philotes.parked_events e
        WHERE e.source = p.source AND e.schema_name = p.schema_name AND e.table_name = p.table_name)
FROM philotes.parked_tables p WHERE p.source = $1 ORDER BY p.parked_at`, b.source)
	if err != nil {
		return nil, fmt.Errorf("buffer: parked tables: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ParkedTable, error) {
		var p ParkedTable
		err := r.Scan(&p.Schema, &p.Name, &p.Reason, &p.ParkedAt, &p.Attempts, &p.RetryAt, &p.Events)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: parked tables: %w", err)
	}
	return out, nil
}

// Parked reports which tables are parked now, in the claim's transaction.
func (c *Claim) Parked(ctx context.Context) (map[TableName]bool, error) {
	if c.tx == nil {
		return nil, nil
	}
	rows, err := c.tx.Query(ctx, `SELECT schema_name, table_name FROM philotes.parked_tables WHERE source = $1`, c.source)
	if err != nil {
		return nil, fmt.Errorf("buffer: parked tables: %w", err)
	}
	parked := map[TableName]bool{}
	var t TableName
	_, err = pgx.ForEachRow(rows, []any{&t.Schema, &t.Name}, func() error { parked[t] = true; return nil })
	if err != nil {
		return nil, fmt.Errorf("buffer: parked tables: %w", err)
	}
	return parked, nil
}

// Park sets the claim's events of table t aside: Commit moves them to the parked events instead of writing
// them. The claim must hold them (ids from its Events).
func (c *Claim) Park(t TableName, events []int64) {
	if c.park == nil {
		c.park = map[TableName][]int64{}
	}
	c.park[t] = append(c.park[t], events...)
}

// ClaimParked locks the parked table most overdue for a retry and up to n of its oldest events, in a claim
// whose Commit deletes them (and unparks the table when none is left). It returns a claim with no events when
// no parked table is due.
func (l *Lease) ClaimParked(ctx context.Context, n int) (*Claim, error) {
	b := l.b
	tx, err := l.conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("buffer: claim parked: %w", err)
	}
	c := &Claim{tx: tx, source: b.source}
	var t TableName
	err = tx.QueryRow(ctx, `
SELECT schema_name, table_name FROM philotes.parked_tables WHERE source = $1 AND retry_at <= now()
ORDER BY retry_at LIMIT 1 FOR UPDATE SKIP LOCKED`, b.source).Scan(&t.Schema, &t.Name)
	if errors.Is(err, pgx.ErrNoRows) {
		_ = tx.Rollback(ctx)
		c.tx = nil
		return c, nil
	}
	if err == nil {
		c.unpark = &t
		var rows pgx.Rows
		rows, err = tx.Query(ctx, `
SELECT id, commit_lsn, seq, lsn, commit_time, relation, op, tuple, old_tuple FROM philotes.parked_events
WHERE source = $1 AND schema_name = $2 AND table_name = $3 ORDER BY id LIMIT $4`, b.source, t.Schema, t.Name, max(n, 1))
		if err == nil {
			var e Event
			var op byte
			_, err = pgx.ForEachRow(rows, []any{&e.ID, &e.CommitLSN, &e.Seq, &e.LSN, &e.CommitTime, &e.Relation, &op, &e.Tuple, &e.OldTuple},
				func() error {
					e.Op = change.Op(op)
					c.Events = append(c.Events, e)
					e.Tuple, e.OldTuple = nil, nil
					return nil
				})
		}
	}
	if err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("buffer: claim parked: %w", err)
	}
	return c, nil
}

// Unparking reports the table whose parked events the claim holds (nil for a claim of chunks).
func (c *Claim) Unparking() *TableName { return c.unpark }

// settle ends the claim's events in its transaction: parked events are deleted (and the table unparked when
// none is left); claimed chunks are deleted, after the events set aside with Park are moved to parked_events.
func (c *Claim) settle(ctx context.Context) error {
	if c.unpark != nil {
		ids := make([]int64, len(c.Events))
		for i := range c.Events {
			ids[i] = c.Events[i].ID
		}
		t := *c.unpark
		_, err := c.tx.Exec(ctx, `DELETE FROM philotes.parked_events WHERE source = $1 AND id = ANY($2)`, c.source, ids)
		if err == nil {
			_, err = c.tx.Exec(ctx, `
DELETE FROM philotes.parked_tables p WHERE source = $1 AND schema_name = $2 AND table_name = $3
AND NOT EXISTS (SELECT FROM philotes.parked_events e
                WHERE e.source = p.source AND e.schema_name = p.schema_name AND e.table_name = p.table_name)`,
				c.source, t.Schema, t.Name)
		}
		if err != nil {
			return fmt.Errorf("unpark %s: %w", t, err)
		}
		return nil
	}
	if len(c.park) > 0 {
		byID := make(map[int64]*Event, len(c.Events))
		for i := range c.Events {
			byID[c.Events[i].ID] = &c.Events[i]
		}
		var rows [][]any
		for t, ids := range c.park {
			for _, id := range ids {
				e := byID[id]
				if e == nil {
					return fmt.Errorf("park %s: event %d is not in the claim", t, id)
				}
				rows = append(rows, []any{c.source, e.ID, t.Schema, t.Name, int64(e.CommitLSN), e.Seq, int64(e.LSN),
					e.CommitTime, e.Relation, byte(e.Op), e.Tuple, e.OldTuple})
			}
		}
		_, err := c.tx.CopyFrom(ctx, pgx.Identifier{"philotes", "parked_events"},
			[]string{"source", "id", "schema_name", "table_name", "commit_lsn", "seq", "lsn", "commit_time", "relation", "op", "tuple", "old_tuple"},
			pgx.CopyFromRows(rows))
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation
				return fmt.Errorf("park %d events: %w", len(rows), ErrUnparked)
			}
			return fmt.Errorf("park %d events: %w", len(rows), err)
		}
	}
	_, err := c.tx.Exec(ctx, `DELETE FROM philotes.event_chunks WHERE source = $1 AND id = ANY($2)`, c.source, c.ids)
	return err
}

// ErrUnparked is returned by Claim.Commit when a table the claim parked events of was unparked meanwhile: the
// claim is rolled back, and the next claim writes those events.
var ErrUnparked = errors.New("the table was unparked meanwhile")
