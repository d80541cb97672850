package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/philotes/philotes-worker/test/e2e/netns"
)

// defaultHTTPPort is the worker's HTTP port when the pod does not say.
const defaultHTTPPort = 8080

// provider runs each pod's containers as local processes inside the
// namespace. It implements virtual-kubelet's PodLifecycleHandler and
// PodNotifier.
type provider struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context
	mu     sync.Mutex
	pods   map[string]*podRun
	ips    map[string]bool
	notify func(*corev1.Pod)
}

// podRun is one pod's processes and the status reported for it.
type podRun struct {
	pod      *corev1.Pod // spec as given; status maintained here
	ip       string
	dir      string
	conts    []*containerRun
	ready    bool
	deleting bool
	purge    bool // remove the pod's emptyDir volumes once its processes have exited
	stopOnce sync.Once
	stopped  chan struct{}
}

type containerRun struct {
	spec     corev1.Container
	bin      string
	args     []string
	env      []string
	mounts   []volumeMount
	cmd      *exec.Cmd
	exited   chan struct{}
	state    corev1.ContainerState
	restarts int32
}

func podKey(ns, name string) string { return ns + "/" + name }

func newProvider(ctx context.Context, cfg Config) *provider {
	return &provider{cfg: cfg, log: cfg.Logger, ctx: ctx, pods: map[string]*podRun{}, ips: map[string]bool{}}
}

// NotifyPods registers the callback that pushes status to the apiserver.
func (p *provider) NotifyPods(_ context.Context, f func(*corev1.Pod)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notify = f
}

// allocateIP hands out a free loopback address 127.0.x.y (x ≥ 1).
func (p *provider) allocateIP() (string, error) {
	for x := 1; x < 255; x++ {
		for y := 2; y < 255; y++ {
			ip := fmt.Sprintf("127.0.%d.%d", x, y)
			if !p.ips[ip] {
				p.ips[ip] = true
				return ip, nil
			}
		}
	}
	return "", fmt.Errorf("no free loopback address")
}

// resolve decides the program and arguments for a container: the image's
// configured binary, or the default; the container's command minus its
// first element (the program inside the image) followed by its args.
func (p *provider) resolve(c corev1.Container) (string, []string, error) {
	bin := p.cfg.Binaries[c.Image]
	if bin == "" {
		bin = p.cfg.DefaultBinary
	}
	if bin == "" {
		return "", nil, fmt.Errorf("no binary for image %q", c.Image)
	}
	var args []string
	if len(c.Command) > 0 {
		args = append(args, c.Command[1:]...)
	}
	args = append(args, c.Args...)
	return bin, args, nil
}

// httpPort is the port the container serves HTTP on: from PHILOTES_HTTP_ADDR
// if set, else a port named http, else the first port, else 8080.
func httpPort(c corev1.Container) int {
	for _, e := range c.Env {
		if e.Name == "PHILOTES_HTTP_ADDR" {
			if _, port, err := net.SplitHostPort(e.Value); err == nil {
				if n, err := strconv.Atoi(port); err == nil {
					return n
				}
			}
		}
	}
	for _, cp := range c.Ports {
		if cp.Name == "http" {
			return int(cp.ContainerPort)
		}
	}
	if len(c.Ports) > 0 {
		return int(c.Ports[0].ContainerPort)
	}
	return defaultHTTPPort
}

// containerEnv is the resolved env (virtual-kubelet has already turned
// ConfigMap, Secret and field references into values) plus the pod's own
// listen address: every pod shares the namespace, so each must bind its own IP.
func containerEnv(c corev1.Container, ip string) []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp"}
	for _, e := range c.Env {
		if e.Name == "PHILOTES_HTTP_ADDR" {
			continue
		}
		env = append(env, e.Name+"="+e.Value)
	}
	env = append(env, "POD_IP="+ip, fmt.Sprintf("PHILOTES_HTTP_ADDR=%s:%d", ip, httpPort(c)))
	return env
}

