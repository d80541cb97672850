package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/test/lakecheck"
)

// backfillTable is a source table of the backfill tests: its key, its value columns, and how its existing
// rows are made.
type backfillTable struct {
	name string
	ddl  string
	key  []string
	cols []string
	fill string // INSERT ... SELECT with $1 = the row count
	rows int
}

// backfillTables are three tables with different kinds of key, 1,000,000 rows together at full size.
func backfillTables(scale int) []backfillTable {
	return []backfillTable{
		{name: "accounts", ddl: `CREATE TABLE accounts (id bigint PRIMARY KEY, v int NOT NULL, note text)`,
			key: []string{"id"}, cols: []string{"v", "note"},
			fill: `INSERT INTO accounts SELECT g, g % 1000, 'account ' || g FROM generate_series(1, $1::int) g`, rows: 500_000 / scale},
		{name: "lines", ddl: `CREATE TABLE lines (id bigint NOT NULL, line int NOT NULL, v int NOT NULL, PRIMARY KEY (id, line))`,
			key: []string{"id", "line"}, cols: []string{"v"},
			fill: `INSERT INTO lines SELECT g / 4 + 1, g % 4, g FROM generate_series(0, $1::int - 1) g`, rows: 300_000 / scale},
		{name: "tags", ddl: `CREATE TABLE tags (id bigint NOT NULL, name text PRIMARY KEY, v int NOT NULL)`,
			key: []string{"name"}, cols: []string{"id", "v"},
			fill: `INSERT INTO tags SELECT g, 'tag-' || md5(g::text), g FROM generate_series(1, $1::int) g`, rows: 200_000 / scale},
	}
}

// churn changes, deletes and inserts rows of every table in small transactions, touching keys all over each
// table (so inside chunks being read), until the returned function stops it and says how many statements ran.
// A failed test stops it too, before its database goes.
func churn(t *testing.T, s setup, tables []backfillTable) (stop func() int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	quit := make(chan struct{})
	var once sync.Once
	stop = func() int {
		once.Do(func() { close(quit) })
		wg.Wait()
		return done
	}
	t.Cleanup(func() { stop() })
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, s.srcURL)
			if err != nil {
				t.Errorf("churn: %v", err)
				return
			}
			defer conn.Close(ctx)
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			next := int64(10_000_000 * (w + 1))
			for {
				select {
				case <-quit:
					return
				default:
				}
				tb := tables[rng.IntN(len(tables))]
				id := rng.Int64N(int64(tb.rows)) + 1
				var sql string
				switch tb.name {
				case "accounts":
					sql = []string{
						fmt.Sprintf(`UPDATE accounts SET v = v + 1, note = 'changed' WHERE id = %d`, id),
						fmt.Sprintf(`DELETE FROM accounts WHERE id = %d`, id),
						fmt.Sprintf(`INSERT INTO accounts VALUES (%d, 1, 'new') ON CONFLICT (id) DO UPDATE SET v = -1`, id),
						fmt.Sprintf(`INSERT INTO accounts VALUES (%d, 2, 'appended')`, next),
					}[rng.IntN(4)]
					next += 2
				case "lines":
					sql = []string{
						fmt.Sprintf(`UPDATE lines SET v = v + 1 WHERE id = %d`, id/4+1),
						fmt.Sprintf(`DELETE FROM lines WHERE id = %d AND line = %d`, id/4+1, id%4),
						fmt.Sprintf(`INSERT INTO lines VALUES (%d, 9, 9) ON CONFLICT DO NOTHING`, id/4+1),
					}[rng.IntN(3)]
				case "tags":
					sql = []string{
						fmt.Sprintf(`UPDATE tags SET v = v + 1 WHERE name = 'tag-' || md5('%d')`, id),
						fmt.Sprintf(`DELETE FROM tags WHERE name = 'tag-' || md5('%d')`, id),
						fmt.Sprintf(`INSERT INTO tags VALUES (%d, 'new-%d', 0)`, next, next),
					}[rng.IntN(3)]
					next++
				}
				if _, err := conn.Exec(ctx, sql); err != nil {
					t.Errorf("churn %q: %v", sql, err)
					return
				}
				mu.Lock()
				done++
				mu.Unlock()
				time.Sleep(time.Millisecond) // a steady load, not a flood: about 2,000 statements a second
			}
		}()
	}
	return stop
}

