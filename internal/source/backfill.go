package source

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
)

// The source side of a backfill (see internal/buffer/backfill.go for the algorithm): watermarks written
// through the slot as logical decoding messages, chunk boundaries, and chunk reads in a short snapshot.

// markPrefix is the prefix of the backfill's logical decoding messages.
const markPrefix = "philotes.backfill"

// ErrNotBackfillable marks a table that cannot be backfilled as it is (the message says why and what to do).
var ErrNotBackfillable = errors.New("cannot be backfilled")

// sessionParams are the settings the reader's walsender and the backfill connections share, so that a value
// reads the same in the stream and in a chunk.
var sessionParams = map[string]string{"timezone": "UTC", "datestyle": "ISO", "intervalstyle": "postgres", "extra_float_digits": "1"}

// BackfillConn is a connection to the source for backfill work. Not safe for concurrent use.
type BackfillConn struct {
	conn *pgconn.PgConn
}

// ConnectBackfill opens a connection to the source for backfill work.
func ConnectBackfill(ctx context.Context, sourceURL string) (*BackfillConn, error) {
	cfg, err := pgconn.ParseConfig(sourceURL)
	if err != nil {
		return nil, fmt.Errorf("PHILOTES_SOURCE_URL: %w", err)
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["application_name"] = "philotes-backfill"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to source: %w", err)
	}
	return &BackfillConn{conn: conn}, nil
}

// Close closes the connection.
func (c *BackfillConn) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.conn.Close(ctx)
}

// query runs one statement with text results and returns its rows (nil values are NULLs).
func (c *BackfillConn) query(ctx context.Context, sql string, args ...[]byte) ([][][]byte, error) {
	res := c.conn.ExecParams(ctx, sql, args, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	return res.Rows, nil
}

// exec runs statements with the simple protocol and returns the last result's rows.
func (c *BackfillConn) exec(ctx context.Context, sql string) ([][][]byte, error) {
	results, err := c.conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, nil
	}
	return results[len(results)-1].Rows, nil
}

