// Package source reads a PostgreSQL logical replication slot (pgoutput) into the buffer. Exactly one replica
// reads a slot at a time: the reader role is an advisory lock taken on the replication connection itself, so it
// is held exactly as long as the walsender streams to us and is freed the moment our connection dies.
package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/internal/metrics"
)

// Store is what the reader needs from the buffer.
type Store interface {
	Progress(ctx context.Context) (buffer.Progress, error)
	SaveRelation(ctx context.Context, relationID uint32, t change.Table) (int64, error)
	BeginAppend(ctx context.Context, b *buffer.Batch) (buffer.Appending, error)
	RequestBackfill(ctx context.Context, tables []change.TableRef, onlyNew bool) (int, error)
	TrackedTables(ctx context.Context) (map[uint32][]string, error)
}

// Metrics receives the reader's observations.
type Metrics interface {
	SetReaderActive(active bool)
	SetRetainedWAL(bytes uint64)
	SetSlotStatus(walStatus string)
	ObserveAppend(d time.Duration)
	Error(kind string)
}

// Config configures a Reader.
type Config struct {
	SourceURL   string
	Slot        string
	Publication string
	// Tables limits the publication to these "schema.table" names; empty means all tables.
	Tables []string
	// BatchSize is the most changes appended to the buffer in one COPY.
	BatchSize int
	// FlushInterval bounds how long a change waits in memory before it is appended.
	FlushInterval time.Duration
	// StatusInterval is how often the confirmed position is reported to the server.
	StatusInterval time.Duration
	// RetryInterval is how often a replica that does not hold the reader role tries to take it.
	RetryInterval time.Duration
	// Backfill registers every published table for a backfill of its existing rows the first time the reader
	// sees it.
	Backfill bool
	// Appenders is how many batches are copied into the buffer at once (default 2). They commit in order.
	Appenders int
	// Skip reports tables whose changes are not read: the worker's own tables (buffer, Iceberg SQL catalog)
	// appear in the stream when the buffer shares the source database.
	Skip    func(schema, table string) bool
	Logger  *slog.Logger
	Metrics Metrics
}

// Reader competes for the reader role and, while it holds it, streams the slot into the buffer.
type Reader struct {
	cfg   Config
	store Store
	log   *slog.Logger
}

