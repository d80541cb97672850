package integration

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/test/lakecheck"
)

// A table whose changes cannot be written is parked: its events wait in the buffer, a metric and a log line say
// which and why, and the other tables' rows all land, also those committed in the same transactions. A cause
// that is fixed resumes the table by itself, with every row once.
func TestPoisonTableIsParked(t *testing.T) {
	// A source column named like one of the lake's change columns cannot be written.
	s := newSetup(t, "parked", ordersDDL+`; CREATE TABLE poison (id bigint PRIMARY KEY, _op text)`)
	w := s.start(t, "w1", nil)
	reader(t, w)
	for i := 0; i < 10; i++ { // both tables in every transaction, so in every claimed chunk
		s.exec(t, fmt.Sprintf(`BEGIN; INSERT INTO poison VALUES (%d, 'x'); COMMIT`, i+1))
		insert(t, s, i*10+1, i*10+10)
		s.exec(t, fmt.Sprintf(`INSERT INTO poison VALUES (%d, 'y')`, i+101))
	}
	l := s.lake(t)
	defer l.done()
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", 100, time.Minute), 100)

	eventually(t, "poison parked with its 20 events", 30*time.Second, func() bool {
		return w.metric("philotes_parked_tables") == 1 && w.metric("philotes_parked_events") == 20
	})
	require.Equal(t, int64(20), s.count(t, `SELECT count(*) FROM philotes.parked_events WHERE schema_name = 'public' AND table_name = 'poison'`))
	require.Contains(t, w.output(), "parked a table whose changes cannot be written")
	require.Contains(t, w.output(), `source column \"_op\" clashes`)
	require.True(t, w.ready(), "a parked table does not make the replica unready: it writes the others")
	require.Zero(t, s.bufferDepth(t), "parked events are not the processors' queue")

	// A cause outside the rows: the lake table is changed so that the worker refuses to write to it (a commit
	// retry property breaks exactly-once commits). orders is parked while poison stays parked; fixing the property
	// resumes orders, with every row once.
	signal(t, w, syscall.SIGTERM)
	eventually(t, "w1 stopped", time.Minute, w.exited)
	setProperty(t, l, "public_orders", table.CommitNumRetriesKey, "3")
	w2 := s.start(t, "w2", nil)
	reader(t, w2)
	insert(t, s, 101, 150)
	eventually(t, "orders parked too", time.Minute, func() bool { return w2.metric("philotes_parked_tables") == 2 })
	require.Contains(t, w2.output(), "must be 0 for exactly-once commits")

	setProperty(t, l, "public_orders", table.CommitNumRetriesKey, "0")
	eventually(t, "orders resumed by itself", 2*time.Minute, func() bool { return w2.metric("philotes_parked_tables") == 1 })
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", 150, time.Minute), 150)
	require.Contains(t, w2.output(), "parked table: wrote its waiting events")
	insert(t, s, 151, 160) // and it flows as before
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", 160, time.Minute), 160)
	require.Equal(t, int64(20), s.count(t, `SELECT count(*) FROM philotes.parked_events`), "poison still waits")
}

func setProperty(t *testing.T, l lake, name, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tbl, err := l.cat.LoadTable(ctx, table.Identifier{"philotes", name})
	require.NoError(t, err)
	txn := tbl.NewTransaction()
	require.NoError(t, txn.SetProperties(map[string]string{key: value}))
	_, err = txn.Commit(ctx)
	require.NoError(t, err)
}

// Without PHILOTES_TABLES the worker's publication takes in the tables created later, but only those with a
// replica identity: a table without one stays out (the application's UPDATE on it keeps working) with a warning,
// and joins once it gets a key. A table that joins brings its existing rows (backfill) and its changes, each
// once.
func TestNewTablesJoinThePublication(t *testing.T) {
	s := newSetup(t, "joins", ordersDDL)
	w := s.start(t, "w1", nil)
	reader(t, w)
	require.Equal(t, int64(1), s.countSource(t, `SELECT count(*) FROM pg_publication WHERE pubname = $1 AND NOT puballtables`, s.name+"_pub"),
		"a publication that lists its tables, not FOR ALL TABLES")

	s.exec(t, `CREATE TABLE later (id bigint PRIMARY KEY, v text); INSERT INTO later SELECT g, 'old' FROM generate_series(1, 20) g;
		CREATE TABLE later_nopk (a int); INSERT INTO later_nopk VALUES (1)`)
	published := func(tbl string) bool {
		return s.countSource(t, `SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND tablename = $2`, s.name+"_pub", tbl) == 1
	}
	eventually(t, "later joins the publication", time.Minute, func() bool { return published("later") })
	eventually(t, "a warning names later_nopk", 30*time.Second, func() bool {
		return strings.Contains(w.output(), "is not published") && strings.Contains(w.output(), "public.later_nopk")
	})
	require.False(t, published("later_nopk"))
	s.exec(t, `UPDATE later_nopk SET a = 2`) // the application's statement still works

	s.exec(t, `INSERT INTO later SELECT g, 'new' FROM generate_series(21, 40) g; UPDATE later SET v = 'changed' WHERE id IN (5, 25)`)
	s.exec(t, `ALTER TABLE later_nopk ADD PRIMARY KEY (a)`)
	eventually(t, "later_nopk joins once it has a key", time.Minute, func() bool { return published("later_nopk") })

	l := s.lake(t)
	defer l.done()
	want := map[string]string{}
	for i := 1; i <= 40; i++ {
		v := "old"
		if i > 20 {
			v = "new"
		}
		if i == 5 || i == 25 {
			v = "changed"
		}
		want[fmt.Sprint(i)] = fmt.Sprintf("%d|%s", i, v)
	}
	var rows map[string]string
	var snapshots map[string]int
	eventually(t, "later's 40 rows in the lake", 2*time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		rows, snapshots, err = lakecheck.Replay(ctx, l.cat, "philotes", "later", []string{"id"}, []string{"id", "v"})
		return err == nil && len(rows) == 40 && rows["5"] == want["5"] && rows["25"] == want["25"]
	})
	require.Equal(t, want, rows)
	for id, n := range snapshots {
		require.LessOrEqual(t, n, 1, "id %s", id)
		var i int
		fmt.Sscan(id, &i)
		require.LessOrEqual(t, i, 20, "id %s was streamed as an insert: no snapshot copy", id)
	}
	require.Len(t, snapshots, 20, "the rows that were there before the table joined come from the backfill")
}
