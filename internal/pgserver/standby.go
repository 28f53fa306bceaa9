package pgserver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// standbyWaitTimeout bounds how long StartStandby waits for the new standby
// to stream from its primary when ctx has no earlier deadline.
const standbyWaitTimeout = 60 * time.Second

// StartStandby creates a hot standby of s: a base backup taken with
// `pg_basebackup -R -X stream -c fast` over s's unix socket into a fresh
// base directory (laid out like Start's), started on its own free TCP port
// and unix socket. It returns once the standby accepts read-only
// connections, reports pg_is_in_recovery() = true and its WAL receiver is
// streaming from s, so that later commits on s reach it (asynchronously;
// poll to observe them).
//
// The standby is an ordinary *Server: ConnString, Restart, Log and Stop work
// as usual, and Promote turns it into a primary. It inherits s's
// postgresql.conf settings. Stopping s does not stop the standby (it keeps
// trying to reconnect); stop each server separately.
//
// s must be running with wal_level replica or logical and a free WAL sender
// slot (the defaults since PostgreSQL 10; initdb's trust pg_hba.conf already
// allows local replication connections). On failure the error includes the
// pg_basebackup output or the standby's log, and no process or directory is
// left behind. ctx bounds the backup, the startup and the wait.
func (s *Server) StartStandby(ctx context.Context) (*Server, error) {
	if s.isStopped() {
		return nil, errors.New("pgserver: start standby: primary is stopped")
	}
	base, err := makeBaseDir(s.cred)
	if err != nil {
		return nil, err
	}
	st := &Server{
		binDir:  s.binDir,
		baseDir: base,
		dataDir: filepath.Join(base, "data"),
		logFile: filepath.Join(base, "server.log"),
		cred:    s.cred,
	}
	if err := st.cloneAndStart(ctx, s); err != nil {
		st.cleanupFailedStart()
		return nil, err
	}
	return st, nil
}

// cloneAndStart takes the base backup of primary into s's data directory,
// points the copied configuration at s's own socket directory and port,
// starts s and waits until it streams.
func (s *Server) cloneAndStart(ctx context.Context, primary *Server) error {
	out, err := s.run(ctx, "pg_basebackup", "-D", s.dataDir, "-R", "-X", "stream", "-c", "fast",
		"--no-sync", "-w", "-h", primary.baseDir, "-p", strconv.Itoa(primary.port), "-U", "postgres")
	if err != nil {
		return fmt.Errorf("pgserver: pg_basebackup: %w\n--- pg_basebackup output ---\n%s\n--- primary log ---\n%s",
			err, tail(out, logTail), primary.readLog())
	}
	// The copy carries the primary's socket directory and port; later lines
	// of postgresql.conf win, and startOnFreePort appends the port.
	if err := appendConf(s.confFile(), []setting{
		{"unix_socket_directories", s.baseDir},
		{"hot_standby", "on"},
	}); err != nil {
		return err
	}
	if err := s.startOnFreePort(ctx); err != nil {
		return err
	}
	return s.waitStreaming(ctx)
}

// waitStreaming polls s until it is in recovery with a streaming WAL
// receiver.
func (s *Server) waitStreaming(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, standbyWaitTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.ConnString("postgres"))
	if err != nil {
		return fmt.Errorf("pgserver: connect to standby: %w\n--- standby log ---\n%s", err, s.readLog())
	}
	defer conn.Close(context.Background())
	const q = `SELECT pg_is_in_recovery(),
		EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')`
	for {
		var inRecovery, streaming bool
		if err := conn.QueryRow(ctx, q).Scan(&inRecovery, &streaming); err != nil {
			return fmt.Errorf("pgserver: query standby status: %w\n--- standby log ---\n%s", err, s.readLog())
		}
		if !inRecovery {
			return fmt.Errorf("pgserver: new standby is not in recovery\n--- standby log ---\n%s", s.readLog())
		}
		if streaming {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgserver: standby WAL receiver not streaming: %w\n--- standby log ---\n%s",
				ctx.Err(), s.readLog())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Promote ends recovery on a standby started by StartStandby (`pg_ctl
// promote -w`), returning once it accepts read-write transactions. It fails
// if s is not a standby or is stopped.
func (s *Server) Promote(ctx context.Context) error {
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	if s.isStopped() {
		return errors.New("pgserver: promote: server is stopped")
	}
	out, err := s.run(ctx, "pg_ctl", "promote", "-w", "-t", "120", "-D", s.dataDir)
	if err != nil {
		return fmt.Errorf("pgserver: pg_ctl promote: %w\n--- pg_ctl output ---\n%s\n--- server log ---\n%s",
			err, strings.TrimSpace(string(out)), s.readLog())
	}
	return nil
}