// NewReader checks the configuration and builds a Reader.
func NewReader(cfg Config, store Store) (*Reader, error) {
	switch {
	case store == nil:
		return nil, errors.New("source: a buffer store is required")
	case cfg.Metrics == nil:
		return nil, errors.New("source: metrics are required")
	case cfg.SourceURL == "":
		return nil, errors.New("source: PHILOTES_SOURCE_URL is required for the reader")
	case cfg.BatchSize <= 0 || cfg.FlushInterval <= 0 || cfg.StatusInterval <= 0 || cfg.RetryInterval <= 0:
		return nil, errors.New("source: batch size and intervals must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Appenders <= 0 {
		cfg.Appenders = 2
	}
	return &Reader{cfg: cfg, store: store, log: cfg.Logger.With("component", "reader", "slot", cfg.Slot)}, nil
}

// Run holds or waits for the reader role until ctx is cancelled. On cancellation it appends what it has read,
// reports the confirmed position and releases the role before returning. It returns an error wrapping
// ErrSourceConfig when the source's setup must change first (it never retries those).
func (r *Reader) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		held, err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := r.cfg.RetryInterval
		switch {
		case errors.Is(err, ErrSourceConfig):
			r.cfg.Metrics.Error(errorKind(err))
			return err // only a change of the source's setup or of the settings helps
		case err != nil:
			r.cfg.Metrics.Error(errorKind(err))
			r.log.Warn("reader session ended", "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(backoff*2, 30*time.Second)
		case held:
			backoff = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

type kindError struct {
	kind string
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

func withKind(kind string, err error) error { return &kindError{kind: kind, err: err} }

func errorKind(err error) string {
	var k *kindError
	if errors.As(err, &k) {
		return k.kind
	}
	return metrics.KindReplication
}

// session connects, tries to take the role and streams while it holds it. held reports whether it got the role.
func (r *Reader) session(ctx context.Context) (held bool, err error) {
	cfg, err := pgconn.ParseConfig(r.cfg.SourceURL)
	if err != nil {
		return false, fmt.Errorf("PHILOTES_SOURCE_URL: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "philotes-reader"
	cfg.RuntimeParams["timezone"] = "UTC"
	cfg.RuntimeParams["datestyle"] = "ISO"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect to source: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx) // closing the connection ends the walsender and frees the lock
	}()

	ok, err := queryBool(ctx, conn, fmt.Sprintf("SELECT pg_try_advisory_lock(hashtext(%s))", quoteLiteral("philotes:"+r.cfg.Slot)))
	if err != nil {
		return false, withKind(metrics.KindReaderLock, fmt.Errorf("take reader lock: %w", err))
	}
	if !ok {
		return false, nil
	}
	r.log.Info("took the reader role")

	if err := r.ensurePublication(ctx, conn); err != nil {
		return true, err
	}
	if err := r.ensureSlot(ctx, conn); err != nil {
		return true, err
	}
	progress, err := r.store.Progress(ctx)
	if err != nil {
		return true, withKind(metrics.KindBuffer, err)
	}
	if r.cfg.Backfill {
		if err := r.registerBackfills(ctx, conn); err != nil {
			return true, err
		}
	}
	s := &streamState{r: r, progress: progress.Last, relations: map[uint32]int64{}, skipped: map[uint32]bool{},
		tables: map[uint32]change.Table{}, registered: map[uint32]bool{}}
	if s.tracked, err = r.store.TrackedTables(ctx); err != nil {
		return true, withKind(metrics.KindBuffer, err)
	}
	xmin, err := queryText(ctx, conn, "SELECT pg_snapshot_xmin(pg_current_snapshot())")
	if err == nil {
		s.xid, err = strconv.ParseUint(xmin, 10, 64)
	}
	if err != nil {
		return true, fmt.Errorf("read the source's transaction ID: %w", err)
	}
	// messages: the backfill's watermarks (PostgreSQL 14 and later).
	err = pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names " + quoteLiteral(r.cfg.Publication), "messages 'true'"},
	})
	if err != nil {
		return true, fmt.Errorf("start replication on slot %s: %w", r.cfg.Slot, err)
	}
	// Active once streaming: from here on every change committed at the source reaches the buffer (a new slot
	// starts at its creation, so a change committed before that point never would).
	r.cfg.Metrics.SetReaderActive(true)
	defer r.cfg.Metrics.SetReaderActive(false)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); r.watch(watchCtx) }()
	defer func() { stopWatch(); <-watched }()
	return true, r.stream(ctx, conn, s, progress.NextID)
}

// registerBackfills registers the published tables that never had a backfill, with their keys, before the
// stream starts: every change streamed from here on has its key recorded.
func (r *Reader) registerBackfills(ctx context.Context, conn *pgconn.PgConn) error {
	tables, err := r.tablesWhere(ctx, conn, publishedCond(r.cfg.Publication))
	if err != nil {
		return fmt.Errorf("list the tables of publication %s: %w", r.cfg.Publication, err)
	}
	n, err := r.store.RequestBackfill(ctx, tables, true)
	if err != nil {
		return withKind(metrics.KindBuffer, err)
	}
	if n > 0 {
		r.log.Info("registered tables for a backfill of their existing rows", "tables", n)
	}
	return nil
}

