// Command fakeworker stands in for philotes-worker where the end-to-end
// suite must prove the stack and the node without the real worker: it
// serves /healthz, /readyz and /metrics (and /env, its environment) on PHILOTES_HTTP_ADDR like the
// worker does, with philotes_buffer_depth read from the file named by
// FAKEWORKER_DEPTH_FILE (0 when absent), and on SIGTERM turns unready and
// exits after FAKEWORKER_SHUTDOWN_DELAY.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("fakeworker failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	addr := os.Getenv("PHILOTES_HTTP_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	source := os.Getenv("PHILOTES_SOURCE_NAME")
	if source == "" {
		source = "philotes_cdc"
	}
	var delay time.Duration
	if s := os.Getenv("FAKEWORKER_SHUTDOWN_DELAY"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("FAKEWORKER_SHUTDOWN_DELAY: %w", err)
		}
		delay = d
	}
	depthFile := os.Getenv("FAKEWORKER_DEPTH_FILE")
	var stopping atomic.Bool

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if stopping.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string][]string{"env": os.Environ(), "args": os.Args[1:]})
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		depth := 0.0
		if depthFile != "" {
			if b, err := os.ReadFile(depthFile); err == nil {
				if v, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64); err == nil {
					depth = v
				}
			}
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		fmt.Fprintf(w, "# HELP philotes_buffer_depth Events in the buffer not yet committed to the sink.\n")
		fmt.Fprintf(w, "# TYPE philotes_buffer_depth gauge\n")
		fmt.Fprintf(w, "philotes_buffer_depth{source=%q} %g\n", source, depth)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("fakeworker listening", "addr", addr, "args", os.Args[1:])
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stopping.Store(true)
	log.Info("SIGTERM: draining", "delay", delay)
	time.Sleep(delay) // simulates in-flight work finishing; not synchronisation
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("fakeworker stopped")
	return nil
}
