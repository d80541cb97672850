package source_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/internal/source"
	"github.com/philotes/philotes-worker/test/pgtest"
	"github.com/philotes/philotes-worker/test/testutil"
)

var server *pgtest.Server

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s, err := pgtest.Start(ctx, pgtest.Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

// observer records what the reader reports.
type observer struct{ active atomic.Int32 }

func (o *observer) SetReaderActive(a bool) {
	if a {
		o.active.Store(1)
	} else {
		o.active.Store(0)
	}
}
func (o *observer) SetRetainedWAL(uint64)       {}
func (o *observer) SetSlotStatus(string)        {}
func (o *observer) ObserveAppend(time.Duration) {}
func (o *observer) Error(string)                {}
func (o *observer) isActive() bool              { return o.active.Load() == 1 }
func exec(t *testing.T, url string, sqls ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, s := range sqls {
		_, err := conn.Exec(ctx, s)
		require.NoError(t, err, s)
	}
}

type env struct {
	name           string // unique per run: database, slot and publication names derive from it
	srcURL, bufURL string
	buf            *buffer.Buffer
}

var runs atomic.Int32

func newEnv(t *testing.T, name string) env {
	name = fmt.Sprintf("%s_%d", name, runs.Add(1))
	src := server.MustCreateDatabase(t, name+"_src")
	bufURL := server.MustCreateDatabase(t, name+"_buf")
	exec(t, src, `CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), at timestamptz)`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	buf, err := buffer.Open(ctx, bufURL, name, 8)
	require.NoError(t, err)
	t.Cleanup(buf.Close)
	return env{name: name, srcURL: src, bufURL: bufURL, buf: buf}
}

func (e env) reader(t *testing.T, slot string, batch int, o *observer) *source.Reader {
	r, err := source.NewReader(source.Config{
		SourceURL: e.srcURL, Slot: slot, Publication: slot + "_pub", BatchSize: batch,
		FlushInterval: 20 * time.Millisecond, StatusInterval: 100 * time.Millisecond, RetryInterval: 100 * time.Millisecond,
		Skip: func(schema, _ string) bool { return schema == "philotes" }, Metrics: o,
	}, e.buf)
	require.NoError(t, err)
	return r
}

// start runs r until the returned stop function is called.
func start(r *source.Reader) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = r.Run(ctx) }()
	return func() { cancel(); wg.Wait() }
}

var eventually = testutil.Eventually

func depth(t *testing.T, b *buffer.Buffer) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := b.Stats(ctx)
	require.NoError(t, err)
	return st.Depth
}

func claimAll(t *testing.T, b *buffer.Buffer) []buffer.Event {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := b.Claim(ctx, 1_000_000)
	require.NoError(t, err)
	defer c.Rollback()
	return c.Events
}

// Inserts, updates, deletes and truncates reach the buffer in commit order with their row data.
func TestReaderBuffersEveryChange(t *testing.T) {
	e := newEnv(t, "every")
	o := &observer{}
	stop := start(e.reader(t, e.name, 100, o))
	defer stop()
	eventually(t, "reader role", 10*time.Second, o.isActive)
	exec(t, e.srcURL,
		`INSERT INTO items VALUES (1, 'apple', 1.50, '2026-11-27 10:00:00+00'), (2, 'pear', NULL, NULL)`,
		`UPDATE items SET name = 'green apple' WHERE id = 1`,
		`DELETE FROM items WHERE id = 2`,
		`TRUNCATE items`)
	eventually(t, "5 buffered events", 10*time.Second, func() bool { return depth(t, e.buf) == 5 })

	events := claimAll(t, e.buf)
	require.Len(t, events, 5)
	ops := ""
	for _, ev := range events {
		ops += string(rune(ev.Op))
	}
	require.Equal(t, "IIUDT", ops)
	tbl, err := e.buf.Relation(context.Background(), events[0].Relation)
	require.NoError(t, err)
	require.Equal(t, "items", tbl.Name)
	require.Equal(t, []string{"id", "name", "price", "at"}, []string{tbl.Columns[0].Name, tbl.Columns[1].Name, tbl.Columns[2].Name, tbl.Columns[3].Name})
	require.True(t, tbl.Columns[0].Key)

	text := func(vals []change.Value) []string {
		out := make([]string, len(vals))
		for i, v := range vals {
			if v.Null {
				out[i] = "NULL"
			} else {
				out[i] = string(v.Text)
			}
		}
		return out
	}
	first, err := source.DecodeTuple(events[0].Tuple, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"1", "apple", "1.50", "2026-11-27 10:00:00+00"}, text(first))
	second, err := source.DecodeTuple(events[1].Tuple, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"2", "pear", "NULL", "NULL"}, text(second))
	upd, err := source.DecodeTuple(events[2].Tuple, nil)
	require.NoError(t, err)
	require.Equal(t, "green apple", text(upd)[1])
	del, err := source.DecodeTuple(events[3].OldTuple, nil)
	require.NoError(t, err)
	require.Equal(t, "2", text(del)[0])
	require.Nil(t, events[4].Tuple)

	for i := 1; i < len(events); i++ {
		prev := buffer.Position{CommitLSN: events[i-1].CommitLSN, Seq: events[i-1].Seq}
		require.True(t, prev.Less(buffer.Position{CommitLSN: events[i].CommitLSN, Seq: events[i].Seq}), "events in commit order")
	}
}