// appendOne copies j's batch, waits for the previous batch's outcome, and commits only if that succeeded.
func (r *Reader) appendOne(ctx context.Context, j job, durable *atomic.Uint64, errs chan<- error) bool {
	var pending buffer.Appending
	var err error
	start := time.Now()
	if !j.batch.Empty() {
		pending, err = r.store.BeginAppend(ctx, j.batch)
	}
	prevOK := <-j.prev
	switch {
	case !prevOK:
		if pending != nil {
			pending.Rollback()
		}
		return false
	case err != nil:
		errs <- withKind(metrics.KindBuffer, err)
		return false
	}
	if pending != nil {
		if err := pending.Commit(ctx); err != nil {
			errs <- withKind(metrics.KindBuffer, err)
			return false
		}
		r.cfg.Metrics.ObserveAppend(time.Since(start))
	}
	if j.confirm > durable.Load() {
		durable.Store(j.confirm)
	}
	return true
}

func (r *Reader) ensurePublication(ctx context.Context, conn *pgconn.PgConn) error {
	exists, err := queryBool(ctx, conn, fmt.Sprintf("SELECT count(*) > 0 FROM pg_publication WHERE pubname = %s", quoteLiteral(r.cfg.Publication)))
	if err != nil {
		return fmt.Errorf("look up publication %s: %w", r.cfg.Publication, err)
	}
	if exists {
		return checkIdentity(ctx, conn, publicationTablesCond(r.cfg.Publication), "publication "+r.cfg.Publication+" (PHILOTES_PUBLICATION)")
	}
	cond, what := allTablesCond, "the tables of a new publication (every table; PHILOTES_TABLES lists fewer)"
	if len(r.cfg.Tables) > 0 {
		cond, what = listedTablesCond(r.cfg.Tables), "the tables of PHILOTES_TABLES"
	}
	if err := checkIdentity(ctx, conn, cond, what); err != nil {
		return err
	}
	tables, err := r.tablesWhere(ctx, conn, cond)
	if err != nil {
		return fmt.Errorf("list the tables for publication %s: %w", r.cfg.Publication, err)
	}
	names := make([]string, len(tables))
	found := map[string]bool{}
	for i, t := range tables {
		names[i] = pgx.Identifier{t.Schema, t.Name}.Sanitize()
		found[t.Schema+"."+t.Name] = true
	}
	var missing []string
	for _, t := range r.cfg.Tables {
		if !found[t] {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: PHILOTES_TABLES names tables the source database does not have: %s; list existing tables as schema.table",
			ErrSourceConfig, strings.Join(missing, ", "))
	}
	target := ""
	if len(names) > 0 {
		target = " FOR TABLE " + strings.Join(names, ", ")
	}
	pub := pgx.Identifier{r.cfg.Publication}.Sanitize()
	// A partitioned table's changes are published as its own (one Iceberg table), not as its partitions'. A
	// publication for every table lists them rather than FOR ALL TABLES, and takes in later tables itself
	// (watch.go), only those with a replica identity.
	sql := fmt.Sprintf("CREATE PUBLICATION %s%s WITH (publish_via_partition_root = true)", pub, target)
	if len(r.cfg.Tables) == 0 {
		sql = "BEGIN; " + sql + "; COMMENT ON PUBLICATION " + pub + " IS " + quoteLiteral(managedComment) + "; COMMIT"
	}
	if err := conn.Exec(ctx, sql).Close(); err != nil {
		return fmt.Errorf("create publication %s (PHILOTES_PUBLICATION, PHILOTES_TABLES): %w", r.cfg.Publication, err)
	}
	r.log.Info("created publication", "publication", r.cfg.Publication, "tables", len(names), "adds_new_tables", len(r.cfg.Tables) == 0)
	return nil
}

func (r *Reader) ensureSlot(ctx context.Context, conn *pgconn.PgConn) error {
	exists, err := queryBool(ctx, conn, fmt.Sprintf("SELECT count(*) > 0 FROM pg_replication_slots WHERE slot_name = %s", quoteLiteral(r.cfg.Slot)))
	if err != nil {
		return fmt.Errorf("look up slot %s: %w", r.cfg.Slot, err)
	}
	if exists {
		return checkSlot(ctx, conn, r.cfg.Slot, r.cfg.Publication)
	}
	if _, err := pglogrepl.CreateReplicationSlot(ctx, conn, r.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication}); err != nil {
		return fmt.Errorf("create slot %s (PHILOTES_SLOT): %w", r.cfg.Slot, err)
	}
	r.log.Info("created replication slot")
	return nil
}

