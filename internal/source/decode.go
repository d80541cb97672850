package source

import (
	"context"
	"fmt"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
)

// Relations finds the table a buffered event's relation key stands for.
type Relations interface {
	Relation(ctx context.Context, key int64) (change.Table, error)
}

// Decoder turns buffered events back into changes: the reader buffers pgoutput tuple bytes as they came, and
// the processors, which scale out, decode them. The format is known here only.
type Decoder struct{ rel Relations }

// NewDecoder builds a Decoder that looks relations up in rel.
func NewDecoder(rel Relations) *Decoder { return &Decoder{rel: rel} }

// Decode groups the events' changes by relation, in event order. errs follows tables: a relation whose tuples do
// not decode gets a change.ErrUnwritable error (bytes that do not decode stay so however often they are read).
// The error is for a relation that cannot be looked up.
func (d *Decoder) Decode(ctx context.Context, events []buffer.Event) (tables []change.TableChanges, errs []error, err error) {
	index := map[int64]int{}
	for i := range events {
		e := &events[i]
		j, ok := index[e.Relation]
		if !ok {
			t, err := d.rel.Relation(ctx, e.Relation)
			if err != nil {
				return nil, nil, err
			}
			j = len(tables)
			index[e.Relation] = j
			tables = append(tables, change.TableChanges{Table: t})
			errs = append(errs, nil)
		}
		c := change.Change{EventID: e.ID, Op: e.Op, CommitLSN: e.CommitLSN, LSN: e.LSN, Seq: e.Seq, CommitTime: e.CommitTime}
		tuple := e.Tuple
		if e.Op == change.Delete {
			tuple = e.OldTuple
		}
		if tuple != nil {
			t := &tables[j].Table
			vals, err := DecodeTuple(tuple, nil)
			if err == nil && len(vals) > len(t.Columns) {
				err = fmt.Errorf("%d values for %d columns", len(vals), len(t.Columns))
			}
			if err != nil && errs[j] == nil {
				errs[j] = change.Unwritable(fmt.Errorf("decode event %d of %s.%s: %w", e.ID, t.Schema, t.Name, err))
			}
			c.Values = vals
		}
		tables[j].Changes = append(tables[j].Changes, c)
	}
	return tables, errs, nil
}
