// Package stack brings up the end-to-end control plane on loopback inside a
// private network namespace: etcd, kube-apiserver, kube-controller-manager,
// the KEDA operator and metrics adapter (reached by the aggregator through an
// ExternalName Service), Prometheus scraping the pods it finds on the
// apiserver (by their prometheus.io annotations),
// PostgreSQL with wal_level=logical, and an S3 server (the lake's object store). Every process is tracked by PID and
// stopped by Stop.
package stack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/philotes/philotes-worker/test/e2e/netns"
	"github.com/philotes/philotes-worker/test/pgtest"
	"github.com/philotes/philotes-worker/test/s3test"
)

// Tool versions; test/e2e/tools/build.sh builds these.
const (
	EtcdVersion       = "v3.7.3"
	KubernetesVersion = "v1.37.2"
	KEDAVersion       = "v2.21.0"
)

// Loopback endpoints inside the namespace.
const (
	etcdClientURL      = "http://127.0.0.1:2379"
	etcdPeerURL        = "http://127.0.0.1:2380"
	APIServerURL       = "https://127.0.0.1:6443"
	controllerMgrPort  = "10257"
	kedaOperatorHealth = "127.0.0.1:8181"
	// KEDAOperatorMetrics is where the KEDA operator serves its Prometheus metrics. The stack's Prometheus does
	// not scrape it; a test that needs KEDA's metrics adds it as a scrape target, as a real cluster's does.
	KEDAOperatorMetrics = "127.0.0.1:8180"
	kedaGRPCAddr        = "127.0.0.1:9666"
	kedaAdapterPort     = 6444
	// kedaAdapterOwnPort is the adapter's own metrics server; it binds every
	// interface of the namespace (which has only loopback). Pods use 8080.
	kedaAdapterOwnPort = "9022"
	PrometheusURL      = "http://127.0.0.1:9090"
	PostgresHost       = "127.0.0.1" // where test/pgtest's servers listen
	PostgresPort       = 5432
)

// Config says where the stack lives and how it is tuned.
type Config struct {
	// Dir holds certificates, data, logs and PID files. Empty means a new
	// temporary folder, removed by Stop unless KeepDir is set.
	Dir     string
	KeepDir bool
	// ToolsDir is where build.sh put the binaries; default
	// $PHILOTES_TOOLS_CACHE or $HOME/.cache/philotes.
	ToolsDir string
	// HPASyncPeriod is the controller-manager's HPA resync; default 5s.
	HPASyncPeriod time.Duration
	// HPADownscaleStabilization is the cluster-wide default window; a
	// ScaledObject's behavior overrides it. Default 10s.
	HPADownscaleStabilization time.Duration
	// ScrapeInterval is Prometheus' scrape and evaluation interval; default 1s.
	ScrapeInterval time.Duration
	// WithoutKEDA leaves KEDA out (and its CRDs and APIService): for tests of
	// the control plane and the node alone.
	WithoutKEDA bool
	Logger      *slog.Logger
}

func (c *Config) withDefaults() error {
	if c.ToolsDir == "" {
		c.ToolsDir = os.Getenv("PHILOTES_TOOLS_CACHE")
	}
	if c.ToolsDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return fmt.Errorf("find tools cache: %w", err)
		}
		c.ToolsDir = filepath.Join(home, ".cache", "philotes")
	}
	if c.HPASyncPeriod == 0 {
		c.HPASyncPeriod = 5 * time.Second
	}
	if c.HPADownscaleStabilization == 0 {
		c.HPADownscaleStabilization = 10 * time.Second
	}
	if c.ScrapeInterval == 0 {
		c.ScrapeInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Binaries are the paths of the programs the stack runs.
type Binaries struct {
	Etcd, APIServer, ControllerManager, KEDAOperator, KEDAAdapter, Prometheus, S3 string
}

// FindBinaries locates the built tools and fails naming every missing one.
func FindBinaries(toolsDir string, withKEDA bool) (Binaries, error) {
	b := Binaries{
		Etcd:              filepath.Join(toolsDir, "etcd-"+EtcdVersion, "bin", "etcd"),
		APIServer:         filepath.Join(toolsDir, "kubernetes-"+KubernetesVersion, "bin", "kube-apiserver"),
		ControllerManager: filepath.Join(toolsDir, "kubernetes-"+KubernetesVersion, "bin", "kube-controller-manager"),
		KEDAOperator:      filepath.Join(toolsDir, "keda-"+KEDAVersion, "bin", "keda-operator"),
		KEDAAdapter:       filepath.Join(toolsDir, "keda-"+KEDAVersion, "bin", "keda-adapter"),
		Prometheus:        "/usr/bin/prometheus",
		S3:                filepath.Join(toolsDir, "versitygw-"+s3test.Version, "bin", "versitygw"),
	}
	var errs []error
	need := []string{b.Etcd, b.APIServer, b.ControllerManager, b.Prometheus, b.S3}
	if withKEDA {
		need = append(need, b.KEDAOperator, b.KEDAAdapter)
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, fmt.Errorf("%s missing (run test/e2e/tools/build.sh): %w", p, err))
		}
	}
	// PostgreSQL's server binaries: wherever test/pgtest finds them (PG_BINDIR, pg_config, Debian's folders).
	if _, err := pgtest.BinDir(); err != nil {
		errs = append(errs, err)
	}
	return b, errors.Join(errs...)
}

