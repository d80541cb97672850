package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A part counts against readiness once it has failed for its grace period with no success in between.
func TestHealth(t *testing.T) {
	now := time.Unix(0, 0)
	h := newHealth()
	h.now = func() time.Time { return now }
	boom := errors.New("boom")

	require.Empty(t, h.problems())
	h.fail(partBuffer, boom)
	require.Equal(t, []string{"buffer database failing for 0s: boom"}, h.problems(), "the buffer counts at once")
	h.ok(partBuffer)
	require.Empty(t, h.problems())

	h.fail(partSink, boom)
	now = now.Add(sinkGrace - time.Second)
	require.Empty(t, h.problems(), "a failing batch within the grace")
	h.fail(partSink, errors.New("again"))
	now = now.Add(time.Second)
	require.Equal(t, []string{"warehouse failing for 30s: again"}, h.problems(), "counted from the first failure, with the last error")
	h.ok(partSink) // a batch of another table went through
	require.Empty(t, h.problems())
}
