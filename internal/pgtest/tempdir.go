package pgtest

import (
	"os"
	"testing"
)

// TempDir makes a fresh directory the test's TMPDIR, so that the test can
// check that the servers it starts (which make their directories under
// os.TempDir) leave nothing behind. The directory is traversable by the
// postgres OS user, and removed at the end of t. Not for parallel tests
// (it sets an environment variable).
func TempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "alock-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", dir)
	return dir
}
