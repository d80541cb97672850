package stack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// prometheusConfig discovers pods from the local apiserver (Kubernetes
// service discovery) and scrapes those annotated prometheus.io/scrape=true,
// on prometheus.io/port (default: the declared container port) and
// prometheus.io/path (default /metrics). Pod IPs are loopback addresses the
// node hands out, reachable inside the namespace.
const prometheusConfig = `global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
scrape_configs:
- job_name: kubernetes-pods
  kubernetes_sd_configs:
  - role: pod
    api_server: %[2]s
    tls_config:
      ca_file: %[3]s
      cert_file: %[4]s
      key_file: %[5]s
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: "true"
  - source_labels: [__meta_kubernetes_pod_phase]
    action: keep
    regex: Running
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
    action: replace
    target_label: __metrics_path__
    regex: (.+)
  - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
    action: replace
    regex: ([^:]+)(?::\d+)?;(\d+)
    replacement: $1:$2
    target_label: __address__
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
  - action: labelmap
    regex: __meta_kubernetes_pod_label_(app_kubernetes_io_.+)
`

func (s *Stack) startPrometheus(ctx context.Context) error {
	dir := filepath.Join(s.Dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create prometheus dir: %w", err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	iv := s.cfg.ScrapeInterval.String()
	cfg := fmt.Sprintf(prometheusConfig, iv, APIServerURL, Crt(s.PKI.CA), Crt(s.PKI.Admin), Key(s.PKI.Admin))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write prometheus config: %w", err)
	}
	return s.runPrometheus(ctx, cfgPath, dir)
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
