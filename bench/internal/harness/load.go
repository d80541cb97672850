package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// WithConn connects to url, runs f and closes the connection.
func WithConn(ctx context.Context, url string, f func(*pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return f(conn)
}

// CreateTable creates a source table of the load's shape: a bigserial key, about 100 bytes of text, an int, a
// numeric and a timestamptz.
func CreateTable(ctx context.Context, conn *pgx.Conn, name string) error {
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

// Ledger records every id inserted into and deleted from each source table, and the updates, for the final
// exactly-once checks. Only committed transactions reach it.
type Ledger struct {
	mu       sync.Mutex
	inserted map[string][]int64
	deleted  map[string][]int64
	updated  map[string]int
	live     map[string][]int64 // inserted and not deleted, for picking update and delete targets
	txs      int
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{inserted: map[string][]int64{}, deleted: map[string][]int64{}, updated: map[string]int{},
		live: map[string][]int64{}}
}

// AddInserts records ids inserted into table outside the load (a burst).
func (l *Ledger) AddInserts(table string, ids []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inserted[table] = append(l.inserted[table], ids...)
	l.live[table] = append(l.live[table], ids...)
}

// Totals returns the rows inserted, updated and deleted so far, and the transactions of the load.
func (l *Ledger) Totals() (ins, upd, del, txs int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ids := range l.inserted {
		ins += len(ids)
	}
	for _, n := range l.updated {
		upd += n
	}
	for _, ids := range l.deleted {
		del += len(ids)
	}
	return ins, upd, del, l.txs
}

// Changes returns the rows inserted into, updated in and deleted from table: one change event each.
func (l *Ledger) Changes(table string) (ins, upd, del int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.inserted[table]), l.updated[table], len(l.deleted[table])
}

// IDs returns a copy of the ids inserted into table.
func (l *Ledger) IDs(table string) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.inserted[table]...)
}

// LoadGen writes a steady load: TPS small transactions per second of 1-5 rows each on random tables, about 80%
// inserts, 15% updates and 5% deletes of live rows, recorded in Ledger once committed.
type LoadGen struct {
	SrcURL string
	Tables []string
	TPS    int
	Ledger *Ledger
}

// op is one statement of a transaction, applied to the ledger once the transaction committed.
type op struct {
	kind  byte // 'i', 'u', 'd'
	table string
	id    int64
}

// Run writes the load until ctx ends; a transaction in flight then still finishes, so the ledger matches the
// source exactly. It returns nil when stopped by ctx.
func (g *LoadGen) Run(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, g.SrcURL)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer conn.Close(context.Background())
	tick := time.NewTicker(time.Second / time.Duration(max(g.TPS, 1)))
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

func (g *LoadGen) tx(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after Commit
	var ops []op
	for range 1 + mrand.IntN(5) {
		table := g.Tables[mrand.IntN(len(g.Tables))]
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
				Payload(), mrand.IntN(1000), fmt.Sprintf("%d.%02d", mrand.IntN(100000), mrand.IntN(100))).Scan(&o.id)
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
func (g *LoadGen) pickLive(table string, pending []op) (int64, bool) {
	g.Ledger.mu.Lock()
	defer g.Ledger.mu.Unlock()
	live := g.Ledger.live[table]
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

func (g *LoadGen) apply(ops []op) {
	l := g.Ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	l.txs++
	for _, o := range ops {
		switch o.kind {
		case 'i':
			l.inserted[o.table] = append(l.inserted[o.table], o.id)
			l.live[o.table] = append(l.live[o.table], o.id)
		case 'u':
			l.updated[o.table]++
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

// Payload is 100 random hex characters (incompressible, like real text columns more or less are).
func Payload() string {
	b := make([]byte, 50)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
