// Package lakecheck reads back what the worker committed to the lake, for the
// tests that check that no source row was lost or written twice.
package lakecheck

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
)

// Inserts counts, for each value of the id column, the insert rows of the
// lake table that holds public.<sourceTable> (namespace.public_<sourceTable>).
// It returns nil and no error while that table does not exist.
func Inserts(ctx context.Context, cat catalog.Catalog, namespace, sourceTable string) (map[int64]int, error) {
	tbl, err := cat.LoadTable(ctx, table.Identifier{namespace, "public_" + sourceTable})
	if err != nil {
		return nil, nil
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
			if ops.Value(i) != "insert" {
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
