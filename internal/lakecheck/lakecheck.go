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

// ExactlyOnce is nil when each id 1..n has exactly one insert row in counts
// and no other id has any.
func ExactlyOnce(counts map[int64]int, n int) error {
	missing, dup := 0, 0
	for id := int64(1); id <= int64(n); id++ {
		switch counts[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	if missing != 0 || dup != 0 || len(counts) != n {
		return fmt.Errorf("%d ids missing, %d written more than once, %d distinct ids (want %d)", missing, dup, len(counts), n)
	}
	return nil
}
