package iceberg

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/internal/pgtest"
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
		BufferID:  "buffer-1",
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
	require.NoError(t, s.Write(ctx, []change.TableChanges{{Table: tbl, Changes: changes}}))

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

	sum := itbl.CurrentSnapshot().Summary.Properties
	require.Equal(t, "buffer-1", sum[PropBufferID])
	require.Equal(t, "1-5", sum[PropEventIDs])
	require.Equal(t, "5", sum[PropMaxEventID])
	require.Equal(t, "1400", sum[PropMaxCommitLSN])
}

// idTable is a small table whose id column carries the event ID, so tests can count what was written.
var idTable = change.Table{Schema: "app", Name: "events", Columns: []change.Column{
	{Name: "id", TypeOID: oidInt8, TypeMod: -1, Key: true},
	col("payload", oidText, -1),
}}

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

func seq(lo, hi int64) []int64 {
	var out []int64
	for id := lo; id <= hi; id++ {
		out = append(out, id)
	}
	return out
}

// writtenIDs returns the sorted id column of app_events.
func writtenIDs(t testing.TB, ctx context.Context, s *Sink) ([]int64, *table.Table) {
	tbl, got := scan(t, ctx, s, table.Identifier{"philotes", "app_events"})
	ids := make([]int64, 0, len(got["id"]))
	for _, v := range got["id"] {
		ids = append(ids, v.(int64))
	}
	slices.Sort(ids)
	return ids, tbl
}

func TestRedelivery(t *testing.T) {
	tests := []struct {
		name       string
		first      [][]int64 // table-changes groups of the first delivery
		second     [][]int64 // of the re-delivery
		want       []int64
		lastRanges string // philotes.event-ids of the last snapshot
	}{
		{
			name:       "overlapping batch",
			first:      [][]int64{seq(1, 10)},
			second:     [][]int64{seq(6, 15)},
			want:       seq(1, 15),
			lastRanges: "11-15",
		},
		{
			name:       "regrouped with holes",
			first:      [][]int64{{1, 2, 3, 7, 8}},
			second:     [][]int64{{2, 3, 4}, {5, 7, 9}},
			want:       []int64{1, 2, 3, 4, 5, 7, 8, 9},
			lastRanges: "5-5,9-9",
		},
		{
			name:       "exact repeat",
			first:      [][]int64{seq(1, 4)},
			second:     [][]int64{seq(1, 4)},
			want:       seq(1, 4),
			lastRanges: "1-4",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t)
			s := newTestSink(t, env.config())
			ctx := testContext(t, 2*time.Minute)
			write := func(groups [][]int64) {
				var batch []change.TableChanges
				for _, g := range groups {
					batch = append(batch, change.TableChanges{Table: idTable, Changes: idChanges(g...)})
				}
				require.NoError(t, s.Write(ctx, batch))
			}
			write(tt.first)
			// A second Sink, as another replica after a crash, sees the same buffer.
			s = newTestSink(t, env.config())
			write(tt.second)

			ids, tbl := writtenIDs(t, ctx, s)
			require.Equal(t, tt.want, ids)
			require.Equal(t, tt.lastRanges, tbl.CurrentSnapshot().Summary.Properties[PropEventIDs])
		})
	}

	t.Run("another buffer's event IDs are not duplicates", func(t *testing.T) {
		env := newTestEnv(t)
		ctx := testContext(t, 2*time.Minute)
		a := newTestSink(t, env.config())
		cfgB := env.config()
		cfgB.BufferID = "buffer-2"
		b := newTestSink(t, cfgB)
		require.NoError(t, a.Write(ctx, []change.TableChanges{{Table: idTable, Changes: idChanges(1, 2)}}))
		require.NoError(t, b.Write(ctx, []change.TableChanges{{Table: idTable, Changes: idChanges(1, 2)}}))
		ids, _ := writtenIDs(t, ctx, a)
		require.Equal(t, []int64{1, 1, 2, 2}, ids)
	})
}

