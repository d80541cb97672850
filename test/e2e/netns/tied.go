package netns

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// The kernel sends a child its parent-death signal when the *thread* that
// forked it exits, not the process. Go retires threads (a goroutine that
// exits while locked to its thread, as DialContext's do), so children are
// forked from one thread that stays locked for the life of the process.

type startReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan startReq
)

func spawner() {
	runtime.LockOSThread() // never unlocked: this thread lives as long as the process
	for req := range spawnCh {
		req.done <- req.cmd.Start()
	}
}

// StartTied starts cmd so that it is killed (SIGKILL) when this process dies,
// however it dies: a test binary that panics or times out leaves no stack
// behind. The tie is lost when the child changes its user (nsenter --setuid).
func StartTied(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan startReq)
		go spawner()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan error, 1)
	spawnCh <- startReq{cmd: cmd, done: done}
	return <-done
}
