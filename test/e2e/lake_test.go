//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	iceberg "github.com/apache/iceberg-go"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	_ "github.com/apache/iceberg-go/io/gocloud/s3" // the lake is in the stack's object store
	"github.com/apache/iceberg-go/table"
	"github.com/apache/iceberg-go/utils"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/philotes/philotes-worker/test/e2e/stack"
	"github.com/philotes/philotes-worker/test/lakecheck"
)

// lake reads the worker's Iceberg tables through the SQL catalog in the
// buffer database (the worker's default catalog) and the files in the
// stack's object store, both over the namespace.
type lake struct {
	cat *sqlcat.Catalog
	aws *aws.Config // reaches the object store through the namespace
}

// chartLake makes a bucket named after the test and the Secret with its keys
// in namespace ns, and returns the chart's worker.iceberg values for it.
func chartLake(t *testing.T, s *stack.Stack, ns string) (values map[string]any, warehouse string) {
	t.Helper()
	bucket := strings.Trim(strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-")), "-")
	if len(bucket) > 50 {
		bucket = bucket[:50]
	}
	values, warehouse, err := s.ChartLake(t.Context(), ns, bucket)
	if err != nil {
		t.Fatal(err)
	}
	return values, warehouse
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
	return lake{cat: newSQLCatalog(t, db, warehouse, s.S3Properties()), aws: s.AWSConfig()}
}

// ctx gives iceberg-go the namespace's dialer for the object store.
func (l lake) ctx(ctx context.Context) context.Context { return utils.WithAwsConfig(ctx, l.aws) }

func newSQLCatalog(t *testing.T, db *sql.DB, warehouse string, props map[string]string) *sqlcat.Catalog {
	t.Helper()
	p := iceberg.Properties{"warehouse": warehouse}
	for k, v := range props {
		p[k] = v
	}
	cat, err := sqlcat.NewCatalog("philotes", db, sqlcat.Postgres, p)
	if err != nil {
		t.Fatalf("iceberg sql catalog: %v", err)
	}
	return cat
}

// inserts counts, per id, the rows that bring it into the table for
// sourceTable (lakecheck.Arrivals: insert or snapshot; nil, nil while the
// table does not exist).
func (l lake) inserts(ctx context.Context, sourceTable string) (map[int64]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return lakecheck.Arrivals(l.ctx(ctx), l.cat, "philotes", sourceTable)
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

// exactlyOnceAllKinds is exactlyOnce counting the rows of every kind, not
// only inserts: each of ids 1..n of public.<sourceTable> has exactly one
// row, an insert with the note insertRows wrote, and nothing else is there
// (a backfill's snapshot copy of a row the stream carried is a second row).
func (l lake) exactlyOnceAllKinds(ctx context.Context, sourceTable string, n int) error {
	rows, err := l.rows(ctx, "public_"+sourceTable)
	if err != nil {
		return err
	}
	want := make(map[int64]string, n)
	for id := int64(1); id <= int64(n); id++ {
		want[id] = "insert"
	}
	if err := onlyOnce(rows, want); err != nil {
		return fmt.Errorf("%s: %w", sourceTable, err)
	}
	if bad := wrongNotes(rows); bad > 0 {
		return fmt.Errorf("%s: %d rows with a note the source never had", sourceTable, bad)
	}
	return nil
}

// wrongNotes counts the rows whose note is not the one insertRowsInto wrote
// for their id.
func wrongNotes(rows []lakeRow) int {
	n := 0
	for _, r := range rows {
		if r.Note != eventNote(r.ID) {
			n++
		}
	}
	return n
}

// lakeRow is one row of a lake table that holds an events table (id, note):
// the source columns and the kind of change (_op).
type lakeRow struct {
	ID       int64
	Op, Note string
}

// rows reads every row of the lake table name (<schema>_<table> in the
// namespace philotes). It fails while the table does not exist.
func (l lake) rows(ctx context.Context, name string) ([]lakeRow, error) {
	ctx, cancel := context.WithTimeout(l.ctx(ctx), 60*time.Second)
	defer cancel()
	tbl, err := l.cat.LoadTable(ctx, table.Identifier{"philotes", name})
	if err != nil {
		return nil, fmt.Errorf("load philotes.%s: %w", name, err)
	}
	at, err := tbl.Scan(table.WithSelectedFields("id", "_op", "note")).ToArrowTable(ctx)
	if err != nil {
		return nil, fmt.Errorf("scan philotes.%s: %w", name, err)
	}
	defer at.Release()
	idx := func(f string) int { return at.Schema().FieldIndices(f)[0] }
	idI, opI, noteI := idx("id"), idx("_op"), idx("note")
	var out []lakeRow
	rd := array.NewTableReader(at, -1)
	defer rd.Release()
	for rd.Next() {
		rec := rd.RecordBatch()
		ids, ok := rec.Column(idI).(*array.Int64)
		if !ok {
			return nil, fmt.Errorf("philotes.%s: id column %T, want int64", name, rec.Column(idI))
		}
		for r := 0; r < int(rec.NumRows()); r++ {
			out = append(out, lakeRow{ID: ids.Value(r), Op: rec.Column(opI).ValueStr(r), Note: rec.Column(noteI).ValueStr(r)})
		}
	}
	return out, rd.Err()
}

// onlyOnce is nil when each id of want has exactly one row, of the kind
// want[id], and no other id has any row. Its error counts each way that
// fails and names a few ids of each.
func onlyOnce(rows []lakeRow, want map[int64]string) error {
	byID := make(map[int64][]string, len(want))
	for _, r := range rows {
		byID[r.ID] = append(byID[r.ID], r.Op)
	}
	var missing, extra, wrong, unexpected []int64
	for id, op := range want {
		switch got := byID[id]; {
		case len(got) == 0:
			missing = append(missing, id)
		case len(got) > 1:
			extra = append(extra, id)
		case got[0] != op:
			wrong = append(wrong, id)
		}
	}
	for id := range byID {
		if _, ok := want[id]; !ok {
			unexpected = append(unexpected, id)
		}
	}
	if len(missing)+len(extra)+len(wrong)+len(unexpected) == 0 {
		return nil
	}
	some := func(what string, ids []int64) string {
		if len(ids) == 0 {
			return ""
		}
		slices.Sort(ids)
		var b strings.Builder
		fmt.Fprintf(&b, "; %d %s, e.g.", len(ids), what)
		for i, id := range ids {
			if i == 3 {
				b.WriteString(" ...")
				break
			}
			fmt.Fprintf(&b, " %d %v", id, byID[id])
		}
		return b.String()
	}
	return fmt.Errorf("of %d ids%s%s%s%s", len(want), some("missing", missing), some("with more than one row", extra),
		some("with one row of the wrong kind", wrong), some("never written", unexpected))
}
