package buffer

import "context"

// ExecForTest runs a statement in the buffer database, for tests that move its clock (retry times) along.
func (b *Buffer) ExecForTest(ctx context.Context, sql string) (int64, error) {
	tag, err := b.pool.Exec(ctx, sql)
	return tag.RowsAffected(), err
}