func TestConcurrentAppends(t *testing.T) {
	env := newTestEnv(t)
	ctx := testContext(t, 4*time.Minute)
	const (
		sinks        = 3
		perSink      = 2
		batches      = 4
		batchSize    = 50
		pairsOfSinks = sinks * perSink / 2
	)
	retries := &countingHandler{msg: "iceberg commit conflict, retrying"}
	// The replicas start together on a fresh buffer database, racing to create the catalog tables.
	ss := make([]*Sink, sinks)
	startErrs := make([]error, sinks)
	var starting sync.WaitGroup
	for i := range ss {
		starting.Go(func() {
			cfg := env.config()
			cfg.Logger = slog.New(retries)
			cfg.MaxCommitAttempts = 50
			ss[i], startErrs[i] = New(ctx, cfg)
		})
	}
	starting.Wait()
	for i, s := range ss {
		require.NoError(t, startErrs[i], "start sink %d", i)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
	}
	// Workers 2k and 2k+1 run on different Sinks and deliver the same batches at the same time, as a
	// processor whose buffer transaction was lost and the one that claimed its events again might.
	var wg sync.WaitGroup
	errs := make(chan error, sinks*perSink)
	for w := range sinks * perSink {
		wg.Go(func() {
			s := ss[w%sinks]
			base := int64(w/2) * 1000
			for k := range int64(batches) {
				lo := base + k*batchSize + 1
				if err := s.Write(ctx, []change.TableChanges{{Table: idTable, Changes: idChanges(seq(lo, lo+batchSize-1)...)}}); err != nil {
					errs <- fmt.Errorf("worker %d batch %d: %w", w, k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	var want []int64
	for p := range int64(pairsOfSinks) {
		want = append(want, seq(p*1000+1, p*1000+batches*batchSize)...)
	}
	ids, _ := writtenIDs(t, ctx, ss[0])
	require.Equal(t, want, ids, "every event exactly once")
	t.Logf("%d commit conflicts retried", retries.n.Load())
}

// countingHandler counts the log records with one message.
type countingHandler struct {
	msg string
	n   atomic.Int64
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}

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
	require.NoError(t, s.Write(ctx, []change.TableChanges{{Table: v1, Changes: []change.Change{ins(1, "1", "ann", "5", "1.25")}}}))
	// One batch with the new and the old relation of the same table (a late event of the old one).
	require.NoError(t, s.Write(ctx, []change.TableChanges{
		{Table: v2, Changes: []change.Change{ins(2, "2", "bob", "9999999999", "1234567890.50", "2000-01-02", "1.5")}},
		{Table: v1, Changes: []change.Change{ins(3, "3", "cy", "7", "2.00")}},
	}))

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
}

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
		{"no buffer ID", func(c *Config) { c.BufferID = "" }, "BufferID"},
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

func TestNameCollision(t *testing.T) {
	env := newTestEnv(t)
	s := newTestSink(t, env.config())
	ctx := testContext(t, time.Minute)
	a := change.Table{Schema: "a_b", Name: "c", Columns: idTable.Columns}
	b := change.Table{Schema: "a", Name: "b_c", Columns: idTable.Columns}
	require.NoError(t, s.Write(ctx, []change.TableChanges{{Table: a, Changes: idChanges(1)}}))
	for _, name := range []string{"same Sink", "another Sink"} {
		t.Run(name, func(t *testing.T) {
			if name == "another Sink" {
				s = newTestSink(t, env.config())
			}
			err := s.Write(ctx, []change.TableChanges{{Table: b, Changes: idChanges(2)}})
			require.ErrorContains(t, err, "philotes.a_b_c")
			require.ErrorContains(t, err, "created for source table a_b.c")
		})
	}
}

// TestConflictReusesDataFiles: a Sink whose cached table is stale fails its first commit, reloads, and
// commits the data files it already wrote instead of writing new ones.
func TestConflictReusesDataFiles(t *testing.T) {
	env := newTestEnv(t)
	ctx := testContext(t, time.Minute)
	retries := &countingHandler{msg: "iceberg commit conflict, retrying"}
	cfg := env.config()
	cfg.Logger = slog.New(retries)
	a := newTestSink(t, cfg)
	b := newTestSink(t, env.config())
	require.NoError(t, a.Write(ctx, []change.TableChanges{{Table: idTable, Changes: idChanges(seq(1, 10)...)}}))
	require.NoError(t, b.Write(ctx, []change.TableChanges{{Table: idTable, Changes: idChanges(seq(11, 20)...)}}))
	require.NoError(t, a.Write(ctx, []change.TableChanges{{Table: idTable, Changes: idChanges(seq(21, 30)...)}}))
	require.Equal(t, int64(1), retries.n.Load(), "one conflict")

	ids, _ := writtenIDs(t, ctx, a)
	require.Equal(t, seq(1, 30), ids)
	parquet, err := filepath.Glob(strings.TrimPrefix(env.warehouse, "file://") + "/*/*/data/*.parquet")
	require.NoError(t, err)
	require.Len(t, parquet, 3, "one data file per batch, none left over from the failed attempt")
}

func TestBadValue(t *testing.T) {
	env := newTestEnv(t)
	retries := &countingHandler{msg: "iceberg commit conflict, retrying"}
	cfg := env.config()
	cfg.Logger = slog.New(retries)
	s := newTestSink(t, cfg)
	ctx := testContext(t, time.Minute)
	require.NoError(t, s.Write(ctx, []change.TableChanges{{Table: idTable, Changes: idChanges(1)}}))
	// Another replica moves the table, so the first Sink's cache is stale when its write fails.
	require.NoError(t, newTestSink(t, env.config()).Write(ctx, []change.TableChanges{{Table: idTable, Changes: idChanges(2)}}))

	bad := idChanges(3, 4)
	bad[1].Values[0] = text("four")
	err := s.Write(ctx, []change.TableChanges{{Table: idTable, Changes: bad}})
	require.ErrorContains(t, err, "philotes.app_events")
	require.ErrorContains(t, err, `column "id", event 4`)
	require.Zero(t, retries.n.Load(), "a bad value is not retried")
	ids, _ := writtenIDs(t, ctx, s)
	require.Equal(t, []int64{1, 2}, ids)

	// The Sink's builders are still usable.
	require.NoError(t, s.Write(ctx, []change.TableChanges{{Table: idTable, Changes: idChanges(3, 4)}}))
	ids, _ = writtenIDs(t, ctx, s)
	require.Equal(t, seq(1, 4), ids)
}