// job is a batch on its way to the buffer, with the LSN that may be confirmed once it is durable. Jobs copy in
// parallel but commit in order: each waits for its predecessor's outcome (prev) and passes its own on (done).
type job struct {
	batch   *buffer.Batch
	confirm uint64
	prev    <-chan bool
	done    chan bool
}

// appendPipeline copies submitted batches into the buffer on Appenders goroutines, so that decoding and COPY
// overlap and several server backends work on the COPY; the batches commit in submission order, and durable is
// the confirmed position of the last one committed.
type appendPipeline struct {
	r         *Reader
	durable   atomic.Uint64
	work      chan job
	free      chan *buffer.Batch
	errs      chan error
	appenders sync.WaitGroup
	lastDone  chan bool
	nextID    int64
}

// newAppendPipeline starts the appenders. They finish what they were given even after ctx is cancelled, so a
// shutdown keeps what was read.
func (r *Reader) newAppendPipeline(ctx context.Context, nextID int64) *appendPipeline {
	n := r.cfg.Appenders
	p := &appendPipeline{r: r, work: make(chan job, n), free: make(chan *buffer.Batch, 2*n+1), errs: make(chan error, n),
		lastDone: make(chan bool, 1), nextID: nextID}
	for range 2*n + 1 {
		p.free <- &buffer.Batch{}
	}
	p.lastDone <- true
	actx := context.WithoutCancel(ctx)
	for range n {
		p.appenders.Add(1)
		go func() {
			defer p.appenders.Done()
			for j := range p.work {
				ok := r.appendOne(actx, j, &p.durable, p.errs)
				j.batch.Reset()
				p.free <- j.batch
				j.done <- ok
			}
		}()
	}
	return p
}

// submit hands the stream's batch, with the position it lets the reader confirm, to the appenders, and gives
// the stream an empty batch.
func (p *appendPipeline) submit(s *streamState) {
	s.batch.FirstID = p.nextID
	p.nextID += int64(s.batch.Len())
	done := make(chan bool, 1)
	p.work <- job{batch: s.batch, confirm: s.confirm, prev: p.lastDone, done: done}
	p.lastDone = done
	s.submitted = s.confirm
	s.batch = <-p.free
	s.firstPending = time.Time{}
}

// failed returns an appender's error, if one failed.
func (p *appendPipeline) failed() error {
	select {
	case err := <-p.errs:
		return err
	default:
		return nil
	}
}

// finish submits what the stream holds, waits for the appenders and reports the durable position to the server.
func (p *appendPipeline) finish(conn *pgconn.PgConn, s *streamState) error {
	if !s.batch.Empty() || s.confirm > s.submitted {
		p.submit(s)
	}
	close(p.work)
	p.appenders.Wait()
	if err := p.failed(); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if d := p.durable.Load(); d > 0 {
		_ = pglogrepl.SendStandbyStatusUpdate(sctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pglogrepl.LSN(d)})
	}
	return nil
}

// sendStatus reports the durable position to the server (when it moved, or when forced) and the WAL the slot
// retains to the metrics.
func (p *appendPipeline) sendStatus(ctx context.Context, conn *pgconn.PgConn, s *streamState, reported *uint64, force bool) error {
	d := p.durable.Load()
	p.r.cfg.Metrics.SetRetainedWAL(s.serverEnd - min(d, s.serverEnd))
	if !force && d == *reported {
		return nil
	}
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pglogrepl.LSN(d)}); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	*reported = d
	return nil
}

