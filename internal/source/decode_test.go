package source

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
)

type relations map[int64]change.Table

func (r relations) Relation(_ context.Context, key int64) (change.Table, error) {
	t, ok := r[key]
	if !ok {
		return change.Table{}, errors.New("no such relation")
	}
	return t, nil
}

// Decode groups events by relation in event order; tuples that do not decode, or carry more values than the
// relation has columns, mark only their relation unwritable; an unknown relation fails the whole batch.
func TestDecode(t *testing.T) {
	one := change.Table{Schema: "s", Name: "one", Columns: []change.Column{{Name: "id"}}}
	two := change.Table{Schema: "s", Name: "two", Columns: []change.Column{{Name: "a"}, {Name: "b"}}}
	rels := relations{1: one, 2: two}
	tuple := func(vals ...string) []byte {
		b := make([][]byte, len(vals))
		for i, v := range vals {
			b[i] = []byte(v)
		}
		return EncodeTuple(b)
	}
	cases := []struct {
		name    string
		events  []buffer.Event
		tables  []string // "schema.name:changes"
		badRels []int    // indexes of tables with a decode error
		err     bool
	}{
		{"grouped in event order", []buffer.Event{
			{ID: 1, Relation: 1, Op: change.Insert, Tuple: tuple("1")},
			{ID: 2, Relation: 2, Op: change.Insert, Tuple: tuple("x", "y")},
			{ID: 3, Relation: 1, Op: change.Delete, OldTuple: tuple("1")},
			{ID: 4, Relation: 2, Op: change.Truncate},
		}, []string{"s.one:2", "s.two:2"}, nil, false},
		{"bytes that do not decode", []buffer.Event{
			{ID: 1, Relation: 1, Op: change.Insert, Tuple: []byte{0, 5, 'x'}},
			{ID: 2, Relation: 2, Op: change.Insert, Tuple: tuple("x", "y")},
		}, []string{"s.one:1", "s.two:1"}, []int{0}, false},
		{"more values than columns", []buffer.Event{
			{ID: 1, Relation: 2, Op: change.Insert, Tuple: tuple("x", "y")},
			{ID: 2, Relation: 1, Op: change.Insert, Tuple: tuple("1", "2")},
		}, []string{"s.two:1", "s.one:1"}, []int{1}, false},
		{"unknown relation", []buffer.Event{{ID: 1, Relation: 9, Op: change.Insert, Tuple: tuple("1")}}, nil, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tables, errs, err := NewDecoder(rels).Decode(context.Background(), tc.events)
			if tc.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, tbl := range tables {
				got = append(got, tbl.Table.Schema+"."+tbl.Table.Name+":"+string(rune('0'+len(tbl.Changes))))
			}
			require.Equal(t, tc.tables, got)
			require.Len(t, errs, len(tables))
			for i, e := range errs {
				if slices.Contains(tc.badRels, i) {
					require.ErrorIs(t, e, change.ErrUnwritable, "table %d", i)
				} else {
					require.NoError(t, e, "table %d", i)
				}
			}
		})
	}
}
