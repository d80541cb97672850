package buffer_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/test/testutil"
)

// A table's backfill through the buffer: registration, planning, chunks that wait for the reader's start mark,
// claims that exclude each other, a chunk's high watermark and the keys changed before it, and completion,
// which drops the recorded keys. A request joins a running backfill and restarts a finished one.
func TestBackfillLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := testutil.OpenBuffer(t, 8)
	orders := change.TableRef{RelationID: 16400, Schema: "public", Name: "orders", Key: []string{"id"}}
	n, err := b.RequestBackfill(ctx, []change.TableRef{orders}, true)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = b.RequestBackfill(ctx, []change.TableRef{orders}, true)
	require.NoError(t, err)
	require.Zero(t, n, "the automatic backfill registers a table once")
	tracked, err := b.TrackedTables(ctx)
	require.NoError(t, err)
	require.Equal(t, map[uint32][]string{16400: {"id"}}, tracked)

	p, err := b.ClaimPlanning(ctx)
	require.NoError(t, err)
	require.NotNil(t, p)
	require.NoError(t, p.Started(ctx, []string{"id"}, 30, 500))
	require.NoError(t, p.AddChunks(ctx, [][]string{{"10"}, {"20"}}, true))
	require.NoError(t, p.Commit(ctx))
	p, err = b.ClaimPlanning(ctx)
	require.NoError(t, err)
	require.Nil(t, p, "planning is over")
	st, err := b.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(30), st.BackfillRemaining)

	l1, err := b.NewLease(ctx)
	require.NoError(t, err)
	defer l1.Close()
	l2, err := b.NewLease(ctx)
	require.NoError(t, err)
	defer l2.Close()
	c, err := l1.ClaimChunk(ctx)
	require.NoError(t, err)
	require.Nil(t, c, "no chunk is read before the reader passed the start mark")

	// The reader passes the start mark, then a change to key 15 and a truncate of another table.
	next := int64(1)
	appendMarks := func(marks []buffer.Mark, keys []buffer.KeyChange) {
		batch := &buffer.Batch{FirstID: next}
		for _, m := range marks {
			batch.AddMark(m)
		}
		for _, k := range keys {
			batch.AddKey(k)
		}
		require.NoError(t, b.Append(ctx, batch))
	}
	appendMarks([]buffer.Mark{{LSN: 100, Relation: 16400, Run: 1}}, []buffer.KeyChange{
		{Relation: 16400, Key: []byte("k15"), Op: change.Update, Xid: 501, CommitLSN: 150},
		{Relation: 16400, Key: []byte("k16"), Op: change.Update, Xid: 502, CommitLSN: 250},
		{Relation: 16401, Op: change.Truncate, Xid: 503, CommitLSN: 160},
	})
	c1, err := l1.ClaimChunk(ctx)
	require.NoError(t, err)
	require.NotNil(t, c1)
	require.Nil(t, c1.Lower)
	require.Equal(t, []string{"10"}, c1.Upper)
	require.Equal(t, uint64(500), c1.XidFloor)
	c2, err := l2.ClaimChunk(ctx)
	require.NoError(t, err)
	require.NotNil(t, c2)
	require.NotEqual(t, c1.ID, c2.ID, "two leases never hold the same chunk")
	c2.Release()

	attempt := uuid.New()
	_, ok, err := c1.Mark(ctx, attempt)
	require.NoError(t, err)
	require.False(t, ok)
	appendMarks([]buffer.Mark{{LSN: 200, Attempt: attempt}}, nil)
	hw, ok, err := c1.Mark(ctx, attempt)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, uint64(200), hw)
	changed, err := c1.ChangedKeys(ctx, [][]byte{[]byte("k15"), []byte("k16"), []byte("k1")}, hw)
	require.NoError(t, err)
	require.Equal(t, []buffer.ChangedKey{{Key: []byte("k15"), Op: change.Update, Xid: 501}}, changed,
		"only this table's keys changed before the high watermark")

	rows := &buffer.Batch{}
	rows.Add(buffer.Position{CommitLSN: hw, Seq: 1}, hw, time.Now(), 7, change.Snapshot, []byte{0, 0}, nil)
	require.NoError(t, c1.Done(ctx, attempt, rows, 10))
	st, err = b.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Depth, "the chunk's rows are events")
	require.Equal(t, int64(20), st.BackfillRemaining)

	n, err = b.RequestBackfill(ctx, []change.TableRef{orders}, false)
	require.NoError(t, err)
	require.Zero(t, n, "a request joins the running backfill")

	for {
		c, err := l2.ClaimChunk(ctx)
		require.NoError(t, err)
		if c == nil {
			break
		}
		a := uuid.New()
		appendMarks([]buffer.Mark{{LSN: 300, Attempt: a}}, nil)
		require.NoError(t, c.Done(ctx, a, &buffer.Batch{}, 10))
	}
	statuses, err := b.BackfillStatuses(ctx)
	require.NoError(t, err)
	require.Len(t, statuses, 1)
	require.True(t, statuses[0].Done)
	require.Equal(t, int64(3), statuses[0].ChunksDone)
	tracked, err = b.TrackedTables(ctx)
	require.NoError(t, err)
	require.Empty(t, tracked)
	c, err = l1.ClaimChunk(ctx)
	require.NoError(t, err)
	require.Nil(t, c)
	n, err = b.RequestBackfill(ctx, []change.TableRef{orders}, false)
	require.NoError(t, err)
	require.Equal(t, 1, n, "a finished backfill is restarted on request")
	statuses, err = b.BackfillStatuses(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), statuses[0].Run)
	require.False(t, statuses[0].Done)

	// The new run starts from a clean record of changed keys.
	p, err = b.ClaimPlanning(ctx)
	require.NoError(t, err)
	require.NoError(t, p.Started(ctx, []string{"id"}, 30, 600))
	require.NoError(t, p.AddChunks(ctx, nil, true))
	require.NoError(t, p.Commit(ctx))
	appendMarks([]buffer.Mark{{LSN: 400, Relation: 16400, Run: 2}}, nil)
	c, err = l1.ClaimChunk(ctx)
	require.NoError(t, err)
	require.NotNil(t, c)
	defer c.Release()
	changed, err = c.ChangedKeys(ctx, [][]byte{[]byte("k15"), []byte("k16")}, 1000)
	require.NoError(t, err)
	require.Empty(t, changed)
}

