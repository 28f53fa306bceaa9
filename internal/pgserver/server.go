// Package pgserver starts throwaway PostgreSQL clusters from the machine's
// own server binaries, for tests and demos. It does not depend on package
// testing.
//
// Each Server owns a private base directory (under os.TempDir) holding the
// data directory, the server log and the unix socket. The cluster trusts
// every local connection as the superuser "postgres" and is tuned for speed,
// not durability (fsync=off). When the process runs as root, initdb, pg_ctl
// and postgres run as the "postgres" OS user, since PostgreSQL refuses to run
// as root. StartStandby adds a streaming hot standby of a running Server,
// and Promote turns a standby into a primary.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configures Start. A nil *Options means the defaults.
type Options struct {
	// Settings are extra postgresql.conf settings, applied after (and so
	// overriding) the package defaults, e.g.
	// {"max_locks_per_transaction": "16"}. Names must be plain GUC names
	// (letters, digits, '_' and '.'); values are quoted as needed.
	Settings map[string]string
	// ListenAddresses are IP addresses to listen on beside 127.0.0.1, such
	// as the address by which a test's network namespace reaches the host.
	ListenAddresses []string
	// TrustedNetworks are CIDR prefixes (e.g. "10.1.2.0/30") from which
	// pg_hba.conf trusts TCP connections, for any database and for
	// replication, beside the local ones.
	TrustedNetworks []string
}

// Server is a running private PostgreSQL cluster started by Start. Its
// methods are safe for concurrent use. Call Stop to shut it down and delete
// its files.
type Server struct {
	binDir  string
	baseDir string
	dataDir string
	logFile string
	port    int
	cred    *syscall.Credential

	ctlMu sync.Mutex // serialises pg_ctl restart/stop

	mu       sync.Mutex // guards stopped, finalLog and log-file reads
	stopped  bool
	finalLog string
}

// stopTimeout bounds the pg_ctl stop issued by Stop and by Start's cleanup.
const stopTimeout = 60 * time.Second

// Start creates a new cluster with initdb (superuser "postgres", trust
// authentication, UTF8, C locale) in a fresh directory under os.TempDir,
// and starts it listening on a free 127.0.0.1 TCP port and on a unix socket
// in that directory. It returns once the server accepts connections.
//
// If the binaries are missing the error wraps ErrNotInstalled. On any other
// failure the error includes the tail of the server log (or of initdb's
// output), and no process or directory is left behind. ctx bounds the
// initdb and startup time.
func Start(ctx context.Context, opts *Options) (*Server, error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := checkSettings(opts.Settings); err != nil {
		return nil, err
	}
	if err := checkNetworks(opts); err != nil {
		return nil, err
	}
	binDir, err := BinDir()
	if err != nil {
		return nil, err
	}
	cred, err := Credential()
	if err != nil {
		return nil, err
	}
	sweepStale() // servers left by killed processes
	base, err := makeBaseDir(cred)
	if err != nil {
		return nil, err
	}
	s := &Server{
		binDir:  binDir,
		baseDir: base,
		dataDir: filepath.Join(base, "data"),
		logFile: filepath.Join(base, "server.log"),
		cred:    cred,
	}
	if err := s.initAndStart(ctx, opts); err != nil {
		s.cleanupFailedStart()
		return nil, err
	}
	return s, nil
}

// initAndStart runs initdb, writes the configuration and starts the
// postmaster.
func (s *Server) initAndStart(ctx context.Context, opts *Options) error {
	out, err := s.run(ctx, "initdb", "-D", s.dataDir, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	if err != nil {
		return fmt.Errorf("pgserver: initdb: %w\n--- initdb output ---\n%s", err, tail(out, logTail))
	}
	if err := appendConf(s.confFile(), s.baseSettings(opts)); err != nil {
		return err
	}
	if err := s.trust(opts.TrustedNetworks); err != nil {
		return err
	}
	return s.startOnFreePort(ctx)
}

// startOnFreePort picks a free port and starts the postmaster, retrying with
// a new port if the chosen one was taken meanwhile.
func (s *Server) startOnFreePort(ctx context.Context) error {
	const attempts = 3
	for i := 1; ; i++ {
		if err := s.choosePort(); err != nil {
			return err
		}
		err := s.pgCtlStart(ctx)
		if err == nil {
			return nil
		}
		if i == attempts || ctx.Err() != nil || !strings.Contains(s.readLog(), "could not bind") {
			return err
		}
	}
}

// baseSettings returns the package defaults followed by the caller's
// settings (later entries win in postgresql.conf).
func (s *Server) baseSettings(opts *Options) []setting {
	list := []setting{
		{"listen_addresses", strings.Join(append([]string{"127.0.0.1"}, opts.ListenAddresses...), ",")},
		{"unix_socket_directories", s.baseDir},
		{"max_connections", "300"},
		{"fsync", "off"},
		{"synchronous_commit", "off"},
		{"full_page_writes", "off"},
		{"logging_collector", "off"},
		{"log_min_messages", "warning"},
	}
	return append(list, sortedSettings(opts.Settings)...)
}

// choosePort picks a free TCP port and records it in postgresql.conf.
func (s *Server) choosePort() error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	s.port = port
	return appendConf(s.confFile(), []setting{{"port", strconv.Itoa(port)}})
}

