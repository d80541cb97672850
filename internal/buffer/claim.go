package buffer

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/philotes/philotes-worker/internal/change"
)

// Event is one buffered change as a processor claims it; Tuple and OldTuple are pgoutput TupleData bytes.
type Event struct {
	ID         int64
	CommitLSN  uint64
	Seq        int32
	LSN        uint64
	CommitTime time.Time
	Relation   int64
	Op         change.Op
	Tuple      []byte
	OldTuple   []byte
}

// Claim holds a batch of events locked by one transaction: no other processor can claim them until Commit or
// Rollback. If the process dies, the database rolls the transaction back and the events become claimable again.
type Claim struct {
	Events []Event
	tx     pgx.Tx
	source string
	ids    []int64 // the claimed chunks
	park   map[TableName][]int64
	unpark *TableName // a claim of a parked table's events (ClaimParked)
}

// Claim locks about n of this source's oldest unclaimed events (whole chunks: at least one, at most
// n/ChunkEvents rounded up). A claim with no events holds nothing.
func (b *Buffer) Claim(ctx context.Context, n int) (*Claim, error) {
	return b.claim(ctx, b.pool, n)
}

func (b *Buffer) claim(ctx context.Context, db interface {
	Begin(context.Context) (pgx.Tx, error)
}, n int) (*Claim, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("buffer: claim: %w", err)
	}
	rows, err := tx.Query(ctx, `
SELECT id, events, data FROM philotes.event_chunks WHERE source = $1
ORDER BY id LIMIT $2
FOR UPDATE SKIP LOCKED`, b.source, max(1, (n+ChunkEvents-1)/ChunkEvents))
	if err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("buffer: claim: %w", err)
	}
	c := &Claim{tx: tx, source: b.source}
	for rows.Next() {
		var id int64
		var events int32
		var data []byte
		if err := rows.Scan(&id, &events, &data); err == nil {
			c.Events, err = unpackChunk(c.Events, id, int(events), data)
		}
		if err != nil {
			rows.Close()
			_ = tx.Rollback(ctx)
			return nil, fmt.Errorf("buffer: claim: %w", err)
		}
		c.ids = append(c.ids, id)
	}
	if err := rows.Err(); err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("buffer: claim: %w", err)
	}
	if len(c.Events) == 0 {
		_ = tx.Rollback(ctx)
		c.tx = nil
	}
	return c, nil
}

// Rollback releases the claimed events for another processor. It works even when the caller's context is
// already cancelled (as during a shutdown deadline).
func (c *Claim) Rollback() {
	if c.tx != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.tx.Rollback(ctx) // on failure the connection closes and the server rolls back
		c.tx = nil
	}
}
