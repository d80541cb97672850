package integration

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/source"
)

const ordersDDL = `CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2), paid boolean,
	created_at timestamptz, note text)`

// insertSQL adds orders $1..$2 (inclusive) in one transaction.
const insertSQL = `INSERT INTO orders SELECT g, 'customer-' || g, g / 100.0, g % 2 = 0,
	timestamptz '2026-11-27 10:00:00+00' + g * interval '1 second', repeat('n', 100) FROM generate_series($1::bigint, $2::bigint) g`

// insert adds orders from..to (inclusive) in one transaction.
func insert(t *testing.T, s setup, from, to int) {
	t.Helper()
	s.exec(t, insertSQL, from, to)
}

// Rows written at the source arrive in Iceberg once each, with equal values.
func TestRowsArriveOnceAndEqual(t *testing.T) {
	s := newSetup(t, "equal", ordersDDL)
	w := s.start(t, "w1", nil)
	eventually(t, "ready", 20*time.Second, w.ready)
	reader(t, w)
	insert(t, s, 1, 500)
	s.exec(t, `UPDATE orders SET customer = 'changed' WHERE id = 7`)
	s.exec(t, `DELETE FROM orders WHERE id = 8`)

	l := s.lake(t)
	defer l.done()
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", 500, time.Minute), 500)

	ctx := context.Background()
	tbl, err := l.cat.LoadTable(ctx, table.Identifier{"philotes", "public_orders"})
	require.NoError(t, err)
	at, err := tbl.Scan(table.WithSelectedFields("id", "customer", "amount", "paid", "created_at", "_op")).ToArrowTable(ctx)
	require.NoError(t, err)
	defer at.Release()
	rec := array.NewTableReader(at, -1)
	defer rec.Release()
	seen := map[string]int{}
	for rec.Next() {
		r := rec.RecordBatch()
		for i := 0; i < int(r.NumRows()); i++ {
			id := r.Column(0).(*array.Int64).Value(i)
			op := r.Column(5).(*array.String).Value(i)
			seen[op]++
			switch {
			case id == 42 && op == "insert":
				require.Equal(t, "customer-42", r.Column(1).(*array.String).Value(i))
				require.Equal(t, "0.42", r.Column(2).ValueStr(i))
				require.Equal(t, true, r.Column(3).(*array.Boolean).Value(i))
				require.Equal(t, "2026-11-27T10:00:42Z", r.Column(4).ValueStr(i))
			case id == 7 && op == "update":
				require.Equal(t, "changed", r.Column(1).(*array.String).Value(i))
			case op == "delete":
				require.Equal(t, int64(8), id)
			}
		}
	}
	require.Equal(t, map[string]int{"insert": 500, "update": 1, "delete": 1}, seen)
}

// Three replicas: one reader, and the events are processed by more than one replica, each exactly once.
func TestThreeReplicasOneReaderEachEventOnce(t *testing.T) {
	s := newSetup(t, "three", ordersDDL)
	small := []string{"PHILOTES_BATCH_SIZE=100"}
	ws := []*proc{s.start(t, "w1", small), s.start(t, "w2", small), s.start(t, "w3", small)}
	reader(t, ws...)
	const n = 20000
	for i := 0; i < n; i += 1000 {
		insert(t, s, i+1, i+1000)
	}
	l := s.lake(t)
	defer l.done()
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", n, 2*time.Minute), n)
	reader(t, ws...) // still exactly one

	total, busy := 0.0, 0
	for _, w := range ws {
		v := w.metric("philotes_buffer_events_processed_total")
		total += v
		if v > 0 {
			busy++
		}
	}
	require.Equal(t, float64(n), total, "each event processed exactly once across replicas")
	require.GreaterOrEqual(t, busy, 2, "buffer processing must spread over replicas")
	for _, w := range ws {
		require.Equal(t, 0.0, w.metric("philotes_buffer_depth"), "every replica reports the shared depth")
	}
}

