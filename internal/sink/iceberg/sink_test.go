package iceberg

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/test/pgtest"
)

// testEnv is a PostgreSQL buffer database holding the SQL catalog and a file warehouse.
type testEnv struct {
	bufferURL string
	warehouse string
}

func newTestEnv(t testing.TB) testEnv {
	t.Helper()
	srv := pgtest.New(t, pgtest.Options{})
	return testEnv{
		bufferURL: srv.MustCreateDatabase(t, "buffer"),
		warehouse: "file://" + t.TempDir(),
	}
}

func (e testEnv) config() Config {
	return Config{
		Warehouse: e.warehouse,
		BufferURL: e.bufferURL,
		Logger:    slog.New(slog.DiscardHandler),
	}
}

func newTestSink(t testing.TB, cfg Config) *Sink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := New(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// scan reads every row of the table as one map per column name to the column's cells.
func scan(t testing.TB, ctx context.Context, s *Sink, ident table.Identifier) (*table.Table, map[string][]any) {
	t.Helper()
	tbl, err := s.cat.LoadTable(ctx, ident)
	require.NoError(t, err)
	at, err := tbl.Scan().ToArrowTable(ctx)
	require.NoError(t, err)
	defer at.Release()
	out := map[string][]any{}
	for i := range int(at.NumCols()) {
		col := at.Column(i)
		var cells []any
		for _, chunk := range col.Data().Chunks() {
			for r := range chunk.Len() {
				cells = append(cells, cell(chunk, r))
			}
		}
		out[col.Name()] = cells
	}
	return tbl, out
}

// cell converts one Arrow value to a comparable Go value.
func cell(a arrow.Array, i int) any {
	if a.IsNull(i) {
		return nil
	}
	switch a := a.(type) {
	case *array.Boolean:
		return a.Value(i)
	case *array.Int32:
		return a.Value(i)
	case *array.Int64:
		return a.Value(i)
	case *array.Float32:
		if v := a.Value(i); math.IsNaN(float64(v)) {
			return "NaN"
		}
		return a.Value(i)
	case *array.Float64:
		if v := a.Value(i); math.IsNaN(v) {
			return "NaN"
		}
		return a.Value(i)
	case *array.Decimal128:
		return a.Value(i).ToString(a.DataType().(*arrow.Decimal128Type).Scale)
	case *array.Date32:
		return a.Value(i).ToTime()
	case *array.Time64:
		return time.Duration(a.Value(i)) * time.Microsecond
	case *array.Timestamp:
		return time.UnixMicro(int64(a.Value(i))).UTC()
	case *array.String:
		return a.Value(i)
	case *array.LargeString:
		return a.Value(i)
	case *array.Binary:
		return slices.Clone(a.Value(i))
	case *array.LargeBinary:
		return slices.Clone(a.Value(i))
	case *extensions.UUIDArray:
		return a.Value(i)
	case *array.FixedSizeBinary:
		return uuid.Must(uuid.FromBytes(a.Value(i)))
	}
	panic(fmt.Sprintf("unexpected arrow type %s", a.DataType()))
}

func col(name string, oid uint32, typmod int32) change.Column {
	return change.Column{Name: name, TypeOID: oid, TypeMod: typmod}
}

func text(s string) change.Value { return change.Value{Text: []byte(s)} }

var null = change.Value{Null: true}

// writeAndCommit is a processor and a committer in one: Prepare and WriteFiles (a new write UUID each) for every
// TableChanges, then, per table in order of first appearance, Committed and one Commit of all its files with
// the given sequence number. It returns the files written, by table name.
func writeAndCommit(t testing.TB, ctx context.Context, s *Sink, seq int64, tcs ...change.TableChanges) map[string][]File {
	t.Helper()
	byTable := map[string][]File{}
	var order []string
	for i := range tcs {
		_, err := s.Prepare(ctx, tcs[i].Table)
		require.NoError(t, err)
		files, err := s.WriteFiles(ctx, &tcs[i], uuid.New())
		require.NoError(t, err)
		name := TableName(tcs[i].Table)
		if _, ok := byTable[name]; !ok {
			order = append(order, name)
		}
		byTable[name] = append(byTable[name], files...)
	}
	for _, name := range order {
		commitFiles(t, ctx, s, name, seq, byTable[name])
	}
	return byTable
}

// commitFiles is the committer's part: Committed, then one Commit of the files with sequence number seq.
func commitFiles(t testing.TB, ctx context.Context, s *Sink, name string, seq int64, files []File) {
	t.Helper()
	_, err := s.Committed(ctx, name)
	require.NoError(t, err)
	require.NoError(t, s.Commit(ctx, name, seq, encoded(files), maxLSN(files)))
}

func encoded(files []File) [][]byte {
	out := make([][]byte, len(files))
	for i, f := range files {
		out[i] = f.Encoded
	}
	return out
}

func maxLSN(files []File) uint64 {
	var m uint64
	for _, f := range files {
		m = max(m, f.MaxCommitLSN)
	}
	return m
}

// localPath is the file system path of a file:// location.
func localPath(location string) string { return strings.TrimPrefix(location, "file://") }

// filesUnder lists the files under a file:// location whose names end with suffix, as sorted base names; a
// missing folder has none.
func filesUnder(t testing.TB, location, suffix string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(localPath(location), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, suffix) {
			out = append(out, filepath.Base(p))
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	slices.Sort(out)
	return out
}

// TestRoundTrip proves that every supported type survives a write and a commit, and that the commit marks
// the snapshot (commit seq, max commit LSN) and the table (committed seq).
func TestRoundTrip(t *testing.T) {
	env := newTestEnv(t)
	s := newTestSink(t, env.config())
	ctx := testContext(t, 2*time.Minute)

	const numericTypmod = 10<<16 | 2 + 4
	tbl := change.Table{Schema: "public", Name: "all_types", Columns: []change.Column{
		{Name: "id", TypeOID: oidInt4, TypeMod: -1, Key: true},
		col("b", oidBool, -1), col("i2", oidInt2, -1), col("i8", oidInt8, -1),
		col("f4", oidFloat4, -1), col("f8", oidFloat8, -1),
		col("n", oidNumeric, numericTypmod), col("nu", oidNumeric, -1),
		col("t", oidText, -1), col("vc", oidVarchar, 14), col("bp", oidBpchar, 9), col("nm", oidName, -1),
		col("d", oidDate, -1), col("ts", oidTimestamp, -1), col("tstz", oidTimestamptz, -1), col("tm", oidTime, -1),
		col("u", oidUUID, -1), col("by", oidBytea, -1), col("j", oidJSON, -1), col("jb", oidJSONB, -1),
		col("arr", 1007, -1), col("iv", 1186, -1),
	}}
	row1 := []change.Value{
		text("1"), text("t"), text("-32768"), text("9223372036854775807"),
		text("1.5"), text("NaN"),
		text("12345678.90"), text("3.14159265358979323846264338327950288"),
		text("héllo"), text("varchar"), text("bpchar   "), text("name"),
		text("2026-11-27"), text("2026-11-27 10:00:00.123456"), text("2026-11-27 10:00:00.123456+00"), text("23:59:59.999999"),
		text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), text(`\x0a0b`), text(`{"a": 1}`), text(`{"b": [1, 2]}`),
		text("{1,2,3}"), text("1 day 02:00:00"),
	}
	row2 := make([]change.Value, len(tbl.Columns))
	row2[0] = text("2")
	for i := 1; i < len(row2); i++ {
		row2[i] = null
	}
	row2[5] = text("-Infinity")
	update1 := slices.Clone(row1)
	update1[1] = text("f")
	update1[8] = change.Value{Unchanged: true} // unchanged TOASTed text
	delete2 := make([]change.Value, len(tbl.Columns))
	delete2[0] = text("2")
	for i := 1; i < len(delete2); i++ {
		delete2[i] = null
	}

	commitTime := time.Date(2026, 11, 27, 10, 0, 1, 500000000, time.UTC)
	mk := func(id int64, op change.Op, lsn uint64, seq int32, vals []change.Value) change.Change {
		return change.Change{EventID: id, Op: op, CommitLSN: 1000 + lsn/100*100, LSN: lsn, Seq: seq, CommitTime: commitTime, Values: vals}
	}
	changes := []change.Change{
		mk(1, change.Insert, 110, 0, row1),
		mk(2, change.Insert, 120, 1, row2),
		mk(3, change.Update, 210, 0, update1),
		mk(4, change.Delete, 310, 0, delete2),
		mk(5, change.Truncate, 410, 0, nil),
	}
	files := writeAndCommit(t, ctx, s, 7, change.TableChanges{Table: tbl, Changes: changes})
	require.Len(t, files["public_all_types"], 1)
	f := files["public_all_types"][0]
	require.Equal(t, "public_all_types", f.Table)
	require.Equal(t, int64(5), f.Records)
	require.Equal(t, uint64(1400), f.MaxCommitLSN)
	require.True(t, commitTime.Equal(f.OldestCommitTime))
	require.Positive(t, f.Bytes)

	ident := table.Identifier{"philotes", "public_all_types"}
	itbl, got := scan(t, ctx, s, ident)

	ts := time.Date(2026, 11, 27, 10, 0, 0, 123456000, time.UTC)
	day := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	u := uuid.MustParse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
	tm := 23*time.Hour + 59*time.Minute + 59*time.Second + 999999*time.Microsecond
	want := map[string][]any{
		"id":           {int32(1), int32(2), int32(1), int32(2), nil},
		"b":            {true, nil, false, nil, nil},
		"i2":           {int32(-32768), nil, int32(-32768), nil, nil},
		"i8":           {int64(math.MaxInt64), nil, int64(math.MaxInt64), nil, nil},
		"f4":           {float32(1.5), nil, float32(1.5), nil, nil},
		"f8":           {"NaN", math.Inf(-1), "NaN", nil, nil},
		"n":            {"12345678.90", nil, "12345678.90", nil, nil},
		"nu":           {"3.14159265358979323846264338327950288", nil, "3.14159265358979323846264338327950288", nil, nil},
		"t":            {"héllo", nil, nil, nil, nil},
		"vc":           {"varchar", nil, "varchar", nil, nil},
		"bp":           {"bpchar   ", nil, "bpchar   ", nil, nil},
		"nm":           {"name", nil, "name", nil, nil},
		"d":            {day, nil, day, nil, nil},
		"ts":           {ts, nil, ts, nil, nil},
		"tstz":         {ts, nil, ts, nil, nil},
		"tm":           {tm, nil, tm, nil, nil},
		"u":            {u, nil, u, nil, nil},
		"by":           {[]byte{0x0a, 0x0b}, nil, []byte{0x0a, 0x0b}, nil, nil},
		"j":            {`{"a": 1}`, nil, `{"a": 1}`, nil, nil},
		"jb":           {`{"b": [1, 2]}`, nil, `{"b": [1, 2]}`, nil, nil},
		"arr":          {"{1,2,3}", nil, "{1,2,3}", nil, nil},
		"iv":           {"1 day 02:00:00", nil, "1 day 02:00:00", nil, nil},
		"_op":          {"insert", "insert", "update", "delete", "truncate"},
		"_lsn":         {int64(110), int64(120), int64(210), int64(310), int64(410)},
		"_commit_lsn":  {int64(1100), int64(1100), int64(1200), int64(1300), int64(1400)},
		"_seq":         {int32(0), int32(1), int32(0), int32(0), int32(0)},
		"_commit_time": {commitTime, commitTime, commitTime, commitTime, commitTime},
	}
	for name, w := range want {
		require.Equal(t, w, got[name], "column %s", name)
	}
	require.Len(t, got, len(want), "no other columns")

	types := map[string]string{
		"id": "int", "b": "boolean", "i2": "int", "i8": "long", "f4": "float", "f8": "double",
		"n": "decimal(10, 2)", "nu": "string", "t": "string", "d": "date", "ts": "timestamp",
		"tstz": "timestamptz", "tm": "time", "u": "uuid", "by": "binary", "j": "string", "arr": "string",
		"_op": "string", "_lsn": "long", "_commit_lsn": "long", "_seq": "int", "_commit_time": "timestamptz",
	}
	for name, typ := range types {
		f, ok := itbl.Schema().FindFieldByName(name)
		require.True(t, ok, name)
		require.Equal(t, typ, f.Type.String(), "type of %s", name)
		require.Equal(t, name[0] == '_', f.Required, "required %s", name)
	}

	require.Len(t, itbl.Metadata().Snapshots(), 1, "one commit, one snapshot")
	sum := itbl.CurrentSnapshot().Summary.Properties
	require.Equal(t, "7", sum[PropCommitSeq])
	require.Equal(t, "1400", sum[PropMaxCommitLSN])
	require.Equal(t, "1", sum["added-data-files"])
	require.Equal(t, "7", itbl.Properties()[PropCommittedSeq])
	committed, err := s.Committed(ctx, "public_all_types")
	require.NoError(t, err)
	require.Equal(t, int64(7), committed)
}

// idTable is a small table whose id column carries the event ID, so tests can count what was written.
var idTable = change.Table{Schema: "app", Name: "events", Columns: []change.Column{
	{Name: "id", TypeOID: oidInt8, TypeMod: -1, Key: true},
	col("payload", oidText, -1),
}}

const idTableName = "app_events"

func idChanges(ids ...int64) []change.Change {
	out := make([]change.Change, len(ids))
	for i, id := range ids {
		out[i] = change.Change{
			EventID: id, Op: change.Insert, CommitLSN: uint64(id) * 10, LSN: uint64(id) * 10, CommitTime: time.Unix(id, 0),
			Values: []change.Value{text(strconv.FormatInt(id, 10)), text("payload " + strconv.FormatInt(id, 10))},
		}
	}
	return out
}

// idTC is a TableChanges of idTable with the given IDs.
func idTC(ids ...int64) change.TableChanges {
	return change.TableChanges{Table: idTable, Changes: idChanges(ids...)}
}

// idRange returns lo..hi.
func idRange(lo, hi int64) []int64 {
	var out []int64
	for id := lo; id <= hi; id++ {
		out = append(out, id)
	}
	return out
}

// writtenIDs returns the sorted id column of app_events.
func writtenIDs(t testing.TB, ctx context.Context, s *Sink) ([]int64, *table.Table) {
	t.Helper()
	tbl, got := scan(t, ctx, s, table.Identifier{"philotes", idTableName})
	ids := make([]int64, 0, len(got["id"]))
	for _, v := range got["id"] {
		ids = append(ids, v.(int64))
	}
	slices.Sort(ids)
	return ids, tbl
}

// TestSchemaEvolution proves that new source columns are added and widened types promoted before a write,
// and that a batch mixing the new and the old relation of one table lands in one commit.
func TestSchemaEvolution(t *testing.T) {
	env := newTestEnv(t)
	s := newTestSink(t, env.config())
	ctx := testContext(t, 2*time.Minute)

	v1 := change.Table{Schema: "app", Name: "people", Columns: []change.Column{
		{Name: "id", TypeOID: oidInt4, TypeMod: -1, Key: true}, col("name", oidText, -1), col("qty", oidInt4, -1),
		col("price", oidNumeric, 5<<16|2+4),
	}}
	// v2 adds two columns and widens qty (int to bigint) and price (numeric(5,2) to numeric(12,2)).
	v2 := change.Table{Schema: "app", Name: "people", Columns: []change.Column{
		{Name: "id", TypeOID: oidInt4, TypeMod: -1, Key: true}, col("name", oidText, -1), col("qty", oidInt8, -1),
		col("price", oidNumeric, 12<<16|2+4), col("born", oidDate, -1), col("score", oidFloat8, -1),
	}}
	ins := func(id int64, vals ...string) change.Change {
		c := change.Change{EventID: id, Op: change.Insert, LSN: uint64(id), CommitLSN: uint64(id), CommitTime: time.Unix(0, 0)}
		for _, v := range vals {
			c.Values = append(c.Values, text(v))
		}
		return c
	}
	writeAndCommit(t, ctx, s, 1, change.TableChanges{Table: v1, Changes: []change.Change{ins(1, "1", "ann", "5", "1.25")}})
	// One batch with the new and the old relation of the same table (a late event of the old one).
	files := writeAndCommit(t, ctx, s, 2,
		change.TableChanges{Table: v2, Changes: []change.Change{ins(2, "2", "bob", "9999999999", "1234567890.50", "2000-01-02", "1.5")}},
		change.TableChanges{Table: v1, Changes: []change.Change{ins(3, "3", "cy", "7", "2.00")}},
	)
	require.Len(t, files["app_people"], 2)

	tbl, got := scan(t, ctx, s, table.Identifier{"philotes", "app_people"})
	var fields []string
	for _, f := range tbl.Schema().Fields() {
		fields = append(fields, f.Name+" "+f.Type.String())
	}
	require.Equal(t, []string{
		"id int", "name string", "qty long", "price decimal(12, 2)",
		"_op string", "_lsn long", "_commit_lsn long", "_seq int", "_commit_time timestamptz",
		"born date", "score double",
	}, fields)

	rows := map[int32][]any{}
	for i, id := range got["id"] {
		rows[id.(int32)] = []any{got["name"][i], got["qty"][i], got["price"][i], got["born"][i], got["score"][i]}
	}
	require.Equal(t, map[int32][]any{
		1: {"ann", int64(5), "1.25", nil, nil},
		2: {"bob", int64(9999999999), "1234567890.50", time.Date(2000, 1, 2, 0, 0, 0, 0, time.UTC), 1.5},
		3: {"cy", int64(7), "2.00", nil, nil},
	}, rows)
	require.Len(t, tbl.Metadata().Snapshots(), 2, "one snapshot per commit")
	require.Equal(t, "2", tbl.Properties()[PropCommittedSeq])
}

// TestBadConfig proves that New reports each bad setting by name.
func TestBadConfig(t *testing.T) {
	env := newTestEnv(t)
	srvURL := env.bufferURL
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"no warehouse", func(c *Config) { c.Warehouse = "" }, "Warehouse"},
		{"unknown warehouse scheme", func(c *Config) { c.Warehouse = "ftp://host/lake" }, "Warehouse"},
		{"no buffer URL", func(c *Config) { c.BufferURL = "" }, "BufferURL"},
		{"bad buffer URL", func(c *Config) { c.BufferURL = "postgres://%zz" }, "BufferURL"},
		{"missing buffer database", func(c *Config) {
			c.BufferURL = srvURL[:len(srvURL)-len("buffer?sslmode=disable")] + "nope?sslmode=disable"
		}, "BufferURL"},
		{"unknown catalog scheme", func(c *Config) { c.CatalogURI = "thrift://host:9083" }, "CatalogURI"},
		{"unreachable REST catalog", func(c *Config) { c.CatalogURI = "http://127.0.0.1:1/catalog" }, "CatalogURI"},
		{"negative commit attempts", func(c *Config) { c.MaxCommitAttempts = -1 }, "MaxCommitAttempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t, 30*time.Second)
			cfg := env.config()
			tt.edit(&cfg)
			s, err := New(ctx, cfg)
			if err == nil {
				s.Close()
			}
			require.ErrorContains(t, err, tt.wantErr)
			t.Log(err)
		})
	}
}

