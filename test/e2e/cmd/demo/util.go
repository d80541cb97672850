package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var metaGet = metav1.GetOptions{}

// burst inserts rows in one-second chunks of rate rows.
func burst(ctx context.Context, c *pgx.Conn, rows, rate int) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for from := 1; from <= rows; from += rate {
		to := min(from+rate-1, rows)
		if _, err := c.Exec(ctx, `INSERT INTO public.demo_events SELECT g, md5(g::text) FROM generate_series($1::bigint, $2::bigint) g`, from, to); err != nil {
			return fmt.Errorf("insert rows %d-%d: %w", from, to, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// poll checks ok every 500ms until it holds or timeout passes.
func poll(ctx context.Context, timeout time.Duration, ok func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for !ok() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
