package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/metrics"
	"github.com/philotes/philotes-worker/internal/sink/iceberg"
)

// CommitterConfig configures the committer role.
type CommitterConfig struct {
	// Interval is the longest a recorded file waits for its commit while files keep coming: each table gets at
	// most one commit per Interval (and one at once when files arrive after a quiet Interval).
	Interval time.Duration
	// MaxPendingBytes commits sooner once this many bytes of data files are waiting.
	MaxPendingBytes int64
	// PollInterval is how often the committer looks at the queue; RetryInterval how often a replica without
	// the role tries to take it.
	PollInterval, RetryInterval time.Duration
	// CleanInterval is how often the committer removes the files of writes whose processor died.
	CleanInterval time.Duration
	// MaintenanceInterval is how often each table that took commits is maintained (0: never).
	MaintenanceInterval time.Duration
	// MaxFilesPerCommit bounds one commit; a longer queue takes several.
	MaxFilesPerCommit int
	// MaxCommitAttempts bounds the attempts of one table's commit under conflicts.
	MaxCommitAttempts int
	// OrphanAge is the age past which a file no table state accounts for is removed, by a sweep of each
	// maintained table once per role term and then once per OrphanAge (0: never).
	OrphanAge time.Duration
}

func (c CommitterConfig) validate() error {
	if c.Interval <= 0 || c.PollInterval <= 0 || c.RetryInterval <= 0 || c.CleanInterval <= 0 ||
		c.MaintenanceInterval < 0 || c.OrphanAge < 0 || c.MaxPendingBytes <= 0 || c.MaxFilesPerCommit <= 0 || c.MaxCommitAttempts <= 0 {
		return fmt.Errorf("worker: committer settings must be positive: %+v", c)
	}
	return nil
}

// due reports whether the pending files should be committed now.
func (c CommitterConfig) due(st buffer.Stats, lastCommit, now time.Time, drain bool) bool {
	return st.PendingFiles > 0 && (now.Sub(lastCommit) >= c.Interval || st.PendingBytes >= c.MaxPendingBytes ||
		(drain && st.Depth == 0))
}

// CommitQueue is what the committer needs from the buffer.
type CommitQueue interface {
	TryCommitterLock(ctx context.Context) (*buffer.CommitterLock, error)
	Stats(ctx context.Context) (buffer.Stats, error)
	PendingTables(ctx context.Context) ([]string, error)
	PendingFiles(ctx context.Context, table string, limit int) ([]buffer.PendingFile, error)
	PrepareCommit(ctx context.Context, ids []int64, atLeast int64) (int64, error)
	DeleteFiles(ctx context.Context, ids []int64) error
	WriteUUIDs(ctx context.Context) ([]string, error)
}

// Lake is what the committer needs from the sink.
type Lake interface {
	Committed(ctx context.Context, table string) (int64, error)
	Commit(ctx context.Context, table string, seq int64, files [][]byte, maxCommitLSN uint64) error
	RemoveWrite(ctx context.Context, location, writeUUID string) (int, error)
	Maintain(ctx context.Context, table string) (iceberg.Maintenance, error)
	SweepOrphans(ctx context.Context, table string, olderThan time.Duration, protect iceberg.Protected) (int, error)
}

// CommitterMetrics receives the committer's observations.
type CommitterMetrics interface {
	SetCommitterActive(bool)
	ObserveCommit(d time.Duration, files int)
	SetTable(table string, snapshots, dataFiles int)
	Maintained(operation string)
	Error(kind string)
}

// committer holds or waits for the source's committer role. The holder commits every table's recorded files
// on a cadence, exactly once, and maintains the tables. Exactly once rests on a commit sequence number that the
// buffer hands out and each file keeps once given (PrepareCommit), and that the Iceberg commit records in the
// table's metadata (Lake.Commit): a file whose number is at most the table's committed number is in the table.
// A commit that includes every earlier-numbered file not yet in the table keeps that true, even when a
// committer that lost its role still finishes a commit: the table's compare-and-swap refuses whichever of two
// concurrent commits comes second.
type committer struct {
	cfg     CommitterConfig
	queue   CommitQueue
	lake    Lake
	metrics CommitterMetrics
	log     *slog.Logger

	// Per table, when it last took a commit, was last maintained and last swept (leader state, reset per
	// term).
	committedAt  map[string]time.Time
	maintainedAt map[string]time.Time
	sweptAt      map[string]time.Time
}

