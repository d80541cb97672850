// Command demo shows the autoscaling live: it brings the stack up, installs
// charts/philotes-worker with the real worker behind it, writes a burst of
// source rows, prints a one-line status every second (replicas, depth, lag,
// events/s), writes the timeline as CSV and SVG, and tears everything down
// (-keep leaves it running until Ctrl-C, with the kubectl command printed).
//
//	go run ./cmd/demo -worker ../../bin/philotes-worker
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/philotes/philotes-worker/test/e2e/chart"
	"github.com/philotes/philotes-worker/test/e2e/node"
	"github.com/philotes/philotes-worker/test/e2e/report"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

type options struct {
	worker, chartDir, reportDir string
	rows, rowsPerSecond         int
	keep                        bool
	timeout                     time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.worker, "worker", "../../bin/philotes-worker", "philotes-worker binary the node runs")
	flag.StringVar(&o.chartDir, "chart", "../../charts/philotes-worker", "chart to install")
	flag.StringVar(&o.reportDir, "report", "../../e2e-report", "where demo.csv and demo.svg go")
	flag.IntVar(&o.rows, "rows", 300000, "source rows in the burst")
	flag.IntVar(&o.rowsPerSecond, "rate", 30000, "rows written per second during the burst")
	flag.BoolVar(&o.keep, "keep", os.Getenv("KEEP") == "1", "keep the stack running after the demo (until Ctrl-C)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(o, log); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(o options, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if _, err := os.Stat(o.worker); err != nil {
		return fmt.Errorf("worker binary (build it with `make build`): %w", err)
	}
	fmt.Println("demo: starting the stack (etcd, apiserver, controller-manager, KEDA, Prometheus, PostgreSQL)…")
	start := time.Now()
	s, err := stack.Start(ctx, stack.Config{Logger: log})
	if err != nil {
		return err
	}
	defer s.Stop()
	fmt.Printf("demo: stack up in %s\n", time.Since(start).Round(100*time.Millisecond))

	nodeCtx, stopNode := context.WithCancel(context.Background())
	n, err := node.New(node.Config{Kube: s.Kube, NS: s.NS, Dir: s.Dir, DefaultBinary: o.worker, Logger: log})
	if err != nil {
		stopNode()
		return err
	}
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- n.Run(nodeCtx) }()
	defer func() { stopNode(); <-nodeDone }()
	select {
	case <-n.Ready():
	case err := <-nodeDone:
		return fmt.Errorf("node: %w", err)
	}

	src, err := s.ConnectPostgres(ctx, stack.SourceDB)
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	if _, err := src.Exec(ctx, `CREATE TABLE public.demo_events (id bigint PRIMARY KEY, payload text NOT NULL)`); err != nil {
		return fmt.Errorf("create source table: %w", err)
	}

	const ns, name = "philotes", "philotes-worker"
	// The lake is a bucket in the stack's S3 server: pods do not share a disk.
	lake, warehouse, err := s.ChartLake(ctx, ns, "demo")
	if err != nil {
		return err
	}
	fmt.Println("demo: lake at", warehouse, "on", stack.S3Endpoint)
	values := map[string]any{
		"image":                         map[string]any{"repository": "philotes-worker", "tag": "demo"},
		"terminationGracePeriodSeconds": 20,
		"worker": map[string]any{
			"shutdownTimeoutSeconds": 10,
			"processors":             1,
			"batchSize":              2000,
			"iceberg":                lake,
		},
		"database": map[string]any{"sourceUrl": stack.PostgresURL(stack.SourceDB), "bufferUrl": stack.PostgresURL(stack.BufferDB)},
		"keda": map[string]any{
			"enabled": true, "minReplicas": 1, "maxReplicas": 5, "pollingInterval": 2, "cooldownPeriod": 30,
			"advanced": map[string]any{"horizontalPodAutoscalerConfig": map[string]any{"behavior": map[string]any{
				"scaleDown": map[string]any{"stabilizationWindowSeconds": 15,
					"policies": []any{map[string]any{"type": "Percent", "value": 100, "periodSeconds": 5}}},
			}}},
			"prometheus": map[string]any{
				"serverAddress": stack.PrometheusURL,
				"lagTrigger":    map[string]any{"threshold": "10", "activationThreshold": "2"},
				"bufferTrigger": map[string]any{"threshold": "20000", "activationThreshold": "1000"},
			},
		},
	}
	if _, err := chart.Install(ctx, s, o.chartDir, name, ns, values, log); err != nil {
		return err
	}
	fmt.Println("demo: chart installed; waiting for the first worker")
	query := s.PromQuery
	err = poll(ctx, 2*time.Minute, func() bool {
		d, err := s.Kube.AppsV1().Deployments(ns).Get(ctx, name, metaGet)
		return err == nil && d.Status.ReadyReplicas >= 1
	})
	if err != nil {
		return fmt.Errorf("first worker: %w", err)
	}

	rec := report.Start(report.Config{Kube: s.Kube, Query: query, Namespace: ns, Deployment: name, HPA: "keda-hpa-" + name})
	burstDone := make(chan error, 1)
	go func() { burstDone <- burst(ctx, src, o.rows, o.rowsPerSecond) }()
	fmt.Printf("demo: writing %d rows at %d/s\n", o.rows, o.rowsPerSecond)

	deadline := time.After(o.timeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	burstOver, sawScaleOut := false, false
	var outcome error
loop:
	for {
		select {
		case <-ctx.Done():
			outcome = ctx.Err()
			break loop
		case <-deadline:
			outcome = errors.New("timed out before the release scaled back in")
			break loop
		case err := <-burstDone:
			if err != nil {
				outcome = err
				break loop
			}
			burstOver = true
		case <-tick.C:
			ss := rec.Samples()
			if len(ss) == 0 {
				continue
			}
			l := ss[len(ss)-1]
			fmt.Printf("\r%5.0fs  replicas %d/%d ready, desired %d  depth %8s  lag %6ss  %8s events/s   ",
				l.At.Sub(ss[0].At).Seconds(), l.Replicas, l.Ready, l.Desired, num(l.Depth), num(l.Lag), num(l.Processed))
			sawScaleOut = sawScaleOut || l.Replicas > 1
			if burstOver && l.Depth == 0 && l.Replicas == 1 && (sawScaleOut || l.At.Sub(ss[0].At) > 2*time.Minute) {
				break loop
			}
		}
	}
	fmt.Println()
	samples := rec.Stop()
	csvPath, svgPath := filepath.Join(o.reportDir, "demo.csv"), filepath.Join(o.reportDir, "demo.svg")
	if err := report.WriteCSV(csvPath, samples); err != nil {
		return err
	}
	if err := report.WriteSVG(svgPath, fmt.Sprintf("philotes demo: %d rows at %d/s", o.rows, o.rowsPerSecond), samples); err != nil {
		return err
	}
	fmt.Printf("demo: timeline in %s and %s\n", csvPath, svgPath)
	if outcome != nil {
		return outcome
	}
	if o.keep {
		fmt.Printf("demo: stack kept running; kubeconfig %s\n  %s get pods -A\nCtrl-C tears it down.\n", s.Kubeconfig, s.KubectlHint())
		<-ctx.Done()
	}
	return nil
}

func num(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}
