// Package node plays the kubelet for the end-to-end stack: it registers a
// Node, binds Pending pods to it, and runs each pod's containers as local
// processes inside the stack's network namespace, each pod with its own
// loopback address as podIP and its volumes bound in a private mount
// namespace per container (see volumes.go). It uses the virtual-kubelet
// library for the node and pod controllers; this package adds the scheduler
// loop and the process provider.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	vkslog "github.com/virtual-kubelet/virtual-kubelet/log/slog"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/philotes/philotes-worker/test/e2e/netns"
)

// Config says how the node runs pods.
type Config struct {
	// Name of the Node object; default "philotes-e2e".
	Name string
	Kube kubernetes.Interface
	// NS is the stack's network namespace; pods run and are probed there.
	NS *netns.Namespace
	// Dir holds each pod's working folder (pods/<namespace>_<name>: container
	// logs, emptyDir volumes under volumes/) and the persistentVolumeClaim
	// folders (pvc/<namespace>_<claim>).
	Dir string
	// DefaultBinary runs every container whose image is not in Binaries.
	DefaultBinary string
	// Binaries maps a container image to a local program.
	Binaries map[string]string
	// ProbeInterval is how often readiness is probed; default 1s.
	ProbeInterval time.Duration
	// ShutdownGrace bounds how long Run waits for pods when ctx ends; default 30s.
	ShutdownGrace time.Duration
	Logger        *slog.Logger
}

func (c *Config) validate() error {
	var errs []error
	if c.Kube == nil {
		errs = append(errs, errors.New("node: Kube is required"))
	}
	if c.NS == nil {
		errs = append(errs, errors.New("node: NS is required"))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("node: Dir is required"))
	}
	if c.DefaultBinary == "" && len(c.Binaries) == 0 {
		errs = append(errs, errors.New("node: DefaultBinary or Binaries is required"))
	}
	// Pods run in their own working folders: relative paths would not resolve.
	if c.DefaultBinary != "" {
		abs, err := filepath.Abs(c.DefaultBinary)
		if err != nil {
			errs = append(errs, fmt.Errorf("node: DefaultBinary: %w", err))
		}
		c.DefaultBinary = abs
	}
	for image, bin := range c.Binaries {
		abs, err := filepath.Abs(bin)
		if err != nil {
			errs = append(errs, fmt.Errorf("node: Binaries[%s]: %w", image, err))
		}
		c.Binaries[image] = abs
	}
	if c.Name == "" {
		c.Name = "philotes-e2e"
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = time.Second
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(errs...)
}

// Node is a running node; Run blocks until its context ends.
type Node struct {
	cfg      Config
	provider *provider
	ready    chan struct{}
}

// New checks the configuration.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Logger = cfg.Logger.With("component", "node")
	return &Node{cfg: cfg, ready: make(chan struct{})}, nil
}

// Ready is closed once the Node is registered and the pod controller runs.
func (n *Node) Ready() <-chan struct{} { return n.ready }

func (n *Node) nodeObject() *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   n.cfg.Name,
			Labels: map[string]string{"kubernetes.io/hostname": n.cfg.Name, "kubernetes.io/os": "linux", "type": "virtual-kubelet"},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "local process node", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
			}},
			NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "v1.37.2-local"},
		},
	}
}