// CreatePod starts the pod's containers.
func (p *provider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := podKey(pod.Namespace, pod.Name)
	if _, ok := p.pods[key]; ok {
		return nil
	}
	ip, err := p.allocateIP()
	if err != nil {
		return err
	}
	r := &podRun{
		pod:     pod.DeepCopy(),
		ip:      ip,
		dir:     filepath.Join(p.cfg.Dir, "pods", pod.Namespace+"_"+pod.Name),
		stopped: make(chan struct{}),
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		delete(p.ips, ip)
		return fmt.Errorf("create pod dir: %w", err)
	}
	fail := func(err error) error {
		delete(p.ips, ip)
		p.removeVolumes(r)
		return fmt.Errorf("pod %s: %w", key, err)
	}
	vols, skipped, err := p.podVolumes(pod, r.dir)
	if err != nil {
		return fail(err)
	}
	known := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		known[v.Name] = true
	}
	for _, c := range pod.Spec.Containers {
		bin, args, err := p.resolve(c)
		if err != nil {
			return fail(err)
		}
		mounts, err := containerMounts(c, vols, known)
		if err != nil {
			return fail(err)
		}
		if _, _, err := mountArgs(bin, args, mounts); err != nil {
			return fail(fmt.Errorf("container %s: %w", c.Name, err))
		}
		r.conts = append(r.conts, &containerRun{spec: c, bin: bin, args: args, env: containerEnv(c, ip), mounts: mounts})
	}
	if len(pod.Spec.Volumes) > 0 {
		p.log.Info("pod volumes", "pod", key, "volumes", describeVolumes(pod, vols), "skipped", strings.Join(skipped, ", "))
	}
	now := metav1.Now()
	r.pod.Status = corev1.PodStatus{Phase: corev1.PodPending, StartTime: &now, HostIP: "127.0.0.1", PodIP: ip,
		PodIPs: []corev1.PodIP{{IP: ip}}, HostIPs: []corev1.HostIP{{IP: "127.0.0.1"}}}
	for _, c := range r.conts {
		if err := p.startContainer(r, c); err != nil {
			r.purge = true
			p.stopPodLocked(r, 0)
			return err
		}
	}
	p.pods[key] = r
	p.log.Info("pod started", "pod", key, "ip", ip)
	go p.probe(r)
	p.publishLocked(r)
	return nil
}

// startContainer runs one container's process; called with p.mu held.
func (p *provider) startContainer(r *podRun, c *containerRun) error {
	logFile, err := os.OpenFile(filepath.Join(r.dir, c.spec.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open container log: %w", err)
	}
	cmd := p.cfg.NS.Command(c.bin, c.args...)
	if len(c.mounts) > 0 {
		name, args, err := mountArgs(c.bin, c.args, c.mounts)
		if err != nil {
			logFile.Close()
			return fmt.Errorf("start container %s: %w", c.spec.Name, err)
		}
		cmd = p.cfg.NS.Command(name, args...)
		p.log.Info("container command", "pod", podKey(r.pod.Namespace, r.pod.Name), "container", c.spec.Name, "argv", cmd.Args)
	}
	cmd.Env = c.env
	cmd.Dir = r.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := netns.StartTied(cmd); err != nil {
		logFile.Close()
		return fmt.Errorf("start container %s: %w", c.spec.Name, err)
	}
	c.cmd = cmd
	c.exited = make(chan struct{})
	c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	go p.watchContainer(r, c, cmd, logFile)
	return nil
}

// watchContainer records the exit and restarts the container (with a short
// back-off) unless the pod is being deleted or its policy says not to.
func (p *provider) watchContainer(r *podRun, c *containerRun, cmd *exec.Cmd, logFile *os.File) {
	err := cmd.Wait()
	logFile.Close()
	code := int32(0)
	if cmd.ProcessState != nil {
		code = int32(cmd.ProcessState.ExitCode())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	close(c.exited)
	c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: code, FinishedAt: metav1.Now(), Reason: exitReason(code, err),
	}}
	key := podKey(r.pod.Namespace, r.pod.Name)
	if r.deleting {
		return
	}
	p.log.Info("container exited", "pod", key, "container", c.spec.Name, "code", code)
	policy := r.pod.Spec.RestartPolicy
	if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && code == 0) {
		p.publishLocked(r)
		return
	}
	c.restarts++
	backoff := min(time.Duration(c.restarts)*time.Second, 10*time.Second)
	c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	p.publishLocked(r)
	go func() {
		select {
		case <-p.ctx.Done():
			return
		case <-r.stopped:
			return
		case <-time.After(backoff):
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if r.deleting {
			return
		}
		if err := p.startContainer(r, c); err != nil {
			p.log.Error("restart container", "pod", key, "err", err)
		}
		p.publishLocked(r)
	}()
}

