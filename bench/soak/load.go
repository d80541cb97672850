package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/philotes/philotes-worker/bench/internal/harness"
)

// burst inserts n rows into table in one transaction and returns the commit time.
func burst(ctx context.Context, srcURL, table string, n int, l *harness.Ledger) (time.Time, error) {
	conn, err := pgx.Connect(ctx, srcURL)
	if err != nil {
		return time.Time{}, fmt.Errorf("burst: %w", err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("burst: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after Commit
	rows, err := tx.Query(ctx, `INSERT INTO `+pgx.Identifier{table}.Sanitize()+` (payload, qty, price)
SELECT md5(g::text || random()::text) || md5(random()::text) || md5(random()::text) || left(md5(random()::text), 4),
       (random() * 1000)::int, round((random() * 100000)::numeric, 2)
FROM generate_series(1, $1::int) g RETURNING id`, n)
	if err != nil {
		return time.Time{}, fmt.Errorf("burst into %s: %w", table, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return time.Time{}, fmt.Errorf("burst into %s: %w", table, err)
	}
	if len(ids) != n {
		return time.Time{}, errors.New("burst: short insert")
	}
	if err := tx.Commit(ctx); err != nil {
		return time.Time{}, fmt.Errorf("burst into %s: commit: %w", table, err)
	}
	committed := time.Now()
	l.AddInserts(table, ids)
	return committed, nil
}
