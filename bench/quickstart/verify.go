package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"
	"github.com/jackc/pgx/v5"

	"github.com/philotes/philotes-worker/bench/internal/harness"
	"github.com/philotes/philotes-worker/test/lakecheck"
)

// valueColumns are the data columns compared between the source and the replayed lake (updated_at is left
// out: its rendering differs between PostgreSQL and Arrow, and every update also changes qty).
var valueColumns = []string{"payload", "qty", "price"}

// changeRow is one row of a lake table: one change at the source.
type changeRow struct {
	op                      string
	lsn                     int64
	seq                     int32
	id, qty, price, payload string
}

// tableResult is what the check found for one table.
type tableResult struct {
	name                   string
	sourceRows, lakeRows   int // live rows at the source; rows after replaying the lake's changelog
	missing, extra, differ int // source rows not in the replayed lake, lake rows not at the source, rows whose values differ
	src, lake              [3]int
	otherOps               int // change rows other than insert, update, delete (snapshot rows of a backfill)
	dupEvents              int // change rows whose (_commit_lsn, _seq) another row has too
	inserts                lakecheck.Tally
	changes                []changeRow // sorted by (_commit_lsn, _seq)
}

func (r tableResult) ok() bool {
	return r.missing == 0 && r.extra == 0 && r.differ == 0 && r.dupEvents == 0 && r.inserts.OK() && r.src == r.lake
}

// verify reads every table back from the lake, prints a table of the results and a sample, and reports whether
// every source row is in the lake exactly once with its values.
func verify(ctx context.Context, out io.Writer, srcURL string, lake *harness.Lake, ledger *harness.Ledger, tables []string) (bool, error) {
	var results []tableResult
	for _, t := range tables {
		r, err := checkTable(ctx, srcURL, lake, ledger, t)
		if err != nil {
			return false, err
		}
		results = append(results, r)
	}

	const format = "  %-10s %11s %11s %20s %20s  %s\n"
	fmt.Fprintf(out, format, "table", "source rows", "lake rows", "source ins/upd/del", "lake ins/upd/del", "")
	ok := true
	var rows, changes int
	for _, r := range results {
		verdict := "ok"
		if !r.ok() {
			ok = false
			verdict = fmt.Sprintf("FAIL: %d missing, %d not at the source, %d with other values; %d changes twice; inserts: %d missing, %d twice, %d unknown",
				r.missing, r.extra, r.differ, r.dupEvents, r.inserts.Missing, r.inserts.Duplicated, r.inserts.Unexpected)
		}
		fmt.Fprintf(out, format, r.name, fmt.Sprint(r.sourceRows), fmt.Sprint(r.lakeRows), triple(r.src), triple(r.lake), verdict)
		rows += r.sourceRows
		changes += len(r.changes)
	}
	fmt.Fprintln(out, "  (lake rows: the rows left after replaying each lake table's changelog by (_commit_lsn, _seq))")

	printSample(out, results[0])

	if ok {
		fmt.Fprintf(out, "\ncheck PASS: all %d source rows of %d tables are in the lake exactly once with the same %s "+
			"(the changelog of %d changes replayed by (_commit_lsn, _seq)), and every change at the source is in it once\n",
			rows, len(tables), strings.Join(valueColumns, ", "), changes)
	} else {
		fmt.Fprintln(out, "\ncheck FAIL: the lake does not match the source (see the table above)")
	}
	return ok, nil
}

// printSample prints the last changes of a table, and the history of one row: the one with the most changes,
// preferring a deleted one.
func printSample(out io.Writer, r tableResult) {
	if len(r.changes) == 0 {
		return
	}
	const format = "  %-7s %-12s %4s %6s %6s %9s  %s\n"
	print := func(changes []changeRow) {
		fmt.Fprintf(out, format, "_op", "_commit_lsn", "_seq", "id", "qty", "price", "payload")
		for _, c := range changes {
			fmt.Fprintf(out, format, c.op, fmt.Sprintf("%X/%X", uint64(c.lsn)>>32, uint32(c.lsn)), fmt.Sprint(c.seq),
				c.id, c.qty, c.price, abbreviate(c.payload, 24))
		}
	}
	n := min(len(r.changes), 5)
	fmt.Fprintf(out, "\nsample: the last %d changes in %s.public_%s, in (_commit_lsn, _seq) order\n", n, harness.Namespace, r.name)
	print(r.changes[len(r.changes)-n:])

	history := map[string][]changeRow{}
	for _, c := range r.changes {
		history[c.id] = append(history[c.id], c)
	}
	best, bestDeleted := "", false
	for id, h := range history {
		deleted := h[len(h)-1].op == "delete"
		if best == "" || deleted && !bestDeleted || deleted == bestDeleted && len(h) > len(history[best]) ||
			deleted == bestDeleted && len(h) == len(history[best]) && id < best {
			best, bestDeleted = id, deleted
		}
	}
	fmt.Fprintf(out, "\nsample: the history of id %s in %s.public_%s\n", best, harness.Namespace, r.name)
	print(history[best])
}

