package core

import (
	"errors"
	"testing"
	"time"
)

func TestParseBudget(t *testing.T) {
	start := time.Now()
	for _, tt := range []struct {
		text     string
		after    time.Duration // 0: no budget
		sentinel error
	}{
		{"0,0", 0, nil},
		{"300,0", 300 * time.Millisecond, ErrLockTimeout},
		{"0,300", 300 * time.Millisecond, ErrStatementTimeout},
		{"500,200", 200 * time.Millisecond, ErrStatementTimeout},
		{"200,500", 200 * time.Millisecond, ErrLockTimeout},
	} {
		b, err := parseBudget(tt.text, start)
		switch {
		case err != nil:
			t.Errorf("parseBudget(%q): %v", tt.text, err)
		case tt.after == 0 && !b.end.IsZero():
			t.Errorf("parseBudget(%q): ends at +%v, want no budget", tt.text, b.end.Sub(start))
		case tt.after != 0 && (b.end.Sub(start) != tt.after || !errors.Is(b.err, tt.sentinel)):
			t.Errorf("parseBudget(%q): +%v, %v; want +%v and %v", tt.text, b.end.Sub(start), b.err, tt.after, tt.sentinel)
		}
	}
	for _, bad := range []string{"", "1", "x,1", "1,"} {
		if _, err := parseBudget(bad, start); err == nil {
			t.Errorf("parseBudget(%q): no error", bad)
		}
	}
}
