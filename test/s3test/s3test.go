// Package s3test starts a real, throwaway S3 server for tests and benchmarks: the Versity S3 Gateway
// (versitygw) on its POSIX backend, built from the Go module proxy by test/e2e/tools/build.sh.
//
// The server listens on 127.0.0.1 only, with its own root credentials, and Stop removes its files.
package s3test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Version is the versitygw release the tools script builds; the binary's cache folder is keyed by it.
const Version = "v1.8.0"

// Region is the region the server answers for.
const Region = "us-east-1"

// Binary returns the versitygw binary: $PHILOTES_S3_SERVER, or the one test/e2e/tools/build.sh caches under
// $PHILOTES_TOOLS_CACHE (default $HOME/.cache/philotes).
func Binary() (string, error) {
	if b := os.Getenv("PHILOTES_S3_SERVER"); b != "" {
		return b, nil
	}
	cache := os.Getenv("PHILOTES_TOOLS_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("s3test: %w", err)
		}
		cache = filepath.Join(home, ".cache", "philotes")
	}
	b := filepath.Join(cache, "versitygw-"+Version, "bin", "versitygw")
	if _, err := os.Stat(b); err != nil {
		return "", fmt.Errorf("s3test: no S3 server at %s: build it with `bash test/e2e/tools/build.sh versitygw` (make test does), or set PHILOTES_S3_SERVER", b)
	}
	return b, nil
}

// Args prepares dir and returns versitygw's command line for a server on addr (host:port) keeping its buckets
// in dir/root and their metadata in dir/meta (a sidecar folder: no extended attributes needed).
func Args(addr, accessKey, secretKey, dir string) ([]string, error) {
	root, meta := filepath.Join(dir, "root"), filepath.Join(dir, "meta")
	for _, d := range []string{root, meta} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("s3test: %w", err)
		}
	}
	return []string{"--access", accessKey, "--secret", secretKey, "--region", Region, "--port", addr, "--quiet",
		"posix", "--sidecar", meta, root}, nil
}

// Server is a running S3 server.
type Server struct {
	// Endpoint is the server's URL, http://127.0.0.1:port.
	Endpoint  string
	AccessKey string
	SecretKey string

	dir     string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited; waitErr is then set
	waitErr error
}

// Start starts a server with fresh credentials and no buckets.
func Start(ctx context.Context) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "philotes-s3-")
	if err != nil {
		return nil, fmt.Errorf("s3test: %w", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		AccessKey: "philotes-test",
		SecretKey: "philotes-test-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		dir:       dir,
		exited:    make(chan struct{}),
	}
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("s3test: %w", err)
	}
	args, err := Args("127.0.0.1:"+strconv.Itoa(port), s.AccessKey, s.SecretKey, dir)
	if err != nil {
		logFile.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("s3test: start %s: %w", bin, err)
	}
	go func() { s.waitErr = s.cmd.Wait(); logFile.Close(); close(s.exited) }()
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// New starts a server for one test (or benchmark) and stops it at cleanup.
func New(tb testing.TB) *Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Client returns an S3 client for the server, with the root credentials.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		UsePathStyle: true,
	})
}

// CreateBucket creates a bucket.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("s3test: create bucket %s: %w", name, err)
	}
	return nil
}

// MustCreateBucket is CreateBucket for tests.
func (s *Server) MustCreateBucket(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.CreateBucket(ctx, name); err != nil {
		tb.Fatal(err)
	}
}

// Env returns the worker's settings for this server (PHILOTES_S3_*).
func (s *Server) Env() []string {
	return []string{"PHILOTES_S3_ENDPOINT=" + s.Endpoint, "PHILOTES_S3_REGION=" + Region,
		"PHILOTES_S3_ACCESS_KEY_ID=" + s.AccessKey, "PHILOTES_S3_SECRET_ACCESS_KEY=" + s.SecretKey}
}

// Properties returns the Iceberg file IO properties for this server.
func (s *Server) Properties() map[string]string {
	return Properties(s.Endpoint, s.AccessKey, s.SecretKey)
}

// Properties are the Iceberg file IO properties for a server of this package at endpoint with these keys.
func Properties(endpoint, accessKey, secretKey string) map[string]string {
	return map[string]string{"s3.endpoint": endpoint, "s3.region": Region,
		"s3.access-key-id": accessKey, "s3.secret-access-key": secretKey}
}

// Log returns the server's log, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	return string(b)
}

// Stop kills the server and removes its files.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
		}
	}
	os.RemoveAll(s.dir)
}

func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("s3test: versitygw exited during start-up: %v\n%s", s.waitErr, s.Log())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		// Any HTTP answer (an unauthenticated request gets 403) means the server listens.
		resp, err := client.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond) // poll interval, bounded by the deadline above
	}
	return fmt.Errorf("s3test: versitygw not ready after 30s: %w\n%s", lastErr, s.Log())
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("s3test: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
