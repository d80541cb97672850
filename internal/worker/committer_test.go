package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/internal/sink/iceberg"
	"github.com/philotes/philotes-worker/test/testutil"
)

// fakeLake is an Iceberg table store reduced to what the committer's protocol relies on: per table, the
// committed sequence number and the files it holds, changed atomically by Commit.
type fakeLake struct {
	mu        sync.Mutex
	committed map[string]int64
	files     map[string][]string // table -> files, in commit order
	commits   int
	// fail, when set, decides Commit's fate: land reports whether the commit reaches the table, err what
	// Commit returns.
	fail func(table string, seq int64) (land bool, err error)
}

func newFakeLake() *fakeLake {
	return &fakeLake{committed: map[string]int64{}, files: map[string][]string{}}
}

func (l *fakeLake) Committed(_ context.Context, table string) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.committed[table], nil
}

func (l *fakeLake) Commit(_ context.Context, table string, seq int64, files [][]byte, _ uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	land, err := true, error(nil)
	if l.fail != nil {
		land, err = l.fail(table, seq)
	}
	if land {
		l.land(table, seq, files)
	}
	return err
}

func (l *fakeLake) land(table string, seq int64, files [][]byte) {
	l.commits++
	l.committed[table] = seq
	for _, f := range files {
		l.files[table] = append(l.files[table], string(f))
	}
}

func (l *fakeLake) RemoveWrite(context.Context, string, string) (int, error) { return 0, nil }

func (l *fakeLake) Maintain(context.Context, string) (iceberg.Maintenance, error) {
	return iceberg.Maintenance{}, nil
}

func (l *fakeLake) SweepOrphans(context.Context, string, time.Duration, iceberg.Protected) (int, error) {
	return 0, nil
}

type nopMetrics struct{}

func (nopMetrics) SetCommitterActive(bool)          {}
func (nopMetrics) ObserveCommit(time.Duration, int) {}
func (nopMetrics) SetTable(string, int, int)        {}
func (nopMetrics) Maintained(string)                {}
func (nopMetrics) Error(string)                     {}

var testCommitterConfig = CommitterConfig{
	Interval: time.Hour, MaxPendingBytes: 1 << 30, PollInterval: 10 * time.Millisecond,
	RetryInterval: 10 * time.Millisecond, CleanInterval: time.Hour, MaxFilesPerCommit: 1000, MaxCommitAttempts: 3,
}