// kill -9 of the reader under load: another replica takes the reader role and nothing is lost or duplicated.
func TestKillReaderUnderLoad(t *testing.T) {
	s := newSetup(t, "kill", ordersDDL)
	small := []string{"PHILOTES_BATCH_SIZE=200"}
	ws := []*proc{s.start(t, "w1", small), s.start(t, "w2", small)}
	first := reader(t, ws...)

	const n, step = 30000, 500
	// The load runs in its own goroutine, which must not call require (FailNow ends only that goroutine and the
	// test would wait for the kill signal until its timeout): it reports its error instead.
	loaded := make(chan error, 1)
	killed := make(chan struct{})
	go func() {
		defer close(loaded)
		for i := 0; i < n; i += step {
			if err := tryExec(s.srcURL, insertSQL, i+1, i+step); err != nil {
				loaded <- err
				return
			}
			if i == n/3 {
				close(killed)
			}
		}
	}()
	select {
	case <-killed:
	case err := <-loaded:
		t.Fatalf("load before the kill: %v", err)
	}
	signal(t, first, syscall.SIGKILL)
	<-first.done
	var rest []*proc
	for _, w := range ws {
		if w != first {
			rest = append(rest, w)
		}
	}
	start := time.Now()
	reader(t, rest...)
	t.Logf("reader failover took %s", time.Since(start).Round(time.Millisecond))
	require.NoError(t, <-loaded, "load after the kill")

	l := s.lake(t)
	defer l.done()
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", n, 2*time.Minute), n)
}

// SIGTERM under load: the replica exits 0 within its shutdown deadline, and nothing is lost or duplicated.
func TestSigtermUnderLoad(t *testing.T) {
	s := newSetup(t, "term", ordersDDL)
	small := []string{"PHILOTES_BATCH_SIZE=200", "PHILOTES_SHUTDOWN_TIMEOUT=10s"}
	ws := []*proc{s.start(t, "w1", small), s.start(t, "w2", small)}
	first := reader(t, ws...)
	const n, step = 20000, 500
	for i := 0; i < n/2; i += step {
		insert(t, s, i+1, i+step)
	}
	signal(t, first, syscall.SIGTERM)
	for i := n / 2; i < n; i += step {
		insert(t, s, i+1, i+step)
	}
	select {
	case <-first.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the replica did not exit within 30s of SIGTERM")
	}
	require.NoError(t, first.err, "exit status after SIGTERM")
	require.Contains(t, first.output(), "worker stopped cleanly")

	l := s.lake(t)
	defer l.done()
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", n, 2*time.Minute), n)
}

// drain processes what is buffered and exits 0 once the buffer is empty (the ScaledJob workload).
func TestDrainExitsWhenEmpty(t *testing.T) {
	s := newSetup(t, "drain", ordersDDL)
	// A reader-only replica fills the buffer.
	r := s.start(t, "reader", []string{"PHILOTES_PROCESSORS=0"})
	reader(t, r)
	insert(t, s, 1, 3000)
	eventually(t, "3000 buffered events", 30*time.Second, func() bool { return s.bufferDepth(t) == 3000 })
	signal(t, r, syscall.SIGTERM)
	<-r.done

	d := s.start(t, "drain", nil, "drain")
	select {
	case <-d.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("drain did not exit")
	}
	require.NoError(t, d.err)
	require.Zero(t, s.bufferDepth(t))
	l := s.lake(t)
	defer l.done()
	requireExactlyOnce(t, l.inserts(t, "orders"), 3000)
}

// A bad configuration stops start-up with exit status 2 and a message naming each bad setting.
func TestBadConfigurationIsRefused(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"no source", []string{"run"}, nil, []string{"PHILOTES_SOURCE_URL is required"}},
		{"several bad values", []string{"run"}, []string{"PHILOTES_SOURCE_URL=postgres://u@127.0.0.1/x", "PHILOTES_PROCESSORS=-1", "PHILOTES_BATCH_SIZE=zero", "PHILOTES_SLOT=Has Space"},
			[]string{"PHILOTES_PROCESSORS=-1", `PHILOTES_BATCH_SIZE="zero"`, `PHILOTES_SLOT="Has Space"`}},
		{"unknown command", []string{"serve"}, nil, []string{`unknown command "serve"`}},
		{"unknown flag", []string{"run", "--bogus"}, []string{"PHILOTES_SOURCE_URL=postgres://u@127.0.0.1/x"}, []string{"flag provided but not defined: -bogus"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := runRefused(t, tc.env, tc.args...)
			for _, w := range tc.want {
				require.Contains(t, out, w)
			}
		})
	}
}