func newCommitter(cfg CommitterConfig, queue CommitQueue, lake Lake, m CommitterMetrics, log *slog.Logger) (*committer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &committer{cfg: cfg, queue: queue, lake: lake, metrics: m, log: log}, nil
}

// run competes for the role until ctx is cancelled. While it holds the role and ctx is cancelled, it commits
// what is pending with hard (the shutdown deadline) and then gives the role up. Draining, it commits as soon as
// the buffer is empty instead of waiting for the interval.
func (c *committer) run(ctx, hard context.Context, drain bool) error {
	for ctx.Err() == nil {
		lock, err := c.queue.TryCommitterLock(ctx)
		if err != nil && ctx.Err() == nil {
			c.metrics.Error(metrics.KindBuffer)
			c.log.Warn("committer role: cannot reach the buffer", "err", err, "retry_in", c.cfg.RetryInterval)
		}
		if lock != nil {
			c.metrics.SetCommitterActive(true)
			c.log.Info("took the committer role")
			err := c.lead(ctx, hard, lock, drain)
			lock.Release()
			c.metrics.SetCommitterActive(false)
			if err != nil {
				c.metrics.Error(metrics.KindCommit)
				c.log.Warn("gave the committer role up", "err", err)
			} else {
				c.log.Info("gave the committer role up")
			}
		}
		wait(ctx, c.cfg.RetryInterval)
	}
	return nil
}

// lead works as the committer until ctx is cancelled (then it flushes) or the lock is lost.
func (c *committer) lead(ctx, hard context.Context, lock *buffer.CommitterLock, drain bool) error {
	c.committedAt, c.maintainedAt, c.sweptAt = map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}
	var lastCommit, lastClean time.Time // zero: commit what a previous holder left at once, clean at once
	for {
		if ctx.Err() != nil {
			if err := c.commitAll(hard); err != nil {
				return fmt.Errorf("final commit: %w", err)
			}
			return nil
		}
		if err := lock.Check(ctx); err != nil {
			return err
		}
		if time.Since(lastClean) >= c.cfg.CleanInterval {
			c.clean(ctx, lock)
			lastClean = time.Now()
		}
		st, err := c.queue.Stats(ctx)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			c.metrics.Error(metrics.KindBuffer)
			c.log.Warn("read the commit queue", "err", err)
		} else if c.cfg.due(st, lastCommit, time.Now(), drain) {
			lastCommit = time.Now()
			if err := c.commitAll(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("commit round failed; its files wait for the next round", "err", err)
			}
		}
		c.maintain(ctx)
		wait(ctx, c.cfg.PollInterval)
	}
}

