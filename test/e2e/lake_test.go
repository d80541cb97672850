//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"testing"
	"time"

	iceberg "github.com/apache/iceberg-go"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/philotes/philotes-worker/internal/lakecheck"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// lake reads the worker's Iceberg tables through the SQL catalog in the
// buffer database (the worker's default catalog), over the namespace.
type lake struct {
	cat *sqlcat.Catalog
}

func openLake(t *testing.T, s *stack.Stack, warehouse string) lake {
	t.Helper()
	cfg, err := pgx.ParseConfig(stack.PostgresURL(stack.BufferDB))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return s.NS.DialContext(ctx, network, addr)
	}
	cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) { return []string{host}, nil }
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { db.Close() })
	return lake{cat: newSQLCatalog(t, db, warehouse)}
}

func newSQLCatalog(t *testing.T, db *sql.DB, warehouse string) *sqlcat.Catalog {
	t.Helper()
	cat, err := sqlcat.NewCatalog("philotes", db, sqlcat.Postgres, iceberg.Properties{"warehouse": warehouse})
	if err != nil {
		t.Fatalf("iceberg sql catalog: %v", err)
	}
	return cat
}

// inserts counts, per id, the insert rows of the table for sourceTable (nil,
// nil while the table does not exist).
func (l lake) inserts(ctx context.Context, sourceTable string) (map[int64]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return lakecheck.Inserts(ctx, l.cat, "philotes", sourceTable)
}

// waitInLake waits until ids 1..n are all in the lake.
func waitInLake(t *testing.T, l lake, sourceTable string, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("ids 1..%d in the lake", n), func(context.Context) error {
		got, err := l.inserts(t.Context(), sourceTable) // a scan may take longer than one poll's context
		if err != nil {
			return err
		}
		have := 0
		for id := int64(1); id <= int64(n); id++ {
			if got[id] > 0 {
				have++
			}
		}
		if have < n {
			return fmt.Errorf("%d of %d ids", have, n)
		}
		return nil
	})
}

// exactlyOnce is nil when each of ids 1..n of sourceTable is in the lake
// exactly once, and nothing else is.
func (l lake) exactlyOnce(ctx context.Context, sourceTable string, n int) error {
	got, err := l.inserts(ctx, sourceTable)
	if err != nil {
		return err
	}
	if err := lakecheck.ExactlyOnce(got, n); err != nil {
		return fmt.Errorf("%s: %w", sourceTable, err)
	}
	return nil
}
