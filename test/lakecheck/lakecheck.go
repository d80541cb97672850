// Package lakecheck reads back what the worker committed to the lake, for the
// tests that check that no source row was lost or written twice.
package lakecheck

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
)

// Arrivals counts, for each value of the id column, the rows of the lake table
// that holds public.<sourceTable> (namespace.public_<sourceTable>) that bring
// the id into the table: insert rows, and snapshot rows (a backfill's copy of a
// row that was there before the table's changes were streamed, e.g. in the
// seconds between a table's creation and its joining the publication). An id
// written once has one arrival. It returns nil and no error while that table
// does not exist.
func Arrivals(ctx context.Context, cat catalog.Catalog, namespace, sourceTable string) (map[int64]int, error) {
	tbl, err := cat.LoadTable(ctx, table.Identifier{namespace, "public_" + sourceTable})
	if errors.Is(err, catalog.ErrNoSuchTable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load %s.public_%s: %w", namespace, sourceTable, err)
	}
	at, err := tbl.Scan(table.WithSelectedFields("id", "_op")).ToArrowTable(ctx)
	if err != nil {
		return nil, fmt.Errorf("scan %s.public_%s: %w", namespace, sourceTable, err)
	}
	defer at.Release()
	out := map[int64]int{}
	idIdx := at.Schema().FieldIndices("id")[0]
	opIdx := at.Schema().FieldIndices("_op")[0]
	for ci, chunk := range at.Column(idIdx).Data().Chunks() {
		ops, ok := at.Column(opIdx).Data().Chunk(ci).(*array.String)
		if !ok {
			return nil, fmt.Errorf("_op column type %T, want string", at.Column(opIdx).Data().Chunk(ci))
		}
		for i := 0; i < chunk.Len(); i++ {
			if op := ops.Value(i); op != "insert" && op != "snapshot" {
				continue
			}
			switch ids := chunk.(type) {
			case *array.Int64:
				out[ids.Value(i)]++
			case *array.Int32:
				out[int64(ids.Value(i))]++
			default:
				return nil, fmt.Errorf("id column type %T, want an integer", chunk)
			}
		}
	}
	return out, nil
}

// Tally compares insert counts per id with the ids that were inserted.
type Tally struct {
	// Missing ids have no insert row, Duplicated ids more than one, and Unexpected ids were never inserted.
	Missing, Duplicated, Unexpected int
}

// OK reports whether every id is there exactly once and nothing else is.
func (t Tally) OK() bool { return t.Missing == 0 && t.Duplicated == 0 && t.Unexpected == 0 }

// Compare tallies counts (insert rows per id) against the inserted ids want.
func Compare(counts map[int64]int, want []int64) Tally {
	var t Tally
	seen := make(map[int64]bool, len(want))
	for _, id := range want {
		seen[id] = true
		switch counts[id] {
		case 0:
			t.Missing++
		case 1:
		default:
			t.Duplicated++
		}
	}
	for id := range counts {
		if !seen[id] {
			t.Unexpected++
		}
	}
	return t
}

// ExactlyOnce is nil when each id 1..n has exactly one insert row in counts
// and no other id has any.
func ExactlyOnce(counts map[int64]int, n int) error {
	want := make([]int64, n)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if t := Compare(counts, want); !t.OK() {
		return fmt.Errorf("%d ids missing, %d written more than once, %d not inserted (want ids 1..%d)",
			t.Missing, t.Duplicated, t.Unexpected, n)
	}
	return nil
}

// Replay reads the lake table that holds public.<sourceTable> and applies its change rows in (_commit_lsn,
// _seq) order, the way any reader of the changelog would: insert, update and snapshot rows set the row of
// their key, delete rows remove it, truncate rows clear the table. It returns the final rows by key, each
// rendered as the listed columns' values joined with "|", and how many snapshot rows each key had.
func Replay(ctx context.Context, cat catalog.Catalog, namespace, sourceTable string, keyCols, cols []string) (rows map[string]string, snapshots map[string]int, err error) {
	tbl, err := cat.LoadTable(ctx, table.Identifier{namespace, "public_" + sourceTable})
	if err != nil {
		return nil, nil, fmt.Errorf("load %s.public_%s: %w", namespace, sourceTable, err)
	}
	fields := append(append([]string{"_op", "_commit_lsn", "_seq"}, keyCols...), cols...)
	at, err := tbl.Scan(table.WithSelectedFields(fields...)).ToArrowTable(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("scan %s.public_%s: %w", namespace, sourceTable, err)
	}
	defer at.Release()
	type change struct {
		op       string
		lsn      int64
		seq      int32
		key, val string
	}
	var changes []change
	idx := make([]int, len(fields))
	for i, f := range fields {
		idx[i] = at.Schema().FieldIndices(f)[0]
	}
	rd := array.NewTableReader(at, -1)
	defer rd.Release()
	for rd.Next() {
		rec := rd.RecordBatch()
		str := func(field, row int) string { return rec.Column(idx[field]).ValueStr(row) }
		for r := 0; r < int(rec.NumRows()); r++ {
			c := change{op: str(0, r)}
			c.lsn = rec.Column(idx[1]).(*array.Int64).Value(r)
			c.seq = rec.Column(idx[2]).(*array.Int32).Value(r)
			var key, val []string
			for i := range keyCols {
				key = append(key, str(3+i, r))
			}
			for i := range cols {
				val = append(val, str(3+len(keyCols)+i, r))
			}
			c.key, c.val = strings.Join(key, "|"), strings.Join(val, "|")
			changes = append(changes, c)
		}
	}
	sort.Slice(changes, func(i, j int) bool {
		if changes[i].lsn != changes[j].lsn {
			return changes[i].lsn < changes[j].lsn
		}
		return changes[i].seq < changes[j].seq
	})
	rows, snapshots = map[string]string{}, map[string]int{}
	for _, c := range changes {
		switch c.op {
		case "insert", "update", "snapshot":
			rows[c.key] = c.val
			if c.op == "snapshot" {
				snapshots[c.key]++
			}
		case "delete":
			delete(rows, c.key)
		case "truncate":
			clear(rows)
		default:
			return nil, nil, fmt.Errorf("unknown _op %q", c.op)
		}
	}
	return rows, snapshots, nil
}
