package worker

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/internal/metrics"
	"github.com/philotes/philotes-worker/internal/source"
)

// BackfillConfig configures the backfill workers of a replica.
type BackfillConfig struct {
	// Workers is how many chunks this replica reads at once (0: none).
	Workers int
	// ChunkRows is the number of rows per chunk: one short read transaction on the source each.
	ChunkRows int
	// MaxRowsPerSecond caps the rows this replica reads from the source per second (0: no cap).
	MaxRowsPerSecond int
	// Connect opens a source connection for backfill work.
	Connect func(ctx context.Context) (BackfillConn, error)
	// MarkTimeout is how long a chunk waits for the reader to pass its high watermark before it is given
	// back (the reader may be down, or far behind).
	MarkTimeout time.Duration
}

// BackfillConn is what a backfill worker needs from the source.
type BackfillConn interface {
	Start(ctx context.Context, t change.TableRef, run int64) (source.BackfillStart, error)
	Plan(ctx context.Context, t change.TableRef, keyColumns, after []string, chunkRows, n int) ([][]string, bool, error)
	ReadChunk(ctx context.Context, t change.TableRef, keyColumns, lower, upper []string) (*source.ChunkRead, error)
	EmitChunkMark(ctx context.Context, attempt uuid.UUID) error
	LookupTables(ctx context.Context, names []string) ([]change.TableRef, error)
	Close()
}

// BackfillBuffer is what a backfill worker needs from the buffer.
type BackfillBuffer interface {
	NewLease(ctx context.Context) (*buffer.Lease, error)
	ClaimPlanning(ctx context.Context) (*buffer.Planning, error)
	SaveRelation(ctx context.Context, relationID uint32, t change.Table) (int64, error)
	RequestBackfill(ctx context.Context, tables []change.TableRef, onlyNew bool) (int, error)
	BackfillStatuses(ctx context.Context) ([]buffer.BackfillStatus, error)
}

// BackfillMetrics receives the backfill's observations.
type BackfillMetrics interface {
	ObserveBackfillChunk(rows, dropped int)
	Error(kind string)
}

// planStep is how many chunk boundaries one planning step finds (one short index scan each).
const planStep = 20

// backfiller runs one replica's backfill workers: they plan tables into chunks and read chunks into the
// buffer, as snapshot events placed in the stream by the algorithm in internal/buffer/backfill.go.
type backfiller struct {
	cfg     BackfillConfig
	buf     BackfillBuffer
	metrics BackfillMetrics
	limit   *rate.Limiter
	log     *slog.Logger
	poll    time.Duration
}

func newBackfiller(cfg BackfillConfig, buf BackfillBuffer, m BackfillMetrics, poll time.Duration, log *slog.Logger) (*backfiller, error) {
	switch {
	case cfg.Connect == nil:
		return nil, errors.New("worker: backfill needs a source connection")
	case cfg.ChunkRows <= 0:
		return nil, errors.New("worker: backfill chunk rows must be positive")
	}
	if cfg.MarkTimeout <= 0 {
		cfg.MarkTimeout = 5 * time.Minute
	}
	b := &backfiller{cfg: cfg, buf: buf, metrics: m, log: log, poll: poll}
	if cfg.MaxRowsPerSecond > 0 {
		b.limit = rate.NewLimiter(rate.Limit(cfg.MaxRowsPerSecond), max(cfg.MaxRowsPerSecond, cfg.ChunkRows))
	}
	return b, nil
}

// loop plans and reads chunks until ctx is cancelled, or until idle() says to stop when there is no work.
func (b *backfiller) loop(ctx context.Context, idle func() bool) error {
	backoff := time.Second
	for ctx.Err() == nil {
		err := b.session(ctx, idle)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		b.metrics.Error(metrics.KindBackfill)
		b.log.Warn("backfill worker failed", "err", err, "retry_in", backoff)
		wait(ctx, backoff)
		backoff = min(2*backoff, 30*time.Second)
	}
	return nil
}

// session holds a lease and works with it until an error. It connects to the source only while there is
// backfill work, so idle replicas hold no source connection.
func (b *backfiller) session(ctx context.Context, idle func() bool) error {
	lease, err := b.buf.NewLease(ctx)
	if err != nil {
		return err
	}
	defer lease.Close()
	src := &lazyConn{connect: b.cfg.Connect}
	defer src.close()
	for ctx.Err() == nil {
		worked, err := b.plan(ctx, src)
		if err != nil {
			return err
		}
		if !worked {
			if worked, err = b.chunk(ctx, lease, src); err != nil {
				return err
			}
		}
		if !worked {
			src.close()
			if idle != nil && idle() {
				return nil
			}
			wait(ctx, b.poll)
		}
	}
	return nil
}

