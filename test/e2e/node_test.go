//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/philotes/philotes-worker/test/e2e/node"
	"github.com/philotes/philotes-worker/test/e2e/stack"
)

// TestNode checks the node that plays the kubelet, on the control plane
// without KEDA: pods run as local processes with their resolved env and args
// on their own loopback address, report Ready from the readiness endpoint,
// and on deletion get SIGTERM, then SIGKILL once the grace period is over.
func TestNode(t *testing.T) {
	s := startStackWith(t, stack.Config{WithoutKEDA: true})
	startNode(t, s, fakeWorker(t))
	ctx := t.Context()
	const ns = "default"

	if _, err := s.Kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "worker-config"},
		Data:       map[string]string{"PHILOTES_SOURCE_NAME": "src1", "PHILOTES_HTTP_ADDR": ":8080"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "worker-secret"},
		StringData: map[string]string{"url": "postgres://u@127.0.0.1:5432/source"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("env and args", func(t *testing.T) {
		pod := workerPod("envcheck", 10, "0s")
		c := &pod.Spec.Containers[0]
		c.Args = []string{"run", "--processors", "3"}
		c.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "worker-config"}}}}
		c.Env = append(c.Env, corev1.EnvVar{Name: "PHILOTES_SOURCE_URL", ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "worker-secret"}, Key: "url"}}})
		ip := runPod(t, s, pod)

		var got struct{ Env, Args []string }
		resp, err := s.HTTP.Get("http://" + ip + ":8080/env")
		if err != nil {
			t.Fatalf("GET /env: %v", err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"PHILOTES_SOURCE_NAME=src1",
			"PHILOTES_SOURCE_URL=postgres://u@127.0.0.1:5432/source",
			"PHILOTES_HTTP_ADDR=" + ip + ":8080",
		} {
			if !slices.Contains(got.Env, want) {
				t.Errorf("env lacks %s; env: %v", want, got.Env)
			}
		}
		if want := []string{"run", "--processors", "3"}; !slices.Equal(got.Args, want) {
			t.Errorf("args %v, want %v", got.Args, want)
		}
	})

	tests := []struct {
		name          string
		shutdownDelay string
		grace         int64
		minGone       time.Duration
		maxGone       time.Duration
	}{
		{"exits inside the grace period", "1s", 20, 900 * time.Millisecond, 10 * time.Second},
		{"killed when the grace period ends", "120s", 3, 3 * time.Second, 15 * time.Second},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("grace-%d", i)
			ip := runPod(t, s, workerPod(name, tc.grace, tc.shutdownDelay))
			start := time.Now()
			if err := s.Kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			gone := waitPodGone(t, s, ns, name, tc.maxGone)
			if elapsed := time.Since(start); elapsed < tc.minGone {
				t.Errorf("pod gone after %s (poll %s), before its shutdown could have run (%s)", elapsed, gone, tc.minGone)
			}
			c := &http.Client{Transport: &http.Transport{DialContext: s.NS.DialContext}, Timeout: time.Second}
			if resp, err := c.Get("http://" + ip + ":8080/healthz"); err == nil {
				resp.Body.Close()
				t.Errorf("the pod's process still answers on %s after the pod was removed", ip)
			}
		})
	}
}