// PublishedTables lists the tables the publication publishes.
func (c *BackfillConn) PublishedTables(ctx context.Context, publication string) ([]change.TableRef, error) {
	rows, err := c.query(ctx, `SELECT c.oid, n.nspname, c.relname FROM pg_publication_tables p
JOIN pg_namespace n ON n.nspname = p.schemaname JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
WHERE p.pubname = $1 ORDER BY 2, 3`, []byte(publication))
	if err != nil {
		return nil, fmt.Errorf("list the tables of publication %s: %w", publication, err)
	}
	out := make([]change.TableRef, 0, len(rows))
	for _, r := range rows {
		oid, err := strconv.ParseUint(string(r[0]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("list the tables of publication %s: %w", publication, err)
		}
		out = append(out, change.TableRef{RelationID: uint32(oid), Schema: string(r[1]), Name: string(r[2])})
	}
	return out, nil
}

// LookupTables resolves schema.table names to tables.
func (c *BackfillConn) LookupTables(ctx context.Context, names []string) ([]change.TableRef, error) {
	var out []change.TableRef
	var missing []string
	for _, name := range names {
		schema, table, _ := strings.Cut(name, ".")
		rows, err := c.query(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, []byte(schema), []byte(table))
		if err != nil {
			return nil, fmt.Errorf("look up table %s: %w", name, err)
		}
		if len(rows) == 0 {
			missing = append(missing, name)
			continue
		}
		oid, _ := strconv.ParseUint(string(rows[0][0]), 10, 32)
		out = append(out, change.TableRef{RelationID: uint32(oid), Schema: schema, Name: table})
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: no such table in the source database: %s (use schema.table)", ErrNotBackfillable, strings.Join(missing, ", "))
	}
	return out, nil
}

// BackfillStart is what starting a table's backfill found out.
type BackfillStart struct {
	// KeyColumns order the chunks: the primary key, or a unique replica identity index.
	KeyColumns []string
	// RowsEstimate is the table's size in rows, from the planner's statistics where there are some.
	RowsEstimate int64
	// XidFloor is a transaction ID taken after the start mark.
	XidFloor uint64
}

// Start chooses the table's chunk key, writes the start mark through the slot, and returns the xid floor.
func (c *BackfillConn) Start(ctx context.Context, t change.TableRef, run int64) (BackfillStart, error) {
	var s BackfillStart
	oid := []byte(strconv.FormatUint(uint64(t.RelationID), 10))
	rows, err := c.query(ctx, "SELECT "+keyColumnsSQL("$1::oid"), oid)
	if err != nil {
		return s, fmt.Errorf("find the key of %s.%s: %w", t.Schema, t.Name, err)
	}
	if k := string(rows[0][0]); k != "" {
		s.KeyColumns = strings.Split(k, keySeparator)
	}
	if len(s.KeyColumns) == 0 {
		return s, fmt.Errorf("%s.%s %w: it has no primary key (or unique replica identity index) to read it in chunks by; add a primary key, or leave it out of the backfill", t.Schema, t.Name, ErrNotBackfillable)
	}
	if _, err := c.query(ctx, fmt.Sprintf("SELECT 1 FROM ONLY %s LIMIT 0", pgx.Identifier{t.Schema, t.Name}.Sanitize())); err != nil {
		return s, fmt.Errorf("%s.%s %w: %v (grant SELECT on it to the source user)", t.Schema, t.Name, ErrNotBackfillable, err)
	}
	// The planner's statistics; a table never analyzed is counted if it is small (64 MiB: a count that takes
	// about as long as a chunk read), else sized at 100 bytes a row.
	rows, err = c.query(ctx, `SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint
	WHEN pg_relation_size(oid) < 67108864 THEN -1 ELSE pg_relation_size(oid) / 100 END FROM pg_class WHERE oid = $1`, oid)
	if err != nil || len(rows) != 1 {
		return s, fmt.Errorf("estimate the size of %s.%s: %w", t.Schema, t.Name, err)
	}
	s.RowsEstimate, _ = strconv.ParseInt(string(rows[0][0]), 10, 64)
	if s.RowsEstimate < 0 {
		rows, err = c.query(ctx, fmt.Sprintf("SELECT count(*) FROM ONLY %s", pgx.Identifier{t.Schema, t.Name}.Sanitize()))
		if err != nil {
			return s, fmt.Errorf("count the rows of %s.%s: %w", t.Schema, t.Name, err)
		}
		s.RowsEstimate, _ = strconv.ParseInt(string(rows[0][0]), 10, 64)
	}
	s.XidFloor, err = c.emit(ctx, fmt.Sprintf("start %d %d", t.RelationID, run))
	if err != nil {
		return s, fmt.Errorf("write the backfill start mark for %s.%s: %w", t.Schema, t.Name, err)
	}
	return s, nil
}

// keySeparator separates the key columns keyColumnsSQL lists (a character no sane column name holds).
const keySeparator = "\x1f"

// keyColumnsSQL is an expression for the key columns of the table whose OID is relid, joined by keySeparator, in
// index order: its replica identity index when it has one (REPLICA IDENTITY USING INDEX), else its primary key;
// empty when it has neither. The stream's old keys are the replica identity's columns, so this is also the
// set of columns pgoutput flags as key in a relation message (for REPLICA IDENTITY DEFAULT or USING INDEX).
func keyColumnsSQL(relid string) string {
	return `COALESCE((
	SELECT string_agg(a.attname, chr(31) ORDER BY k.ord) FROM (
		SELECT x.indrelid, x.indkey, x.indnkeyatts FROM pg_index x JOIN pg_class r ON r.oid = x.indrelid
		WHERE x.indrelid = ` + relid + ` AND (x.indisprimary OR (x.indisreplident AND r.relreplident = 'i'))
		ORDER BY x.indisreplident AND r.relreplident = 'i' DESC LIMIT 1) i
	CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
	JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
	WHERE k.ord <= i.indnkeyatts), '')`
}

// KeyOrder is the order in which a key's columns are encoded (EncodeKey): by name, so that a key reads the same
// whatever order its columns are listed in (index order for chunks, table order in a relation message).
func KeyOrder(cols []string) []string {
	sorted := slices.Clone(cols)
	slices.Sort(sorted)
	return sorted
}

// emit writes a watermark through the slot, then commits a transaction that takes a new transaction ID, so
// that the mark is flushed (and streamed) at once. It returns that transaction ID: every transaction that
// committed before the mark has a smaller one.
func (c *BackfillConn) emit(ctx context.Context, content string) (uint64, error) {
	results, err := c.conn.Exec(ctx, fmt.Sprintf(`BEGIN;
SELECT pg_logical_emit_message(false, %s, %s);
SELECT pg_current_xact_id()::text;
COMMIT;`, quoteLiteral(markPrefix), quoteLiteral(content))).ReadAll()
	if err != nil {
		return 0, err
	}
	if len(results) != 4 || len(results[2].Rows) != 1 {
		return 0, errors.New("unexpected answer to the watermark statements")
	}
	return strconv.ParseUint(string(results[2].Rows[0][0]), 10, 64)
}

// EmitChunkMark writes a chunk attempt's high watermark through the slot.
func (c *BackfillConn) EmitChunkMark(ctx context.Context, attempt uuid.UUID) error {
	if _, err := c.emit(ctx, "chunk "+attempt.String()); err != nil {
		return fmt.Errorf("write a chunk's high watermark: %w", err)
	}
	return nil
}

// parseMark reads a backfill watermark message's content.
func parseMark(content string, lsn uint64) (buffer.Mark, bool) {
	m := buffer.Mark{LSN: lsn}
	f := strings.Fields(content)
	switch {
	case len(f) == 3 && f[0] == "start":
		rel, err1 := strconv.ParseUint(f[1], 10, 32)
		run, err2 := strconv.ParseInt(f[2], 10, 64)
		m.Relation, m.Run = uint32(rel), run
		return m, err1 == nil && err2 == nil
	case len(f) == 2 && f[0] == "chunk":
		a, err := uuid.Parse(f[1])
		m.Attempt = a
		return m, err == nil && a != uuid.Nil
	}
	return m, false
}

// Plan finds up to n chunk boundaries after the key after (nil: the table's start), chunkRows rows apart, each
// with one short index scan. end reports that the table's last key was reached: the chunk after the last
// boundary is the final one.
func (c *BackfillConn) Plan(ctx context.Context, t change.TableRef, keyColumns, after []string, chunkRows, n int) (uppers [][]string, end bool, err error) {
	cols := quoteIdents(keyColumns)
	types, err := c.keyTypes(ctx, t, keyColumns)
	if err != nil {
		return nil, false, err
	}
	for len(uppers) < n {
		var args [][]byte
		where := ""
		if after != nil {
			var cond string
			cond, args = keyBound(keyColumns, types, ">", after, 1)
			where = "WHERE " + cond
		}
		rows, err := c.query(ctx, fmt.Sprintf("SELECT %s FROM ONLY %s %s ORDER BY %s OFFSET %d LIMIT 1",
			cols, pgx.Identifier{t.Schema, t.Name}.Sanitize(), where, cols, chunkRows-1), args...)
		if err != nil {
			return nil, false, fmt.Errorf("plan the chunks of %s.%s: %w", t.Schema, t.Name, err)
		}
		if len(rows) == 0 {
			return uppers, true, nil
		}
		after = make([]string, len(keyColumns))
		for i, v := range rows[0] {
			after[i] = string(v)
		}
		uppers = append(uppers, after)
	}
	return uppers, false, nil
}

// keyBound renders "(k1, k2) op (CAST($i AS t1), CAST($i+1 AS t2))" with the key's own types (keyTypes).
func keyBound(keyColumns, types []string, op string, key []string, first int) (string, [][]byte) {
	vals := make([]string, len(key))
	args := make([][]byte, len(key))
	for i, k := range key {
		vals[i] = fmt.Sprintf("CAST($%d AS %s)", first+i, types[i])
		args[i] = []byte(k)
	}
	return fmt.Sprintf("(%s) %s (%s)", quoteIdents(keyColumns), op, strings.Join(vals, ", ")), args
}

// keyTypes reads the SQL types of the key columns, once per planning step or chunk read.
func (c *BackfillConn) keyTypes(ctx context.Context, t change.TableRef, keyColumns []string) ([]string, error) {
	types := make([]string, len(keyColumns))
	for i, col := range keyColumns {
		rows, err := c.query(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1 AND attname = $2`,
			[]byte(strconv.FormatUint(uint64(t.RelationID), 10)), []byte(col))
		if err != nil || len(rows) != 1 {
			return nil, fmt.Errorf("read the type of %s.%s.%s: %w", t.Schema, t.Name, col, err)
		}
		types[i] = string(rows[0][0])
	}
	return types, nil
}

// Snapshot is a source snapshot (pg_snapshot): which transactions a chunk read saw.
type Snapshot struct {
	Xmin, Xmax uint64
	Xip        []uint64
}

// ParseSnapshot reads pg_snapshot's text form, xmin:xmax:xip,...
func ParseSnapshot(s string) (Snapshot, error) {
	var snap Snapshot
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return snap, fmt.Errorf("bad snapshot %q", s)
	}
	var err1, err2 error
	snap.Xmin, err1 = strconv.ParseUint(parts[0], 10, 64)
	snap.Xmax, err2 = strconv.ParseUint(parts[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return snap, fmt.Errorf("bad snapshot %q: %w", s, err)
	}
	for _, x := range strings.Split(parts[2], ",") {
		if x == "" {
			continue
		}
		v, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return snap, fmt.Errorf("bad snapshot %q: %w", s, err)
		}
		snap.Xip = append(snap.Xip, v)
	}
	return snap, nil
}

// Sees reports whether a committed transaction is visible to the snapshot.
func (s Snapshot) Sees(xid uint64) bool {
	return xid < s.Xmin || (xid < s.Xmax && !slices.Contains(s.Xip, xid))
}

// CurrentXmin is the source's oldest running transaction now: no snapshot taken later has a smaller xmin.
func (c *BackfillConn) CurrentXmin(ctx context.Context) (uint64, error) {
	rows, err := c.query(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`)
	if err != nil || len(rows) != 1 {
		return 0, fmt.Errorf("read the source's xmin: %w", err)
	}
	return strconv.ParseUint(string(rows[0][0]), 10, 64)
}

// ChunkRead is a chunk's rows as read in one snapshot.
type ChunkRead struct {
	Snapshot Snapshot
	// Table is the table's schema as pgoutput describes it (the columns a relation message lists).
	Table change.Table
	// Tuples are the rows in pgoutput TupleData form; Keys their encoded keys (EncodeKey of the key columns in
	// keyOrder).
	Tuples [][]byte
	Keys   [][]byte
	// At is when the rows were read.
	At time.Time
}

// ReadChunk reads the rows lower < key <= upper (nil: unbounded) of the table in one REPEATABLE READ
// transaction, with its snapshot.
func (c *BackfillConn) ReadChunk(ctx context.Context, t change.TableRef, keyColumns, lower, upper []string) (*ChunkRead, error) {
	r := &ChunkRead{}
	var err error
	if r.Table, err = c.relation(ctx, t); err != nil {
		return nil, err
	}
	var conds []string
	var args [][]byte
	if lower != nil || upper != nil {
		types, err := c.keyTypes(ctx, t, keyColumns)
		if err != nil {
			return nil, err
		}
		for _, b := range []struct {
			op  string
			key []string
		}{{">", lower}, {"<=", upper}} {
			if b.key == nil {
				continue
			}
			cond, a := keyBound(keyColumns, types, b.op, b.key, len(args)+1)
			conds, args = append(conds, cond), append(args, a...)
		}
	}
	where := ""
	if len(conds) > 0 {
		where = "WHERE " + strings.Join(conds, " AND ")
	}
	cols := make([]string, len(r.Table.Columns))
	keyIdx := make([]int, 0, len(keyColumns))
	for i, col := range r.Table.Columns {
		cols[i] = col.Name
	}
	for _, kc := range KeyOrder(keyColumns) {
		i := slices.Index(cols, kc)
		if i < 0 {
			return nil, fmt.Errorf("read a chunk of %s.%s: key column %s is not a column of the table any more", t.Schema, t.Name, kc)
		}
		keyIdx = append(keyIdx, i)
	}
	sql := fmt.Sprintf("SELECT %s FROM ONLY %s %s ORDER BY %s", quoteIdents(cols), pgx.Identifier{t.Schema, t.Name}.Sanitize(),
		where, quoteIdents(keyColumns))

	if _, err := c.exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return nil, fmt.Errorf("read a chunk of %s.%s: %w", t.Schema, t.Name, err)
	}
	defer func() { _, _ = c.exec(context.WithoutCancel(ctx), "ROLLBACK") }()
	snap, err := c.query(ctx, `SELECT pg_current_snapshot()::text`)
	if err == nil {
		r.Snapshot, err = ParseSnapshot(string(snap[0][0]))
	}
	if err != nil {
		return nil, fmt.Errorf("read a chunk of %s.%s: snapshot: %w", t.Schema, t.Name, err)
	}
	r.At = time.Now()
	res := c.conn.ExecParams(ctx, sql, args, nil, nil, nil)
	key := make([][]byte, len(keyColumns))
	for res.NextRow() {
		vals := res.Values()
		r.Tuples = append(r.Tuples, EncodeTuple(vals))
		for k, i := range keyIdx {
			key[k] = vals[i]
		}
		r.Keys = append(r.Keys, EncodeKey(key))
	}
	if _, err := res.Close(); err != nil {
		return nil, fmt.Errorf("read a chunk of %s.%s: %w", t.Schema, t.Name, err)
	}
	return r, nil
}

// relation describes the table the way a pgoutput relation message does: its non-generated columns in order,
// with the replica identity's columns flagged as key.
func (c *BackfillConn) relation(ctx context.Context, t change.TableRef) (change.Table, error) {
	tbl := change.Table{Schema: t.Schema, Name: t.Name}
	rows, err := c.query(ctx, `SELECT a.attname, a.atttypid, a.atttypmod,
	CASE c.relreplident WHEN 'f' THEN true
		WHEN 'd' THEN a.attnum = ANY (SELECT unnest(indkey::int2[]) FROM pg_index WHERE indrelid = c.oid AND indisprimary)
		WHEN 'i' THEN a.attnum = ANY (SELECT unnest(indkey::int2[]) FROM pg_index WHERE indrelid = c.oid AND indisreplident)
		ELSE false END
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum`, []byte(strconv.FormatUint(uint64(t.RelationID), 10)))
	if err != nil {
		return tbl, fmt.Errorf("read the columns of %s.%s: %w", t.Schema, t.Name, err)
	}
	for _, r := range rows {
		oid, _ := strconv.ParseUint(string(r[1]), 10, 32)
		mod, _ := strconv.ParseInt(string(r[2]), 10, 32)
		tbl.Columns = append(tbl.Columns, change.Column{Name: string(r[0]), TypeOID: uint32(oid), TypeMod: int32(mod), Key: string(r[3]) == "t"})
	}
	return tbl, nil
}

// EncodeTuple renders text values (nil: NULL) as pgoutput TupleData.
func EncodeTuple(vals [][]byte) []byte {
	n := 2
	for _, v := range vals {
		n += 1 + 4 + len(v)
	}
	out := make([]byte, 0, n)
	out = binary.BigEndian.AppendUint16(out, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			out = append(out, 'n')
			continue
		}
		out = append(out, 't')
		out = binary.BigEndian.AppendUint32(out, uint32(len(v)))
		out = append(out, v...)
	}
	return out
}

// EncodeKey renders a key's text values (nil: NULL) as one comparable byte string.
func EncodeKey(vals [][]byte) []byte {
	var out []byte
	for _, v := range vals {
		if v == nil {
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			continue
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(v)))
		out = append(out, v...)
	}
	return out
}

// quoteIdents renders a column list.
func quoteIdents(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	return strings.Join(q, ", ")
}
