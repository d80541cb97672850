package integration

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/test/pgtest"
)

// A table without a primary key or replica identity would make PostgreSQL refuse the application's UPDATE and
// DELETE on it once published: the worker refuses to start (exit 2, naming the table and the fixes) instead of
// creating a publication that includes it, and the application's statements keep working. Listing only the good
// tables (PHILOTES_TABLES) starts, and streams them.
func TestTableWithoutIdentityIsNotPublished(t *testing.T) {
	s := newSetup(t, "noident", ordersDDL+`; CREATE TABLE nopk (a int, b text); INSERT INTO nopk VALUES (1, 'x')`)

	t.Run("refused, naming the table", func(t *testing.T) {
		out := runRefused(t, append(s.env(), "PHILOTES_HTTP_ADDR=127.0.0.1:0"), "run")
		require.Contains(t, out, "public.nopk")
		require.Contains(t, out, "REPLICA IDENTITY FULL")
		require.NotContains(t, out, "public.orders,", "a table with a key is not listed")
		require.Zero(t, s.countSource(t, `SELECT count(*) FROM pg_publication`), "no publication created")
		s.exec(t, `UPDATE nopk SET b = 'y' WHERE a = 1`) // the application's statement still works
	})

	t.Run("an existing publication with such a table is refused too", func(t *testing.T) {
		s.exec(t, `CREATE PUBLICATION other_pub FOR TABLE orders, nopk WITH (publish = 'insert')`)
		s.exec(t, `UPDATE nopk SET b = 'z' WHERE a = 1`) // an insert-only publication does not block updates
		s.exec(t, `CREATE PUBLICATION bad_pub FOR TABLE orders, nopk WITH (publish = 'insert, update, delete')`)
		out := runRefused(t, append(s.env(), "PHILOTES_HTTP_ADDR=127.0.0.1:0", "PHILOTES_PUBLICATION=bad_pub"), "run")
		require.Contains(t, out, "publication bad_pub (PHILOTES_PUBLICATION)")
		require.Contains(t, out, "public.nopk")
		s.exec(t, `DROP PUBLICATION bad_pub; DROP PUBLICATION other_pub`)
	})

	t.Run("a listed table that does not exist", func(t *testing.T) {
		out := runRefused(t, append(s.env(), "PHILOTES_HTTP_ADDR=127.0.0.1:0", "PHILOTES_TABLES=public.orders,public.nosuch"), "run")
		require.Contains(t, out, "PHILOTES_TABLES names tables the source database does not have: public.nosuch")
		require.Zero(t, s.countSource(t, `SELECT count(*) FROM pg_publication`), "no publication created")
	})

	t.Run("only the listed tables", func(t *testing.T) {
		w := s.start(t, "w1", []string{"PHILOTES_TABLES=public.orders"})
		reader(t, w)
		insert(t, s, 1, 50)
		s.exec(t, `UPDATE nopk SET b = 'w' WHERE a = 1`)
		l := s.lake(t)
		defer l.done()
		requireExactlyOnce(t, s.waitDelivered(t, l, "orders", 50, time.Minute), 50)
	})
}

