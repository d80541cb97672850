//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

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
			gone := eventually(t, tc.maxGone, "pod "+name+" removed", func(ctx context.Context) error {
				_, err := s.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return nil
				}
				if err != nil {
					return err
				}
				return errors.New("still there")
			})
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

// runPod creates pod, waits for it to be Running and Ready, and returns its IP.
func runPod(t *testing.T, s *stack.Stack, pod *corev1.Pod) string {
	t.Helper()
	if _, err := s.Kube.CoreV1().Pods(pod.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	var ip string
	eventually(t, 60*time.Second, "pod "+pod.Name+" Running and Ready", func(ctx context.Context) error {
		p, err := s.Kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ip = p.Status.PodIP
				return nil
			}
		}
		return errors.New("not Ready")
	})
	return ip
}
