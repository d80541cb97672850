package iceberg

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/philotes/philotes-worker/internal/change"
)

// benchTable has rows of about 200 bytes of text.
var benchTable = change.Table{Schema: "bench", Name: "orders", Columns: []change.Column{
	{Name: "id", TypeOID: oidInt8, TypeMod: -1, Key: true},
	{Name: "customer", TypeOID: oidText, TypeMod: -1},
	{Name: "amount", TypeOID: oidNumeric, TypeMod: 12<<16 | 2 + 4},
	{Name: "created", TypeOID: oidTimestamptz, TypeMod: -1},
	{Name: "status", TypeOID: oidVarchar, TypeMod: 20},
	{Name: "note", TypeOID: oidText, TypeMod: -1},
}}

const benchRows = 100_000

// benchChanges returns n inserts with event IDs from first on.
func benchChanges(first int64, n int) []change.Change {
	note := strings.Repeat("lorem ipsum ", 9)
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	out := make([]change.Change, n)
	for i := range out {
		id := first + int64(i)
		out[i] = change.Change{
			EventID: id, Op: change.Insert, CommitLSN: uint64(id) * 100, LSN: uint64(id)*100 + 1, CommitTime: base,
			Values: []change.Value{
				{Text: []byte(strconv.FormatInt(id, 10))},
				{Text: []byte(fmt.Sprintf("customer-%031d", id%5000))},
				{Text: []byte(strconv.FormatInt(id%100000, 10) + ".25")},
				{Text: []byte(base.Add(time.Duration(id) * time.Millisecond).Format("2006-01-02 15:04:05.000000-07"))},
				{Text: []byte("shipped")},
				{Text: []byte(note)},
			},
		}
	}
	return out
}

// BenchmarkWrite writes 100k rows per iteration through a Sink (SQL catalog in a local PostgreSQL, file
// warehouse), in batches of the given size, each batch written (Prepare, WriteFiles) and committed (Committed,
// Commit) on its own, and reports rows/s.
func BenchmarkWrite(b *testing.B) {
	for _, batch := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			env := newTestEnv(b)
			s := newTestSink(b, env.config())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			var next, seq int64 = 1, 0
			var textBytes int
			for _, v := range benchChanges(1, 1)[0].Values {
				textBytes += len(v.Text)
			}
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				changes := benchChanges(next, benchRows)
				next += benchRows
				b.StartTimer()
				for lo := 0; lo < len(changes); lo += batch {
					hi := min(lo+batch, len(changes))
					seq++
					writeAndCommit(b, ctx, s, seq, change.TableChanges{Table: benchTable, Changes: changes[lo:hi]})
				}
			}
			b.ReportMetric(float64(b.N*benchRows)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(textBytes), "text-bytes/row")
		})
	}
}

// BenchmarkBuildRecord measures parsing the text values into one Arrow record, without I/O.
func BenchmarkBuildRecord(b *testing.B) {
	sc, err := newTableSchema(benchTable)
	if err != nil {
		b.Fatal(err)
	}
	w, err := newRecordWriter(memory.DefaultAllocator, sc)
	if err != nil {
		b.Fatal(err)
	}
	defer w.release()
	changes := benchChanges(1, benchRows)
	b.ResetTimer()
	for b.Loop() {
		rec, err := w.build(benchTable, changes)
		if err != nil {
			b.Fatal(err)
		}
		rec.Release()
	}
	b.ReportMetric(float64(b.N*benchRows)/b.Elapsed().Seconds(), "rows/s")
}