// The last two chunks of a table finishing at the same moment on two replicas: the table is done either way.
// (Deciding "no chunk left" in one statement per chunk, each saw the other's chunk undone.)
func TestBackfillLastChunksFinishingTogether(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := testutil.OpenBuffer(t, 12)
	leases := [2]*buffer.Lease{}
	for i := range leases {
		l, err := b.NewLease(ctx)
		require.NoError(t, err)
		defer l.Close()
		leases[i] = l
	}
	table := change.TableRef{RelationID: 16500, Schema: "public", Name: "t", Key: []string{"id"}}
	for run := int64(1); run <= 20; run++ {
		_, err := b.RequestBackfill(ctx, []change.TableRef{table}, false)
		require.NoError(t, err)
		p, err := b.ClaimPlanning(ctx)
		require.NoError(t, err)
		require.NoError(t, p.Started(ctx, []string{"id"}, 20, 1))
		require.NoError(t, p.AddChunks(ctx, [][]string{{"10"}}, true))
		require.NoError(t, p.Commit(ctx))
		attempts := [2]uuid.UUID{uuid.New(), uuid.New()}
		marks := &buffer.Batch{FirstID: 1}
		marks.AddMark(buffer.Mark{LSN: 10, Relation: 16500, Run: run})
		for _, a := range attempts {
			marks.AddMark(buffer.Mark{LSN: 20, Attempt: a})
		}
		require.NoError(t, b.Append(ctx, marks))
		var chunks [2]*buffer.Chunk
		for i, l := range leases {
			chunks[i], err = l.ClaimChunk(ctx)
			require.NoError(t, err)
			require.NotNil(t, chunks[i])
		}
		errs := make(chan error, 2)
		start := make(chan struct{})
		for i, c := range chunks {
			go func() { <-start; errs <- c.Done(ctx, attempts[i], &buffer.Batch{}, 10) }()
		}
		close(start)
		require.NoError(t, <-errs)
		require.NoError(t, <-errs)
		statuses, err := b.BackfillStatuses(ctx)
		require.NoError(t, err)
		require.True(t, statuses[0].Done, "run %d: both chunks done, the table not", run)
	}
}
