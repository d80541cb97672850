package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The quick start (`make run`) in short: the worker built from this module, PostgreSQL, 10 s of load, then the
// same catch-up, read-back and exactly-once check.
func TestQuickStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := defaults
	cfg.duration = 10 * time.Second
	cfg.catchUp = time.Minute
	var out bytes.Buffer
	if err := run(ctx, cfg, &out); err != nil {
		t.Fatalf("quick start: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "check PASS") {
		t.Fatalf("no check PASS in the output:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
