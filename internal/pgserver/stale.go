package pgserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// A test process killed before it could Stop its servers (a go test
// timeout, a signal) leaves them running: pg_ctl detaches the postmaster.
// So each base directory records its owner, the process that started it
// (ownerFile: its pid and start time, which tell it from a later process
// with the same pid), and the first Start of a process stops the servers
// whose owner has gone and removes their directories.

// ownerFile names the owner of a base directory.
const ownerFile = "owner"

// writeOwner records this process as the owner of base.
func writeOwner(base string) error {
	me, err := processStart(os.Getpid())
	if err != nil {
		return nil // not Linux: no record, and no sweep
	}
	if err := os.WriteFile(filepath.Join(base, ownerFile), []byte(me), 0o644); err != nil {
		return fmt.Errorf("pgserver: record the owner of %s: %w", base, err)
	}
	return nil
}

// processStart returns "pid starttime" for a live process, from
// /proc/pid/stat (the start time in clock ticks since boot).
func processStart(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name, in parentheses, may hold spaces: count fields after it.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	const startField = 22 - 3 // field 22, counted from field 3 (the state)
	if len(fields) <= startField {
		return "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return fmt.Sprintf("%d %s", pid, fields[startField]), nil
}

// ownerGone reports whether base has an owner record and that process has
// gone (it is not running, or its pid now names a later process).
func ownerGone(base string) bool {
	data, err := os.ReadFile(filepath.Join(base, ownerFile))
	if err != nil {
		return false // none yet (being made), or unreadable: leave it
	}
	var pid int
	if _, err := fmt.Sscan(string(data), &pid); err != nil {
		return false
	}
	now, err := processStart(pid)
	return err != nil || now != strings.TrimSpace(string(data))
}

var sweepOnce sync.Once

// sweepStale is removeStaleServers, once per process.
func sweepStale() { sweepOnce.Do(removeStaleServers) }

// removeStaleServers stops the servers under os.TempDir whose owner has
// gone, and removes their directories.
func removeStaleServers() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "alock-pg-*"))
	for _, base := range dirs {
		if ownerGone(base) {
			removeStale(base)
		}
	}
}

// removeStale kills base's postmaster, if it runs, and removes base.
func removeStale(base string) {
	s := &Server{baseDir: base, dataDir: filepath.Join(base, "data")}
	if pid, err := s.postmasterPID(); err == nil && pid > 0 && isPostmaster(pid, s.dataDir) {
		_ = syscall.Kill(pid, syscall.SIGKILL) // its children exit when they notice
	}
	_ = os.RemoveAll(base)
}

// isPostmaster reports whether pid runs postgres on dataDir (and is not a
// later process that got the same pid).
func isPostmaster(pid int, dataDir string) bool {
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmd), dataDir)
}
