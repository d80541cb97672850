package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func (s *Stack) startEtcd(ctx context.Context) error {
	p, err := s.startProcess("etcd", s.bins.Etcd, []string{
		"--name=default",
		"--data-dir=" + filepath.Join(s.Dir, "etcd"),
		"--listen-client-urls=" + etcdClientURL,
		"--advertise-client-urls=" + etcdClientURL,
		"--listen-peer-urls=" + etcdPeerURL,
		"--initial-advertise-peer-urls=" + etcdPeerURL,
		"--initial-cluster=default=" + etcdPeerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}, nil, nil)
	if err != nil {
		return err
	}
	return s.waitFor(ctx, p, 30*time.Second, "etcd /health", func(ctx context.Context) error {
		return getOK(ctx, s.HTTP, etcdClientURL+"/health")
	})
}

func (s *Stack) startAPIServer(ctx context.Context) error {
	k := s.PKI
	p, err := s.startProcess("kube-apiserver", s.bins.APIServer, []string{
		"--etcd-servers=" + etcdClientURL,
		"--bind-address=127.0.0.1",
		"--secure-port=6443",
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--tls-cert-file=" + Crt(k.APIServer),
		"--tls-private-key-file=" + Key(k.APIServer),
		"--client-ca-file=" + Crt(k.CA),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + k.ServiceAccountKey + ".pub",
		"--service-account-signing-key-file=" + k.ServiceAccountKey + ".key",
		"--requestheader-client-ca-file=" + Crt(k.FrontProxyCA),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + Crt(k.FrontProxyClient),
		"--proxy-client-key-file=" + Key(k.FrontProxyClient),
		"--enable-aggregator-routing=false",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}, nil, nil)
	if err != nil {
		return err
	}
	c, err := s.tlsClient(Crt(k.CA), false)
	if err != nil {
		return err
	}
	if err := s.waitFor(ctx, p, 90*time.Second, "kube-apiserver /readyz", func(ctx context.Context) error {
		return getOK(ctx, c, APIServerURL+"/readyz")
	}); err != nil {
		return err
	}
	return s.writeKubeconfig()
}

// writeKubeconfig writes the admin kubeconfig and builds the clients.
func (s *Stack) writeKubeconfig() error {
	s.Kubeconfig = filepath.Join(s.Dir, "admin.kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: philotes-e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: philotes-e2e
  context: {cluster: philotes-e2e, user: admin, namespace: default}
current-context: philotes-e2e
`, APIServerURL, Crt(s.PKI.CA), Crt(s.PKI.Admin), Key(s.PKI.Admin))
	if err := os.WriteFile(s.Kubeconfig, []byte(kc), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	s.REST = &rest.Config{
		Host: APIServerURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile: Crt(s.PKI.CA), CertFile: Crt(s.PKI.Admin), KeyFile: Key(s.PKI.Admin),
		},
		Dial:  s.NS.DialContext,
		QPS:   100,
		Burst: 200,
	}
	var err error
	if s.Kube, err = kubernetes.NewForConfig(s.REST); err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	if s.Dynamic, err = dynamic.NewForConfig(s.REST); err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	return nil
}

func (s *Stack) startControllerManager(ctx context.Context) error {
	k := s.PKI
	p, err := s.startProcess("kube-controller-manager", s.bins.ControllerManager, []string{
		"--kubeconfig=" + s.Kubeconfig,
		"--authentication-kubeconfig=" + s.Kubeconfig,
		"--authorization-kubeconfig=" + s.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + controllerMgrPort,
		"--controllers=" + strings.Join([]string{
			"deployment-controller", "replicaset-controller", "horizontal-pod-autoscaler-controller",
			"garbage-collector-controller", "serviceaccount-controller", "serviceaccount-token-controller",
			"namespace-controller",
		}, ","),
		"--use-service-account-credentials",
		"--service-account-private-key-file=" + k.ServiceAccountKey + ".key",
		"--root-ca-file=" + Crt(k.CA),
		"--cluster-signing-cert-file=" + Crt(k.CA),
		"--cluster-signing-key-file=" + Key(k.CA),
		"--leader-elect=false",
		"--horizontal-pod-autoscaler-sync-period=" + s.cfg.HPASyncPeriod.String(),
		"--horizontal-pod-autoscaler-downscale-stabilization=" + s.cfg.HPADownscaleStabilization.String(),
		"--v=1",
	}, nil, nil)
	if err != nil {
		return err
	}
	// Pods are refused until the default ServiceAccount exists, so that is
	// the readiness that matters.
	return s.waitFor(ctx, p, 60*time.Second, "default ServiceAccount from kube-controller-manager", func(ctx context.Context) error {
		_, err := s.Kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return errors.New("not created yet")
		}
		return err
	})
}
