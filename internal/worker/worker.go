// Package worker runs a replica: the reader candidate, the buffer processors (writers), the committer candidate
// and the stats loop, and shuts them down so that scaling in never loses or duplicates an event.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/internal/metrics"
	"github.com/philotes/philotes-worker/internal/sink/iceberg"
)

// Sink writes decoded changes to data files in the lake without committing them. It must be safe for
// concurrent use by several processors.
type Sink interface {
	// Prepare readies the table for t (created, schema evolved) and returns where its data files go.
	Prepare(ctx context.Context, t change.Table) (location string, err error)
	// WriteFiles writes the changes to data files named with writeUUID under that location.
	WriteFiles(ctx context.Context, tc *change.TableChanges, writeUUID uuid.UUID) ([]iceberg.File, error)
}

// Decoder turns claimed events back into per-table changes (source.Decoder). errs follows tables: a table whose
// events do not decode has an error wrapping change.ErrUnwritable.
type Decoder interface {
	Decode(ctx context.Context, events []buffer.Event) (tables []change.TableChanges, errs []error, err error)
}

// Buffer is what the processors and stats loop need from the buffer.
type Buffer interface {
	Stats(ctx context.Context) (buffer.Stats, error)
	// Park records that a table's changes cannot be written, and why (see buffer.Claim.Park).
	Park(ctx context.Context, t buffer.TableName, reason string) error
	BackfillBuffer
}

// Metrics receives the processors', the committer's and the stats loop's observations.
type Metrics interface {
	ObserveSink(d time.Duration, events int)
	SetBuffer(depth int64, oldest time.Time)
	SetPending(files, bytes int64)
	SetBackfillRemaining(rows int64)
	// SetParked records the parked tables ("schema.name") and the events waiting for each.
	SetParked(events map[string]int64)
	CommitterMetrics
	BackfillMetrics
}

// Reader is the slot reader candidate.
type Reader interface {
	Run(ctx context.Context) error
}

// Config configures a Worker.
type Config struct {
	Processors int
	BatchSize  int
	// MaxEventsPerSecond caps what one processor writes per second (0: no cap).
	MaxEventsPerSecond int
	StatsInterval      time.Duration
	IdlePollInterval   time.Duration
	// ShutdownTimeout is how long in-flight batches may take after the stop signal before they are rolled back.
	ShutdownTimeout time.Duration
	// Committer configures the committer role that every replica with processors competes for.
	Committer CommitterConfig
	// Backfill configures this replica's backfill workers (none when Workers is 0, and none in drain mode).
	Backfill BackfillConfig
	// Decoder decodes the events processors claim (required with processors).
	Decoder Decoder
	Logger  *slog.Logger
}

// Worker is one replica's work.
type Worker struct {
	cfg     Config
	buf     Buffer
	sink    Sink
	reader  Reader      // nil: no reader role on this replica
	commit  *committer  // nil: no processors, no committer role
	fill    *backfiller // nil: no backfill workers
	metrics Metrics
	log     *slog.Logger
	ready   atomic.Bool
	health  *health
}