// sourceRows reads a table's rows the way lakecheck.Replay renders them.
func sourceRows(t *testing.T, s setup, tb backfillTable) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.srcURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	text := func(cols []string) string {
		parts := make([]string, len(cols))
		for i, c := range cols {
			parts[i] = c + "::text"
		}
		return strings.Join(parts, " || '|' || ")
	}
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT %s, %s FROM %s", text(tb.key), text(tb.cols), tb.name))
	require.NoError(t, err)
	out := map[string]string{}
	var k, v string
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error { out[k] = v; return nil })
	require.NoError(t, err)
	return out
}

// requireReplayEqualsSource replays each table's changelog from the lake and compares it with the source, key
// by key; no key may have more than one snapshot row.
func requireReplayEqualsSource(t *testing.T, s setup, tables []backfillTable) {
	t.Helper()
	l := s.lake(t)
	defer l.done()
	for _, tb := range tables {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		got, snaps, err := lakecheck.Replay(ctx, l.cat, "philotes", tb.name, tb.key, tb.cols)
		cancel()
		require.NoError(t, err)
		want := sourceRows(t, s, tb)
		var missing, extra, differ int
		for k, v := range want {
			g, ok := got[k]
			switch {
			case !ok:
				missing++
				if missing < 3 {
					t.Logf("missing %s: source %s", k, v)
				}
			case g != v:
				differ++
				if differ < 3 {
					t.Logf("differ %s: source %s lake %s", k, v, g)
				}
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				extra++
				if extra < 3 {
					t.Logf("extra %s: lake %s", k, v)
				}
			}
		}
		twice := 0
		for _, n := range snaps {
			if n > 1 {
				twice++
			}
		}
		require.Zero(t, missing+extra+differ+twice, "%s: replaying the lake gives %d rows, the source has %d: %d missing, %d extra, %d differ; %d keys have more than one snapshot row",
			tb.name, len(got), len(want), missing, extra, differ, twice)
		t.Logf("%s: %d rows replayed from the lake equal the source (%d snapshot rows)", tb.name, len(got), len(snaps))
	}
}

// waitBackfillDone waits until every table's backfill is done: every chunk's rows are in the buffer. (Whether
// they reached the lake is waitCaughtUp's question, once the churn has stopped: while it runs, the buffer need
// never be empty at the moment it is looked at.)
func (s setup) waitBackfillDone(t *testing.T, tables int, timeout time.Duration) {
	t.Helper()
	eventually(t, "every table's backfill done", timeout, func() bool {
		return s.count(t, `SELECT count(*) FROM philotes.backfill_tables WHERE done_at IS NOT NULL`) == int64(tables)
	})
}