// Run registers the node, binds pods and runs them until ctx ends; then it
// stops every pod's processes (SIGTERM, SIGKILL after ShutdownGrace).
func (n *Node) Run(ctx context.Context) error {
	kube := n.cfg.Kube
	log := n.cfg.Logger
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// virtual-kubelet's own logs: warnings and errors only.
	ctx = vklog.WithLogger(ctx, vkslog.FromSlog(slog.New(minLevel{Handler: n.cfg.Logger.Handler(), level: slog.LevelWarn}).With("lib", "virtual-kubelet")))

	n.provider = newProvider(ctx, n.cfg)
	defer n.provider.stopAll(n.cfg.ShutdownGrace)

	nc, err := node.NewNodeController(node.NaiveNodeProvider{}, n.nodeObject(), kube.CoreV1().Nodes(),
		node.WithNodeEnableLeaseV1(kube.CoordinationV1().Leases(corev1.NamespaceNodeLease), 40))
	if err != nil {
		return fmt.Errorf("node controller: %w", err)
	}

	podFactory := informers.NewSharedInformerFactoryWithOptions(kube, time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", n.cfg.Name).String()
		}))
	otherFactory := informers.NewSharedInformerFactory(kube, time.Minute)

	broadcaster := record.NewBroadcaster()
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "philotes-e2e-node", Host: n.cfg.Name})

	pc, err := node.NewPodController(node.PodControllerConfig{
		PodClient:         kube.CoreV1(),
		PodInformer:       podFactory.Core().V1().Pods(),
		EventRecorder:     recorder,
		Provider:          n.provider,
		ConfigMapInformer: otherFactory.Core().V1().ConfigMaps(),
		SecretInformer:    otherFactory.Core().V1().Secrets(),
		ServiceInformer:   otherFactory.Core().V1().Services(),
	})
	if err != nil {
		return fmt.Errorf("pod controller: %w", err)
	}
	podFactory.Start(ctx.Done())
	otherFactory.Start(ctx.Done())

	errc := make(chan error, 3)
	go func() { errc <- nc.Run(ctx) }()
	select {
	case <-nc.Ready():
	case err := <-errc:
		return fmt.Errorf("node controller: %w", err)
	case <-ctx.Done():
		return nil
	}
	go func() { errc <- pc.Run(ctx, 4) }()
	select {
	case <-pc.Ready():
	case err := <-errc:
		return fmt.Errorf("pod controller: %w", err)
	case <-ctx.Done():
		return nil
	}
	go func() { errc <- n.schedule(ctx) }()
	log.Info("node ready", "name", n.cfg.Name)
	close(n.ready)

	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// schedule binds every unscheduled pod to this node: a scheduler reduced to
// the one node there is.
func (n *Node) schedule(ctx context.Context) error {
	kube := n.cfg.Kube
	factory := informers.NewSharedInformerFactoryWithOptions(kube, time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", "").String()
		}))
	queue := make(chan *corev1.Pod, 1024)
	inf := factory.Core().V1().Pods().Informer()
	enqueue := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil {
			select {
			case queue <- pod:
			default:
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return fmt.Errorf("scheduler informer: %w", err)
	}
	factory.Start(ctx.Done())
	resync := time.NewTicker(2 * time.Second)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			// Retry pods whose binding failed before.
			for _, obj := range inf.GetStore().List() {
				enqueue(obj)
			}
		case pod := <-queue:
			binding := &corev1.Binding{
				ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
				Target:     corev1.ObjectReference{Kind: "Node", Name: n.cfg.Name},
			}
			err := kube.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
			switch {
			case err == nil:
				n.cfg.Logger.Debug("bound pod", "pod", pod.Namespace+"/"+pod.Name)
			case apierrors.IsConflict(err), apierrors.IsNotFound(err):
				// Already bound or gone.
			default:
				n.cfg.Logger.Warn("bind pod", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			}
		}
	}
}

// minLevel drops records below a level, and virtual-kubelet's reports of
// optimistic-concurrency conflicts on status updates: it retries those
// itself, and they are normal while the controllers and the node write the
// same pod.
type minLevel struct {
	slog.Handler
	level slog.Level
	drop  bool
}

func isConflict(a slog.Attr) bool {
	return strings.Contains(a.Value.String(), "the object has been modified")
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return !h.drop && l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) Handle(ctx context.Context, r slog.Record) error {
	conflict := h.drop
	r.Attrs(func(a slog.Attr) bool {
		conflict = conflict || isConflict(a)
		return !conflict
	})
	if conflict {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	drop := h.drop
	for _, a := range as {
		drop = drop || isConflict(a)
	}
	return minLevel{h.Handler.WithAttrs(as), h.level, drop}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level, h.drop}
}
