package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// createTable creates a source table of the soak's shape: a bigserial key, about 100 bytes of text, an int, a
// numeric and a timestamptz.
func createTable(ctx context.Context, conn *pgx.Conn, name string) error {
	_, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (
	id bigserial PRIMARY KEY,
	payload text NOT NULL,
	qty int NOT NULL,
	price numeric(12,2) NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now())`, pgx.Identifier{name}.Sanitize()))
	if err != nil {
		return fmt.Errorf("create table %s: %w", name, err)
	}
	return nil
}

// ledger records every id inserted into and deleted from each source table, for the final exactly-once check.
type ledger struct {
	mu       sync.Mutex
	inserted map[string][]int64
	deleted  map[string][]int64
	live     map[string][]int64 // inserted and not deleted, for picking update and delete targets
	updates  int
	txs      int
}

func newLedger() *ledger {
	return &ledger{inserted: map[string][]int64{}, deleted: map[string][]int64{}, live: map[string][]int64{}}
}

func (l *ledger) addInserts(table string, ids []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inserted[table] = append(l.inserted[table], ids...)
	l.live[table] = append(l.live[table], ids...)
}

// totals returns the rows inserted, updated and deleted so far, and the transactions of the trickle.
func (l *ledger) totals() (ins, upd, del, txs int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ids := range l.inserted {
		ins += len(ids)
	}
	for _, ids := range l.deleted {
		del += len(ids)
	}
	return ins, l.updates, del, l.txs
}

// ids returns a copy of the ids inserted into table.
func (l *ledger) ids(table string) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.inserted[table]...)
}

// loadGen writes the trickle: tps small transactions per second of 1-5 rows each on random tables, about 80%
// inserts, 15% updates and 5% deletes of live rows.
type loadGen struct {
	srcURL string
	tables []string
	tps    int
	ledger *ledger
}

// op is one statement of a transaction, applied to the ledger once the transaction committed.
type op struct {
	kind  byte // 'i', 'u', 'd'
	table string
	id    int64
}

func (g *loadGen) run(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, g.srcURL)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer conn.Close(context.Background())
	tick := time.NewTicker(time.Second / time.Duration(max(g.tps, 1)))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		// A transaction is not interrupted by the stop: one cancelled while its commit is in flight may still
		// commit on the server, and its ids would then be missing from the ledger.
		txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		err := g.tx(txCtx, conn)
		cancel()
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}
}

func (g *loadGen) tx(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after Commit
	var ops []op
	for range 1 + mrand.IntN(5) {
		table := g.tables[mrand.IntN(len(g.tables))]
		target, ok := g.pickLive(table, ops)
		o := op{kind: 'i', table: table}
		switch r := mrand.IntN(100); {
		case r >= 95 && ok:
			o.kind, o.id = 'd', target
		case r >= 80 && ok:
			o.kind, o.id = 'u', target
		}
		ident := pgx.Identifier{table}.Sanitize()
		switch o.kind {
		case 'i':
			err = tx.QueryRow(ctx, `INSERT INTO `+ident+` (payload, qty, price) VALUES ($1, $2, $3) RETURNING id`,
				payload(), mrand.IntN(1000), fmt.Sprintf("%d.%02d", mrand.IntN(100000), mrand.IntN(100))).Scan(&o.id)
		case 'u':
			_, err = tx.Exec(ctx, `UPDATE `+ident+` SET qty = qty + 1, updated_at = now() WHERE id = $1`, o.id)
		case 'd':
			_, err = tx.Exec(ctx, `DELETE FROM `+ident+` WHERE id = $1`, o.id)
		}
		if err != nil {
			return fmt.Errorf("%c on %s: %w", o.kind, table, err)
		}
		ops = append(ops, o)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	g.apply(ops)
	return nil
}

// pickLive returns a random live id of table that this transaction has not touched yet.
func (g *loadGen) pickLive(table string, pending []op) (int64, bool) {
	g.ledger.mu.Lock()
	defer g.ledger.mu.Unlock()
	live := g.ledger.live[table]
	if len(live) == 0 {
		return 0, false
	}
	id := live[mrand.IntN(len(live))]
	for _, o := range pending {
		if o.table == table && o.id == id {
			return 0, false
		}
	}
	return id, true
}

func (g *loadGen) apply(ops []op) {
	l := g.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	l.txs++
	for _, o := range ops {
		switch o.kind {
		case 'i':
			l.inserted[o.table] = append(l.inserted[o.table], o.id)
			l.live[o.table] = append(l.live[o.table], o.id)
		case 'u':
			l.updates++
		case 'd':
			l.deleted[o.table] = append(l.deleted[o.table], o.id)
			live := l.live[o.table]
			for i, id := range live {
				if id == o.id {
					live[i] = live[len(live)-1]
					l.live[o.table] = live[:len(live)-1]
					break
				}
			}
		}
	}
}

// payload is 100 random hex characters (incompressible, like real text columns more or less are).
func payload() string {
	b := make([]byte, 50)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// burst inserts n rows into table in one transaction and returns the commit time.
func burst(ctx context.Context, srcURL, table string, n int, l *ledger) (time.Time, error) {
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
	l.addInserts(table, ids)
	return committed, nil
}
