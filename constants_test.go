package alock

import (
	"testing"

	"github.com/pgalock/alock/internal/core"
)

// The public constants are spelled out for the documentation; they must
// equal the core's.
func TestConstantsMatchCore(t *testing.T) {
	if MaxIDs != core.MaxIDs || CleanupTimeout != core.CleanupTimeout ||
		Exclusive != Mode(core.Exclusive) || Share != Mode(core.Share) {
		t.Fatal("a public constant differs from internal/core's")
	}
}
