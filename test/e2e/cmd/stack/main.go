// Command stack brings the end-to-end stack up for a person to look at, and
// tears it down.
//
//	go run ./cmd/stack up [-dir D] [-worker BIN]   # runs until Ctrl-C, then tears down
//	go run ./cmd/stack down [-dir D]               # stops a stack by its PID files
//
// up prints the kubeconfig and the nsenter command line that reaches the
// stack's private network namespace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/philotes/philotes-worker/test/e2e/node"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(log, os.Args[1:]); err != nil {
		log.Error("stack", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: stack up|down [-dir D] [-worker BIN]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	dir := fs.String("dir", filepath.Join(os.TempDir(), "philotes-e2e-stack"), "stack folder (certificates, data, logs, PID files)")
	worker := fs.String("worker", "", "program the node runs for every pod (default: no node)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "down":
		if err := stack.StopByPIDFiles(*dir, 20*time.Second, log); err != nil {
			return err
		}
		return os.RemoveAll(*dir)
	case "up":
		return up(log, *dir, *worker)
	default:
		return fmt.Errorf("unknown command %q (want up or down)", args[0])
	}
}

func up(log *slog.Logger, dir, worker string) error {
	if _, err := os.Stat(filepath.Join(dir, "pids")); err == nil {
		log.Info("stopping the previous stack in", "dir", dir)
		if err := stack.StopByPIDFiles(dir, 20*time.Second, log); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "pids"), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// down signals this process too, which then tears down in order.
	if err := os.WriteFile(filepath.Join(dir, "pids", "stack-up.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("write pid: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := stack.Start(ctx, stack.Config{Dir: dir, KeepDir: true, Logger: log})
	if err != nil {
		return err
	}
	defer s.Stop()
	nodeDone := make(chan error, 1)
	if worker != "" {
		n, err := node.New(node.Config{Kube: s.Kube, NS: s.NS, Dir: dir, DefaultBinary: worker, Logger: log})
		if err != nil {
			return err
		}
		go func() { nodeDone <- n.Run(ctx) }()
		select {
		case <-n.Ready():
		case err := <-nodeDone:
			return fmt.Errorf("node: %w", err)
		}
	}
	fmt.Printf("stack is up in %s\n  kubeconfig: %s\n  kubectl:    %s get pods -A\n  prometheus: %s (inside the namespace)\n  postgres:   %s\nCtrl-C (or `go run ./cmd/stack down -dir %s`) tears it down.\n",
		dir, s.Kubeconfig, s.KubectlHint(), stack.PrometheusURL, stack.PostgresURL(stack.SourceDB), dir)
	<-ctx.Done()
	log.Info("tearing down")
	if worker != "" {
		if err := <-nodeDone; err != nil {
			log.Warn("node", "err", err)
		}
	}
	return nil
}
