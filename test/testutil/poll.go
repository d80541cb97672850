// Package testutil holds helpers shared by the worker's tests.
package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, failing the test with what it waited for once timeout passes.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline
	}
}