// A slot the server invalidated (it retained more WAL than max_slot_wal_keep_size) cannot deliver the changes
// in the WAL it lost: the worker stops with exit 2 and the recovery, instead of retrying forever.
func TestLostSlotStopsWithRecovery(t *testing.T) {
	srv := pgtest.New(t, pgtest.Options{Settings: []string{"max_slot_wal_keep_size = 1MB", "max_wal_size = 32MB", "min_wal_size = 32MB"}})
	src := srv.MustCreateDatabase(t, "lost_src")
	buf := srv.MustCreateDatabase(t, "lost_buf")
	execIn(t, src, ordersDDL)
	bucket := "lost-slot"
	s3.MustCreateBucket(t, bucket)
	env := append(s3.Env(), "PHILOTES_SOURCE_URL="+src, "PHILOTES_BUFFER_URL="+buf, "PHILOTES_SLOT=lost",
		"PHILOTES_ICEBERG_WAREHOUSE=s3://"+bucket+"/lake", "PHILOTES_HTTP_ADDR=127.0.0.1:0", "PHILOTES_LOG_FORMAT=text")
	// The slot, made as the worker makes it, then left behind while the source writes far more WAL than 1 MB.
	execIn(t, src, `SELECT pg_create_logical_replication_slot('lost', 'pgoutput')`)
	execIn(t, src, `CREATE TABLE filler (id int PRIMARY KEY, x text); INSERT INTO filler SELECT g, repeat('x', 1000) FROM generate_series(1, 20000) g`)
	eventually(t, "the slot invalidated", time.Minute, func() bool {
		execIn(t, src, `SELECT pg_switch_wal(); CHECKPOINT`)
		var status string
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, src)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		return conn.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lost'`).Scan(&status) == nil && status == "lost"
	})

	out := runRefused(t, env, "run")
	require.Contains(t, out, "replication slot lost (PHILOTES_SLOT) is invalidated")
	require.Contains(t, out, "pg_drop_replication_slot")
	execIn(t, src, `SELECT pg_drop_replication_slot('lost')`)
}

// /readyz follows what the replica can do: 503, with the reason, within seconds of the buffer database going
// away, and 200 again once it is back, with the rows written meanwhile delivered.
func TestReadyzFollowsTheBuffer(t *testing.T) {
	s := newSetup(t, "readyz", ordersDDL)
	w := s.start(t, "w1", nil)
	reader(t, w)
	insert(t, s, 1, 100)
	l := s.lake(t)
	s.waitDelivered(t, l, "orders", 100, time.Minute)
	l.done() // its connections would be cut too

	dbName := s.name + "_buf"
	execIn(t, server.URL("postgres"), `ALTER DATABASE `+pgx.Identifier{dbName}.Sanitize()+` ALLOW_CONNECTIONS false`)
	execIn(t, server.URL("postgres"), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, dbName)
	eventually(t, "/readyz 503 with the buffer database down", 30*time.Second, func() bool {
		code, body := w.readyz()
		// Past the cut connections: a new one is refused.
		return code == http.StatusServiceUnavailable && strings.Contains(body, "buffer database failing") &&
			strings.Contains(body, "not currently accepting connections")
	})
	_, body := w.readyz()
	t.Logf("readyz: %s", strings.TrimSpace(body))
	insert(t, s, 101, 200) // the slot keeps them while the buffer is away

	execIn(t, server.URL("postgres"), `ALTER DATABASE `+pgx.Identifier{dbName}.Sanitize()+` ALLOW_CONNECTIONS true`)
	eventually(t, "/readyz 200 with the buffer database back", time.Minute, func() bool {
		code, _ := w.readyz()
		return code == http.StatusOK
	})
	l = s.lake(t)
	defer l.done()
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", 200, 2*time.Minute), 200)
}

// No log line of a running worker prints a password: not while the buffer database is unreachable (the worker
// retries, unready), nor while the source refuses the reader (it retries its session).
func TestLogsNeverPrintThePassword(t *testing.T) {
	const password = "pw-9f2c-never-printed"
	const closed = "127.0.0.2:1" // loopback, a port nothing listens on: connections are refused
	s := newSetup(t, "nopw", ordersDDL)
	cases := []struct {
		name, retried string
		env           []string
	}{
		{"buffer unreachable", "buffer database not available yet",
			[]string{"PHILOTES_BUFFER_URL=postgres://philotes:" + password + "@" + closed + "/buf"}},
		{"source unreachable", "reader session ended",
			[]string{"PHILOTES_SOURCE_URL=postgres://philotes:" + password + "@" + closed + "/src"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := s.start(t, "w", append(tc.env, "PHILOTES_LOG_LEVEL=debug"))
			eventually(t, "two retries logged", time.Minute, func() bool { return strings.Count(w.output(), tc.retried) >= 2 })
			signal(t, w, syscall.SIGTERM)
			eventually(t, "stopped", time.Minute, w.exited)
			require.NotContains(t, w.output(), password)
			require.Contains(t, w.output(), closed, "the log names where it tried to connect")
		})
	}
}