// A warehouse that cannot work as configured stops start-up with exit status 2 and a message naming the setting
// (the worker writes a probe object at start), without printing the secret; before this, the worker turned ready
// and every batch failed.
func TestUnusableWarehouseIsRefused(t *testing.T) {
	s := newSetup(t, "badlake", ordersDDL)
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"missing bucket", []string{"PHILOTES_ICEBERG_WAREHOUSE=s3://no-such-bucket/lake"}, "the bucket does not exist"},
		{"wrong secret", []string{"PHILOTES_S3_SECRET_ACCESS_KEY=not-the-secret"}, "check PHILOTES_S3_SECRET_ACCESS_KEY"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := runRefused(t, append(s.env(), append(tc.env, "PHILOTES_HTTP_ADDR=127.0.0.1:0")...), "run")
			require.Contains(t, out, tc.want)
			require.NotContains(t, out, s3.SecretKey)
		})
	}
}

// With the buffer in the source database (the default), the worker's own writes (buffer, Iceberg SQL catalog)
// are not replicated back into the lake: only the user's table arrives, and the buffer empties.
func TestBufferInSourceDatabaseDoesNotLoop(t *testing.T) {
	s := newSetup(t, "samedb", ordersDDL)
	s.bufURL = s.srcURL
	w := s.start(t, "w1", nil)
	reader(t, w)
	insert(t, s, 1, 300)
	l := s.lake(t)
	defer l.done()
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", 300, time.Minute), 300)
	insert(t, s, 301, 310)
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", 310, time.Minute), 310)
	// A second replica starts against a buffer schema the publication already publishes (its start-up must not
	// update a table the publication refuses updates on).
	s.start(t, "w2", nil)
	insert(t, s, 311, 320)
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", 320, time.Minute), 320)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var tables []string
	for ident, err := range l.cat.ListTables(ctx, table.Identifier{"philotes"}) {
		require.NoError(t, err)
		tables = append(tables, ident[len(ident)-1])
	}
	require.Equal(t, []string{"public_orders"}, tables, "only the user's table may reach the lake")
	require.Zero(t, s.bufferDepth(t))
}

// The KEDA PostgreSQL trigger's default query (docs/worker-interface.md, rendered by the chart) answers without
// any worker running: the target while the slot is missing, near 0 while a reader keeps up, and growing with
// every change while no reader runs (at zero replicas), which is what wakes the release.
func TestWakeQueryWorksAtZeroReplicas(t *testing.T) {
	s := newSetup(t, "wake", ordersDDL)
	const target = 1000000
	query := source.RetainedWALQuery(s.name, strconv.Itoa(target))
	value := func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.srcURL)
		require.NoError(t, err)
		defer conn.Close(ctx)
		var v float64
		require.NoError(t, conn.QueryRow(ctx, query).Scan(&v))
		return v
	}
	require.Equal(t, float64(target), value(), "a missing slot wakes one replica")

	w := s.start(t, "w1", []string{"PHILOTES_STATUS_INTERVAL=100ms"})
	reader(t, w)
	insert(t, s, 1, 100)
	l := s.lake(t)
	defer l.done()
	s.waitDelivered(t, l, "orders", 100, time.Minute)
	eventually(t, "the slot confirmed (query below the activation value 1000)", 30*time.Second, func() bool { return value() < 1000 })

	signal(t, w, syscall.SIGTERM)
	<-w.done
	idle := value()
	insert(t, s, 101, 101)
	// The WAL position moves when the commit's WAL is written (at once, or within wal_writer_delay under
	// asynchronous commit).
	eventually(t, "one new row at zero replicas to raise the value", 10*time.Second, func() bool { return value() > idle })
}