// stream runs the receive loop: it reads until the next flush or status time, submits the batch when it is
// full or due, refreshes the tables being backfilled and reports the confirmed position. Whatever ends it,
// what was read is appended first.
func (r *Reader) stream(ctx context.Context, conn *pgconn.PgConn, s *streamState, nextID int64) error {
	p := r.newAppendPipeline(ctx, nextID)
	s.batch = <-p.free
	stop := func(err error) error {
		if ferr := p.finish(conn, s); ferr != nil {
			return errors.Join(err, ferr)
		}
		return err
	}
	var reported uint64
	nextStatus := time.Now().Add(r.cfg.StatusInterval)
	nextTracked := time.Now().Add(trackedRefresh)
	for {
		wake := nextStatus
		if !s.firstPending.IsZero() {
			wake = earliest(wake, s.firstPending.Add(r.cfg.FlushInterval))
		}
		rctx, cancel := context.WithDeadline(ctx, wake)
		err := s.receive(rctx, conn)
		cancel()
		if aerr := p.failed(); aerr != nil {
			_ = p.finish(conn, s)
			return aerr
		}
		if ctx.Err() != nil {
			return stop(nil)
		}
		if err != nil && !pgconn.Timeout(err) {
			return stop(err)
		}
		now := time.Now()
		if s.batch.Len() >= r.cfg.BatchSize || s.flushNow ||
			(!s.firstPending.IsZero() && !now.Before(s.firstPending.Add(r.cfg.FlushInterval))) {
			p.submit(s)
			s.flushNow = false
		}
		if !now.Before(nextTracked) {
			// Backfills that ended stop the recording of their keys.
			if err := s.refreshTracked(ctx); err != nil {
				return stop(err)
			}
			nextTracked = now.Add(trackedRefresh)
		}
		if s.replyRequested || !now.Before(nextStatus) {
			if err := p.sendStatus(ctx, conn, s, &reported, s.replyRequested); err != nil {
				return stop(err)
			}
			s.replyRequested = false
			nextStatus = now.Add(r.cfg.StatusInterval)
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// streamState is the receive loop's view of the transaction stream.
type streamState struct {
	r         *Reader
	progress  buffer.Position
	relations map[uint32]int64
	skipped   map[uint32]bool
	// tables are the relations' schemas; tracked the tables being backfilled, with their key columns (nil:
	// not known yet); registered the relations already offered for a backfill in this session.
	tables     map[uint32]change.Table
	tracked    map[uint32][]string
	registered map[uint32]bool
	// xid is the largest 64-bit transaction ID seen: the stream gives 32-bit ones.
	xid uint64

	inTx  bool
	tx    begin
	seq   int32
	txXid uint64

	batch        *buffer.Batch
	firstPending time.Time // when the oldest unsubmitted change (or confirmable position) arrived
	confirm      uint64    // highest LSN that is safe to confirm once everything submitted is durable
	submitted    uint64    // confirm value of the last submission

	serverEnd      uint64
	replyRequested bool
	flushNow       bool

	values []change.Value // scratch for key decoding
	key    [][]byte
}

// receive handles messages until the batch is full or ctx's deadline passes (returned as a timeout error).
func (s *streamState) receive(ctx context.Context, conn *pgconn.PgConn) error {
	idle := s.firstPending.IsZero()
	for s.batch.Len() < s.r.cfg.BatchSize && !s.replyRequested && !s.flushNow {
		if idle && !s.firstPending.IsZero() {
			return nil // something arrived: the caller sets its flush deadline
		}
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("parse keepalive: %w", err)
				}
				s.serverEnd = uint64(k.ServerWALEnd)
				if !s.inTx && s.batch.Len() == 0 && s.serverEnd > s.confirm {
					// Nothing in flight: everything up to the server's sent position is either buffered or not
					// ours. Confirming it keeps the slot from retaining WAL while idle.
					s.confirm = s.serverEnd
					s.markPending()
				}
				if k.ReplyRequested {
					s.replyRequested = true
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("parse xlogdata: %w", err)
				}
				if end := uint64(x.ServerWALEnd); end > s.serverEnd {
					s.serverEnd = end
				}
				if err := s.handle(ctx, x.WALData, uint64(x.WALStart)); err != nil {
					return err
				}
			}
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(msg)
		case *pgproto3.CopyDone:
			return errors.New("server ended the replication stream")
		}
	}
	return nil
}