// TestNameCollision proves that two source tables whose names join to the same Iceberg table name fail
// loudly in Prepare, in the Sink that created the table and in another one.
func TestNameCollision(t *testing.T) {
	env := newTestEnv(t)
	s := newTestSink(t, env.config())
	ctx := testContext(t, time.Minute)
	a := change.Table{Schema: "a_b", Name: "c", Columns: idTable.Columns}
	b := change.Table{Schema: "a", Name: "b_c", Columns: idTable.Columns}
	writeAndCommit(t, ctx, s, 1, change.TableChanges{Table: a, Changes: idChanges(1)})
	for _, name := range []string{"same Sink", "another Sink"} {
		t.Run(name, func(t *testing.T) {
			if name == "another Sink" {
				s = newTestSink(t, env.config())
			}
			_, err := s.Prepare(ctx, b)
			require.ErrorContains(t, err, "philotes.a_b_c")
			require.ErrorContains(t, err, "created for source table a_b.c")
			require.ErrorIs(t, err, change.ErrUnwritable, "the worker parks the table")
			// WriteFiles without a successful Prepare refuses too, instead of writing into a's table.
			_, err = s.WriteFiles(ctx, &change.TableChanges{Table: b, Changes: idChanges(2)}, uuid.New())
			require.Error(t, err)
		})
	}
}

