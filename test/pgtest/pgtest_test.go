package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/philotes/philotes-worker/test/pgtest"
)

// The server starts with logical decoding enabled and accepts connections on loopback.
func TestServerHasLogicalWAL(t *testing.T) {
	s := pgtest.New(t, pgtest.Options{})
	url := s.MustCreateDatabase(t, "app")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var level string
	require.NoError(t, conn.QueryRow(ctx, "SHOW wal_level").Scan(&level))
	require.Equal(t, "logical", level)
}