// New checks that every dependency is present. queue and lake are the committer's (they may be nil when
// cfg.Processors is 0).
func New(cfg Config, buf Buffer, sink Sink, reader Reader, queue CommitQueue, lake Lake, m Metrics) (*Worker, error) {
	switch {
	case buf == nil:
		return nil, errors.New("worker: a buffer is required")
	case (sink == nil || queue == nil || lake == nil || cfg.Decoder == nil) && cfg.Processors > 0:
		return nil, errors.New("worker: a sink, a commit queue, a lake and a decoder are required for processors")
	case m == nil:
		return nil, errors.New("worker: metrics are required")
	case cfg.BatchSize <= 0 || cfg.StatsInterval <= 0 || cfg.IdlePollInterval <= 0 || cfg.ShutdownTimeout <= 0:
		return nil, errors.New("worker: batch size and intervals must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Worker{cfg: cfg, buf: buf, sink: sink, reader: reader, metrics: m, log: cfg.Logger, health: newHealth()}
	if cfg.Processors > 0 {
		c, err := newCommitter(cfg.Committer, queue, lake, m, cfg.Logger.With("role", "committer"))
		if err != nil {
			return nil, err
		}
		w.commit = c
	}
	if cfg.Backfill.Workers > 0 {
		b, err := newBackfiller(cfg.Backfill, buf, m, cfg.IdlePollInterval, cfg.Logger.With("component", "backfill"))
		if err != nil {
			return nil, err
		}
		w.fill = b
	}
	return w, nil
}

// Health reports whether the replica can do its work and, when not, why: not started yet or stopping, the
// buffer database unreachable, or no batch written to the warehouse for a while.
func (w *Worker) Health() (bool, []string) {
	problems := w.health.problems()
	if !w.ready.Load() {
		problems = append([]string{"not serving: starting or stopping"}, problems...)
	}
	return len(problems) == 0, problems
}

// Run works until ctx is cancelled (SIGTERM), then stops claiming, lets in-flight batches finish within
// ShutdownTimeout (rolling back the rest, so another replica takes them), commits the recorded files if it holds
// the committer role, releases its roles and returns.
func (w *Worker) Run(ctx context.Context) error {
	return w.run(ctx, false)
}

// Drain processes the buffer until it is empty and every recorded file is committed (by this replica or by
// the committer elsewhere), then returns nil. Cancelling ctx stops it like Run.
func (w *Worker) Drain(ctx context.Context) error {
	return w.run(ctx, true)
}

func (w *Worker) run(ctx context.Context, drain bool) error {
	// A part that cannot go on (the reader refused by the source's setup) stops the whole replica, as SIGTERM does.
	ctx, fail := context.WithCancel(ctx)
	defer fail()
	// hard is cancelled only when the shutdown deadline passes: in-flight work keeps it until then.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stop := context.AfterFunc(ctx, func() {
		w.ready.Store(false)
		w.log.Info("stopping: no new claims", "deadline", w.cfg.ShutdownTimeout)
		time.AfterFunc(w.cfg.ShutdownTimeout, cancelHard)
	})
	defer stop()

	var wg sync.WaitGroup
	errs := make(chan error, w.cfg.Processors+w.cfg.Backfill.Workers+3)
	statsCtx, stopStats := context.WithCancel(ctx)
	defer stopStats()
	wg.Add(1)
	go func() { defer wg.Done(); w.statsLoop(statsCtx) }()

	if w.reader != nil && !drain {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.reader.Run(ctx); err != nil {
				errs <- fmt.Errorf("reader: %w", err)
				fail()
			}
		}()
	}
	if w.fill != nil && !drain {
		for range w.cfg.Backfill.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := w.fill.loop(ctx, nil); err != nil {
					errs <- fmt.Errorf("backfill: %w", err)
				}
			}()
		}
	}
	// The committer outlives the processors: once they have stopped it commits what they recorded, then
	// gives its role up. Until the shutdown deadline, that is.
	commitCtx, stopCommit := context.WithCancel(hard)
	defer stopCommit()
	if w.commit != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.commit.run(commitCtx, hard, drain); err != nil {
				errs <- fmt.Errorf("committer: %w", err)
			}
		}()
	}
	drained, allDrained := context.WithCancel(ctx)
	defer allDrained()
	rc := run{stop: ctx, hard: hard, drain: drain, drained: drained, emptied: allDrained}
	var procs sync.WaitGroup
	for i := range w.cfg.Processors {
		procs.Add(1)
		go func() {
			defer procs.Done()
			p := &processor{w: w, log: w.log.With("processor", i)}
			defer p.close()
			p.loop(rc)
		}()
	}
	w.ready.Store(true)
	procs.Wait()
	if drain {
		stopStats()
		w.ready.Store(false)
	}
	stopCommit()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// processor is one of a replica's processors: it claims events, writes them to data files and records the
// files, under its own lease (see buffer.Lease).
type processor struct {
	w     *Worker
	log   *slog.Logger
	lease *buffer.Lease
	// parkedDue is when the processor next looks for a parked table due for a retry.
	parkedDue time.Time
}

// parkedPoll is how often a processor looks for a parked table due for a retry (each table's own backoff is
// kept in the buffer: buffer.ParkedRetryFirst, doubling up to buffer.ParkedRetryMax).
const parkedPoll = 5 * time.Second

// errParked reports a batch abandoned because one of its tables was just parked.
var errParked = errors.New("a table of the batch was parked")

