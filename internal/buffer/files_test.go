package buffer_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
)

// appendEvents appends n events whose commit times start at first, one second apart.
func appendEvents(t *testing.T, ctx context.Context, b *buffer.Buffer, firstID int64, n int, first time.Time) {
	t.Helper()
	batch := &buffer.Batch{FirstID: firstID}
	for i := range n {
		batch.Add(buffer.Position{CommitLSN: uint64(firstID) + uint64(i), Seq: 1}, 1, first.Add(time.Duration(i)*time.Second),
			1, change.Insert, []byte{1}, nil)
	}
	require.NoError(t, b.Append(ctx, batch))
}

func newFile(table string, oldest time.Time) buffer.NewFile {
	return buffer.NewFile{Table: table, File: []byte(`{"path":"x"}`), Bytes: 100, Records: 3, OldestCommitTime: oldest, MaxCommitLSN: 7}
}

// Recording files, ending their writes and deleting the claimed events is one transaction: after it the
// events are gone and the files pending; a write that is no longer there (its lease was found dead) refuses
// the whole claim, and the events stay.
func TestClaimRecordsFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBuffer(t)
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	appendEvents(t, ctx, b, 1, 3, t0)

	lease, err := b.NewLease(ctx)
	require.NoError(t, err)
	defer lease.Close()

	// A write whose row vanished: the claim must not commit.
	c, err := lease.Claim(ctx, 10)
	require.NoError(t, err)
	require.Len(t, c.Events, 3)
	gone, err := lease.BeginWrite(ctx, uuid.NewString(), "file:///wh/t/data")
	require.NoError(t, err)
	require.Error(t, c.Commit(ctx, []buffer.NewFile{newFile("t", t0)}, []int64{gone, gone + 1000}))
	st, err := b.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), st.Depth, "events stay when the record fails")
	require.Zero(t, st.PendingFiles)

	c, err = lease.Claim(ctx, 10)
	require.NoError(t, err)
	require.Len(t, c.Events, 3)
	w, err := lease.BeginWrite(ctx, uuid.NewString(), "file:///wh/t/data")
	require.NoError(t, err)
	require.NoError(t, c.Commit(ctx, []buffer.NewFile{newFile("t", t0), newFile("u", t0.Add(time.Minute))}, []int64{w}))
	st, err = b.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Depth)
	require.Equal(t, int64(2), st.PendingFiles)
	require.Equal(t, int64(200), st.PendingBytes)
	require.True(t, st.Oldest.Equal(t0), "lag counts pending files: oldest %v", st.Oldest)

	tables, err := b.PendingTables(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"t", "u"}, tables)
}

// Freshness is the older of the oldest buffered event and the oldest pending file.
func TestStatsOldestOfEventsAndFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBuffer(t)
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	appendEvents(t, ctx, b, 1, 1, t0)
	lease, err := b.NewLease(ctx)
	require.NoError(t, err)
	defer lease.Close()
	c, err := lease.Claim(ctx, 10)
	require.NoError(t, err)
	require.NoError(t, c.Commit(ctx, []buffer.NewFile{newFile("t", t0)}, nil))
	appendEvents(t, ctx, b, 2, 1, t0.Add(time.Hour))

	st, err := b.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Depth)
	require.Equal(t, int64(1), st.PendingFiles)
	require.True(t, st.Oldest.Equal(t0), "the pending file is older than the buffered event: %v", st.Oldest)
}

