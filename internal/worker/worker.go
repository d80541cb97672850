// Package worker runs a replica: the reader candidate, the buffer processors and the stats loop, and shuts them
// down so that scaling in never loses or duplicates an event.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/internal/source"
)

// Sink writes decoded changes to the lake. It must be safe for concurrent use by several processors, and must
// not append an event twice when the same EventIDs come again (a claim re-delivered after a crash).
type Sink interface {
	Write(ctx context.Context, batch []change.TableChanges) error
}

// Buffer is what the processors and stats loop need from the buffer.
type Buffer interface {
	Claim(ctx context.Context, n int) (*buffer.Claim, error)
	Relation(ctx context.Context, key int64) (change.Table, error)
	Stats(ctx context.Context) (buffer.Stats, error)
}

// Metrics receives the processors' observations.
type Metrics interface {
	ObserveSink(d time.Duration, events int)
	SetBuffer(depth int64, oldest time.Time)
	Error(kind string)
}

// Reader is the slot reader candidate.
type Reader interface {
	Run(ctx context.Context) error
}

// Config configures a Worker.
type Config struct {
	Processors       int
	BatchSize        int
	StatsInterval    time.Duration
	IdlePollInterval time.Duration
	// ShutdownTimeout is how long in-flight batches may take after the stop signal before they are rolled back.
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

// Worker is one replica's work.
type Worker struct {
	cfg     Config
	buf     Buffer
	sink    Sink
	reader  Reader // nil: no reader role on this replica
	metrics Metrics
	log     *slog.Logger
	ready   atomic.Bool
}

// New checks that every dependency is present.
func New(cfg Config, buf Buffer, sink Sink, reader Reader, m Metrics) (*Worker, error) {
	switch {
	case buf == nil:
		return nil, errors.New("worker: a buffer is required")
	case sink == nil && cfg.Processors > 0:
		return nil, errors.New("worker: a sink is required for processors")
	case m == nil:
		return nil, errors.New("worker: metrics are required")
	case cfg.BatchSize <= 0 || cfg.StatsInterval <= 0 || cfg.IdlePollInterval <= 0 || cfg.ShutdownTimeout <= 0:
		return nil, errors.New("worker: batch size and intervals must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Worker{cfg: cfg, buf: buf, sink: sink, reader: reader, metrics: m, log: cfg.Logger}, nil
}

// Ready reports whether the replica is serving (false before Run and once stopping).
func (w *Worker) Ready() bool { return w.ready.Load() }

// Run works until ctx is cancelled (SIGTERM), then stops claiming, lets in-flight batches finish within
// ShutdownTimeout (rolling back the rest, so another replica takes them), releases the reader role and returns.
func (w *Worker) Run(ctx context.Context) error {
	return w.run(ctx, false)
}

// Drain processes the buffer until it is empty, then returns nil. Cancelling ctx stops it like Run.
func (w *Worker) Drain(ctx context.Context) error {
	return w.run(ctx, true)
}

func (w *Worker) run(ctx context.Context, drain bool) error {
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
	errs := make(chan error, w.cfg.Processors+2)
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
			}
		}()
	}
	drained, allDrained := context.WithCancel(ctx)
	defer allDrained()
	var procs sync.WaitGroup
	for i := range w.cfg.Processors {
		procs.Add(1)
		go func() {
			defer procs.Done()
			if err := w.process(ctx, hard, drain, drained, allDrained, w.log.With("processor", i)); err != nil {
				errs <- err
			}
		}()
	}
	w.ready.Store(true)
	if drain {
		procs.Wait()
		stopStats()
		w.ready.Store(false)
	}
	procs.Wait()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// process claims and writes batches until ctx is cancelled (or, draining, until the buffer is empty).
func (w *Worker) process(ctx, hard context.Context, drain bool, drained context.Context, done context.CancelFunc, log *slog.Logger) error {
	idle := w.cfg.IdlePollInterval
	failures := 0
	for ctx.Err() == nil && drained.Err() == nil {
		n, err := w.processOne(hard, log)
		switch {
		case err != nil:
			failures++
			backoff := min(time.Duration(failures)*time.Second, 30*time.Second)
			log.Warn("batch failed; its events are released for a retry", "err", err, "retry_in", backoff)
			wait(ctx, backoff)
			continue
		case n > 0:
			failures = 0
			continue
		}
		if drain {
			st, err := w.buf.Stats(hard)
			if err == nil && st.Depth == 0 {
				done()
				return nil
			}
		}
		wait(ctx, idle)
	}
	return nil
}

// processOne claims one batch, writes it to the sink and deletes it from the buffer. It returns how many events
// it committed. On any error the claim is rolled back, so the events stay in the buffer for another try.
func (w *Worker) processOne(ctx context.Context, log *slog.Logger) (int, error) {
	claim, err := w.buf.Claim(ctx, w.cfg.BatchSize)
	if err != nil {
		w.metrics.Error("buffer")
		return 0, err
	}
	if len(claim.Events) == 0 {
		return 0, nil
	}
	defer claim.Rollback()
	start := time.Now()
	batch, err := w.decode(ctx, claim.Events)
	if err != nil {
		w.metrics.Error("buffer")
		return 0, err
	}
	if err := w.sink.Write(ctx, batch); err != nil {
		w.metrics.Error("sink")
		return 0, fmt.Errorf("sink: %w", err)
	}
	if err := claim.Commit(ctx); err != nil {
		// The sink has the events; the buffer still does too. The next claim of them is recognised by the sink
		// and not appended again.
		w.metrics.Error("buffer")
		return 0, err
	}
	w.metrics.ObserveSink(time.Since(start), len(claim.Events))
	log.Debug("batch committed", "events", len(claim.Events), "took", time.Since(start))
	return len(claim.Events), nil
}

// decode turns claimed events into per-table changes, in event order.
func (w *Worker) decode(ctx context.Context, events []buffer.Event) ([]change.TableChanges, error) {
	var out []change.TableChanges
	index := map[int64]int{}
	for i := range events {
		e := &events[i]
		j, ok := index[e.Relation]
		if !ok {
			t, err := w.buf.Relation(ctx, e.Relation)
			if err != nil {
				return nil, err
			}
			j = len(out)
			index[e.Relation] = j
			out = append(out, change.TableChanges{Table: t})
		}
		c := change.Change{EventID: e.ID, Op: e.Op, CommitLSN: e.CommitLSN, LSN: e.LSN, Seq: e.Seq, CommitTime: e.CommitTime}
		tuple := e.Tuple
		if e.Op == change.Delete {
			tuple = e.OldTuple
		}
		if tuple != nil {
			vals, err := source.DecodeTuple(tuple, nil)
			if err != nil {
				return nil, fmt.Errorf("event %d: %w", e.ID, err)
			}
			if len(vals) > len(out[j].Table.Columns) {
				return nil, fmt.Errorf("event %d: %d values for %d columns of %s.%s", e.ID, len(vals), len(out[j].Table.Columns), out[j].Table.Schema, out[j].Table.Name)
			}
			c.Values = vals
		}
		out[j].Changes = append(out[j].Changes, c)
	}
	return out, nil
}

func (w *Worker) statsLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.StatsInterval)
	defer t.Stop()
	for {
		st, err := w.buf.Stats(ctx)
		if err == nil {
			w.metrics.SetBuffer(st.Depth, st.Oldest)
		} else if ctx.Err() == nil {
			w.metrics.Error("buffer")
			w.log.Warn("read buffer stats", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

var _ Reader = (*source.Reader)(nil)