func (p *processor) close() {
	if p.lease != nil {
		p.lease.Close()
		p.lease = nil
	}
}

// run is what one Run or Drain gives its processors.
type run struct {
	// stop ends new claims (SIGTERM); hard ends the batches in flight (the shutdown deadline after stop).
	stop, hard context.Context
	// drain: processors stop once the buffer is empty and every file is committed; the first to see it calls
	// emptied, which ends drained for all.
	drain   bool
	drained context.Context
	emptied context.CancelFunc
}

// loop claims and writes batches until rc.stop ends (or, draining, until the buffer is empty and every file is
// committed).
func (p *processor) loop(rc run) {
	w := p.w
	ctx, hard := rc.stop, rc.hard
	failures := 0
	for ctx.Err() == nil && rc.drained.Err() == nil {
		if !rc.drain && !time.Now().Before(p.parkedDue) {
			// A parked table due for a retry: write its events, batch after batch while they keep coming.
			n, err := p.processOne(hard, true)
			if err != nil {
				p.close()
				p.log.Warn("parked table: retry failed", "err", err)
			}
			if err != nil || n < w.cfg.BatchSize {
				p.parkedDue = time.Now().Add(parkedPoll)
			}
			continue
		}
		start := time.Now()
		n, err := p.processOne(hard, false)
		switch {
		case errors.Is(err, errParked):
			// The table is parked; the next claim sets its events aside and writes the others at once.
			p.close()
			continue
		case err != nil:
			// The claim is rolled back. Whatever files it wrote are the lease's to clean up, so end the lease:
			// the committer removes them; the next claim starts a new lease.
			p.close()
			failures++
			backoff := min(time.Duration(failures)*time.Second, 30*time.Second)
			p.log.Warn("batch failed; its events are released for a retry", "err", err, "retry_in", backoff)
			wait(ctx, backoff)
			continue
		case n > 0:
			failures = 0
			wait(ctx, pause(n, w.cfg.MaxEventsPerSecond, time.Since(start)))
			continue
		}
		if rc.drain {
			st, err := w.buf.Stats(hard)
			if err == nil && st.Depth == 0 && st.PendingFiles == 0 {
				rc.emptied()
				return
			}
		}
		wait(ctx, w.cfg.IdlePollInterval)
	}
}

// processOne claims one batch (or, with parked, the events of a parked table due for a retry), writes its data
// files, and records them while deleting the events. It returns how many events it processed. On any error the
// claim is rolled back, so the events stay in the buffer for another try. A table whose changes cannot be
// written (change.ErrUnwritable) is parked and errParked returned: the next claim sets its events aside.
func (p *processor) processOne(ctx context.Context, parked bool) (int, error) {
	w := p.w
	if p.lease == nil {
		l, err := w.buf.NewLease(ctx)
		if err != nil {
			w.metrics.Error(metrics.KindBuffer)
			return 0, err
		}
		p.lease = l
	}
	var claim *buffer.Claim
	var err error
	if parked {
		claim, err = p.lease.ClaimParked(ctx, w.cfg.BatchSize)
	} else {
		claim, err = p.lease.Claim(ctx, w.cfg.BatchSize)
	}
	if err != nil {
		w.metrics.Error(metrics.KindBuffer)
		return 0, err
	}
	retrying := claim.Unparking()
	if len(claim.Events) == 0 && retrying == nil {
		return 0, nil
	}
	defer claim.Rollback()
	start := time.Now()
	batch, failed, err := w.cfg.Decoder.Decode(ctx, claim.Events)
	if err != nil {
		w.metrics.Error(metrics.KindBuffer)
		return 0, err
	}
	skip := map[buffer.TableName]bool{}
	if retrying == nil {
		if skip, err = claim.Parked(ctx); err != nil {
			w.metrics.Error(metrics.KindBuffer)
			return 0, err
		}
	}
	var files []buffer.NewFile
	var writes []int64
	written := len(claim.Events) // less the events set aside for parked tables
	for i := range batch {
		tc := &batch[i]
		name := buffer.TableName{Schema: tc.Table.Schema, Name: tc.Table.Name}
		if skip[name] {
			claim.Park(name, eventIDs(tc.Changes))
			written -= len(tc.Changes)
			continue
		}
		tableFiles, write, err := p.write(ctx, tc, failed[i])
		if errors.Is(err, change.ErrUnwritable) {
			return 0, p.park(ctx, name, retrying != nil, err)
		}
		if err != nil {
			return 0, err
		}
		files = append(files, tableFiles...)
		writes = append(writes, write)
	}
	if err := claim.Commit(ctx, files, writes); err != nil {
		w.metrics.Error(metrics.KindBuffer)
		return 0, err
	}
	w.health.ok(partSink)
	w.metrics.ObserveSink(time.Since(start), written)
	if retrying != nil {
		p.log.Info("parked table: wrote its waiting events", "table", retrying.String(), "events", written)
	}
	p.log.Debug("batch recorded", "events", written, "parked", len(claim.Events)-written, "files", len(files), "took", time.Since(start))
	return len(claim.Events), nil
}