// kill -9 of the committer, again and again, and of writers, under load: another replica takes the committer
// role, nothing is lost or duplicated, and the files that killed writers wrote but never recorded are removed
// (an unrecorded write is also planted, so the clean-up is always exercised). With maintenance off, every data
// file left in the warehouse is then one the table references.
func TestKillCommitterAndWritersUnderLoad(t *testing.T) {
	s := newSetup(t, "killcommit", ordersDDL)
	env := []string{"PHILOTES_BATCH_SIZE=200", "PHILOTES_ICEBERG_MAINTENANCE_INTERVAL=0s"}
	live := []*proc{s.start(t, "w1", env), s.start(t, "w2", env), s.start(t, "w3", env)}
	reader(t, live...)
	committer(t, live...)

	const n, step = 40000, 500
	loaded := make(chan error, 1) // the load's goroutine reports its error instead of calling require
	go func() {
		defer close(loaded)
		for i := 0; i < n; i += step {
			if err := tryExec(s.srcURL, insertSQL, i+1, i+step); err != nil {
				loaded <- err
				return
			}
		}
	}()
	// Replace a killed replica, keeping three.
	replace := func(victim *proc, name string) {
		signal(t, victim, syscall.SIGKILL)
		<-victim.done
		for i, p := range live {
			if p == victim {
				live[i] = s.start(t, name, env)
			}
		}
	}
	for round := range 3 {
		eventually(t, "more rows written", time.Minute, func() bool {
			return s.count(t, `SELECT count(*) FROM philotes.pending_files`)+s.bufferDepth(t) > 0
		})
		c := committer(t, live...)
		start := time.Now()
		replace(c, fmt.Sprintf("c%d", round))
		committer(t, live...)
		t.Logf("round %d: committer failover took %s", round, time.Since(start).Round(time.Millisecond))
		// A writer that is neither reader nor committer, killed mid-claim most of the time.
		for _, p := range live {
			if p.metric("philotes_cdc_reader_active") == 0 && p.metric("philotes_iceberg_committer_active") == 0 {
				replace(p, fmt.Sprintf("x%d", round))
				break
			}
		}
	}
	require.NoError(t, <-loaded, "load")

	l := s.lake(t)
	defer l.done()
	requireExactlyOnce(t, s.waitDelivered(t, l, "orders", n, 3*time.Minute), n)

	// Plant a write whose lease nobody holds, with a file, as a writer killed after writing would leave it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tbl, err := l.cat.LoadTable(ctx, table.Identifier{"philotes", "public_orders"})
	require.NoError(t, err)
	// The warehouse is a bucket on the S3 server: plant and list objects through the same file IO the worker uses.
	dataDir := tbl.Location() + "/data"
	fsys, err := iceio.LoadFS(ctx, s3.Properties(), dataDir)
	require.NoError(t, err)
	planted := uuid.NewString()
	plantedFile := dataDir + "/00000-0-" + planted + "-00001.parquet"
	require.NoError(t, fsys.(iceio.WriteFileIO).WriteFile(plantedFile, []byte("not recorded")))
	execIn(t, s.bufURL, `INSERT INTO philotes.file_writes (source, lease, write_uuid, location)
		VALUES ($1, nextval('philotes.writer_leases'), $2, $3)`, s.name, planted, dataDir)

	// The committer removes unrecorded writes at takeover and every 30 s: kill it once more to clean now.
	replace(committer(t, live...), "final")
	eventually(t, "every unrecorded write cleaned", 2*time.Minute, func() bool {
		return s.count(t, `SELECT count(*) FROM philotes.file_writes`) == 0
	})
	_, err = fsys.(iceio.ReadFileIO).ReadFile(plantedFile)
	require.ErrorIs(t, err, fs.ErrNotExist, "the planted unrecorded object is removed")

	tbl, err = l.cat.LoadTable(ctx, table.Identifier{"philotes", "public_orders"})
	require.NoError(t, err)
	tasks, err := tbl.Scan().PlanFiles(ctx)
	require.NoError(t, err)
	referenced := map[string]bool{}
	for _, task := range tasks {
		referenced[task.File.FilePath()] = true
	}
	var stored, unreferenced []string
	require.NoError(t, fsys.(iceio.ListableIO).WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".parquet") {
			stored = append(stored, p)
			if !referenced[p] {
				unreferenced = append(unreferenced, path.Base(p))
			}
		}
		return err
	}))
	require.Empty(t, unreferenced, "data files no table references (orphans)")
	require.Len(t, stored, len(referenced))
}
