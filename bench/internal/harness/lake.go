package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	"github.com/apache/iceberg-go/table"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Namespace is the worker's default Iceberg namespace.
const Namespace = "philotes"

// Lake reads the warehouse directly, through the SQL catalog in the buffer database, independently of the
// worker and its metrics. Open it once the worker is ready: the worker creates the catalog's tables at start,
// and the two must not race to create them.
type Lake struct {
	db  *sql.DB
	cat catalog.Catalog
}

// OpenLake opens the SQL catalog in the buffer database bufURL over warehouse; props are extra file IO
// properties (an S3 warehouse's).
func OpenLake(bufURL, warehouse string, props map[string]string) (*Lake, error) {
	cfg, err := pgx.ParseConfig(bufURL)
	if err != nil {
		return nil, fmt.Errorf("lake: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	p := iceberg.Properties{"warehouse": warehouse}
	for k, v := range props {
		p[k] = v
	}
	cat, err := sqlcat.NewCatalog("philotes", db, sqlcat.Postgres, p)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("lake: SQL catalog: %w", err)
	}
	return &Lake{db: db, cat: cat}, nil
}

// Close closes the catalog's connections.
func (l *Lake) Close() { l.db.Close() }

// Catalog is the lake's Iceberg catalog.
func (l *Lake) Catalog() catalog.Catalog { return l.cat }

// Load returns the lake table of source table public.<name>, or nil while it does not exist.
func (l *Lake) Load(ctx context.Context, name string) (*table.Table, error) {
	tbl, err := l.cat.LoadTable(ctx, table.Identifier{Namespace, "public_" + name})
	if errors.Is(err, catalog.ErrNoSuchTable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lake: load %s: %w", name, err)
	}
	return tbl, nil
}

// Records is the row count of the table's current snapshot (its summary's total-records, or the data files'
// counts when the summary lacks it); 0 while the table or a snapshot does not exist.
func (l *Lake) Records(ctx context.Context, name string) (int64, error) {
	tbl, err := l.Load(ctx, name)
	if err != nil || tbl == nil {
		return 0, err
	}
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return 0, nil
	}
	if snap.Summary != nil {
		if n := snap.Summary.Properties.GetInt("total-records", -1); n >= 0 {
			return int64(n), nil
		}
	}
	tasks, err := tbl.Scan().PlanFiles(ctx)
	if err != nil {
		return 0, fmt.Errorf("lake: plan %s: %w", name, err)
	}
	var n int64
	for _, t := range tasks {
		n += t.File.Count()
	}
	return n, nil
}