func (s *Server) pgCtlStart(ctx context.Context) error {
	out, err := s.run(ctx, "pg_ctl", "start", "-w", "-t", "120", "-D", s.dataDir, "-l", s.logFile)
	if err != nil {
		return fmt.Errorf("pgserver: pg_ctl start: %w\n--- pg_ctl output ---\n%s\n--- server log ---\n%s",
			err, strings.TrimSpace(string(out)), s.readLog())
	}
	return nil
}

// cleanupFailedStart stops a possibly half-started postmaster and removes
// the base directory.
func (s *Server) cleanupFailedStart() {
	if _, err := os.Stat(filepath.Join(s.dataDir, "postmaster.pid")); err == nil {
		_ = s.shutdown()
	}
	_ = os.RemoveAll(s.baseDir)
}

// ConnString returns a libpq keyword/value connection string for database
// dbname as user postgres over the server's unix socket.
func (s *Server) ConnString(dbname string) string {
	return connString(s.baseDir, s.port, dbname)
}

// TCPConnString returns a libpq keyword/value connection string for database
// dbname as user postgres over TCP to 127.0.0.1.
func (s *Server) TCPConnString(dbname string) string {
	return connString("127.0.0.1", s.port, dbname)
}

// Port returns the TCP port the server listens on (also the number in its
// unix socket's name). It does not change across Restart.
func (s *Server) Port() int { return s.port }

// DataDir returns the cluster's data directory. It is deleted by Stop.
func (s *Server) DataDir() string { return s.dataDir }

// Restart restarts the server with `pg_ctl restart -m mode` (mode is "fast",
// "immediate" or "smart") and waits until it accepts connections again on
// the same port and socket. Existing connections are terminated (with
// "smart", the restart waits for them to end). It fails after Stop.
func (s *Server) Restart(ctx context.Context, mode string) error {
	switch mode {
	case "fast", "immediate", "smart":
	default:
		return fmt.Errorf("pgserver: restart: unknown mode %q (want fast, immediate or smart)", mode)
	}
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	if s.isStopped() {
		return errors.New("pgserver: restart: server is stopped")
	}
	out, err := s.run(ctx, "pg_ctl", "restart", "-w", "-t", "120", "-m", mode, "-D", s.dataDir, "-l", s.logFile)
	if err != nil {
		return fmt.Errorf("pgserver: pg_ctl restart: %w\n--- pg_ctl output ---\n%s\n--- server log ---\n%s",
			err, strings.TrimSpace(string(out)), s.readLog())
	}
	return nil
}

// Stop shuts the server down immediately (pg_ctl stop -m immediate) and
// removes its base directory, including the data directory. The log stays
// available through Log. Calling Stop again is a no-op returning nil.
func (s *Server) Stop() error {
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	if s.isStopped() {
		return nil
	}
	stopErr := s.shutdown()
	s.mu.Lock()
	s.finalLog = s.readLogLocked()
	s.stopped = true
	s.mu.Unlock()
	rmErr := os.RemoveAll(s.baseDir)
	if rmErr != nil {
		rmErr = fmt.Errorf("pgserver: remove %s: %w", s.baseDir, rmErr)
	}
	return errors.Join(stopErr, rmErr)
}

// shutdown runs pg_ctl stop -m immediate; if that fails it kills the
// postmaster recorded in postmaster.pid.
func (s *Server) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	out, err := s.run(ctx, "pg_ctl", "stop", "-w", "-m", "immediate", "-D", s.dataDir)
	if err == nil {
		return nil
	}
	if killErr := s.killPostmaster(); killErr != nil {
		return fmt.Errorf("pgserver: pg_ctl stop: %w (%s); %w", err, strings.TrimSpace(string(out)), killErr)
	}
	return nil
}

func (s *Server) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// Log returns the last ~16 KiB of the server log. After Stop it returns the
// log as it was when the server stopped.
func (s *Server) Log() string {
	return s.readLog()
}