// workerPod is a bare pod running the stand-in worker.
func workerPod(name string, grace int64, shutdownDelay string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name:  "worker",
				Image: "philotes-worker:e2e",
				Args:  []string{"run"},
				Env:   []corev1.EnvVar{{Name: "FAKEWORKER_SHUTDOWN_DELAY", Value: shutdownDelay}},
				Ports: []corev1.ContainerPort{{Name: "http-metrics", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http-metrics")}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// shellImage is the image the volume test's node runs as /bin/sh.
const shellImage = "sh:e2e"

// TestNodeVolumes checks that the node gives each pod its own filesystem for
// its volumes, as a kubelet does: two pods with an emptyDir at the same
// mountPath (/tmp, as the chart has it, over the host's /tmp that holds the
// stack folder) each see only their own files there, while a
// persistentVolumeClaim mounted by both (nested at /tmp/shared) is shared;
// a read-only subPath mount of the claim shows its sub-folder and refuses
// writes; the working directory stays the pod folder; a deleted pod's
// emptyDir folder is removed and the claim's files stay; a mount over /proc
// is refused; a binary that a mount hides still starts.
func TestNodeVolumes(t *testing.T) {
	s := startStackWith(t, stack.Config{WithoutKEDA: true})
	runNode(t, node.Config{Kube: s.Kube, NS: s.NS, Dir: s.Dir, DefaultBinary: fakeWorker(t),
		Binaries: map[string]string{shellImage: "/bin/sh"}, Logger: testLogger(t), ShutdownGrace: 10 * time.Second})
	ctx := t.Context()
	const ns = "default"

	claimDir := filepath.Join(s.Dir, "pvc", ns+"_shared")
	if err := os.MkdirAll(filepath.Join(claimDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(claimDir, "sub", "marker"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Each pod writes into its emptyDir and the claim, checks its read-only
	// mount, then keeps writing what it sees into its working directory.
	const script = `set -e
echo "$NAME" > /tmp/scratch-$NAME
echo "$NAME" > /tmp/shared/from-$NAME
if touch /tmp/ro/probe 2>/dev/null; then echo writable; else echo read-only; fi > ro
ls /tmp/ro > ro-list
while :; do ls /tmp > tmp.new; mv tmp.new tmp; ls /tmp/shared > shared.new; mv shared.new shared; sleep 0.2; done`
	podDir := func(name string) string { return filepath.Join(s.Dir, "pods", ns+"_"+name) }
	view := func(name, file string) []string {
		b, err := os.ReadFile(filepath.Join(podDir(name), file))
		if err != nil {
			return nil
		}
		return strings.Fields(string(b))
	}
	for _, name := range []string{"vol-a", "vol-b"} {
		runPod(t, s, shellPod(name, script))
	}

	t.Run("claim shared", func(t *testing.T) {
		eventually(t, 30*time.Second, "both pods see both files in the claim", func(context.Context) error {
			for _, name := range []string{"vol-a", "vol-b"} {
				if got := view(name, "shared"); !slices.Contains(got, "from-vol-a") || !slices.Contains(got, "from-vol-b") {
					return fmt.Errorf("%s sees %v in /tmp/shared", name, got)
				}
			}
			return nil
		})
	})
	t.Run("emptyDir private", func(t *testing.T) {
		for _, tc := range [][2]string{{"vol-a", "vol-b"}, {"vol-b", "vol-a"}} {
			own, other := tc[0], tc[1]
			got := view(own, "tmp")
			if !slices.Contains(got, "scratch-"+own) || slices.Contains(got, "scratch-"+other) {
				t.Errorf("%s sees %v in /tmp, want its own scratch-%s and not scratch-%s", own, got, own, other)
			}
			vol := filepath.Join(podDir(own), "volumes", "scratch")
			if _, err := os.Stat(filepath.Join(vol, "scratch-"+own)); err != nil {
				t.Errorf("%s's file is not in its emptyDir folder: %v", own, err)
			}
			if _, err := os.Stat(filepath.Join(vol, "scratch-"+other)); err == nil {
				t.Errorf("%s's file is in %s's emptyDir folder", other, own)
			}
			if _, err := os.Stat(filepath.Join("/tmp", "scratch-"+own)); err == nil {
				t.Errorf("%s's file reached the host's /tmp", own)
			}
		}
	})
	t.Run("read-only subPath", func(t *testing.T) {
		for _, name := range []string{"vol-a", "vol-b"} {
			if got := view(name, "ro"); !slices.Equal(got, []string{"read-only"}) {
				t.Errorf("%s: /tmp/ro is %v, want read-only", name, got)
			}
			if got := view(name, "ro-list"); !slices.Equal(got, []string{"marker"}) {
				t.Errorf("%s: /tmp/ro holds %v, want the claim's sub/marker", name, got)
			}
		}
		if _, err := os.Stat(filepath.Join(claimDir, "sub", "probe")); err == nil {
			t.Error("a write through the read-only mount reached the claim")
		}
	})
	t.Run("emptyDir removed with its pod", func(t *testing.T) {
		if err := s.Kube.CoreV1().Pods(ns).Delete(ctx, "vol-a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPodGone(t, s, ns, "vol-a", 30*time.Second)
		vol := filepath.Join(podDir("vol-a"), "volumes")
		eventually(t, 10*time.Second, "vol-a's volumes folder removed", func(context.Context) error {
			if _, err := os.Stat(vol); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s: %v", vol, err)
			}
			return nil
		})
		if _, err := os.Stat(filepath.Join(claimDir, "from-vol-a")); err != nil {
			t.Errorf("the claim lost vol-a's file with the pod: %v", err)
		}
		if got := view("vol-b", "tmp"); !slices.Contains(got, "scratch-vol-b") {
			t.Errorf("vol-b's emptyDir lost its file when vol-a was deleted: %v", got)
		}
	})
	t.Run("mount over /proc refused", func(t *testing.T) {
		pod := shellPod("vol-proc", "sleep 3600")
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/proc/x"}}
		if _, err := s.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "vol-proc refused", func(ctx context.Context) error {
			p, err := s.Kube.CoreV1().Pods(ns).Get(ctx, "vol-proc", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Reason != "ProviderFailed" || !strings.Contains(p.Status.Message, "/proc") {
				return fmt.Errorf("phase %s, reason %q, message %q", p.Status.Phase, p.Status.Reason, p.Status.Message)
			}
			t.Logf("refused: %s", p.Status.Message)
			return nil
		})
		if err := s.Kube.CoreV1().Pods(ns).Delete(ctx, "vol-proc", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("binary under a mount", func(t *testing.T) {
		// The stand-in worker is built under the host's /tmp: an emptyDir at
		// /tmp hides it, as the chart's does; it must start and turn Ready.
		pod := workerPod("vol-fake", 5, "0s")
		pod.Spec.Volumes = []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
		runPod(t, s, pod)
	})
}

// shellPod is a pod running script with /bin/sh: an emptyDir "scratch" at
// /tmp, the claim "shared" at /tmp/shared, and its sub-folder "sub" read-only
// at /tmp/ro (listed children first: the node mounts parents first).
func shellPod(name, script string) *corev1.Pod {
	grace := int64(2)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Volumes: []corev1.Volume{
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "claim", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "shared"}}},
			},
			Containers: []corev1.Container{{
				Name:    "sh",
				Image:   shellImage,
				Command: []string{"sh", "-c", script},
				Env:     []corev1.EnvVar{{Name: "NAME", Value: name}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "claim", MountPath: "/tmp/shared"},
					{Name: "claim", MountPath: "/tmp/ro", SubPath: "sub", ReadOnly: true},
					{Name: "scratch", MountPath: "/tmp"},
				},
				// Not HTTP: the node reports the pod Ready while it runs.
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
			}},
		},
	}
}

// waitPodGone waits until the pod is no longer in the apiserver.
func waitPodGone(t *testing.T, s *stack.Stack, ns, name string, timeout time.Duration) time.Duration {
	t.Helper()
	return eventually(t, timeout, "pod "+name+" removed", func(ctx context.Context) error {
		_, err := s.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return errors.New("still there")
	})
}