// TestBadValue proves that a value that does not parse fails WriteFiles naming the table, column and event,
// writes no file, and leaves the Sink's builders usable.
func TestBadValue(t *testing.T) {
	env := newTestEnv(t)
	s := newTestSink(t, env.config())
	ctx := testContext(t, time.Minute)
	writeAndCommit(t, ctx, s, 1, idTC(1))
	// Another replica moves the table, so the first Sink's cached table is stale when its write fails.
	writeAndCommit(t, ctx, newTestSink(t, env.config()), 2, idTC(2))

	loc, err := s.Prepare(ctx, idTable)
	require.NoError(t, err)
	before := filesUnder(t, loc, ".parquet")
	bad := idTC(3, 4)
	bad.Changes[1].Values[0] = text("four")
	files, err := s.WriteFiles(ctx, &bad, uuid.New())
	require.ErrorContains(t, err, "philotes.app_events")
	require.ErrorContains(t, err, `column "id", event 4`)
	require.ErrorIs(t, err, change.ErrUnwritable, "the worker parks the table")
	require.Empty(t, files)
	require.Equal(t, before, filesUnder(t, loc, ".parquet"), "no file written")
	ids, _ := writtenIDs(t, ctx, s)
	require.Equal(t, []int64{1, 2}, ids)

	// The Sink's builders are still usable.
	writeAndCommit(t, ctx, s, 3, idTC(3, 4))
	ids, _ = writtenIDs(t, ctx, s)
	require.Equal(t, idRange(1, 4), ids)
}