// write writes one table's changes to data files under a recorded write, returning the files and the write.
func (p *processor) write(ctx context.Context, tc *change.TableChanges, failed error) ([]buffer.NewFile, int64, error) {
	w := p.w
	if failed != nil {
		return nil, 0, failed
	}
	location, err := w.sink.Prepare(ctx, tc.Table)
	if err != nil {
		return nil, 0, p.sinkFailed(err)
	}
	writeUUID := uuid.New()
	id, err := p.lease.BeginWrite(ctx, writeUUID.String(), location)
	if err != nil {
		w.metrics.Error(metrics.KindBuffer)
		return nil, 0, err
	}
	written, err := w.sink.WriteFiles(ctx, tc, writeUUID)
	if err != nil {
		return nil, 0, p.sinkFailed(err)
	}
	files := make([]buffer.NewFile, len(written))
	for i, f := range written {
		files[i] = buffer.NewFile{Table: f.Table, File: f.Encoded, Bytes: f.Bytes, Records: f.Records,
			OldestCommitTime: f.OldestCommitTime, MaxCommitLSN: f.MaxCommitLSN}
	}
	return files, id, nil
}

// sinkFailed counts a failed write. Only a failure that is not the table's own says the warehouse is failing.
func (p *processor) sinkFailed(err error) error {
	if !errors.Is(err, change.ErrUnwritable) {
		p.w.metrics.Error(metrics.KindSink)
		p.w.health.fail(partSink, err)
	}
	return fmt.Errorf("sink: %w", err)
}

// park records that the table's changes cannot be written. The claim is abandoned: the next one sets the
// table's events aside, and the other tables' events flow.
func (p *processor) park(ctx context.Context, t buffer.TableName, again bool, cause error) error {
	w := p.w
	w.metrics.Error(metrics.KindTable)
	if err := w.buf.Park(ctx, t, cause.Error()); err != nil {
		w.metrics.Error(metrics.KindBuffer)
		return errors.Join(cause, err)
	}
	if again {
		return fmt.Errorf("table %s still cannot be written; it stays parked: %w", t, cause)
	}
	p.log.Error("parked a table whose changes cannot be written; its events wait in the buffer, the other tables keep flowing, and it is retried on a backoff until the cause is fixed",
		"table", t.String(), "err", cause)
	return fmt.Errorf("%w: %s", errParked, t)
}

func eventIDs(changes []change.Change) []int64 {
	ids := make([]int64, len(changes))
	for i := range changes {
		ids[i] = changes[i].EventID
	}
	return ids
}

func (w *Worker) statsLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.StatsInterval)
	defer t.Stop()
	for {
		st, err := w.buf.Stats(ctx)
		if err == nil {
			w.health.ok(partBuffer)
			w.metrics.SetBuffer(st.Depth, st.Oldest)
			w.metrics.SetPending(st.PendingFiles, st.PendingBytes)
			w.metrics.SetBackfillRemaining(st.BackfillRemaining)
			w.metrics.SetParked(st.Parked)
		} else if ctx.Err() == nil {
			w.health.fail(partBuffer, err)
			w.metrics.Error(metrics.KindBuffer)
			w.log.Warn("read buffer stats", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pause is how long a processor that took took to write n events waits before its next claim, to stay at or
// below perSecond events a second (0: no cap).
func pause(n, perSecond int, took time.Duration) time.Duration {
	if perSecond <= 0 {
		return 0
	}
	return max(time.Duration(n)*time.Second/time.Duration(perSecond)-took, 0)
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