// waitCaughtUp waits until the reader has confirmed everything written at the source so far and the buffer and
// the committer's queue are empty: every change made before the call is in the lake.
func (s setup) waitCaughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.srcURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	// The insert position: the test server commits asynchronously, so the write position may lag behind it.
	var now int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn() - '0/0'`).Scan(&now))
	eventually(t, "the reader caught up and everything is in the lake", timeout, func() bool {
		var confirmed int64
		err := conn.QueryRow(ctx, `SELECT COALESCE(confirmed_flush_lsn - '0/0', 0) FROM pg_replication_slots WHERE slot_name = $1`, s.name).Scan(&confirmed)
		return err == nil && confirmed >= now &&
			s.bufferDepth(t) == 0 && s.count(t, `SELECT count(*) FROM philotes.pending_files`) == 0
	})
}

func createBackfillTables(t *testing.T, s setup, tables []backfillTable) {
	for _, tb := range tables {
		s.exec(t, tb.ddl)
		s.exec(t, tb.fill, tb.rows)
	}
}

// Existing rows reach the lake while inserts, updates and deletes run on the same keys: replaying
// the changelog gives exactly the source's rows.
func TestBackfillUnderConcurrentChanges(t *testing.T) {
	s := newSetup(t, "backfill", "SELECT 1")
	tables := backfillTables(10)
	createBackfillTables(t, s, tables)
	stopChurn := churn(t, s, tables)
	env := []string{"PHILOTES_BACKFILL_CHUNK_ROWS=2000"}
	w1 := s.start(t, "w1", env)
	w2 := s.start(t, "w2", env)
	reader(t, w1, w2)
	s.waitBackfillDone(t, len(tables), 3*time.Minute)
	t.Logf("%d source statements ran during the backfill", stopChurn())
	s.waitCaughtUp(t, time.Minute)
	requireReplayEqualsSource(t, s, tables)
	eventually(t, "the keys recorded during the backfill dropped", 30*time.Second, func() bool {
		return s.count(t, `SELECT count(*) FROM philotes.backfill_keys`) == 0
	})
}

// 1,000,000 existing rows in three tables, concurrent changes, and kill -9 of the reader and of a replica
// reading chunks, mid-backfill: nothing is lost or doubled.
func TestBackfillKillNineMidway(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000 rows")
	}
	s := newSetup(t, "backfillkill", "SELECT 1")
	tables := backfillTables(1)
	createBackfillTables(t, s, tables)
	stopChurn := churn(t, s, tables)
	env := []string{"PHILOTES_BACKFILL_CHUNK_ROWS=5000", "PHILOTES_BACKFILL_WORKERS=3"}
	w1 := s.start(t, "w1", env)
	w2 := s.start(t, "w2", env)
	r := reader(t, w1, w2)
	other := w1
	if r == w1 {
		other = w2
	}
	progressed := func(min float64) func() bool {
		return func() bool {
			return s.count(t, `SELECT count(*) FROM philotes.backfill_chunks WHERE done`) >= int64(min)
		}
	}
	eventually(t, "chunks done", time.Minute, progressed(10))
	signal(t, r, syscall.SIGKILL)
	w3 := s.start(t, "w3", env)
	reader(t, other, w3)
	eventually(t, "more chunks done", time.Minute, progressed(60))
	// other is reading chunks (three at a time) when it dies.
	signal(t, other, syscall.SIGKILL)
	w4 := s.start(t, "w4", env)
	reader(t, w3, w4)
	s.waitBackfillDone(t, len(tables), 5*time.Minute)
	t.Logf("%d source statements ran during the backfill", stopChurn())
	s.waitCaughtUp(t, time.Minute)
	requireReplayEqualsSource(t, s, tables)
}

// With PHILOTES_BACKFILL=off only changes reach the lake; `philotes-worker backfill --tables` copies a table's
// existing rows on demand and exits 0 once they are read, and refuses, with exit status 2 and the reason, a
// table without a key and a table that does not exist. Refusing one table does not hold up the others.
func TestBackfillOnDemand(t *testing.T) {
	s := newSetup(t, "ondemand", ordersDDL+`;
		CREATE TABLE nokey (id bigint, v text);
		ALTER TABLE nokey REPLICA IDENTITY FULL; -- publishable (updates work), but no key to backfill by
		INSERT INTO nokey SELECT g, 'v' FROM generate_series(1, 10) g`)
	insert(t, s, 1, 1000)
	w := s.start(t, "w1", []string{"PHILOTES_BACKFILL=off"})
	reader(t, w)
	insert(t, s, 1001, 1010)
	l := s.lake(t)
	defer l.done()
	s.waitCaughtUp(t, time.Minute)
	require.Len(t, l.inserts(t, "orders"), 10, "with backfill off, only the changes reach the lake")
	require.Zero(t, s.count(t, `SELECT count(*) FROM philotes.backfill_tables`))

	run := func(tables string) (int, string) {
		p := s.start(t, "backfill "+tables, nil, "backfill", "--tables", tables)
		select {
		case <-p.done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("backfill --tables %s did not exit", tables)
		}
		var exit *exec.ExitError
		if errors.As(p.err, &exit) {
			return exit.ExitCode(), p.output()
		}
		require.NoError(t, p.err)
		return 0, p.output()
	}
	code, out := run("public.orders")
	require.Equal(t, 0, code, out)
	s.waitCaughtUp(t, time.Minute)
	orders := backfillTable{name: "orders", key: []string{"id"}, cols: []string{"customer", "paid", "note"}}
	requireReplayEqualsSource(t, s, []backfillTable{orders})

	code, out = run("public.nokey,public.orders")
	require.Equal(t, 2, code, out)
	require.Contains(t, out, "public.nokey cannot be backfilled: it has no primary key")
	require.Equal(t, int64(1), s.count(t, `SELECT count(*) FROM philotes.backfill_tables WHERE table_name = 'orders' AND done_at IS NOT NULL AND run = 2`),
		"the table that can be backfilled was, again")

	code, out = run("public.missing")
	require.Equal(t, 2, code, out)
	require.Contains(t, out, "no such table in the source database: public.missing")
}

// A table with rows joins the publication while the worker runs: the reader sees it with the application's first
// write to it. Its existing rows arrive once each as snapshot rows, and the rows the stream carries arrive once
// each as inserts, with no snapshot copy: the reader records the keys it streams from the moment it sees the
// table. The key is composite, in another order than the table's columns, and one of its names holds a comma.
func TestBackfillTableJoinsThePublication(t *testing.T) {
	s := newSetup(t, "joins", ordersDDL+`;
		CREATE TABLE late (v text, "part, 2" int, id bigint, PRIMARY KEY (id, "part, 2"));
		INSERT INTO late SELECT 'existing', 7, g FROM generate_series(1, 5000) g`)
	w := s.start(t, "w1", []string{"PHILOTES_TABLES=public.orders", "PHILOTES_BACKFILL_CHUNK_ROWS=500"})
	reader(t, w)
	s.exec(t, `ALTER PUBLICATION `+s.name+`_pub ADD TABLE late`)
	for id := 5001; id <= 5100; id++ {
		s.exec(t, `INSERT INTO late VALUES ('streamed', 7, $1)`, id)
	}
	eventually(t, "the backfill of late done", time.Minute, func() bool {
		return s.count(t, `SELECT count(*) FROM philotes.backfill_tables WHERE table_name = 'late' AND done_at IS NOT NULL`) == 1
	})
	s.waitCaughtUp(t, time.Minute)
	l := s.lake(t)
	defer l.done()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, snaps, err := lakecheck.Replay(ctx, l.cat, "philotes", "late", []string{"id", "part, 2"}, []string{"v"})
	require.NoError(t, err)
	require.Len(t, rows, 5100)
	arrivals := l.inserts(t, "late") // insert or snapshot rows per id
	for id := 1; id <= 5100; id++ {
		k := fmt.Sprint(id) + "|7"
		if id <= 5000 {
			require.Equal(t, 1, snaps[k], "existing row %d: one snapshot row", id)
			require.Equal(t, 1, arrivals[int64(id)], "existing row %d arrived once: never inserted through the stream too", id)
		} else {
			require.Zero(t, snaps[k], "streamed row %d must not be copied again by the backfill", id)
			require.Equal(t, 1, arrivals[int64(id)], "streamed row %d: one insert row", id)
		}
	}
}
