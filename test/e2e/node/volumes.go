package node

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Volumes, as a kubelet gives them: each pod's emptyDir is a folder of its
// own, <pod dir>/volumes/<name>, created when the pod starts and removed when
// it is deleted; a persistentVolumeClaim is <Dir>/pvc/<namespace>_<claim>,
// shared by every pod that mounts the claim (ReadWriteMany) and kept across
// pod deletions. Other volume types are skipped with a log line.
//
// A container with volume mounts runs in a private mount namespace of its
// own, in which each mount is a bind mount of its volume's folder at its
// mountPath (see mountArgs). The sources (and the binary, when a mount would
// hide it) are opened before the first mount and bound through
// /proc/self/fd, so a mount over /tmp cannot hide the pod folders under it.

// podVolume is a volume the node provides: a folder on the host.
type podVolume struct {
	name     string
	kind     string // "emptyDir" or "persistentVolumeClaim"
	dir      string
	readOnly bool // the claim is mounted read-only
}

// volumeMount is one bind mount of a container.
type volumeMount struct {
	src, dst string
	readOnly bool
}

// forbiddenMountPaths are never covered: the node binds volumes inside the
// host's own tree, and the processes need these.
var forbiddenMountPaths = []string{"/proc", "/sys", "/dev"}

// podVolumes creates the folders of the pod's volumes and returns them by
// name, with a note per skipped volume.
func (p *provider) podVolumes(pod *corev1.Pod, podDir string) (map[string]podVolume, []string, error) {
	vols := map[string]podVolume{}
	var skipped []string
	for _, v := range pod.Spec.Volumes {
		var pv podVolume
		switch {
		case v.EmptyDir != nil:
			pv = podVolume{name: v.Name, kind: "emptyDir", dir: filepath.Join(podDir, "volumes", v.Name)}
		case v.PersistentVolumeClaim != nil:
			claim := v.PersistentVolumeClaim.ClaimName
			if claim == "" || strings.ContainsAny(claim, `/\`) || claim == "." || claim == ".." {
				return nil, nil, fmt.Errorf("volume %s: bad claim name %q", v.Name, claim)
			}
			pv = podVolume{name: v.Name, kind: "persistentVolumeClaim", readOnly: v.PersistentVolumeClaim.ReadOnly,
				dir: filepath.Join(p.cfg.Dir, "pvc", pod.Namespace+"_"+claim)}
		default:
			skipped = append(skipped, v.Name+" ("+volumeKind(v)+")")
			continue
		}
		if err := makeVolumeDir(pv.dir); err != nil {
			return nil, nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		vols[v.Name] = pv
	}
	return vols, skipped, nil
}

// makeVolumeDir creates a volume folder writable by any user, as the
// kubelet's emptyDir is.
func makeVolumeDir(dir string) error {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	return os.Chmod(dir, 0o777)
}

// volumeKind names a volume's type for the log.
func volumeKind(v corev1.Volume) string {
	switch {
	case v.ConfigMap != nil:
		return "configMap"
	case v.Secret != nil:
		return "secret"
	case v.Projected != nil:
		return "projected"
	case v.HostPath != nil:
		return "hostPath"
	case v.DownwardAPI != nil:
		return "downwardAPI"
	case v.CSI != nil:
		return "csi"
	case v.Ephemeral != nil:
		return "ephemeral"
	default:
		return "unsupported type"
	}
}

// describeVolumes is the log line's list: "name=kind:folder, ...".
func describeVolumes(pod *corev1.Pod, vols map[string]podVolume) string {
	var parts []string
	for _, v := range pod.Spec.Volumes {
		if pv, ok := vols[v.Name]; ok {
			parts = append(parts, pv.name+"="+pv.kind+":"+pv.dir)
		}
	}
	return strings.Join(parts, ", ")
}

// containerMounts resolves a container's volumeMounts to bind mounts, parents
// before children; mounts of skipped volumes are left out. It refuses mount
// paths that are not absolute or would cover /, /proc, /sys or /dev.
func containerMounts(c corev1.Container, vols map[string]podVolume, known map[string]bool) ([]volumeMount, error) {
	var out []volumeMount
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			if known[m.Name] {
				continue // a skipped volume type, logged with the pod
			}
			return nil, fmt.Errorf("container %s: volumeMount %s: no such volume", c.Name, m.Name)
		}
		if !filepath.IsAbs(m.MountPath) {
			return nil, fmt.Errorf("container %s: volumeMount %s: mountPath %q is not absolute", c.Name, m.Name, m.MountPath)
		}
		dst := filepath.Clean(m.MountPath)
		if dst == "/" {
			return nil, fmt.Errorf("container %s: volumeMount %s: refusing to bind a volume over /", c.Name, m.Name)
		}
		for _, f := range forbiddenMountPaths {
			if dst == f || strings.HasPrefix(dst, f+"/") {
				return nil, fmt.Errorf("container %s: volumeMount %s: refusing to bind a volume over %s (under %s, which the node never covers)", c.Name, m.Name, dst, f)
			}
		}
		src := v.dir
		if m.SubPath != "" {
			sub := filepath.Clean(m.SubPath)
			if filepath.IsAbs(sub) || sub == ".." || strings.HasPrefix(sub, "../") {
				return nil, fmt.Errorf("container %s: volumeMount %s: subPath %q leaves the volume", c.Name, m.Name, m.SubPath)
			}
			src = filepath.Join(v.dir, sub)
			if err := makeVolumeDir(src); err != nil {
				return nil, fmt.Errorf("container %s: volumeMount %s: subPath: %w", c.Name, m.Name, err)
			}
		}
		out = append(out, volumeMount{src: src, dst: dst, readOnly: m.ReadOnly || v.readOnly})
	}
	// Parents first, so that a mount inside another lands in the volume.
	slices.SortStableFunc(out, func(a, b volumeMount) int {
		return strings.Count(a.dst, "/") - strings.Count(b.dst, "/")
	})
	return out, nil
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// shQuote quotes s for sh.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// mountArgs is the program and arguments (run through the namespace's
// nsenter) that start bin with args in a private mount namespace holding
// mounts:
//
//	unshare --mount --propagation private -- /bin/sh -c '<script>' <bin> <args...>
//
// where the script opens each source on a file descriptor, creates each mount
// path (mkdir -p; inside an earlier mount when nested, else on the host, as an
// empty folder), bind-mounts the descriptor there, remounts read-only mounts
// read-only, closes the descriptors and execs bin. nsenter, unshare and sh
// each exec the next without forking, so the process the node started is the
// container's process (its PID, signals and exit code). When a mount hides bin
// itself, it is executed through its own descriptor, which stays open.
func mountArgs(bin string, args []string, mounts []volumeMount) (string, []string, error) {
	fd := 3
	srcFD := map[string]int{}
	var opens []string
	for _, m := range mounts {
		if _, ok := srcFD[m.src]; !ok {
			srcFD[m.src] = fd
			opens = append(opens, fmt.Sprintf("%d<%s", fd, shQuote(m.src)))
			fd++
		}
	}
	run := `"$0"`
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		real = bin
	}
	for _, m := range mounts {
		if under(bin, m.dst) || under(real, m.dst) {
			opens = append(opens, fmt.Sprintf("%d<%s", fd, shQuote(bin)))
			run = fmt.Sprintf("/proc/self/fd/%d", fd)
			fd++
			break
		}
	}
	if fd > 10 {
		return "", nil, fmt.Errorf("%d volume sources: sh redirects file descriptors up to 9 only", fd-3)
	}
	script := []string{"set -e", "exec " + strings.Join(opens, " ")}
	for _, m := range mounts {
		script = append(script,
			"mkdir -p "+shQuote(m.dst),
			fmt.Sprintf("mount --no-canonicalize --bind /proc/self/fd/%d %s", srcFD[m.src], shQuote(m.dst)))
	}
	for _, m := range mounts {
		if m.readOnly {
			script = append(script, "mount --no-canonicalize -o remount,bind,ro "+shQuote(m.dst))
		}
	}
	var closes []string
	for _, f := range srcFD {
		closes = append(closes, fmt.Sprintf("%d<&-", f))
	}
	slices.Sort(closes)
	script = append(script, "exec "+strings.Join(closes, " "), "exec "+run+` "$@"`)
	argv := append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", strings.Join(script, "; "), bin}, args...)
	return "unshare", argv, nil
}