func (s *streamState) markPending() {
	if s.firstPending.IsZero() {
		s.firstPending = time.Now()
	}
}

func (s *streamState) handle(ctx context.Context, data []byte, walStart uint64) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case 'B':
		b, err := parseBegin(data)
		if err != nil {
			return err
		}
		s.inTx, s.tx, s.seq = true, b, 0
		s.txXid = s.widen(b.xid)
	case 'C':
		c, err := parseCommit(data)
		if err != nil {
			return err
		}
		s.inTx = false
		// Every change of this transaction is in the current batch or an earlier one, so once they are durable
		// the whole transaction is: this covers a batch that was cut just before the Commit message too.
		s.confirm = c.endLSN
		s.markPending()
	case 'R':
		id, t, err := parseRelation(data)
		if err != nil {
			return err
		}
		if s.r.cfg.Skip != nil && s.r.cfg.Skip(t.Schema, t.Name) {
			s.skipped[id] = true
			return nil
		}
		delete(s.skipped, id)
		key, err := s.r.store.SaveRelation(context.WithoutCancel(ctx), id, t)
		if err != nil {
			return withKind(metrics.KindBuffer, err)
		}
		s.relations[id] = key
		s.tables[id] = t
		if err := s.register(ctx, id, t); err != nil {
			return err
		}
	case 'M':
		m, err := parseMessage(data)
		if err != nil {
			return err
		}
		if m.prefix != markPrefix || m.transactional {
			return nil
		}
		mark, ok := parseMark(string(m.content), m.lsn)
		if !ok {
			s.r.log.Warn("ignored a malformed backfill watermark", "content", string(m.content))
			return nil
		}
		if mark.Attempt == uuid.Nil {
			// A backfill starts: its table's key columns are known now.
			if err := s.refreshTracked(ctx); err != nil {
				return err
			}
		}
		s.batch.AddMark(mark)
		s.markPending()
		s.flushNow = true // a backfill chunk waits for it: append it now
	case 'I', 'U', 'D':
		rc, err := parseRowChange(data)
		if err != nil {
			return err
		}
		s.seq++
		return s.add(rc.relation, walStart, rc.op, rc.tuple, rc.oldTuple)
	case 'T':
		ids, err := parseTruncate(data)
		if err != nil {
			return err
		}
		for _, id := range ids {
			s.seq++
			if err := s.add(id, walStart, change.Truncate, nil, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *streamState) add(relation uint32, lsn uint64, op change.Op, tuple, oldTuple []byte) error {
	if s.skipped[relation] {
		return nil
	}
	pos := buffer.Position{CommitLSN: s.tx.finalLSN, Seq: s.seq}
	if !s.progress.Less(pos) {
		return nil // buffered before a restart: the slot replays from the last confirmed transaction
	}
	key, ok := s.relations[relation]
	if !ok {
		return fmt.Errorf("change for relation %d arrived before its relation message", relation)
	}
	s.batch.Add(pos, lsn, s.tx.commitTime, key, op, tuple, oldTuple)
	s.markPending()
	if cols, ok := s.tracked[relation]; ok && (cols != nil || op == change.Truncate) {
		return s.track(relation, cols, op, tuple, oldTuple)
	}
	return nil
}

// trackedRefresh is how often the reader reloads which tables are being backfilled.
const trackedRefresh = 10 * time.Second

// refreshTracked reloads the tables being backfilled.
func (s *streamState) refreshTracked(ctx context.Context) error {
	tracked, err := s.r.store.TrackedTables(context.WithoutCancel(ctx))
	if err != nil {
		return withKind(metrics.KindBuffer, err)
	}
	s.tracked = tracked
	return nil
}

// register offers a table seen for the first time in this session for a backfill (a table that had one keeps
// it), and records its changed keys from now on.
func (s *streamState) register(ctx context.Context, id uint32, t change.Table) error {
	if !s.r.cfg.Backfill || s.registered[id] {
		return nil
	}
	s.registered[id] = true
	if _, ok := s.tracked[id]; ok {
		return nil
	}
	// The relation message flags the replica identity's columns: the table's key unless its identity is FULL
	// (then the backfill's planner chooses the key, and the reader records keys from the start mark on).
	var key []string
	for _, c := range t.Columns {
		if c.Key {
			key = append(key, c.Name)
		}
	}
	if len(key) == len(t.Columns) {
		key = nil
	}
	n, err := s.r.store.RequestBackfill(context.WithoutCancel(ctx), []change.TableRef{{RelationID: id, Schema: t.Schema, Name: t.Name, Key: key}}, true)
	if err != nil {
		return withKind(metrics.KindBuffer, err)
	}
	if n > 0 {
		s.r.log.Info("registered a new table for a backfill of its existing rows", "table", t.Schema+"."+t.Name)
		s.tracked[id] = key
		return nil
	}
	// Registered already (by the reader's watch, before it added the table to the publication): record its
	// changed keys from this first change on.
	return s.refreshTracked(ctx)
}

// track records the keys a change touches in a table being backfilled.
func (s *streamState) track(relation uint32, cols []string, op change.Op, tuple, oldTuple []byte) error {
	k := buffer.KeyChange{Relation: relation, Op: op, Xid: s.txXid, CommitLSN: s.tx.finalLSN}
	if op == change.Truncate {
		s.batch.AddKey(k)
		return nil
	}
	t, ok := s.tables[relation]
	if !ok {
		return fmt.Errorf("change for relation %d arrived before its relation message", relation)
	}
	keyOf := func(b []byte) ([]byte, bool, error) {
		vals, err := DecodeTuple(b, s.values[:0])
		if err != nil {
			return nil, false, err
		}
		s.values = vals
		key := s.key[:0]
		for _, c := range KeyOrder(cols) {
			i := slices.IndexFunc(t.Columns, func(col change.Column) bool { return col.Name == c })
			if i < 0 || i >= len(vals) || vals[i].Unchanged {
				return nil, false, nil // not a full key: the key column is missing or was not sent
			}
			if vals[i].Null {
				key = append(key, nil)
			} else {
				key = append(key, vals[i].Text)
			}
		}
		s.key = key
		return EncodeKey(key), true, nil
	}
	if tuple != nil {
		key, ok, err := keyOf(tuple)
		if err != nil {
			return err
		}
		if ok {
			k.Key = key
			s.batch.AddKey(k)
		}
	}
	if oldTuple != nil {
		key, ok, err := keyOf(oldTuple)
		if err != nil {
			return err
		}
		if ok {
			// The old key of an update that changed it is gone: for that key it is a delete.
			k.Key, k.Op = key, change.Delete
			s.batch.AddKey(k)
		}
	}
	return nil
}

// widen turns the stream's 32-bit transaction ID into the 64-bit one nearest the largest seen so far.
func (s *streamState) widen(x uint32) uint64 {
	const half = 1 << 31
	v := s.xid&^0xffffffff | uint64(x)
	switch {
	case v+half < s.xid:
		v += 1 << 32
	case v > s.xid+half && v >= 1<<32:
		v -= 1 << 32
	}
	s.xid = max(s.xid, v)
	return v
}

func queryText(ctx context.Context, conn *pgconn.PgConn, sql string) (string, error) {
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return "", err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return "", fmt.Errorf("unexpected result for %q", sql)
	}
	return string(res[0].Rows[0][0]), nil
}

func queryBool(ctx context.Context, conn *pgconn.PgConn, sql string) (bool, error) {
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return false, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return false, fmt.Errorf("unexpected result for %q", sql)
	}
	return string(res[0].Rows[0][0]) == "t", nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