func exitReason(code int32, err error) string {
	switch {
	case code == 0:
		return "Completed"
	case code == 137 || (err != nil && strings.Contains(err.Error(), "killed")):
		return "Killed"
	default:
		return "Error"
	}
}

// probe polls the pod's readiness endpoint every second and publishes changes.
func (p *provider) probe(r *podRun) {
	url := readinessURL(r)
	client := &http.Client{Transport: &http.Transport{DialContext: p.cfg.NS.DialContext, DisableKeepAlives: true}, Timeout: time.Second}
	t := time.NewTicker(p.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-r.stopped:
			return
		case <-t.C:
		}
		ok := false
		if url == "" {
			ok = true
		} else if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			ok = resp.StatusCode >= 200 && resp.StatusCode < 400
		}
		p.mu.Lock()
		if !r.deleting {
			running := true
			for _, c := range r.conts {
				running = running && c.state.Running != nil
			}
			ok = ok && running
			if ok != r.ready {
				r.ready = ok
				p.log.Info("pod readiness", "pod", podKey(r.pod.Namespace, r.pod.Name), "ready", ok)
				p.publishLocked(r)
			}
		}
		p.mu.Unlock()
	}
}

// readinessURL is the first container's HTTP readiness probe, or /readyz on
// its HTTP port; empty when the probe is not HTTP.
func readinessURL(r *podRun) string {
	if len(r.conts) == 0 {
		return ""
	}
	c := r.conts[0].spec
	path, port := "/readyz", httpPort(c)
	if pr := c.ReadinessProbe; pr != nil {
		if pr.HTTPGet == nil {
			return ""
		}
		path = pr.HTTPGet.Path
		port = resolvePort(c, pr.HTTPGet.Port, port)
	}
	return fmt.Sprintf("http://%s:%d%s", r.ip, port, path)
}

func resolvePort(c corev1.Container, p intstr.IntOrString, def int) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return def
}

// publishLocked computes the pod's status and hands it to virtual-kubelet.
func (p *provider) publishLocked(r *podRun) {
	st := &r.pod.Status
	st.ContainerStatuses = st.ContainerStatuses[:0]
	allRunning, allDone, failed := true, true, false
	for _, c := range r.conts {
		cs := corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: c.spec.Image, RestartCount: c.restarts,
			State: c.state, Ready: r.ready && c.state.Running != nil, Started: new(c.state.Running != nil),
			ContainerID: "local://" + r.ip + "/" + c.spec.Name,
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		allRunning = allRunning && c.state.Running != nil
		allDone = allDone && c.state.Terminated != nil
		failed = failed || (c.state.Terminated != nil && c.state.Terminated.ExitCode != 0)
	}
	switch {
	case allDone && failed:
		st.Phase = corev1.PodFailed
	case allDone:
		st.Phase = corev1.PodSucceeded
	default:
		st.Phase = corev1.PodRunning
	}
	ready := corev1.ConditionFalse
	if r.ready && allRunning {
		ready = corev1.ConditionTrue
	}
	now := metav1.Now()
	st.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: ready, LastTransitionTime: now},
	}
	if p.notify != nil {
		p.notify(r.pod.DeepCopy())
	}
}

// UpdatePod keeps the new spec; a running process cannot change.
func (p *provider) UpdatePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.pods[podKey(pod.Namespace, pod.Name)]; ok {
		status := r.pod.Status
		r.pod = pod.DeepCopy()
		r.pod.Status = status
	}
	return nil
}

