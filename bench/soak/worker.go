package main

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

// workerProc is one running philotes-worker process, in its own process group, logging to a file.
type workerProc struct {
	name    string
	addr    string // 127.0.0.1:port of /metrics and /readyz
	cmd     *exec.Cmd
	logPath string
	started time.Time
	done    chan struct{}
	err     error // exit status, set before done is closed
}

// startWorker starts bin with args and env (plus PHILOTES_HTTP_ADDR on a free loopback port).
func startWorker(bin, dir, name string, env []string, args ...string) (*workerProc, error) {
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
	// Own process group, so a Ctrl-C at the terminal reaches only the soak, which stops the worker in order;
	// killed with the soak should the soak itself die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &workerProc{name: name, addr: addr, cmd: cmd, logPath: logPath, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *workerProc) pid() int { return p.cmd.Process.Pid }

func (p *workerProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last lines of the worker's log, for error messages.
func (p *workerProc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-15, 0):], "\n")
}

// stop sends SIGTERM to the worker's process group and waits for it to exit; after timeout it kills the group.
// It is safe to call more than once.
func (p *workerProc) stop(timeout time.Duration) error {
	if p.exited() {
		return p.exitErr()
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.exitErr()
	case <-t.C:
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within %v after SIGTERM; killed", p.name, timeout)
	}
}

func (p *workerProc) exitErr() error {
	if p.err != nil {
		return fmt.Errorf("%s exited: %w; log tail:\n%s", p.name, p.err, p.logTail())
	}
	return nil
}

// waitReady polls /readyz until it answers 200, the worker exits or the deadline passes.
func (p *workerProc) waitReady(ctx context.Context, timeout time.Duration) error {
	return poll(ctx, timeout, 100*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s exited during start-up: %v; log tail:\n%s", p.name, p.err, p.logTail())
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/readyz", nil)
		resp, err := httpClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// scrape is one read of a worker's /metrics.
type scrape map[string]*dto.MetricFamily

func (p *workerProc) scrape(ctx context.Context) (scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", p.name, err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return nil, fmt.Errorf("scrape %s: %w", p.name, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(&body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: parse: %w", p.name, err)
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

// value is the largest value of a gauge, counter or untyped metric among the series carrying labels; ok is
// false when the metric is absent.
func (s scrape) value(name string, labels map[string]string) (v float64, ok bool) {
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

// histogram sums _sum and _count over the series of a histogram carrying labels.
func (s scrape) histogram(name string, labels map[string]string) (sum, count float64, ok bool) {
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

// commitHistogram is the Iceberg commit duration histogram: philotes_iceberg_commit_duration_seconds when the
// worker has it, else the processor batch stage sink_commit (sink write plus buffer delete).
func (s scrape) commitHistogram() (sum, count float64, name string, ok bool) {
	if sum, count, ok := s.histogram("philotes_iceberg_commit_duration_seconds", nil); ok {
		return sum, count, "philotes_iceberg_commit_duration_seconds", true
	}
	sum, count, ok = s.histogram("philotes_batch_duration_seconds", map[string]string{"stage": "sink_commit"})
	return sum, count, `philotes_batch_duration_seconds{stage="sink_commit"}`, ok
}

// poll calls cond every interval until it returns true or an error, ctx ends, or timeout passes.
func poll(ctx context.Context, timeout, interval time.Duration, cond func() (bool, error)) error {
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