func newTestCommitter(t *testing.T, b *buffer.Buffer, lake Lake, cfg CommitterConfig) *committer {
	t.Helper()
	c, err := newCommitter(cfg, b, lake, nopMetrics{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	c.committedAt, c.maintainedAt, c.sweptAt = map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}
	return c
}

// record appends one event per file and records the files (named name-1, name-2, ...) for table.
func record(t *testing.T, ctx context.Context, b *buffer.Buffer, firstID int64, table string, names ...string) {
	t.Helper()
	batch := &buffer.Batch{FirstID: firstID}
	for i := range names {
		batch.Add(buffer.Position{CommitLSN: uint64(firstID) + uint64(i), Seq: 1}, 1, time.Now(), 1, change.Insert, []byte{1}, nil)
	}
	require.NoError(t, b.Append(ctx, batch))
	lease, err := b.NewLease(ctx)
	require.NoError(t, err)
	defer lease.Close()
	c, err := lease.Claim(ctx, len(names))
	require.NoError(t, err)
	var files []buffer.NewFile
	for _, n := range names {
		files = append(files, buffer.NewFile{Table: table, File: []byte(n), Bytes: 1, Records: 1, OldestCommitTime: time.Now()})
	}
	require.NoError(t, c.Commit(ctx, files, nil))
}

func openTestBuffer(t *testing.T) *buffer.Buffer { return testutil.OpenBuffer(t, 8) }

func pending(t *testing.T, ctx context.Context, b *buffer.Buffer) int64 {
	t.Helper()
	st, err := b.Stats(ctx)
	require.NoError(t, err)
	return st.PendingFiles
}

// The committer's exactly-once protocol: every recorded file reaches its table exactly once, in one commit per
// table per round, whatever happens between the buffer and the table.
func TestCommitterExactlyOnce(t *testing.T) {
	b := openTestBuffer(t)
	next := int64(1)
	cases := []struct {
		name string
		// before runs after the files are recorded and before the committer's rounds.
		before func(t *testing.T, ctx context.Context, lake *fakeLake, table string)
		fail   func(table string, seq int64) (bool, error)
		rounds int
		// wantCommits is the number of commits that reach the lake in the rounds.
		wantCommits int
	}{
		{name: "one commit per table holds every file", rounds: 1, wantCommits: 1},
		{
			name: "a commit that lands but reports an error is not repeated",
			fail: func() func(string, int64) (bool, error) {
				n := 0
				return func(string, int64) (bool, error) {
					n++
					if n == 1 {
						return true, errors.New("connection reset after the catalog accepted the commit")
					}
					return true, nil
				}
			}(),
			rounds: 2, wantCommits: 1,
		},
		{
			name: "a commit that does not land is retried",
			fail: func() func(string, int64) (bool, error) {
				n := 0
				return func(string, int64) (bool, error) {
					n++
					if n == 1 {
						return false, errors.New("catalog unreachable")
					}
					return true, nil
				}
			}(),
			rounds: 2, wantCommits: 1,
		},
		{
			name: "a conflict is retried within the round",
			fail: func() func(string, int64) (bool, error) {
				n := 0
				return func(string, int64) (bool, error) {
					n++
					if n == 1 {
						return false, fmt.Errorf("table moved: %w", iceberg.ErrConflict)
					}
					return true, nil
				}
			}(),
			rounds: 1, wantCommits: 1,
		},
		{
			// A committer that lost its role prepared the first files and its commit still landed, after the
			// new committer read the table but before it committed: the new committer must not add them again.
			name: "a late commit by a previous committer is not duplicated",
			before: func(t *testing.T, ctx context.Context, lake *fakeLake, table string) {
				files, err := b.PendingFiles(ctx, table, 1000)
				require.NoError(t, err)
				ids := []int64{files[0].ID, files[1].ID}
				seq, err := b.PrepareCommit(ctx, ids, 1)
				require.NoError(t, err)
				lake.fail = func(tbl string, s int64) (bool, error) {
					lake.fail = nil
					// The zombie's commit lands first; the table's compare-and-swap refuses this one.
					lake.land(tbl, seq, [][]byte{files[0].File, files[1].File})
					return false, fmt.Errorf("table moved: %w", iceberg.ErrConflict)
				}
			},
			rounds: 1, wantCommits: 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			table := fmt.Sprintf("t%d", next)
			names := []string{table + "-a", table + "-b", table + "-c", table + "-d"}
			record(t, ctx, b, next, table, names[:2]...)
			record(t, ctx, b, next+2, table, names[2:]...)
			next += 4
			lake := newFakeLake()
			if tc.before != nil {
				tc.before(t, ctx, lake, table)
			}
			if tc.fail != nil {
				lake.fail = tc.fail
			}
			c := newTestCommitter(t, b, lake, testCommitterConfig)
			for range tc.rounds {
				_ = c.commitAll(ctx) // a failed round leaves its files for the next
			}
			require.ElementsMatch(t, names, lake.files[table], "every file exactly once")
			require.Equal(t, tc.wantCommits, lake.commits)
			require.Zero(t, pending(t, ctx, b), "committed files are forgotten")
		})
	}
}

