// Package harness is what the developer tools under bench/ share: the real worker binary run as a process (built
// from this module, its /metrics scraped), a reader of the lake through the SQL catalog, and a steady
// insert/update/delete load on source tables with a ledger of what it committed.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ModuleRoot is the directory of the main module's go.mod (the tools build the worker there).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run inside the philotes-worker module (its scripts and make targets do)")
	}
	return filepath.Dir(gomod), nil
}

// BuildWorker builds ./cmd/philotes-worker of the module at root into out, with go build's output on stderr.
func BuildWorker(ctx context.Context, root, out string) error {
	build := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/philotes-worker")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build the worker: %w", err)
	}
	return nil
}

// Worker is one running philotes-worker process, in its own process group, logging to a file.
type Worker struct {
	Name    string
	Addr    string // 127.0.0.1:port of /metrics and /readyz
	LogPath string
	Started time.Time
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // exit status, set before done is closed
}

// StartWorker starts bin with args and env (plus PHILOTES_HTTP_ADDR on a free loopback port), logging to
// dir/worker-<name>.log.
func StartWorker(bin, dir, name string, env []string, args ...string) (*Worker, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("free port for %s: %w", name, err)
	}
	addr := l.Addr().String()
	l.Close()
	logPath := filepath.Join(dir, "worker-"+name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), env...), "PHILOTES_HTTP_ADDR="+addr)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group, so a Ctrl-C at the terminal reaches only the tool, which stops the worker in order;
	// killed with the tool should the tool itself die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Worker{Name: name, Addr: addr, LogPath: logPath, Started: time.Now(), cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the worker's process id.
func (p *Worker) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Worker) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Worker) Done() <-chan struct{} { return p.done }

// Err is the process's exit error (nil for status 0); meaningful once Exited.
func (p *Worker) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// LogTail returns the last lines of the worker's log, for error messages.
func (p *Worker) LogTail() string {
	b, _ := os.ReadFile(p.LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-15, 0):], "\n")
}

// Stop sends SIGTERM to the worker's process group and waits for it to exit; after timeout it kills the group.
// It is safe to call more than once.
func (p *Worker) Stop(timeout time.Duration) error {
	if p.Exited() {
		return p.ExitErr()
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.ExitErr()
	case <-t.C:
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within %v after SIGTERM; killed", p.Name, timeout)
	}
}

// ExitErr describes a failed exit with the log's tail; nil while running or after exit status 0.
func (p *Worker) ExitErr() error {
	if err := p.Err(); err != nil {
		return fmt.Errorf("%s exited: %w; log tail:\n%s", p.Name, err, p.LogTail())
	}
	return nil
}

// WaitReady polls /readyz until it answers 200, the worker exits or the timeout passes.
func (p *Worker) WaitReady(ctx context.Context, timeout time.Duration) error {
	return Poll(ctx, timeout, 100*time.Millisecond, func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("%s exited during start-up: %v; log tail:\n%s", p.Name, p.err, p.LogTail())
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+"/readyz", nil)
		resp, err := httpClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// Metrics is one read of a worker's /metrics.
type Metrics map[string]*dto.MetricFamily

// Scrape reads the worker's /metrics.
func (p *Worker) Scrape(ctx context.Context) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", p.Name, err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return nil, fmt.Errorf("scrape %s: %w", p.Name, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(&body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: parse: %w", p.Name, err)
	}
	return fams, nil
}

// matches reports whether m carries every label in want.
func matches(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// Value is the largest value of a gauge, counter or untyped metric among the series carrying labels; ok is
// false when the metric is absent.
func (s Metrics) Value(name string, labels map[string]string) (v float64, ok bool) {
	fam := s[name]
	if fam == nil {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		var x float64
		switch {
		case m.Gauge != nil:
			x = m.GetGauge().GetValue()
		case m.Counter != nil:
			x = m.GetCounter().GetValue()
		case m.Untyped != nil:
			x = m.GetUntyped().GetValue()
		default:
			continue
		}
		if !ok || x > v {
			v, ok = x, true
		}
	}
	return v, ok
}

// Histogram sums _sum and _count over the series of a histogram carrying labels.
func (s Metrics) Histogram(name string, labels map[string]string) (sum, count float64, ok bool) {
	fam := s[name]
	if fam == nil {
		return 0, 0, false
	}
	for _, m := range fam.GetMetric() {
		if m.Histogram == nil || !matches(m, labels) {
			continue
		}
		sum += m.GetHistogram().GetSampleSum()
		count += float64(m.GetHistogram().GetSampleCount())
		ok = true
	}
	return sum, count, ok
}

// Poll calls cond every interval until it returns true or an error, ctx ends, or timeout passes.
func Poll(ctx context.Context, timeout, interval time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not reached within %v", timeout)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}
