package stack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// prometheusConfig scrapes the pods that runPodDiscovery lists: those
// annotated prometheus.io/scrape=true, on prometheus.io/port and
// prometheus.io/path, labelled namespace and pod. Pod IPs are loopback
// addresses the node hands out, reachable inside the namespace.
const prometheusConfig = `global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
scrape_configs:
- job_name: kubernetes-pods
  file_sd_configs:
  - files: ['%[2]s/*.json']
    refresh_interval: 1s
`

func (s *Stack) startPrometheus(startCtx context.Context) error {
	dir := filepath.Join(s.Dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create prometheus dir: %w", err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.MkdirAll(s.targetsDir(), 0o755); err != nil {
		return fmt.Errorf("create targets dir: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopDiscovery = cancel
	if err := s.runPodDiscovery(ctx, filepath.Join(s.targetsDir(), "pods.json")); err != nil {
		return err
	}
	cfg := fmt.Sprintf(prometheusConfig, s.cfg.ScrapeInterval.String(), s.targetsDir())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write prometheus config: %w", err)
	}
	return s.runPrometheus(startCtx, cfgPath, dir)
}

func (s *Stack) runPrometheus(ctx context.Context, cfgPath, dir string) error {
	p, err := s.startProcess("prometheus", s.bins.Prometheus, []string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=1d",
		"--web.listen-address=127.0.0.1:9090",
		"--web.enable-lifecycle",
		"--log.level=warn",
	}, nil, nil)
	if err != nil {
		return err
	}
	return s.waitFor(ctx, p, 60*time.Second, "prometheus /-/ready", func(ctx context.Context) error {
		return getOK(ctx, s.HTTP, PrometheusURL+"/-/ready")
	})
}

// StopPrometheus stops Prometheus (the fallback scenario's outage).
func (s *Stack) StopPrometheus() error {
	for i, p := range s.procs {
		if p.name == "prometheus" {
			p.stop(15*time.Second, s.log)
			s.procs = append(s.procs[:i], s.procs[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("prometheus is not running")
}

// StartPrometheus restarts Prometheus on its existing data after StopPrometheus.
func (s *Stack) StartPrometheus(ctx context.Context) error {
	dir := filepath.Join(s.Dir, "prometheus")
	return s.runPrometheus(ctx, filepath.Join(dir, "prometheus.yml"), dir)
}
