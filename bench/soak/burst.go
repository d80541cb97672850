package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/philotes/philotes-worker/bench/internal/harness"
)

// depthProbe reads the buffer depth straight from the buffer database; should the buffer's schema change so
// that the query fails, it falls back to philotes_buffer_depth of a running worker (refreshed every
// PHILOTES_STATS_INTERVAL, so coarser).
type depthProbe struct {
	bufURL   string
	fallback *harness.Worker
	warned   bool
}

func (d *depthProbe) depth(ctx context.Context) (int64, error) {
	conn, err := pgx.Connect(ctx, d.bufURL)
	if err != nil {
		return 0, fmt.Errorf("buffer depth: %w", err)
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, `SELECT coalesce(sum(events), 0) FROM philotes.event_chunks`).Scan(&n)
	if err == nil {
		return n, nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || d.fallback == nil || d.fallback.Exited() {
		return 0, fmt.Errorf("buffer depth: %w", err)
	}
	if !d.warned {
		d.warned = true
		fmt.Printf("note: buffer depth query failed (%v); using philotes_buffer_depth of %s\n", err, d.fallback.Name)
	}
	s, err := d.fallback.Scrape(ctx)
	if err != nil {
		return 0, err
	}
	v, ok := s.Value("philotes_buffer_depth", nil)
	if !ok {
		return 0, errors.New("buffer depth: no philotes_buffer_depth metric either")
	}
	return int64(v), nil
}

// burstResult is one burst's timings.
type burstResult struct {
	table    string
	rows     int
	writers  int
	buffered time.Duration // insert commit until the reader had all rows in the buffer
	drained  time.Duration // processors started until the buffer was empty again
	visible  time.Duration // processors started until all rows were in the lake
	total    time.Duration // insert commit until all rows were in the lake (includes the two steps above)
}

func (b burstResult) rowsPerSecond() float64 { return float64(b.rows) / b.visible.Seconds() }

// measureBurst inserts rows into table in one transaction while only a reader runs, waits until the reader
// has buffered them all, then starts writers `drain` worker processes of one processor each (one of them takes
// the committer role; draining, it commits as soon as the buffer is empty instead of waiting for the commit
// interval) and times the buffer draining and the rows becoming visible in the lake. The writers are stopped
// before it returns.
func (r *runner) measureBurst(ctx context.Context, table string, rows, writers int) (burstResult, error) {
	res := burstResult{table: table, rows: rows, writers: writers}
	base, err := r.lake.Records(ctx, table)
	if err != nil {
		return res, err
	}
	if d, err := r.depth.depth(ctx); err != nil {
		return res, err
	} else if d != 0 {
		return res, fmt.Errorf("burst into %s: the buffer holds %d events before the burst, want 0", table, d)
	}
	committed, err := burst(ctx, r.srcURL, table, rows, r.ledger)
	if err != nil {
		return res, err
	}
	err = harness.Poll(ctx, r.cfg.burstTimeout, 100*time.Millisecond, func() (bool, error) {
		d, err := r.depth.depth(ctx)
		return d >= int64(rows), err
	})
	if err != nil {
		return res, fmt.Errorf("burst into %s: waiting for the reader to buffer %d rows: %w", table, rows, err)
	}
	res.buffered = time.Since(committed)

	start := time.Now()
	var procs []*harness.Worker
	defer func() {
		for _, p := range procs {
			_ = p.Stop(time.Minute)
		}
	}()
	for i := range writers {
		p, err := r.start(fmt.Sprintf("writer-%s-%dx%d", table, writers, i+1), "drain", "--processors", "1")
		if err != nil {
			return res, err
		}
		procs = append(procs, p)
	}
	writerDied := func() error {
		for _, p := range procs {
			if p.Exited() && p.ExitErr() != nil { // a drain exits 0 once everything is committed
				return fmt.Errorf("%s failed during the burst: %v; log tail:\n%s", p.Name, p.ExitErr(), p.LogTail())
			}
		}
		return nil
	}
	type timing struct {
		d   time.Duration
		err error
	}
	drained, visible := make(chan timing, 1), make(chan timing, 1)
	go func() {
		err := harness.Poll(ctx, r.cfg.burstTimeout, 100*time.Millisecond, func() (bool, error) {
			if err := writerDied(); err != nil {
				return false, err
			}
			d, err := r.depth.depth(ctx)
			return d == 0, err
		})
		drained <- timing{time.Since(start), err}
	}()
	go func() {
		err := harness.Poll(ctx, r.cfg.burstTimeout, 250*time.Millisecond, func() (bool, error) {
			if err := writerDied(); err != nil {
				return false, err
			}
			n, err := r.lake.Records(ctx, table)
			return n >= base+int64(rows), err
		})
		visible <- timing{time.Since(start), err}
	}()
	dt, vt := <-drained, <-visible
	if err := errors.Join(dt.err, vt.err); err != nil {
		return res, fmt.Errorf("burst into %s with %d writer(s): %w", table, writers, err)
	}
	res.drained, res.visible = dt.d, vt.d
	res.total = start.Sub(committed) + vt.d
	for _, p := range procs {
		if err := p.Stop(time.Minute); err != nil {
			return res, err
		}
	}
	return res, nil
}

func printBurst(b burstResult) {
	fmt.Printf("  %-12s %7d rows, %d writer(s): buffered %6.2fs after commit; writers drained the buffer in %6.2fs, "+
		"rows visible in %6.2fs (%6.0f rows/s); commit to lake %6.2fs\n",
		b.table, b.rows, b.writers, b.buffered.Seconds(), b.drained.Seconds(), b.visible.Seconds(), b.rowsPerSecond(),
		b.total.Seconds())
}
