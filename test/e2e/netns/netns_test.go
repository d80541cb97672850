//go:build e2e

package netns

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestNamespaceIsolatesLoopback checks that a listener inside the namespace is
// reachable through DialContext and invisible from the host's loopback, and
// that Destroy ends the holder.
func TestNamespaceIsolatesLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ns, err := Create(ctx, filepath.Join(t.TempDir(), "netns.pid"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(ns.Destroy)

	l, err := ns.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "inside") }),
		ReadHeaderTimeout: time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()

	c := &http.Client{Transport: &http.Transport{DialContext: ns.DialContext}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr)
	if err != nil {
		t.Fatalf("GET through the namespace: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "inside" {
		t.Fatalf("body %q, want inside", body)
	}

	var d net.Dialer
	if conn, err := d.DialContext(ctx, "tcp", addr); err == nil {
		conn.Close()
		t.Fatalf("%s is reachable from the host namespace", addr)
	}

	out, err := ns.Command("ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	if n := len(splitLines(string(out))); n != 1 {
		t.Fatalf("namespace has %d interfaces, want only lo:\n%s", n, out)
	}

	ns.Destroy()
	if err := Poll(ctx, 10*time.Second, 10*time.Millisecond, "holder to exit", func() error {
		if ProcessAlive(ns.HolderPID) {
			return os.ErrExist
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
