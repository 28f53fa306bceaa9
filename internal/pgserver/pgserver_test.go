package pgserver_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgalock/alock/internal/pgserver"
	"github.com/pgalock/alock/internal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start starts a server or skips (fails in CI) when PostgreSQL is missing.
func start(t *testing.T, opts *pgserver.Options) *pgserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin := time.Now()
	s, err := pgserver.Start(ctx, opts)
	if errors.Is(err, pgserver.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start took %v (port %d, data %s)", time.Since(begin), s.Port(), s.DataDir())
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func queryString(t *testing.T, connString, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect %q: %v", connString, err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func TestStartSettingsRestartStop(t *testing.T) {
	s := start(t, &pgserver.Options{Settings: map[string]string{"max_locks_per_transaction": "16"}})
	if got := queryString(t, s.ConnString("postgres"), "SHOW max_locks_per_transaction"); got != "16" {
		t.Errorf("max_locks_per_transaction = %q, want 16", got)
	}
	if got := queryString(t, s.TCPConnString("postgres"), "SHOW fsync"); got != "off" {
		t.Errorf("fsync = %q, want off", got)
	}
	port := s.Port()
	begin := time.Now()
	if err := s.Restart(context.Background(), "fast"); err != nil {
		t.Fatal(err)
	}
	t.Logf("Restart took %v", time.Since(begin))
	if s.Port() != port {
		t.Errorf("port changed across restart: %d -> %d", port, s.Port())
	}
	if got := queryString(t, s.ConnString("postgres"), "SHOW max_locks_per_transaction"); got != "16" {
		t.Errorf("after restart max_locks_per_transaction = %q, want 16", got)
	}
	if err := s.Restart(context.Background(), "bogus"); err == nil {
		t.Error("Restart with a bogus mode succeeded")
	}
	dir := s.DataDir()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir %s still exists after Stop (stat err %v)", dir, err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if s.Log() == "" {
		t.Error("Log is empty after Stop")
	}
	if err := s.Restart(context.Background(), "fast"); err == nil {
		t.Error("Restart after Stop succeeded")
	}
}

func TestStartFailureCleansUp(t *testing.T) {
	if _, err := pgserver.BinDir(); err != nil {
		t.Skip(err)
	}
	tmp := pgtest.TempDir(t)
	_, err := pgserver.Start(context.Background(), &pgserver.Options{
		Settings: map[string]string{"max_connections": "not_a_number"},
	})
	if err == nil {
		t.Fatal("Start with an invalid setting succeeded")
	}
	if !strings.Contains(err.Error(), "max_connections") {
		t.Errorf("error does not include the server log: %v", err)
	}
	entries, _ := os.ReadDir(tmp)
	if len(entries) != 0 {
		t.Errorf("Start left %d entries behind in %s", len(entries), tmp)
	}
}

func TestInvalidSettingName(t *testing.T) {
	_, err := pgserver.Start(context.Background(), &pgserver.Options{
		Settings: map[string]string{"bad\nname": "1"},
	})
	if err == nil || !strings.HasPrefix(err.Error(), "pgserver: ") {
		t.Fatalf("err = %v, want a pgserver: error", err)
	}
}

// TestStaleServersAreRemoved: a server whose owner process has gone (here
// its owner record names a process that has exited) is killed and its
// directory removed by the sweep that Start runs; a live owner's server is
// left alone.
func TestStaleServersAreRemoved(t *testing.T) {
	stale, live := start(t, nil), start(t, nil)
	pidText, err := os.ReadFile(filepath.Join(stale.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	postmaster, err := strconv.Atoi(strings.SplitN(string(pidText), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	base := filepath.Dir(stale.DataDir())
	if err := os.WriteFile(filepath.Join(base, "owner"), fmt.Appendf(nil, "%d 1", gone.Process.Pid), 0o644); err != nil {
		t.Fatal(err)
	}
	pgserver.RemoveStaleServers()
	if _, err := os.Stat(base); !os.IsNotExist(err) {
		t.Errorf("the stale server's directory is still there: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(postmaster, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the stale server's postmaster %d still runs", postmaster)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := queryString(t, live.ConnString("postgres"), "SELECT 'up'"); got != "up" {
		t.Errorf("the live server answered %q", got)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(live.DataDir()), "owner")); err != nil {
		t.Errorf("the live server has no owner record: %v", err)
	}
}
