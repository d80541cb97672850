package worker

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// health tracks what keeps a replica from doing its work, for /readyz: a part reports each failure and each
// success; it counts against readiness once it has failed for its grace period with no success in between.
type health struct {
	mu      sync.Mutex
	grace   map[string]time.Duration
	failing map[string]failure
	now     func() time.Time
}

type failure struct {
	since time.Time
	err   string
}

// Parts of a replica whose failures make it unready, with their grace periods. The buffer database is read every
// stats interval, so one failed read says it is down. A batch may fail for one table alone (its other tables keep
// flowing) or for a moment: the sink counts only when no batch has succeeded for sinkGrace.
const (
	partBuffer = "buffer database"
	partSink   = "warehouse"
	sinkGrace  = 30 * time.Second
)

func newHealth() *health {
	return &health{grace: map[string]time.Duration{partBuffer: 0, partSink: sinkGrace}, failing: map[string]failure{},
		now: time.Now}
}

func (h *health) fail(part string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f, ok := h.failing[part]
	if !ok {
		f.since = h.now()
	}
	f.err = err.Error()
	h.failing[part] = f
}

func (h *health) ok(part string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.failing, part)
}

// problems lists the parts failing for longer than their grace, with the last error, sorted.
func (h *health) problems() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	now := h.now()
	for part, f := range h.failing {
		if d := now.Sub(f.since); d >= h.grace[part] {
			out = append(out, fmt.Sprintf("%s failing for %s: %s", part, d.Round(time.Second), f.err))
		}
	}
	sort.Strings(out)
	return out
}
