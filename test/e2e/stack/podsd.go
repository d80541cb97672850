package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Debian's Prometheus is built without Kubernetes service discovery, so the
// stack discovers pods itself: it watches pods on the apiserver and writes
// Prometheus file_sd targets for those annotated prometheus.io/scrape=true,
// the same annotations and labels a kubernetes_sd_configs pod job with the
// usual relabelling produces (namespace, pod, app_kubernetes_io_*).

// sdTarget is one file_sd entry.
type sdTarget struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

var labelUnsafe = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// podTargets turns pods into file_sd targets.
func podTargets(pods []*corev1.Pod) []sdTarget {
	out := []sdTarget{}
	for _, p := range pods {
		a := p.Annotations
		if a["prometheus.io/scrape"] != "true" || p.Status.Phase != corev1.PodRunning ||
			p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		port := a["prometheus.io/port"]
		if port == "" {
			for _, c := range p.Spec.Containers {
				if len(c.Ports) > 0 {
					port = strconv.Itoa(int(c.Ports[0].ContainerPort))
					break
				}
			}
		}
		if port == "" {
			continue
		}
		path := a["prometheus.io/path"]
		if path == "" {
			path = "/metrics"
		}
		l := map[string]string{"namespace": p.Namespace, "pod": p.Name, "__metrics_path__": path}
		for k, v := range p.Labels {
			if len(k) > len("app.kubernetes.io/") && k[:len("app.kubernetes.io/")] == "app.kubernetes.io/" {
				l[labelUnsafe.ReplaceAllString(k, "_")] = v
			}
		}
		out = append(out, sdTarget{Targets: []string{p.Status.PodIP + ":" + port}, Labels: l})
	}
	slices.SortFunc(out, func(x, y sdTarget) int {
		return compareStrings(x.Labels["namespace"]+"/"+x.Labels["pod"], y.Labels["namespace"]+"/"+y.Labels["pod"])
	})
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeTargets writes the file atomically: Prometheus watches the folder.
func writeTargets(path string, t []sdTarget) error {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("encode targets: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write targets: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename targets: %w", err)
	}
	return nil
}

// runPodDiscovery keeps path up to date with the pods' scrape targets until
// ctx ends.
func (s *Stack) runPodDiscovery(ctx context.Context, path string) error {
	if err := writeTargets(path, nil); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(s.Kube, 5*time.Minute)
	inf := factory.Core().V1().Pods()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke,
	}); err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	factory.Start(ctx.Done())
	go func() {
		defer factory.Shutdown()
		var last []byte
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			pods, err := inf.Lister().List(labels.Everything())
			if err != nil {
				s.log.Warn("pod discovery: list", "err", err)
				continue
			}
			t := podTargets(pods)
			b, _ := json.Marshal(t)
			if string(b) == string(last) {
				continue
			}
			if err := writeTargets(path, t); err != nil {
				s.log.Warn("pod discovery", "err", err)
				continue
			}
			last = b
		}
	}()
	return nil
}

// targetsDir is where the pod discovery writes and Prometheus reads.
func (s *Stack) targetsDir() string { return filepath.Join(s.Dir, "prometheus", "targets") }
