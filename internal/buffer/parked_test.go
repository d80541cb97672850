package buffer_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
)

// Parked events leave the chunks (depth and lag) with their bytes intact, wait for their table, come back in
// order through ClaimParked, and the table is unparked once none is left. A claim that parks events of a table
// unparked meanwhile fails with ErrUnparked instead of leaving them behind unretried.
func TestParkedEventsWaitAndComeBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBuffer(t)
	bad := buffer.TableName{Schema: "public", Name: "bad"}
	base := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	batch := &buffer.Batch{FirstID: 1}
	for i := range 6 { // relation 1 is the bad table, relation 2 a good one, alternating
		batch.Add(buffer.Position{CommitLSN: uint64(100 + i), Seq: 1}, uint64(90+i), base.Add(time.Duration(i)*time.Second),
			int64(1+i%2), change.Update, []byte{byte(i), 1}, []byte{byte(i), 2})
	}
	require.NoError(t, b.Append(ctx, batch))

	// A processor parks the bad table's events (IDs 1, 3, 5) and writes the others.
	require.NoError(t, b.Park(ctx, bad, "column x: cannot be written"))
	c, err := b.Claim(ctx, 100)
	require.NoError(t, err)
	parked, err := c.Parked(ctx)
	require.NoError(t, err)
	require.True(t, parked[bad])
	c.Park(bad, []int64{1, 3, 5})
	require.NoError(t, c.Commit(ctx, nil, nil))

	st, err := b.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Depth, "parked events are not the processors' queue")
	require.True(t, st.Oldest.IsZero(), "nor do they hold the lag")
	require.Equal(t, map[string]int64{"public.bad": 3}, st.Parked)
	tables, err := b.ParkedTables(ctx)
	require.NoError(t, err)
	require.Len(t, tables, 1)
	require.Equal(t, "column x: cannot be written", tables[0].Reason)
	require.WithinDuration(t, time.Now().Add(buffer.ParkedRetryFirst), tables[0].RetryAt, 5*time.Second)

	lease, err := b.NewLease(ctx)
	require.NoError(t, err)
	defer lease.Close()
	early, err := lease.ClaimParked(ctx, 100)
	require.NoError(t, err)
	require.Nil(t, early.Unparking(), "not due before its retry time")

	// Due now: a retry fails once (the backoff grows), then succeeds in two batches.
	_, err = b.ExecForTest(ctx, `UPDATE philotes.parked_tables SET retry_at = now()`)
	require.NoError(t, err)
	require.NoError(t, b.Park(ctx, bad, "still broken"))
	tables, err = b.ParkedTables(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, tables[0].Attempts)
	require.WithinDuration(t, time.Now().Add(2*buffer.ParkedRetryFirst), tables[0].RetryAt, 5*time.Second)
	_, err = b.ExecForTest(ctx, `UPDATE philotes.parked_tables SET attempts = 9`)
	require.NoError(t, err)
	require.NoError(t, b.Park(ctx, bad, "still broken"))
	tables, err = b.ParkedTables(ctx)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(buffer.ParkedRetryMax), tables[0].RetryAt, 5*time.Second, "the backoff stops growing")
	_, err = b.ExecForTest(ctx, `UPDATE philotes.parked_tables SET retry_at = now()`)
	require.NoError(t, err)

	first, err := lease.ClaimParked(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, bad, *first.Unparking())
	require.Len(t, first.Events, 2)
	for i, e := range first.Events {
		id := int64(1 + 2*i)
		require.Equal(t, id, e.ID)
		require.Equal(t, uint64(100+id-1), e.CommitLSN)
		require.Equal(t, uint64(90+id-1), e.LSN)
		require.True(t, e.CommitTime.Equal(base.Add(time.Duration(id-1)*time.Second)))
		require.Equal(t, int64(1), e.Relation)
		require.Equal(t, change.Update, e.Op)
		require.Equal(t, []byte{byte(id - 1), 1}, e.Tuple)
		require.Equal(t, []byte{byte(id - 1), 2}, e.OldTuple)
	}
	require.NoError(t, first.Commit(ctx, nil, nil))
	tables, err = b.ParkedTables(ctx)
	require.NoError(t, err)
	require.Len(t, tables, 1, "one event left: still parked")

	// Meanwhile a processor that saw the table parked sets a new event aside; the retry that takes the last old
	// event unparks the table first, so that processor's claim fails and its next claim writes the event.
	batch = &buffer.Batch{FirstID: 7}
	batch.Add(buffer.Position{CommitLSN: 200, Seq: 1}, 190, base, 1, change.Insert, []byte{7}, nil)
	require.NoError(t, b.Append(ctx, batch))
	late, err := b.Claim(ctx, 100)
	require.NoError(t, err)
	parked, err = late.Parked(ctx)
	require.NoError(t, err)
	require.True(t, parked[bad])
	late.Park(bad, []int64{7})

	last, err := lease.ClaimParked(ctx, 2)
	require.NoError(t, err)
	require.Len(t, last.Events, 1)
	require.NoError(t, last.Commit(ctx, nil, nil))
	tables, err = b.ParkedTables(ctx)
	require.NoError(t, err)
	require.Empty(t, tables, "unparked once no event is left")

	require.ErrorIs(t, late.Commit(ctx, nil, nil), buffer.ErrUnparked)
	again, err := b.Claim(ctx, 100)
	require.NoError(t, err)
	require.Len(t, again.Events, 1, "the event is back in the processors' queue")
	parked, err = again.Parked(ctx)
	require.NoError(t, err)
	require.False(t, parked[bad])
	require.NoError(t, again.Commit(ctx, nil, nil))
}
