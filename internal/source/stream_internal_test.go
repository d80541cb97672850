package source

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/philotes/philotes-worker/internal/buffer"
)

// The commit confirms its transaction by itself: after a batch was cut at the transaction's last change (the
// batch is empty when the Commit arrives), the Commit still moves the position to confirm to the commit's end
// and asks for a flush, with no keepalive involved. (TestBatchEndingAtCommitIsConfirmed checks the same against
// a real server, where an idle keepalive would also confirm it; this test fails if only the keepalive did.)
func TestCommitConfirmsAfterABatchCutAtItsLastChange(t *testing.T) {
	s := &streamState{batch: &buffer.Batch{}, inTx: true, confirm: 100}
	commit := make([]byte, 1+1+8+8+8)
	commit[0] = 'C'
	binary.BigEndian.PutUint64(commit[2:], 500)  // commit LSN
	binary.BigEndian.PutUint64(commit[10:], 540) // end of the commit record
	if err := s.handle(context.Background(), commit, 500); err != nil {
		t.Fatal(err)
	}
	if s.inTx {
		t.Error("still in a transaction after its commit")
	}
	if s.confirm != 540 {
		t.Errorf("confirm = %d, want the commit's end 540", s.confirm)
	}
	if s.firstPending.IsZero() {
		t.Error("no flush asked for: the confirmation would wait for the next change")
	}
}