// DeletePod sends SIGTERM to every container and SIGKILL after the pod's
// grace period; once all have exited it reports a terminal status, and
// virtual-kubelet removes the pod from the apiserver.
func (p *provider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.pods[podKey(pod.Namespace, pod.Name)]
	if !ok {
		return errdefs.NotFoundf("pod %s/%s not found", pod.Namespace, pod.Name)
	}
	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	if pod.DeletionGracePeriodSeconds != nil {
		grace = *pod.DeletionGracePeriodSeconds
	}
	r.pod.DeletionTimestamp = pod.DeletionTimestamp
	r.pod.DeletionGracePeriodSeconds = pod.DeletionGracePeriodSeconds
	r.purge = true
	p.stopPodLocked(r, time.Duration(grace)*time.Second)
	return nil
}

// stopPodLocked stops the pod's processes once; called with p.mu held.
func (p *provider) stopPodLocked(r *podRun, grace time.Duration) {
	r.stopOnce.Do(func() {
		r.deleting = true
		r.ready = false
		close(r.stopped)
		key := podKey(r.pod.Namespace, r.pod.Name)
		var running []*containerRun
		for _, c := range r.conts {
			if c.cmd != nil && c.state.Running != nil {
				_ = c.cmd.Process.Signal(syscall.SIGTERM)
				running = append(running, c)
			}
		}
		p.log.Info("pod stopping", "pod", key, "grace", grace, "running", len(running))
		go func() {
			deadline := time.NewTimer(grace)
			defer deadline.Stop()
			for _, c := range running {
				select {
				case <-c.exited:
				case <-deadline.C:
					p.log.Warn("grace period over; SIGKILL", "pod", key, "container", c.spec.Name)
					for _, k := range running {
						_ = k.cmd.Process.Kill()
					}
					<-c.exited
				}
			}
			for _, c := range running {
				<-c.exited
			}
			// The pod stays in p.pods until its volumes are gone, so a new
			// pod of the same name cannot start on them meanwhile.
			p.mu.Lock()
			purge := r.purge
			p.mu.Unlock()
			if purge {
				p.removeVolumes(r)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, c := range r.conts {
				if c.state.Terminated == nil {
					c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
						ExitCode: 0, Reason: "Completed", FinishedAt: metav1.Now()}}
				}
			}
			p.publishLocked(r)
			delete(p.pods, key)
			delete(p.ips, r.ip)
			p.log.Info("pod stopped", "pod", key)
			if r.pod.DeletionTimestamp != nil {
				go p.finishDelete(r.pod.Namespace, r.pod.Name, r.pod.UID)
			}
		}()
	})
}

// removeVolumes deletes the pod's emptyDir volumes (claims stay).
func (p *provider) removeVolumes(r *podRun) {
	dir := filepath.Join(r.dir, "volumes")
	if err := os.RemoveAll(dir); err != nil {
		p.log.Warn("remove pod volumes", "pod", podKey(r.pod.Namespace, r.pod.Name), "dir", dir, "err", err)
	}
}

// finishDelete removes a pod whose processes have all exited from the
// apiserver at once, as the kubelet does; virtual-kubelet alone would wait
// for the whole grace period.
func (p *provider) finishDelete(ns, name string, uid types.UID) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.cfg.Kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		p.log.Warn("remove stopped pod", "pod", ns+"/"+name, "err", err)
	}
}

// stopAll stops every pod's processes (node shutdown) and waits for them.
func (p *provider) stopAll(grace time.Duration) {
	p.mu.Lock()
	var runs []*podRun
	for _, r := range p.pods {
		p.stopPodLocked(r, grace)
		runs = append(runs, r)
	}
	p.mu.Unlock()
	for _, r := range runs {
		for _, c := range r.conts {
			if c.exited != nil {
				<-c.exited
			}
		}
	}
}

// GetPod returns the provider's view of a pod.
func (p *provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.pods[podKey(namespace, name)]
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s not found", namespace, name)
	}
	return r.pod.DeepCopy(), nil
}

// GetPodStatus returns a pod's status.
func (p *provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods lists the pods this node runs.
func (p *provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(p.pods))
	for _, r := range p.pods {
		out = append(out, r.pod.DeepCopy())
	}
	return out, nil
}