// abbreviate cuts s to n characters, marking the cut.
func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func triple(v [3]int) string { return fmt.Sprintf("%d/%d/%d", v[0], v[1], v[2]) }

// checkTable compares one lake table with its source table and with the ledger of the load.
func checkTable(ctx context.Context, srcURL string, lake *harness.Lake, ledger *harness.Ledger, name string) (tableResult, error) {
	r := tableResult{name: name}
	ins, upd, del := ledger.Changes(name)
	r.src = [3]int{ins, upd, del}

	// Every change once: the ops and their count, and no (_commit_lsn, _seq) twice.
	changes, err := scanChanges(ctx, lake, name)
	if err != nil {
		return r, err
	}
	r.changes = changes
	for i, c := range changes {
		switch c.op {
		case "insert":
			r.lake[0]++
		case "update":
			r.lake[1]++
		case "delete":
			r.lake[2]++
		default:
			r.otherOps++
		}
		if i > 0 && c.lsn == changes[i-1].lsn && c.seq == changes[i-1].seq {
			r.dupEvents++
		}
	}
	counts, err := lakecheck.Arrivals(ctx, lake.Catalog(), harness.Namespace, name)
	if err != nil {
		return r, err
	}
	r.inserts = lakecheck.Compare(counts, ledger.IDs(name))

	// Every source row once, with its values: the changelog replayed against the source table as it is now.
	replayed, _, err := lakecheck.Replay(ctx, lake.Catalog(), harness.Namespace, name, []string{"id"}, valueColumns)
	if err != nil {
		return r, err
	}
	r.lakeRows = len(replayed)
	source := map[string]string{}
	err = harness.WithConn(ctx, srcURL, func(conn *pgx.Conn) error {
		// trim_scale: Arrow renders a decimal without trailing zeros (12.50 as 12.5).
		rows, err := conn.Query(ctx, `SELECT id::text, payload || '|' || qty || '|' || trim_scale(price)::text FROM `+pgx.Identifier{name}.Sanitize())
		if err != nil {
			return err
		}
		var id, val string
		_, err = pgx.ForEachRow(rows, []any{&id, &val}, func() error {
			source[id] = val
			return nil
		})
		return err
	})
	if err != nil {
		return r, fmt.Errorf("read source table %s: %w", name, err)
	}
	r.sourceRows = len(source)
	for id, val := range source {
		got, ok := replayed[id]
		switch {
		case !ok:
			r.missing++
		case got != val:
			r.differ++
		}
	}
	for id := range replayed {
		if _, ok := source[id]; !ok {
			r.extra++
		}
	}
	return r, nil
}

// scanChanges reads every change row of the lake table of public.<name>, sorted by (_commit_lsn, _seq).
func scanChanges(ctx context.Context, lake *harness.Lake, name string) ([]changeRow, error) {
	tbl, err := lake.Load(ctx, name)
	if err != nil {
		return nil, err
	}
	if tbl == nil {
		return nil, nil
	}
	fields := []string{"_op", "_commit_lsn", "_seq", "id", "qty", "price", "payload"}
	at, err := tbl.Scan(table.WithSelectedFields(fields...)).ToArrowTable(ctx)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", name, err)
	}
	defer at.Release()
	idx := make([]int, len(fields))
	for i, f := range fields {
		idx[i] = at.Schema().FieldIndices(f)[0]
	}
	var out []changeRow
	rd := array.NewTableReader(at, -1)
	defer rd.Release()
	for rd.Next() {
		rec := rd.RecordBatch()
		str := func(field, row int) string { return rec.Column(idx[field]).ValueStr(row) }
		lsns, ok1 := rec.Column(idx[1]).(*array.Int64)
		seqs, ok2 := rec.Column(idx[2]).(*array.Int32)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("scan %s: _commit_lsn is %T and _seq %T, want int64 and int32", name, rec.Column(idx[1]), rec.Column(idx[2]))
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			out = append(out, changeRow{op: str(0, i), lsn: lsns.Value(i), seq: seqs.Value(i),
				id: str(3, i), qty: str(4, i), price: str(5, i), payload: str(6, i)})
		}
	}
	if err := rd.Err(); err != nil {
		return nil, fmt.Errorf("scan %s: %w", name, err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].lsn != out[j].lsn {
			return out[i].lsn < out[j].lsn
		}
		return out[i].seq < out[j].seq
	})
	return out, nil
}
