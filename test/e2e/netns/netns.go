// Package netns runs the end-to-end stack inside a private network namespace
// that has only a loopback interface, so nothing it starts can listen beyond
// this machine and parallel runs cannot clash on ports.
//
// A holder process (unshare --net) keeps the namespace alive; every service is
// started through nsenter, and Go clients in the calling process reach it with
// Dialer, which opens each socket from a thread that has joined the namespace.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// hostNamespace is this process's own network namespace, read at start-up
// while the main thread is sure to be in it: /proc/self/ns/net names the
// main thread's namespace, and once a DialContext has run on the main thread
// (and wedged it in a stack's namespace) it no longer names ours.
var hostNamespace, _ = os.Readlink("/proc/self/ns/net")

// Namespace is a private network namespace kept alive by a holder process.
type Namespace struct {
	// HolderPID is the PID of the process that holds the namespace.
	HolderPID int
}

// Path is the namespace file that nsenter and setns(2) join.
func (n *Namespace) Path() string {
	return fmt.Sprintf("/proc/%d/ns/net", n.HolderPID)
}

// Create starts a holder in a new network namespace and brings its loopback
// interface up. The holder's PID is written to pidFile so another process
// (cmd/stack down) can find the namespace again.
func Create(ctx context.Context, pidFile string) (*Namespace, error) {
	holder := exec.Command("unshare", "--net", "--", "sleep", "infinity")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := StartTied(holder); err != nil {
		return nil, fmt.Errorf("start namespace holder: %w", err)
	}
	n := &Namespace{HolderPID: holder.Process.Pid}
	// Reap the holder when it exits so its PID does not linger as a zombie.
	go func() { _ = holder.Wait() }()
	// unshare execs sleep once the namespace exists: wait for the holder's
	// namespace to differ from ours.
	self := hostNamespace
	if self == "" {
		n.Destroy()
		return nil, errors.New("own network namespace unknown: /proc/self/ns/net was unreadable at start")
	}
	err := Poll(ctx, 5*time.Second, 10*time.Millisecond, "namespace holder to unshare", func() error {
		got, err := os.Readlink(n.Path())
		if err != nil {
			return err
		}
		if got == self {
			return errors.New("holder still in the parent namespace")
		}
		return nil
	})
	if err != nil {
		n.Destroy()
		return nil, err
	}
	if out, err := n.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		n.Destroy()
		return nil, fmt.Errorf("bring loopback up: %w: %s", err, out)
	}
	if pidFile != "" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(n.HolderPID)), 0o644); err != nil {
			n.Destroy()
			return nil, fmt.Errorf("write %s: %w", pidFile, err)
		}
	}
	return n, nil
}

// Open finds the namespace of a holder started by an earlier Create.
func Open(pidFile string) (*Namespace, error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, fmt.Errorf("read holder pid: %w", err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		return nil, fmt.Errorf("parse holder pid in %s: %w", pidFile, err)
	}
	n := &Namespace{HolderPID: pid}
	if _, err := os.Stat(n.Path()); err != nil {
		return nil, fmt.Errorf("namespace of holder %d: %w", pid, err)
	}
	return n, nil
}

// Destroy kills the holder. The namespace disappears once the last process
// in it has exited.
func (n *Namespace) Destroy() {
	if n == nil || n.HolderPID <= 0 {
		return
	}
	_ = syscall.Kill(n.HolderPID, syscall.SIGKILL)
}

// Command returns a command that runs name inside the namespace. nsenter
// joins the namespace and execs name, so the command's PID is name's PID.
func (n *Namespace) Command(name string, args ...string) *exec.Cmd {
	full := append([]string{"--net=" + n.Path(), "--", name}, args...)
	return exec.Command("nsenter", full...)
}

// CommandAs is Command run as another user: nsenter joins the namespace
// as root, then drops to uid and gid before it execs name.
func (n *Namespace) CommandAs(uid, gid uint32, name string, args ...string) *exec.Cmd {
	full := append([]string{"--net=" + n.Path(),
		"--setuid=" + strconv.FormatUint(uint64(uid), 10), "--setgid=" + strconv.FormatUint(uint64(gid), 10),
		"--", name}, args...)
	return exec.Command("nsenter", full...)
}

// Listen opens a listener inside the namespace, the same way DialContext
// opens connections.
func (n *Namespace) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.do(func() error {
		var lc net.ListenConfig
		var err error
		l, err = lc.Listen(ctx, network, address)
		return err
	})
	return l, err
}

// do runs fn on a dedicated OS thread that has joined the namespace. The
// thread is discarded afterwards rather than returned to the Go scheduler in
// the wrong namespace.
func (n *Namespace) do(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine's exit terminates the thread.
		runtime.LockOSThread()
		f, err := os.Open(n.Path())
		if err != nil {
			ch <- fmt.Errorf("open namespace: %w", err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns %s: %w", n.Path(), err)
			return
		}
		ch <- fn()
	}()
	return <-ch
}

// DialContext opens a connection from inside the namespace. The socket is
// created on a dedicated OS thread that has joined the namespace; a socket
// keeps its namespace for life, so the connection is usable from any
// goroutine.
func (n *Namespace) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Permanent marks a check's error as final: Poll stops at once.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Poll calls check every interval until it returns nil, a Permanent error,
// or timeout passes; the error then names what was awaited and the last
// failure.
func Poll(ctx context.Context, timeout, interval time.Duration, what string, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return fmt.Errorf("gave up waiting for %s: %w", what, perm.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waited %s for %s: %w (last error: %w)", timeout, what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// ProcessAlive reports whether pid names a live process that is not a zombie.
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// Field 3 is the state; the command name in field 2 is in parentheses.
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2] != 'Z'
		}
	}
	return false
}
