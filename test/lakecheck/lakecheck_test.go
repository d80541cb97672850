package lakecheck

import "testing"

func TestExactlyOnce(t *testing.T) {
	tests := []struct {
		name   string
		counts map[int64]int
		n      int
		ok     bool
	}{
		{"all once", map[int64]int{1: 1, 2: 1, 3: 1}, 3, true},
		{"empty lake, nothing written", nil, 0, true},
		{"one missing", map[int64]int{1: 1, 3: 1}, 3, false},
		{"one twice", map[int64]int{1: 1, 2: 2, 3: 1}, 3, false},
		{"an id never written", map[int64]int{1: 1, 2: 1, 3: 1, 7: 1}, 3, false},
		{"table missing", nil, 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ExactlyOnce(tc.counts, tc.n)
			if (err == nil) != tc.ok {
				t.Fatalf("ExactlyOnce = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