// Two readers on one slot: exactly one holds the role; when it stops, the other takes over and continues
// without losing or repeating a change.
func TestOneReaderPerSlotAndFailover(t *testing.T) {
	e := newEnv(t, "guard")
	a, b := &observer{}, &observer{}
	stopA := start(e.reader(t, e.name, 100, a))
	eventually(t, "first reader active", 10*time.Second, a.isActive)
	stopB := start(e.reader(t, e.name, 100, b))
	defer stopB()
	exec(t, e.srcURL, `INSERT INTO items SELECT g, 'x' FROM generate_series(1, 50) g`)
	eventually(t, "50 events", 10*time.Second, func() bool { return depth(t, e.buf) == 50 })
	require.False(t, b.isActive(), "the second reader must wait while the first holds the slot")

	stopA()
	eventually(t, "second reader takes over", 10*time.Second, b.isActive)
	exec(t, e.srcURL, `INSERT INTO items SELECT g, 'y' FROM generate_series(51, 80) g`)
	eventually(t, "80 events", 10*time.Second, func() bool { return depth(t, e.buf) == 80 })
	seen := map[buffer.Position]bool{}
	for _, ev := range claimAll(t, e.buf) {
		p := buffer.Position{CommitLSN: ev.CommitLSN, Seq: ev.Seq}
		require.False(t, seen[p], "duplicate event at %v", p)
		seen[p] = true
	}
	require.Len(t, seen, 80)
}

// A reader that replays the slot from further back than the buffer's progress does not buffer anything twice,
// even a transaction that the batch size cut in the middle.
func TestRestartReplaysNothingTwice(t *testing.T) {
	e := newEnv(t, "restart")
	// A copy of the slot taken before any change replays everything: only the buffer's progress stops duplicates.
	exec(t, e.srcURL,
		`CREATE PUBLICATION `+e.name+`_pub FOR ALL TABLES`,
		`SELECT pg_create_logical_replication_slot('`+e.name+`', 'pgoutput')`,
		`SELECT pg_copy_logical_replication_slot('`+e.name+`', '`+e.name+`_replay')`)
	o := &observer{}
	stop := start(e.reader(t, e.name, 7, o))
	eventually(t, "reader", 10*time.Second, o.isActive)
	exec(t, e.srcURL, `INSERT INTO items SELECT g, 'a' FROM generate_series(1, 30) g`)
	eventually(t, "30 events", 10*time.Second, func() bool { return depth(t, e.buf) == 30 })
	stop()
	exec(t, e.srcURL, `INSERT INTO items SELECT g, 'b' FROM generate_series(31, 45) g`)

	o2 := &observer{}
	r2, err := source.NewReader(source.Config{
		SourceURL: e.srcURL, Slot: e.name + "_replay", Publication: e.name + "_pub", BatchSize: 7,
		FlushInterval: 20 * time.Millisecond, StatusInterval: 100 * time.Millisecond, RetryInterval: 100 * time.Millisecond,
		Skip: func(schema, _ string) bool { return schema == "philotes" }, Metrics: o2,
	}, e.buf)
	require.NoError(t, err)
	stop2 := start(r2)
	defer stop2()
	exec(t, e.srcURL, `INSERT INTO items VALUES (1000, 'marker')`)
	eventually(t, "the marker row", 10*time.Second, func() bool { return depth(t, e.buf) >= 46 })
	require.Equal(t, int64(46), depth(t, e.buf), "replayed changes must not be buffered twice")
}

// A batch that fills exactly at the last change of a transaction still lets the commit be confirmed, so the
// slot does not keep the transaction's WAL.
func TestBatchEndingAtCommitIsConfirmed(t *testing.T) {
	e := newEnv(t, "exact")
	o := &observer{}
	stop := start(e.reader(t, e.name, 10, o))
	defer stop()
	eventually(t, "reader", 10*time.Second, o.isActive)
	exec(t, e.srcURL, `INSERT INTO items SELECT g, 'z' FROM generate_series(1, 10) g`)
	var commitEnd string
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.srcURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&commitEnd))
	eventually(t, "confirmed_flush_lsn past the commit", 10*time.Second, func() bool {
		var ok bool
		err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = $2`, commitEnd, e.name).Scan(&ok)
		return err == nil && ok
	})
	require.Equal(t, int64(10), depth(t, e.buf))
}
