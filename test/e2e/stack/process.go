package stack

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/philotes/philotes-worker/test/e2e/netns"
)

// process is one service of the stack, run inside the namespace and tracked
// by PID (also written to <dir>/pids/<name>.pid for cmd/stack down).
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	// stopSignal asks it to stop; zero means SIGTERM.
	stopSignal syscall.Signal
}

// startProcess runs bin with args and env inside the namespace, logging to
// <dir>/logs/<name>.log. cred, when set, runs it as another user (nsenter
// drops privileges after joining the namespace).
func (s *Stack) startProcess(name, bin string, args, env []string, cred *syscall.Credential) (*process, error) {
	logPath := filepath.Join(s.Dir, "logs", name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	cmd := s.NS.Command(bin, args...)
	if cred != nil {
		cmd = s.NS.CommandAs(cred.Uid, cred.Gid, bin, args...)
	}
	cmd.Env = append(baseEnv(), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := netns.StartTied(cmd); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(s.Dir, "pids", name+".pid"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return nil, fmt.Errorf("write %s pid: %w", name, err)
	}
	s.procs = append(s.procs, p)
	s.log.Info("started", "component", name, "pid", pid, "log", logPath)
	return p, nil
}

// baseEnv is a minimal environment for services: nothing from the caller
// leaks in (etcd, for one, reads every ETCD_* variable as a flag).
func baseEnv() []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	if h := os.Getenv("HOME"); h != "" {
		env = append(env, "HOME="+h)
	}
	return env
}

// exited reports an error if the process has already died, so readiness
// polling can give up early with the reason.
func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", p.name, p.err)
	default:
		return nil
	}
}

// stop sends its stop signal (SIGTERM unless set) to the process and, after grace, SIGKILL.
func (p *process) stop(grace time.Duration, log *slog.Logger) {
	select {
	case <-p.done:
		return
	default:
	}
	sig := p.stopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		log.Warn("did not stop after SIGTERM; killing", "component", p.name, "grace", grace)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitFor polls check until it succeeds, the process dies or timeout passes.
func (s *Stack) waitFor(ctx context.Context, p *process, timeout time.Duration, what string, check func(context.Context) error) error {
	start := time.Now()
	err := netns.Poll(ctx, timeout, 100*time.Millisecond, what, func() error {
		if err := p.exited(); err != nil {
			return netns.Permanent(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return check(cctx)
	})
	if err != nil {
		return fmt.Errorf("%w; last log lines:\n%s", err, s.tail(p.name, 20))
	}
	s.log.Info("ready", "component", p.name, "after", time.Since(start).Round(time.Millisecond))
	return nil
}

// tail returns the last n lines of a component's log.
func (s *Stack) tail(name string, n int) string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "logs", name+".log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// StopByPIDFiles stops every process recorded under dir/pids (SIGTERM, then
// SIGKILL after grace) and the namespace holder. It is how cmd/stack down
// tears down a stack that another process started.
func StopByPIDFiles(dir string, grace time.Duration, log *slog.Logger) error {
	entries, err := os.ReadDir(filepath.Join(dir, "pids"))
	if err != nil {
		return fmt.Errorf("read pid files: %w", err)
	}
	var pids []int
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "pids", e.Name()))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || !netns.ProcessAlive(pid) {
			continue
		}
		log.Info("stopping", "component", strings.TrimSuffix(e.Name(), ".pid"), "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		pids = append(pids, pid)
	}
	_ = netns.Poll(context.Background(), grace, 100*time.Millisecond, "processes to exit", func() error {
		for _, pid := range pids {
			if netns.ProcessAlive(pid) {
				return fmt.Errorf("pid %d still running", pid)
			}
		}
		return nil
	})
	for _, pid := range pids {
		if netns.ProcessAlive(pid) {
			log.Warn("killing", "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if ns, err := netns.Open(filepath.Join(dir, "netns.pid")); err == nil {
		ns.Destroy()
	}
	return nil
}
