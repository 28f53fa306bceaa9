package pgserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// logTail is how much of a log Log and error messages include.
const logTail = 16 << 10

// Credential returns the credential of the "postgres" OS user when running
// as root, and nil (run as ourselves) otherwise: PostgreSQL's programs (and
// PgBouncer) refuse to run as root.
func Credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgserver: running as root needs a \"postgres\" OS user to run PostgreSQL's programs: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: uid of user postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: gid of user postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// makeBaseDir creates the server's base directory under os.TempDir, world
// traversable and, when cred is set, owned by that user, with a record of
// this process as its owner (see sweepStale).
func makeBaseDir(cred *syscall.Credential) (string, error) {
	dir, err := os.MkdirTemp("", "alock-pg-")
	if err != nil {
		return "", fmt.Errorf("pgserver: create base dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("pgserver: chmod base dir: %w", err)
	}
	if err := writeOwner(dir); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("pgserver: chown base dir: %w", err)
		}
	}
	return dir, nil
}

// run executes one of the server binaries (as the server user when
// running as root) in the base directory and returns its combined output.
func (s *Server) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, name), args...)
	cmd.Dir = s.baseDir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGDATA="+s.dataDir)
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd.CombinedOutput()
}

// killPostmaster sends SIGKILL to the postmaster named in postmaster.pid;
// its children exit on their own when they notice the postmaster is gone.
func (s *Server) killPostmaster() error {
	pid, err := s.postmasterPID()
	if err != nil || pid == 0 {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("pgserver: kill postmaster %d: %w", pid, err)
	}
	return nil
}

// postmasterPID returns the pid in postmaster.pid, 0 if there is none.
func (s *Server) postmasterPID() (int, error) {
	data, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("pgserver: read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pgserver: bad postmaster.pid %q", first)
	}
	return pid, nil
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1. Another
// process may take it before it is used; callers retry on a bind error.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgserver: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// readLog returns the tail of the server log (or the final log after Stop).
func (s *Server) readLog() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return s.finalLog
	}
	return s.readLogLocked()
}

// readLogLocked reads the tail of the log file; s.mu is held.
func (s *Server) readLogLocked() string { return LogTail(s.logFile) }

// LogTail returns the last 16 KiB of the file at path, "" if it cannot be
// read: what error messages and Log show of a server's (or PgBouncer's) log.
func LogTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-logTail, 0)
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	return string(buf[:n])
}

// tail returns at most the last n bytes of b as a string.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