// lazyConn opens the source connection on first use.
type lazyConn struct {
	connect func(context.Context) (BackfillConn, error)
	conn    BackfillConn
}

func (l *lazyConn) get(ctx context.Context) (BackfillConn, error) {
	if l.conn == nil {
		c, err := l.connect(ctx)
		if err != nil {
			return nil, err
		}
		l.conn = c
	}
	return l.conn, nil
}

func (l *lazyConn) close() {
	if l.conn != nil {
		l.conn.Close()
		l.conn = nil
	}
}

// plan takes one planning step for a table that needs one.
func (b *backfiller) plan(ctx context.Context, src *lazyConn) (bool, error) {
	p, err := b.buf.ClaimPlanning(ctx)
	if err != nil || p == nil {
		return false, err
	}
	defer p.Rollback()
	conn, err := src.get(ctx)
	if err != nil {
		return false, err
	}
	ref := change.TableRef{RelationID: p.RelationID, Schema: p.Schema, Name: p.Name}
	log := b.log.With("table", p.Schema+"."+p.Name)
	if p.XidFloor == 0 {
		start, err := conn.Start(ctx, ref, p.Run)
		if errors.Is(err, source.ErrNotBackfillable) {
			log.Error("table left out of the backfill", "err", err)
			b.metrics.Error(metrics.KindBackfill)
			if err := p.Fail(ctx, err.Error()); err != nil {
				return false, err
			}
			return true, p.Commit(ctx)
		}
		if err != nil {
			return false, err
		}
		if len(p.KeyColumns) > 0 && !slices.Equal(source.KeyOrder(p.KeyColumns), source.KeyOrder(start.KeyColumns)) {
			// The reader recorded keys by other columns until now (a REPLICA IDENTITY FULL table seen in the
			// stream): from the start mark on it records these, which is all the placement needs.
			log.Info("backfill key differs from the registered one", "registered", p.KeyColumns, "key", start.KeyColumns)
		}
		if err := p.Started(ctx, start.KeyColumns, start.RowsEstimate, start.XidFloor); err != nil {
			return false, err
		}
		log.Info("backfill started", "key", start.KeyColumns, "rows_estimate", start.RowsEstimate, "run", p.Run)
		return true, p.Commit(ctx)
	}
	uppers, end, err := conn.Plan(ctx, ref, p.KeyColumns, p.PlannedTo, b.cfg.ChunkRows, planStep)
	if err != nil {
		return false, err
	}
	if err := p.AddChunks(ctx, uppers, end); err != nil {
		return false, err
	}
	return true, p.Commit(ctx)
}

// chunk reads one chunk into the buffer.
func (b *backfiller) chunk(ctx context.Context, lease *buffer.Lease, src *lazyConn) (bool, error) {
	c, err := lease.ClaimChunk(ctx)
	if err != nil || c == nil {
		return false, err
	}
	defer c.Release()
	conn, err := src.get(ctx)
	if err != nil {
		return false, err
	}
	ref := change.TableRef{RelationID: c.RelationID, Schema: c.Schema, Name: c.Name}
	if b.limit != nil {
		if err := b.limit.WaitN(ctx, b.cfg.ChunkRows); err != nil {
			return false, nil
		}
	}
	t0 := time.Now()
	read, err := conn.ReadChunk(ctx, ref, c.KeyColumns, c.Lower, c.Upper)
	if err != nil {
		return false, err
	}
	tRead := time.Since(t0)
	if read.Snapshot.Xmin <= c.XidFloor {
		// A transaction that began before the backfill is still open: a snapshot now might miss a change that
		// committed before the start mark. Like CREATE INDEX CONCURRENTLY, wait for it to end.
		b.log.Info("backfill waits for transactions older than its start to end", "table", c.Schema+"."+c.Name,
			"oldest_xid", read.Snapshot.Xmin, "backfill_xid", c.XidFloor)
		c.Release()
		wait(ctx, time.Second)
		return true, nil
	}
	attempt := uuid.New()
	if err := conn.EmitChunkMark(ctx, attempt); err != nil {
		return false, err
	}
	t1 := time.Now()
	hw, err := b.waitMark(ctx, c, attempt)
	if err != nil || hw == 0 {
		return hw == 0 && err == nil, err
	}
	tMark := time.Since(t1)
	changed, err := c.ChangedKeys(ctx, read.Keys, hw)
	if err != nil {
		return false, err
	}
	batch, dropped := snapshotBatch(read, changed, hw)
	if batch.Len() > 0 {
		key, err := b.buf.SaveRelation(ctx, c.RelationID, read.Table)
		if err != nil {
			return false, err
		}
		batch.SetRelation(key)
	}
	t2 := time.Now()
	if err := c.Done(ctx, attempt, batch, int64(len(read.Tuples))); err != nil {
		return false, err
	}
	b.metrics.ObserveBackfillChunk(len(read.Tuples), dropped)
	b.log.LogAttrs(ctx, slog.LevelDebug, "chunk done", slog.String("table", c.Schema+"."+c.Name), slog.Int64("chunk", c.ID),
		slog.Int("rows", len(read.Tuples)), slog.Int("superseded", dropped), slog.Duration("read", tRead),
		slog.Duration("mark_wait", tMark), slog.Duration("append", time.Since(t2)), slog.Duration("total", time.Since(t0)))
	return true, nil
}

