package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/internal/buffer"
	"github.com/philotes/philotes-worker/test/pgtest"
)

// OpenBuffer starts a PostgreSQL server and opens a fresh buffer in it for source "src", with up to maxConns
// connections; both go away with the test.
func OpenBuffer(t *testing.T, maxConns int) *buffer.Buffer {
	t.Helper()
	s := pgtest.New(t, pgtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := buffer.Open(ctx, s.MustCreateDatabase(t, "buf"), "src", maxConns)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}