// Files recorded for several tables become one commit per table; a table that keeps failing does not hold
// the others back.
func TestCommitterIsolatesTables(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openTestBuffer(t)
	record(t, ctx, b, 1, "good", "g1", "g2")
	record(t, ctx, b, 3, "bad", "b1")
	record(t, ctx, b, 4, "good", "g3")
	lake := newFakeLake()
	lake.fail = func(table string, _ int64) (bool, error) {
		if table == "bad" {
			return false, errors.New("permission denied")
		}
		return true, nil
	}
	c := newTestCommitter(t, b, lake, testCommitterConfig)
	require.Error(t, c.commitAll(ctx))
	require.ElementsMatch(t, []string{"g1", "g2", "g3"}, lake.files["good"])
	require.Equal(t, 1, lake.commits, "one commit for the good table's three files")
	require.Equal(t, int64(1), pending(t, ctx, b), "the bad table's file waits")
}

// On stop, the role holder commits what is pending before it gives the role up, and the next replica can
// take the role at once.
func TestCommitterFlushesOnStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openTestBuffer(t)
	lake := newFakeLake()
	c := newTestCommitter(t, b, lake, testCommitterConfig)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.run(runCtx, ctx, false) }()
	// With a 1 h interval, the first files after taking the role are committed at once, the next ones wait
	// (see TestCommitDue) until the stop.
	record(t, ctx, b, 1, "t", "f1")
	require.Eventually(t, func() bool {
		lake.mu.Lock()
		defer lake.mu.Unlock()
		return len(lake.files["t"]) == 1
	}, 10*time.Second, 10*time.Millisecond)
	record(t, ctx, b, 2, "t", "f2")
	stop()
	require.NoError(t, <-done)
	require.Equal(t, []string{"f1", "f2"}, lake.files["t"], "the final commit on stop")
	lock, err := b.TryCommitterLock(ctx)
	require.NoError(t, err)
	require.NotNil(t, lock, "the role is free after stop")
	lock.Release()
}

// A commit is due once files wait and the interval has passed since the last commit, or earlier when enough
// bytes wait, or, draining, as soon as the buffer is empty.
func TestCommitDue(t *testing.T) {
	cfg := CommitterConfig{Interval: 10 * time.Second, MaxPendingBytes: 1000}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name       string
		st         buffer.Stats
		lastCommit time.Time
		drain      bool
		want       bool
	}{
		{"nothing pending", buffer.Stats{Depth: 5}, time.Time{}, false, false},
		{"first files after taking the role", buffer.Stats{PendingFiles: 1, PendingBytes: 1}, time.Time{}, false, true},
		{"inside the interval", buffer.Stats{PendingFiles: 3, PendingBytes: 10}, now.Add(-9 * time.Second), false, false},
		{"interval passed", buffer.Stats{PendingFiles: 3, PendingBytes: 10}, now.Add(-10 * time.Second), false, true},
		{"enough bytes wait", buffer.Stats{PendingFiles: 3, PendingBytes: 1000}, now.Add(-time.Second), false, true},
		{"draining, buffer empty", buffer.Stats{PendingFiles: 1, PendingBytes: 1}, now.Add(-time.Second), true, true},
		{"draining, events left", buffer.Stats{Depth: 1, PendingFiles: 1, PendingBytes: 1}, now.Add(-time.Second), true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, cfg.due(tc.st, tc.lastCommit, now, tc.drain))
		})
	}
}

// A capped processor waits so that its events per second stay at the cap; without a cap it never waits.
func TestPause(t *testing.T) {
	cases := []struct {
		n, perSecond int
		took, want   time.Duration
	}{
		{256, 0, time.Millisecond, 0},
		{256, 5000, time.Millisecond, 50*time.Millisecond + 200*time.Microsecond},
		{5000, 5000, 300 * time.Millisecond, 700 * time.Millisecond},
		{5000, 5000, 2 * time.Second, 0},
	}
	for _, tc := range cases {
		if got := pause(tc.n, tc.perSecond, tc.took); got != tc.want {
			t.Errorf("pause(%d, %d, %s) = %s, want %s", tc.n, tc.perSecond, tc.took, got, tc.want)
		}
	}
}
