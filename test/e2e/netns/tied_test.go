//go:build e2e

package netns

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStartTiedKillsOrphans checks that a process started with StartTied dies
// when the process that started it is killed, even after many short-lived
// locked threads (DialContext's) have come and gone.
func TestStartTiedKillsOrphans(t *testing.T) {
	if os.Getenv("PHILOTES_TIED_HELPER") == "1" {
		helper()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStartTiedKillsOrphans$")
	cmd.Env = append(os.Environ(), "PHILOTES_TIED_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read child pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "child ")))
	if err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	if !ProcessAlive(pid) {
		t.Fatalf("child %d not running", pid)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err := Poll(context.Background(), 10*time.Second, 20*time.Millisecond, "orphan to die", func() error {
		if ProcessAlive(pid) {
			return fmt.Errorf("pid %d alive", pid)
		}
		return nil
	}); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal(err)
	}
}

// helper starts a tied sleep, retires a few locked threads, prints the
// sleep's PID and waits to be killed.
func helper() {
	c := exec.Command("sleep", "300")
	if err := StartTied(c); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ns, err := Create(context.Background(), "")
	if err == nil {
		for range 5 {
			if conn, err := ns.DialContext(context.Background(), "tcp", "127.0.0.1:1"); err == nil {
				conn.Close()
			}
		}
	}
	fmt.Printf("child %d\n", c.Process.Pid)
	select {}
}
