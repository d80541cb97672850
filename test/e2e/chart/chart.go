// Package chart installs a Helm chart into the end-to-end stack with the Helm
// v4 SDK, the same code path as `helm install`, dialling the apiserver
// through the stack's network namespace.
package chart

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/loader"
	"helm.sh/helm/v4/pkg/kube"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"

	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// Release names one installed chart.
type Release struct {
	Name, Namespace string
	dir             string
	cfg             *action.Configuration
}

func configuration(s *stack.Stack, namespace string, log *slog.Logger) (*action.Configuration, error) {
	kubeconfig := s.Kubeconfig
	cacheDir := filepath.Join(s.Dir, "helm-cache")
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &kubeconfig
	flags.Namespace = &namespace
	flags.CacheDir = &cacheDir
	dial := s.NS.DialContext
	flags.WrapConfigFn = func(c *rest.Config) *rest.Config {
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) { return dial(ctx, network, addr) }
		return c
	}
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(log.Handler()))
	if err := cfg.Init(flags, namespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm configuration: %w", err)
	}
	return cfg, nil
}

// Install installs the chart in dir as release name into namespace (created
// if absent) with values. It does not wait for the workload: callers poll
// for the state they need.
func Install(ctx context.Context, s *stack.Stack, dir, name, namespace string, values map[string]any, log *slog.Logger) (*Release, error) {
	cfg, err := configuration(s, namespace, log)
	if err != nil {
		return nil, err
	}
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	inst := action.NewInstall(cfg)
	inst.ReleaseName = name
	inst.Namespace = namespace
	inst.CreateNamespace = true
	inst.WaitStrategy = kube.HookOnlyStrategy
	inst.Timeout = 2 * time.Minute
	if _, err := inst.RunWithContext(ctx, ch, values); err != nil {
		return nil, fmt.Errorf("helm install %s: %w", name, err)
	}
	return &Release{Name: name, Namespace: namespace, dir: dir, cfg: cfg}, nil
}

// Upgrade upgrades the release to values (replacing the values it had, as
// `helm upgrade -f` without --reuse-values does). It does not wait either.
func (r *Release) Upgrade(ctx context.Context, values map[string]any) error {
	ch, err := loader.Load(r.dir)
	if err != nil {
		return fmt.Errorf("load chart %s: %w", r.dir, err)
	}
	up := action.NewUpgrade(r.cfg)
	up.Namespace = r.Namespace
	up.WaitStrategy = kube.HookOnlyStrategy
	up.Timeout = 2 * time.Minute
	if _, err := up.RunWithContext(ctx, r.Name, ch, values); err != nil {
		return fmt.Errorf("helm upgrade %s: %w", r.Name, err)
	}
	return nil
}

// Uninstall removes the release.
func (r *Release) Uninstall() error {
	u := action.NewUninstall(r.cfg)
	u.WaitStrategy = kube.HookOnlyStrategy
	if _, err := u.Run(r.Name); err != nil {
		return fmt.Errorf("helm uninstall %s: %w", r.Name, err)
	}
	return nil
}
