package core

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// budget is what a sliced wait (takeInSlices, LockTx without cancel) owes
// the session's own lock_timeout and statement_timeout: its slices override
// the one and are each too short for the other, so it honours the shorter
// of the two (if set) over the whole wait, counted from its start.
type budget struct {
	end time.Time // zero: neither is set
	err error     // wraps ErrLockTimeout or ErrStatementTimeout, naming the setting
}

// budgetSQL reads the two settings in milliseconds, lock_timeout first:
// "lock,statement" (0 for none).
const budgetSQL = "SELECT string_agg(setting, ',' ORDER BY name) FROM pg_settings WHERE name IN ('lock_timeout', 'statement_timeout')"

// parseBudget returns the budget of a wait that started at start from
// budgetSQL's text.
func parseBudget(text string, start time.Time) (budget, error) {
	lockText, stmtText, ok := strings.Cut(text, ",")
	lockMS, err1 := strconv.ParseInt(lockText, 10, 64)
	stmtMS, err2 := strconv.ParseInt(stmtText, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return budget{}, fmt.Errorf("unexpected lock_timeout and statement_timeout %q", text)
	}
	var b budget
	for _, s := range []struct {
		ms       int64
		name     string
		sentinel error
	}{{lockMS, "lock_timeout", ErrLockTimeout}, {stmtMS, "statement_timeout", ErrStatementTimeout}} {
		end := start.Add(time.Duration(s.ms) * time.Millisecond)
		if s.ms > 0 && (b.end.IsZero() || end.Before(b.end)) {
			b.end = end
			b.err = fmt.Errorf("%w: the session's %s (%d ms) ran out over the whole wait", s.sentinel, s.name, s.ms)
		}
	}
	return b, nil
}

// readBudget reads the budget of a wait that started at start.
func readBudget(ctx context.Context, c Conn, start time.Time) (budget, error) {
	text, err := c.QueryText(context.WithoutCancel(ctx), budgetSQL, nil)
	if err != nil {
		return budget{}, err
	}
	return parseBudget(text, start)
}

// bound returns wait cut to what is left of the budget, and whether nothing
// is left.
func (b budget) bound(wait time.Duration) (time.Duration, bool) {
	if b.end.IsZero() {
		return wait, false
	}
	left := time.Until(b.end)
	return min(wait, left), left <= 0
}
