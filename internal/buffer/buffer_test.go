package buffer_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/internal/change"
	"github.com/philotes/philotes-worker/test/testutil"
)

// Events survive the trip through chunks unchanged, whatever the chunk boundaries, and claims are exclusive.
func TestAppendClaimRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBuffer(t)

	cases := []struct {
		name  string
		sizes []int // tuple size per event; -1 means no tuple
	}{
		{"one event", []int{10}},
		{"exactly one full chunk", repeat(buffer.ChunkEvents, 50)},
		{"several chunks and a partial one", repeat(2*buffer.ChunkEvents+17, 120)},
		{"absent tuples (truncate) and empty ones", []int{-1, 0, -1, 5}},
		{"a tuple larger than a chunk's byte budget", []int{3, 300 << 10, 4, 7}},
	}
	base := time.Date(2026, 11, 27, 10, 0, 0, 123456000, time.UTC)
	next := int64(1)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			batch := &buffer.Batch{FirstID: next}
			type want struct{ tuple, old []byte }
			var wants []want
			for i, n := range tc.sizes {
				var tuple, old []byte
				if n >= 0 {
					tuple = bytes.Repeat([]byte{byte(i)}, n)
				}
				if i%3 == 0 {
					old = []byte{0xAB, byte(i)}
				}
				wants = append(wants, want{tuple, old})
				batch.Add(buffer.Position{CommitLSN: uint64(1000 + i), Seq: int32(i + 1)}, uint64(900+i),
					base.Add(time.Duration(i)*time.Second), 7, change.Insert, tuple, old)
			}
			require.NoError(t, b.Append(ctx, batch))
			st, err := b.Stats(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(len(tc.sizes)), st.Depth)
			require.True(t, st.Oldest.Equal(base), "oldest commit time %v", st.Oldest)

			c, err := b.Claim(ctx, 1_000_000)
			require.NoError(t, err)
			require.Len(t, c.Events, len(tc.sizes))
			other, err := b.Claim(ctx, 1_000_000)
			require.NoError(t, err)
			require.Empty(t, other.Events, "claimed events are invisible to another claim")
			for i, e := range c.Events {
				require.Equal(t, next+int64(i), e.ID)
				require.Equal(t, uint64(1000+i), e.CommitLSN)
				require.Equal(t, int32(i+1), e.Seq)
				require.Equal(t, uint64(900+i), e.LSN)
				require.True(t, e.CommitTime.Equal(base.Add(time.Duration(i)*time.Second)))
				require.Equal(t, int64(7), e.Relation)
				require.Equal(t, change.Insert, e.Op)
				require.Equal(t, wants[i].tuple == nil, e.Tuple == nil, "event %d tuple presence", i)
				require.True(t, bytes.Equal(wants[i].tuple, e.Tuple), "event %d tuple", i)
				require.True(t, bytes.Equal(wants[i].old, e.OldTuple), "event %d old tuple", i)
			}
			require.NoError(t, c.Commit(ctx, nil, nil))
			st, err = b.Stats(ctx)
			require.NoError(t, err)
			require.Zero(t, st.Depth)
			require.True(t, st.Oldest.IsZero())
			p, err := b.Progress(ctx)
			require.NoError(t, err)
			next += int64(len(tc.sizes))
			require.Equal(t, next, p.NextID)
			require.Equal(t, buffer.Position{CommitLSN: uint64(1000 + len(tc.sizes) - 1), Seq: int32(len(tc.sizes))}, p.Last)
		})
	}
}

// A rolled-back claim gives its events back.
func TestRollbackReleasesClaim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBuffer(t)
	batch := &buffer.Batch{FirstID: 1}
	for i := range 3 {
		batch.Add(buffer.Position{CommitLSN: 10, Seq: int32(i + 1)}, 5, time.Now(), 1, change.Delete, nil, []byte{1})
	}
	require.NoError(t, b.Append(ctx, batch))
	c, err := b.Claim(ctx, 10)
	require.NoError(t, err)
	require.Len(t, c.Events, 3)
	c.Rollback()
	again, err := b.Claim(ctx, 10)
	require.NoError(t, err)
	require.Len(t, again.Events, 3)
	again.Rollback()
}

func openBuffer(t *testing.T) *buffer.Buffer { return testutil.OpenBuffer(t, 4) }

func repeat(n, size int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = size
	}
	return out
}