// A source column named like a change column cannot be written, whether the table has it from the start or
// gets it later; the error says so and marks the table's changes unwritable (the worker parks the table).
func TestChangeColumnClash(t *testing.T) {
	env := newTestEnv(t)
	s := newTestSink(t, env.config())
	ctx := testContext(t, time.Minute)
	withOp := func(name string) change.Table {
		return change.Table{Schema: "app", Name: name, Columns: append(slices.Clone(idTable.Columns),
			change.Column{Name: "_op", TypeOID: 25, TypeMod: -1})}
	}
	writeAndCommit(t, ctx, s, 1, change.TableChanges{Table: change.Table{Schema: "app", Name: "later", Columns: idTable.Columns}, Changes: idChanges(1)})
	for _, tc := range []struct {
		name  string
		table change.Table
	}{
		{"at creation", withOp("fresh")},
		{"added later", withOp("later")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Prepare(ctx, tc.table)
			require.ErrorContains(t, err, `source column "_op" clashes with a change column`)
			require.ErrorIs(t, err, change.ErrUnwritable)
		})
	}
}

// The SQL catalog's own tables are the ones IsCatalogTable names (the reader skips their changes when the buffer
// database is the source): an iceberg-go that named them differently fails here.
func TestCatalogTablesAreKnown(t *testing.T) {
	env := newTestEnv(t)
	newTestSink(t, env.config())
	ctx := testContext(t, time.Minute)
	cfg, err := pgx.ParseConfig(env.bufferURL)
	require.NoError(t, err)
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT table_schema, table_name FROM information_schema.tables
WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 2`)
	require.NoError(t, err)
	defer rows.Close()
	var seen []string
	for rows.Next() {
		var schema, name string
		require.NoError(t, rows.Scan(&schema, &name))
		require.True(t, IsCatalogTable(schema, name), "%s.%s", schema, name)
		seen = append(seen, name)
	}
	require.NoError(t, rows.Err())
	require.ElementsMatch(t, catalogTables, seen)
}