// A write whose lease ended is cleaned (its files removed, then the write forgotten); a live lease's write is
// left alone; a recorded write is never offered for removal.
func TestCleanDeadWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBuffer(t)
	appendEvents(t, ctx, b, 1, 2, time.Now())

	live, err := b.NewLease(ctx)
	require.NoError(t, err)
	defer live.Close()
	liveWrite := uuid.NewString()
	_, err = live.BeginWrite(ctx, liveWrite, "file:///wh/a/data")
	require.NoError(t, err)

	// A lease that records one write, then dies with another in flight.
	dead, err := b.NewLease(ctx)
	require.NoError(t, err)
	recorded, orphan := uuid.NewString(), uuid.NewString()
	c, err := dead.Claim(ctx, 1)
	require.NoError(t, err)
	w, err := dead.BeginWrite(ctx, recorded, "file:///wh/b/data")
	require.NoError(t, err)
	require.NoError(t, c.Commit(ctx, []buffer.NewFile{newFile("b", time.Now())}, []int64{w}))
	_, err = dead.BeginWrite(ctx, orphan, "file:///wh/b/data")
	require.NoError(t, err)
	require.NotEqual(t, live.ID(), dead.ID())

	lock, err := b.TryCommitterLock(ctx)
	require.NoError(t, err)
	require.NotNil(t, lock)
	defer lock.Release()
	var removed []string
	remove := func(_ context.Context, w buffer.DeadWrite) error {
		removed = append(removed, w.WriteUUID+" "+w.Location)
		return nil
	}

	n, err := lock.CleanDeadWrites(ctx, remove)
	require.NoError(t, err)
	require.Zero(t, n, "both leases are alive")
	require.Empty(t, removed)

	dead.Close()
	n, err = lock.CleanDeadWrites(ctx, remove)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, []string{orphan + " file:///wh/b/data"}, removed)

	n, err = lock.CleanDeadWrites(ctx, remove)
	require.NoError(t, err)
	require.Zero(t, n, "a cleaned write is forgotten")
}

// The committer role is one holder at a time; releasing it lets the next one in.
func TestCommitterLockIsExclusive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBuffer(t)
	first, err := b.TryCommitterLock(ctx)
	require.NoError(t, err)
	require.NotNil(t, first)
	second, err := b.TryCommitterLock(ctx)
	require.NoError(t, err)
	require.Nil(t, second)
	require.NoError(t, first.Check(ctx))
	first.Release()
	third, err := b.TryCommitterLock(ctx)
	require.NoError(t, err)
	require.NotNil(t, third)
	third.Release()
}

// Commit sequence numbers rise, never fall below what the table has seen (atLeast), and a file keeps the
// number it was first given.
func TestPrepareCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBuffer(t)
	appendEvents(t, ctx, b, 1, 1, time.Now())
	lease, err := b.NewLease(ctx)
	require.NoError(t, err)
	defer lease.Close()
	c, err := lease.Claim(ctx, 10)
	require.NoError(t, err)
	require.NoError(t, c.Commit(ctx, []buffer.NewFile{newFile("t", time.Now()), newFile("t", time.Now())}, nil))
	files, err := b.PendingFiles(ctx, "t", 10)
	require.NoError(t, err)
	require.Len(t, files, 2)
	require.Zero(t, files[0].Seq)

	s1, err := b.PrepareCommit(ctx, []int64{files[0].ID}, 1)
	require.NoError(t, err)
	require.Equal(t, int64(1), s1)
	s2, err := b.PrepareCommit(ctx, []int64{files[0].ID, files[1].ID}, 1)
	require.NoError(t, err)
	require.Equal(t, int64(2), s2)
	s3, err := b.PrepareCommit(ctx, nil, 40)
	require.NoError(t, err)
	require.Equal(t, int64(40), s3, "a table that has seen 39 gets 40, even from a new buffer")

	files, err = b.PendingFiles(ctx, "t", 10)
	require.NoError(t, err)
	seqs := []int64{files[0].Seq, files[1].Seq}
	slices.Sort(seqs)
	require.Equal(t, []int64{1, 2}, seqs, "the first number a file gets is the one it keeps")
	require.Equal(t, int64(1), files[0].Seq, "prepared files come first")

	require.NoError(t, b.DeleteFiles(ctx, []int64{files[0].ID, files[1].ID}))
	st, err := b.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.PendingFiles)
}
