// Package integration runs the real philotes-worker binary against a real PostgreSQL and reads the result back
// from the Iceberg tables it writes.
package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	_ "github.com/apache/iceberg-go/io/gocloud/s3" // every warehouse is a bucket on the test S3 server
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/test/lakecheck"
	"github.com/philotes/philotes-worker/test/pgtest"
	"github.com/philotes/philotes-worker/test/s3test"
	"github.com/philotes/philotes-worker/test/testutil"
)

var (
	server *pgtest.Server
	s3     *s3test.Server // every test's warehouse is a bucket on this real S3 server
	binary string
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "philotes-it-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "philotes-worker")
		build := exec.Command("go", "build", "-o", binary, "../../cmd/philotes-worker")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build philotes-worker:", err)
			return 1
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		server, err = pgtest.Start(ctx, pgtest.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer server.Stop()
		s3, err = s3test.Start(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer s3.Stop()
		return m.Run()
	}())
}

// setup is one test's source database, buffer database and warehouse.
type setup struct {
	name      string
	srcURL    string
	bufURL    string
	warehouse string
}

var runs atomic.Int32

func newSetup(t *testing.T, name, ddl string) setup {
	t.Helper()
	name = fmt.Sprintf("%s_%d", name, runs.Add(1)) // unique across -count runs
	s := setup{
		name:   name,
		srcURL: server.MustCreateDatabase(t, name+"_src"),
		bufURL: server.MustCreateDatabase(t, name+"_buf"),
	}
	bucket := strings.ReplaceAll(name, "_", "-") // bucket names take no underscores
	s3.MustCreateBucket(t, bucket)
	s.warehouse = "s3://" + bucket + "/lake"
	s.exec(t, ddl)
	// Cleanups run last-in first-out: this one runs after the test's workers are gone. A slot left behind
	// would count against max_replication_slots for the rest of the run.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.srcURL)
		if err != nil {
			t.Errorf("drop slot %s: %v", s.name, err)
			return
		}
		defer conn.Close(ctx)
		for ctx.Err() == nil {
			var left int
			err := conn.QueryRow(ctx, `SELECT count(pg_drop_replication_slot(slot_name) IS NULL) FROM pg_replication_slots
				WHERE slot_name = $1 AND NOT active`, s.name).Scan(&left)
			if err == nil {
				var exists bool
				if conn.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_replication_slots WHERE slot_name = $1`, s.name).Scan(&exists) == nil && !exists {
					return
				}
			}
			time.Sleep(50 * time.Millisecond) // the walsender of a killed worker takes a moment to exit
		}
		t.Errorf("slot %s still exists after the test", s.name)
	})
	return s
}

// exec runs a statement in the source database.
func (s setup) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	execIn(t, s.srcURL, sql, args...)
}

func execIn(t *testing.T, url, sql string, args ...any) {
	t.Helper()
	require.NoError(t, tryExec(url, sql, args...), sql)
}

// tryExec is execIn for goroutines other than the test's, which must not call require.
func tryExec(url, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func (s setup) env() []string {
	return append(s3.Env(),
		"PHILOTES_SOURCE_URL="+s.srcURL,
		"PHILOTES_BUFFER_URL="+s.bufURL,
		"PHILOTES_SLOT="+s.name,
		"PHILOTES_PUBLICATION="+s.name+"_pub",
		"PHILOTES_ICEBERG_WAREHOUSE="+s.warehouse,
		"PHILOTES_READER_RETRY_INTERVAL=200ms",
		"PHILOTES_STATS_INTERVAL=200ms",
		"PHILOTES_IDLE_POLL_INTERVAL=50ms",
		"PHILOTES_FLUSH_INTERVAL=50ms",
		"PHILOTES_ICEBERG_COMMIT_INTERVAL=500ms",
		"PHILOTES_LOG_FORMAT=text",
	)
}

// proc is one running worker replica.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	mu   sync.Mutex
	log  strings.Builder
}

func (s setup) start(t *testing.T, name string, extraEnv []string, args ...string) *proc {
	t.Helper()
	if len(args) == 0 {
		args = []string{"run"}
	}
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	// Port 0: the worker takes a free port and logs it (address), so no other process can take it in between.
	p.cmd.Env = append(append(append(os.Environ(), s.env()...), "PHILOTES_HTTP_ADDR=127.0.0.1:0"), extraEnv...)
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	// Wait only after the log reached EOF: Wait closes the pipe, and the last lines would be lost.
	go func() { <-logged; p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- log of %s:\n%s", p.name, p.output())
		}
	})
	return p
}

var servingAt = regexp.MustCompile(`msg="serving /metrics, /healthz and /readyz" addr=(\S+)`)

// address is where the replica serves HTTP, from its log ("" if it exited before serving).
func (p *proc) address() string {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := servingAt.FindStringSubmatch(p.output()); m != nil {
			return m[1]
		}
		if p.exited() || time.Now().After(deadline) {
			return ""
		}
		time.Sleep(20 * time.Millisecond) // polling the log, with the deadline above
	}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// metric reads one sample of name from the replica's /metrics (-1 when unreachable or absent).
func (p *proc) metric(name string) float64 {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + p.address() + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func (p *proc) ready() bool {
	code, _ := p.readyz()
	return code == http.StatusOK
}

// runRefused runs the worker with env and args, requires it to exit with status 2 (a configuration error) within
// a minute, and returns its output.
func runRefused(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "must fail: %v\n%s", err, out)
	require.Equal(t, 2, exit.ExitCode(), "%s", out)
	return string(out)
}

// readyz returns /readyz's status code (0 when it does not answer) and body.
func (p *proc) readyz() (int, string) {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + p.address() + "/readyz")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var eventually = testutil.Eventually

// reader returns the one replica that holds the reader role, waiting for there to be exactly one.
func reader(t *testing.T, procs ...*proc) *proc {
	t.Helper()
	for _, p := range procs {
		eventually(t, p.name+" ready", 30*time.Second, func() bool { return p.exited() || p.ready() })
		require.False(t, p.exited(), "%s exited during start-up:\n%s", p.name, p.output())
	}
	return holder(t, "reader", "philotes_cdc_reader_active", 20*time.Second, procs...)
}

// committer returns the one live replica that holds the committer role, waiting for there to be exactly one.
func committer(t *testing.T, procs ...*proc) *proc {
	t.Helper()
	return holder(t, "committer", "philotes_iceberg_committer_active", 30*time.Second, procs...)
}

// holder returns the one live replica whose role metric is 1, waiting for there to be exactly one.
func holder(t *testing.T, role, metric string, timeout time.Duration, procs ...*proc) *proc {
	t.Helper()
	var found *proc
	eventually(t, "exactly one "+role, timeout, func() bool {
		found = nil
		n := 0
		for _, p := range procs {
			if !p.exited() && p.metric(metric) == 1 {
				found = p
				n++
			}
		}
		return n == 1
	})
	return found
}

// lake reads the table back from Iceberg.
type lake struct {
	cat  catalog.Catalog
	done func()
}

func (s setup) lake(t *testing.T) lake {
	t.Helper()
	cfg, err := pgx.ParseConfig(s.bufURL)
	require.NoError(t, err)
	db := stdlib.OpenDB(*cfg)
	props := iceberg.Properties{"warehouse": s.warehouse}
	for k, v := range s3.Properties() {
		props[k] = v
	}
	cat, err := sqlcat.NewCatalog("philotes", db, sqlcat.Postgres, props)
	require.NoError(t, err)
	return lake{cat: cat, done: func() { db.Close() }}
}

// inserts returns, for the source table's "id" column, how many rows bring each id in (lakecheck.Arrivals; nil while the table
// does not exist).
func (l lake) inserts(t *testing.T, sourceTable string) map[int64]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := lakecheck.Arrivals(ctx, l.cat, "philotes", sourceTable)
	require.NoError(t, err)
	return got
}

// requireExactlyOnce checks that ids 1..n each appear once, and nothing else does.
func requireExactlyOnce(t *testing.T, got map[int64]int, n int) {
	t.Helper()
	require.NoError(t, lakecheck.ExactlyOnce(got, n))
}

// waitDelivered waits until every id 1..n is in the lake, the buffer is empty and no data file waits for a
// commit; from then on nothing more can be written.
func (s setup) waitDelivered(t *testing.T, l lake, tbl string, n int, timeout time.Duration) map[int64]int {
	t.Helper()
	var got map[int64]int
	eventually(t, fmt.Sprintf("%d rows in the lake and an empty buffer", n), timeout, func() bool {
		got = l.inserts(t, tbl)
		if len(got) < n {
			return false
		}
		return s.bufferDepth(t) == 0 && s.count(t, `SELECT count(*) FROM philotes.pending_files`) == 0
	})
	return l.inserts(t, tbl)
}

func (s setup) bufferDepth(t *testing.T) int64 {
	return s.count(t, buffer.DepthSQL, s.name) // the source name is the slot name
}

// count runs a query that returns one number in the buffer database.
func (s setup) count(t *testing.T, query string, args ...any) int64 {
	t.Helper()
	return countIn(t, s.bufURL, query, args...)
}

// countSource runs a query that returns one number in the source database.
func (s setup) countSource(t *testing.T, query string, args ...any) int64 {
	t.Helper()
	return countIn(t, s.srcURL, query, args...)
}

func countIn(t *testing.T, url, query string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int64
	require.NoError(t, conn.QueryRow(ctx, query, args...).Scan(&n), query)
	return n
}

func signal(t *testing.T, p *proc, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}