// commitAll commits every table's pending files. A table that fails does not hold the others back.
func (c *committer) commitAll(ctx context.Context) error {
	tables, err := c.queue.PendingTables(ctx)
	if err != nil {
		c.metrics.Error(metrics.KindBuffer)
		return err
	}
	var errs []error
	for _, t := range tables {
		if err := c.commitTable(ctx, t); err != nil {
			c.metrics.Error(metrics.KindCommit)
			errs = append(errs, fmt.Errorf("table %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// commitTable commits the table's pending files, MaxFilesPerCommit at a time.
func (c *committer) commitTable(ctx context.Context, table string) error {
	for attempt := 1; ; {
		files, err := c.queue.PendingFiles(ctx, table, c.cfg.MaxFilesPerCommit)
		if err != nil || len(files) == 0 {
			return err
		}
		committed, err := c.lake.Committed(ctx, table)
		if err != nil {
			return err
		}
		// Files numbered at most the table's committed number are in it already: a commit landed and the
		// committer stopped before it could forget them.
		var landed, todo []int64
		var encoded [][]byte
		var maxLSN uint64
		for i := range files {
			f := &files[i]
			if f.Seq != 0 && f.Seq <= committed {
				landed = append(landed, f.ID)
				continue
			}
			todo = append(todo, f.ID)
			encoded = append(encoded, f.File)
			maxLSN = max(maxLSN, f.MaxCommitLSN)
		}
		if len(landed) > 0 {
			c.log.Info("forgetting files a previous commit already added", "table", table, "files", len(landed))
			if err := c.queue.DeleteFiles(ctx, landed); err != nil {
				return err
			}
		}
		if len(todo) == 0 {
			continue
		}
		seq, err := c.queue.PrepareCommit(ctx, todo, committed+1)
		if err != nil {
			return err
		}
		start := time.Now()
		err = c.lake.Commit(ctx, table, seq, encoded, maxLSN)
		if errors.Is(err, iceberg.ErrConflict) && attempt < c.cfg.MaxCommitAttempts {
			attempt++
			c.log.Debug("commit conflict, retrying", "table", table, "attempt", attempt, "err", err)
			if err := backoffWait(ctx, attempt); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err // the next round learns from the table whether it landed
		}
		c.metrics.ObserveCommit(time.Since(start), len(todo))
		c.committedAt[table] = time.Now()
		if err := c.queue.DeleteFiles(ctx, todo); err != nil {
			return err
		}
		c.log.Debug("committed", "table", table, "files", len(todo), "seq", seq, "took", time.Since(start))
		if len(files) < c.cfg.MaxFilesPerCommit {
			return nil
		}
	}
}

// maintain runs table maintenance on each table that took commits since its last maintenance, at most once
// per MaintenanceInterval each. Maintenance changes how a table is stored, never what it holds, so a failure
// is logged and tried again later.
func (c *committer) maintain(ctx context.Context) {
	if c.cfg.MaintenanceInterval <= 0 {
		return
	}
	for table, at := range c.committedAt {
		last, ok := c.maintainedAt[table]
		if ctx.Err() != nil || (ok && (!at.After(last) || time.Since(last) < c.cfg.MaintenanceInterval)) {
			continue
		}
		if !ok {
			// A new term: first maintenance one interval after the first commit.
			c.maintainedAt[table] = time.Now()
			continue
		}
		c.maintainedAt[table] = time.Now()
		m, err := c.lake.Maintain(ctx, table)
		if err != nil {
			if ctx.Err() == nil {
				c.metrics.Error(metrics.KindMaintenance)
				c.log.Warn("table maintenance failed; trying again later", "table", table, "err", err)
			}
			continue
		}
		for _, op := range m.Operations {
			c.metrics.Maintained(op)
		}
		c.metrics.SetTable(table, m.Snapshots, m.DataFiles)
		if len(m.Operations) > 0 {
			c.log.Info("maintained table", "table", table, "operations", m.Operations, "snapshots", m.Snapshots,
				"data_files", m.DataFiles, "took", m.Took)
		}
		c.sweep(ctx, table)
	}
}

// sweep removes, once per term and then once per OrphanAge, the table's files that no table state accounts
// for: what interrupted commits and compactions left behind (see iceberg.Sink.SweepOrphans).
func (c *committer) sweep(ctx context.Context, table string) {
	if last, ok := c.sweptAt[table]; c.cfg.OrphanAge <= 0 || (ok && time.Since(last) < c.cfg.OrphanAge) {
		return
	}
	c.sweptAt[table] = time.Now()
	n, err := c.lake.SweepOrphans(ctx, table, c.cfg.OrphanAge, func(ctx context.Context) ([][]byte, []string, error) {
		files, err := c.queue.PendingFiles(ctx, table, math.MaxInt32)
		if err != nil {
			return nil, nil, err
		}
		writes, err := c.queue.WriteUUIDs(ctx)
		if err != nil {
			return nil, nil, err
		}
		pending := make([][]byte, len(files))
		for i := range files {
			pending[i] = files[i].File
		}
		return pending, writes, nil
	})
	if n > 0 {
		c.metrics.Maintained("remove_orphans")
		c.log.Info("removed files no table state accounts for", "table", table, "files", n)
	}
	if err != nil && ctx.Err() == nil {
		c.metrics.Error(metrics.KindMaintenance)
		c.log.Warn("sweep orphan files", "table", table, "err", err)
	}
}

// clean removes the files of writes whose processor died before recording them.
func (c *committer) clean(ctx context.Context, lock *buffer.CommitterLock) {
	n, err := lock.CleanDeadWrites(ctx, func(ctx context.Context, w buffer.DeadWrite) error {
		removed, err := c.lake.RemoveWrite(ctx, w.Location, w.WriteUUID)
		if err == nil && removed > 0 {
			c.log.Info("removed the files of a write whose processor stopped before recording them",
				"write", w.WriteUUID, "files", removed)
		}
		return err
	})
	if n > 0 {
		c.metrics.Maintained("remove_orphans")
	}
	if err != nil && ctx.Err() == nil {
		c.metrics.Error(metrics.KindMaintenance)
		c.log.Warn("remove unrecorded files", "err", err)
	}
}

// backoffWait waits before retry attempt n (2-based): exponential from 100ms, capped at 5s.
func backoffWait(ctx context.Context, n int) error {
	wait(ctx, min(100*time.Millisecond<<min(n-2, 6), 5*time.Second))
	return ctx.Err()
}