// Stack is a running control plane.
type Stack struct {
	Dir string
	NS  *netns.Namespace
	PKI *PKI
	// Kubeconfig is an admin (system:masters) kubeconfig for 127.0.0.1:6443.
	// It only works from inside the namespace: see KubectlHint.
	Kubeconfig string
	// REST dials through the namespace; use it for every client.
	REST    *rest.Config
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// HTTP reaches loopback services inside the namespace (Prometheus, pods).
	HTTP *http.Client
	// S3 are the keys of the object store at S3Endpoint.
	S3 S3Credentials

	cfg           Config
	bins          Binaries
	stopDiscovery context.CancelFunc
	log           *slog.Logger
	procs         []*process
}

// Start brings the whole stack up and waits until each part is ready. On
// error everything already started is stopped.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	bins, err := FindBinaries(cfg.ToolsDir, !cfg.WithoutKEDA)
	if err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "philotes-e2e-"); err != nil {
			return nil, fmt.Errorf("create stack dir: %w", err)
		}
	}
	s := &Stack{Dir: cfg.Dir, cfg: cfg, bins: bins, log: cfg.Logger}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	start := time.Now()
	for _, d := range []string{"logs", "pids"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	// PostgreSQL runs as the postgres user and must reach its data folder.
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("chmod stack dir: %w", err)
	}
	if s.NS, err = netns.Create(ctx, filepath.Join(s.Dir, "netns.pid")); err != nil {
		return nil, err
	}
	s.HTTP = &http.Client{Transport: &http.Transport{DialContext: s.NS.DialContext}, Timeout: 10 * time.Second}
	if s.PKI, err = generatePKI(filepath.Join(s.Dir, "pki")); err != nil {
		return nil, err
	}
	// PostgreSQL is independent of the control plane: start it first and
	// check it last.
	pg, err := s.startPostgres(ctx)
	if err != nil {
		return nil, err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"etcd", s.startEtcd},
		{"kube-apiserver", s.startAPIServer},
		{"kube-controller-manager", s.startControllerManager},
		{"cluster objects", s.applyClusterObjects},
		{"keda", s.startKEDA},
		{"prometheus", s.startPrometheus},
		{"s3", s.startS3},
		{"postgres", func(ctx context.Context) error { return s.waitPostgres(ctx, pg) }},
	}
	for _, st := range steps {
		if cfg.WithoutKEDA && (st.name == "cluster objects" || st.name == "keda") {
			continue
		}
		if err := st.fn(ctx); err != nil {
			return nil, fmt.Errorf("start %s: %w", st.name, err)
		}
	}
	s.log.Info("stack up", "dir", s.Dir, "elapsed", time.Since(start).Round(100*time.Millisecond))
	return s, nil
}

// KubectlHint is a command line that reaches the stack with the machine's kubectl.
func (s *Stack) KubectlHint() string {
	return fmt.Sprintf("nsenter --net=%s kubectl --kubeconfig %s", s.NS.Path(), s.Kubeconfig)
}

// Stop stops every process in reverse start order, removes the namespace and,
// unless KeepDir, the stack's folder.
func (s *Stack) Stop() {
	if s.stopDiscovery != nil {
		s.stopDiscovery()
	}
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop(15*time.Second, s.log)
	}
	s.procs = nil
	if s.NS != nil {
		s.NS.Destroy()
		s.NS = nil
	}
	if !s.cfg.KeepDir && s.Dir != "" {
		if err := os.RemoveAll(s.Dir); err != nil {
			s.log.Warn("remove stack dir", "dir", s.Dir, "err", err)
		}
	}
	s.log.Info("stack stopped", "dir", s.Dir)
}

// tlsClient is an HTTP client with the admin certificate, for health checks
// of the control plane.
func (s *Stack) tlsClient(caFile string, insecure bool) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(Crt(s.PKI.Admin), Key(s.PKI.Admin))
	if err != nil {
		return nil, fmt.Errorf("load admin cert: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if insecure {
		// Only for the controller-manager's self-signed health endpoint on loopback.
		cfg.InsecureSkipVerify = true
	} else {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.RootCAs = pool
	}
	return &http.Client{
		Transport: &http.Transport{DialContext: s.NS.DialContext, TLSClientConfig: cfg},
		Timeout:   5 * time.Second,
	}, nil
}

// getOK is a readiness probe: GET url must answer 200.
func getOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
