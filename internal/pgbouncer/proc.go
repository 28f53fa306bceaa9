package pgbouncer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/pgalock/alock/internal/pgserver"
)

// config is what pgbouncer.ini is generated from.
type config struct {
	dbname     string
	poolMode   string
	poolSize   int
	targetPort int
	listenPort int
}

// iniFile renders pgbouncer.ini for a bouncer whose files live in dir.
// Values are validated by Start; none needs quoting.
func (c config) iniFile(dir string) string {
	return fmt.Sprintf(`[databases]
%[1]s = host=127.0.0.1 port=%[2]d dbname=%[1]s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[3]d
unix_socket_dir =
auth_type = trust
auth_file = %[4]s
admin_users = postgres
pool_mode = %[5]s
default_pool_size = %[6]d
max_client_conn = 1000
server_login_retry = 1
ignore_startup_parameters = extra_float_digits
`, c.dbname, c.targetPort, c.listenPort, filepath.Join(dir, "userlist.txt"), c.poolMode, c.poolSize)
}

// binary finds pgbouncer on PATH or at /usr/sbin/pgbouncer (Debian installs
// it there, outside an ordinary user's PATH).
func binary() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	const sbin = "/usr/sbin/pgbouncer"
	if fi, err := os.Stat(sbin); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return sbin, nil
	}
	return "", fmt.Errorf("%w (looked in PATH and /usr/sbin; install it, e.g. scripts/install-postgres.sh "+
		"or apt-get install pgbouncer)", ErrNotInstalled)
}

// makeDir creates the bouncer's directory under os.TempDir with its auth
// file, world traversable and, when cred is set, owned by that user.
func makeDir(cred *syscall.Credential) (string, error) {
	dir, err := os.MkdirTemp("", "alock-pgbouncer-")
	if err != nil {
		return "", fmt.Errorf("pgbouncer: create dir: %w", err)
	}
	fail := func(what string, err error) (string, error) {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("pgbouncer: %s: %w", what, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail("chmod dir", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail("chown dir", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte("\"postgres\" \"\"\n"), 0o644); err != nil {
		return fail("write auth file", err)
	}
	return dir, nil
}

// startProcess writes pgbouncer.ini for a fresh free port and starts
// pgbouncer in the foreground, its stdout and stderr going to the log file
// (truncated first). The returned Bouncer's done channel closes when the
// process exits.
func startProcess(bin, dir string, cred *syscall.Credential, cfg config) (*Bouncer, error) {
	port, err := pgserver.FreePort()
	if err != nil {
		return nil, err
	}
	cfg.listenPort = port
	ini := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(ini, []byte(cfg.iniFile(dir)), 0o644); err != nil {
		return nil, fmt.Errorf("pgbouncer: write %s: %w", ini, err)
	}
	logFile := filepath.Join(dir, "pgbouncer.log")
	logf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: create log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin, ini)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout = logf
	cmd.Stderr = logf
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgbouncer: start %s: %w", bin, err)
	}
	b := &Bouncer{dir: dir, logFile: logFile, port: port, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(b.done)
	}()
	return b, nil
}
