package stack

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

var (
	crdGVR        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	// ScaledObjectGVR is KEDA's ScaledObject resource.
	ScaledObjectGVR = schema.GroupVersionResource{Group: "keda.sh", Version: "v1alpha1", Resource: "scaledobjects"}
)

const kedaNamespace = "keda"

// kedaCRDDir finds config/crd/bases of the KEDA module in the module cache
// (build.sh downloaded it; go mod download is a no-op then).
func kedaCRDDir(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/kedacore/keda/v2@"+KEDAVersion)
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locate KEDA module: %w", err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("parse go mod download output: %w", err)
	}
	if m.Error != "" || m.Dir == "" {
		return "", fmt.Errorf("locate KEDA module: %s", m.Error)
	}
	return filepath.Join(m.Dir, "config", "crd", "bases"), nil
}

// applyClusterObjects installs KEDA's six CRDs and the objects the adapter
// needs: the keda namespace, the ExternalName Service to localhost, the
// APIService for external.metrics.k8s.io and the HPA controller's RBAC.
func (s *Stack) applyClusterObjects(ctx context.Context) error {
	start := time.Now()
	dir, err := kedaCRDDir(ctx)
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return fmt.Errorf("list CRDs: %w", err)
	}
	if len(files) != 6 {
		return fmt.Errorf("want KEDA's 6 CRDs in %s, found %d", dir, len(files))
	}
	var names []string
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read CRD: %w", err)
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return fmt.Errorf("parse %s: %w", f, err)
		}
		var u unstructured.Unstructured
		if err := u.UnmarshalJSON(js); err != nil {
			return fmt.Errorf("decode %s: %w", f, err)
		}
		// Create, not client-side apply: scaledjobs is too large for the
		// last-applied annotation.
		if _, err := s.Dynamic.Resource(crdGVR).Create(ctx, &u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", u.GetName(), err)
		}
		names = append(names, u.GetName())
	}

	core := s.Kube.CoreV1()
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kedaNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create keda namespace: %w", err)
	}
	// The aggregator turns an ExternalName Service into
	// https://<externalName>:<port>; Endpoints refuse loopback addresses.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "keda-metrics-apiserver", Namespace: kedaNamespace},
		Spec: corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: "localhost",
			Ports: []corev1.ServicePort{{
				Name: "https", Port: kedaAdapterPort, TargetPort: intstr.FromInt32(kedaAdapterPort),
			}},
		},
	}
	if _, err := core.Services(kedaNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create adapter service: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(s.PKI.KEDADir, "ca.crt"))
	if err != nil {
		return fmt.Errorf("read KEDA CA: %w", err)
	}
	apiSvc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": "v1beta1.external.metrics.k8s.io"},
		"spec": map[string]any{
			"group":                "external.metrics.k8s.io",
			"version":              "v1beta1",
			"groupPriorityMinimum": int64(100),
			"versionPriority":      int64(100),
			"caBundle":             base64.StdEncoding.EncodeToString(caPEM),
			"service": map[string]any{
				"namespace": kedaNamespace, "name": "keda-metrics-apiserver", "port": int64(kedaAdapterPort),
			},
		},
	}}
	if _, err := s.Dynamic.Resource(apiServiceGVR).Create(ctx, apiSvc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create APIService: %w", err)
	}
	rbac := s.Kube.RbacV1()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "keda-external-metrics-reader"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"external.metrics.k8s.io"}, Resources: []string{"*"}, Verbs: []string{"get", "list", "watch"},
		}},
	}
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create external metrics role: %w", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "keda-hpa-controller-external-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{
			Kind: "ServiceAccount", Name: "horizontal-pod-autoscaler", Namespace: "kube-system",
		}},
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create external metrics binding: %w", err)
	}

	for _, name := range names {
		err := pollUntil(ctx, 30*time.Second, "CRD "+name+" Established", func(ctx context.Context) error {
			u, err := s.Dynamic.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if conditionTrue(u, "Established") {
				return nil
			}
			return errors.New("not established")
		})
		if err != nil {
			return err
		}
	}
	s.log.Info("ready", "component", "cluster objects", "crds", len(names), "after", time.Since(start).Round(time.Millisecond))
	return nil
}

// conditionTrue reports whether status.conditions has type t with status True.
func conditionTrue(u *unstructured.Unstructured, t string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == t && m["status"] == "True" {
			return true
		}
	}
	return false
}

func (s *Stack) kedaEnv() []string {
	return []string{
		"WATCH_NAMESPACE=",
		"KEDA_CLUSTER_OBJECT_NAMESPACE=" + kedaNamespace,
		"POD_NAMESPACE=" + kedaNamespace,
		"KUBECONFIG=" + s.Kubeconfig,
	}
}

// startKEDA runs the operator, then the adapter, and waits until the
// aggregator reports the external metrics APIService Available.
func (s *Stack) startKEDA(ctx context.Context) error {
	op, err := s.startProcess("keda-operator", s.bins.KEDAOperator, []string{
		"--metrics-bind-address=" + KEDAOperatorMetrics,
		"--health-probe-bind-address=" + kedaOperatorHealth,
		"--metrics-service-bind-address=" + kedaGRPCAddr,
		"--cert-dir=" + s.PKI.KEDADir,
		"--enable-cert-rotation=false",
		"--enable-webhook-patching=false",
		"--enable-apiservice-patching=false",
		"--leader-elect=false",
		"--zap-log-level=info",
		"--zap-encoder=console",
	}, s.kedaEnv(), nil)
	if err != nil {
		return err
	}
	if err := s.waitFor(ctx, op, 60*time.Second, "keda-operator /readyz", func(ctx context.Context) error {
		return getOK(ctx, s.HTTP, "http://"+kedaOperatorHealth+"/readyz")
	}); err != nil {
		return err
	}
	ad, err := s.startProcess("keda-adapter", s.bins.KEDAAdapter, []string{
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kedaAdapterPort),
		"--cert-dir=" + s.PKI.KEDADir,
		"--tls-cert-file=" + filepath.Join(s.PKI.KEDADir, "tls.crt"),
		"--tls-private-key-file=" + filepath.Join(s.PKI.KEDADir, "tls.key"),
		"--lister-kubeconfig=" + s.Kubeconfig,
		"--authentication-kubeconfig=" + s.Kubeconfig,
		"--authorization-kubeconfig=" + s.Kubeconfig,
		"--metrics-service-address=" + kedaGRPCAddr,
		"--port=" + kedaAdapterOwnPort,
		"--v=1",
	}, s.kedaEnv(), nil)
	if err != nil {
		return err
	}
	return s.waitFor(ctx, ad, 60*time.Second, "APIService v1beta1.external.metrics.k8s.io Available", func(ctx context.Context) error {
		u, err := s.Dynamic.Resource(apiServiceGVR).Get(ctx, "v1beta1.external.metrics.k8s.io", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !conditionTrue(u, "Available") {
			return errors.New("not Available")
		}
		return nil
	})
}

// pollUntil polls check every 100ms until it succeeds or timeout passes.
func pollUntil(ctx context.Context, timeout time.Duration, what string, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("waited %s for %s: %w", timeout, what, last)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