// waitMark polls until the reader has passed the attempt's high watermark and returns where (0: it did not
// within MarkTimeout; the chunk is given back).
func (b *backfiller) waitMark(ctx context.Context, c *buffer.Chunk, attempt uuid.UUID) (uint64, error) {
	deadline := time.Now().Add(b.cfg.MarkTimeout)
	pollEvery := 5 * time.Millisecond
	for time.Now().Before(deadline) && ctx.Err() == nil {
		lsn, ok, err := c.Mark(ctx, attempt)
		if err != nil || ok {
			return lsn, err
		}
		wait(ctx, pollEvery)
		pollEvery = min(2*pollEvery, 100*time.Millisecond)
	}
	if ctx.Err() == nil {
		b.log.Warn("the reader did not pass a chunk's high watermark in time: is it running? the chunk is read again",
			"table", c.Schema+"."+c.Name, "timeout", b.cfg.MarkTimeout)
	}
	return 0, nil
}

// snapshotBatch builds the chunk's snapshot events at the high watermark hw, without the rows whose key the
// stream changed before hw in a transaction the read did not see (the stream carries their newer state) or
// inserted in one it did see (the stream already carries the row). A truncate the read did not see drops
// them all.
func snapshotBatch(read *source.ChunkRead, changed []buffer.ChangedKey, hw uint64) (*buffer.Batch, int) {
	drop := make(map[string]bool, len(changed))
	all := false
	for _, k := range changed {
		seen := read.Snapshot.Sees(k.Xid)
		switch {
		case k.Key == nil:
			all = all || !seen
		case !seen || k.Op == change.Insert:
			drop[string(k.Key)] = true
		}
	}
	batch := &buffer.Batch{}
	var seq int32
	for i, tuple := range read.Tuples {
		if all || drop[string(read.Keys[i])] {
			continue
		}
		seq++
		batch.Add(buffer.Position{CommitLSN: hw, Seq: seq}, hw, read.At, 0, change.Snapshot, tuple, nil)
	}
	return batch, len(read.Tuples) - batch.Len()
}

// BackfillTables (re)starts the backfill of the named tables (schema.table; one that is running already is
// joined, not restarted), works on it with this process's
// backfill workers, and returns once every one of them is done or has failed: the on-demand backfill, usable as
// a Kubernetes Job. The replicas' processors write the rows to the lake; the reader must run somewhere.
func BackfillTables(ctx context.Context, cfg BackfillConfig, buf BackfillBuffer, m BackfillMetrics, names []string, poll time.Duration, log *slog.Logger) error {
	b, err := newBackfiller(cfg, buf, m, poll, log.With("component", "backfill"))
	if err != nil {
		return err
	}
	conn, err := cfg.Connect(ctx)
	if err != nil {
		return err
	}
	refs, err := conn.LookupTables(ctx, names)
	conn.Close()
	if err != nil {
		return err
	}
	if _, err := buf.RequestBackfill(ctx, refs, false); err != nil {
		return err
	}
	log.Info("backfill requested", "tables", names)
	want := map[string]bool{}
	for _, r := range refs {
		want[r.Schema+"."+r.Name] = true
	}
	var failed []string
	finished := func() bool {
		st, err := buf.BackfillStatuses(ctx)
		if err != nil {
			log.Warn("read backfill status", "err", err)
			return false
		}
		left := 0
		failed = failed[:0]
		for _, s := range st {
			name := s.Schema + "." + s.Name
			switch {
			case !want[name]:
			case s.Error != "":
				failed = append(failed, s.Error)
			case !s.Done:
				left++
			}
		}
		return left == 0
	}
	workers := max(cfg.Workers, 1)
	errs := make(chan error, workers)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	for range workers {
		go func() { errs <- b.loop(wctx, finished) }()
	}
	for range workers {
		if err := <-errs; err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(failed) > 0 {
		return refused(strings.Join(failed, "; "))
	}
	log.Info("backfill done: the rows are in the buffer, on their way to the lake", "tables", names)
	return nil
}

// refused reports the tables a backfill request could not backfill; each reason names its table.
type refused string

func (r refused) Error() string { return string(r) }
func (refused) Unwrap() error   { return source.ErrNotBackfillable }
