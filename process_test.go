package alock_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/internal/pgtest"
)

// helperPrefix starts every line a helper process means for its parent; the
// rest of its stdout (the testing package's own output) is ignored.
const helperPrefix = "ALOCK-HELPER "

// helperProc is a child process running one helper test of this binary.
type helperProc struct {
	cmd   *osexec.Cmd
	stdin io.WriteCloser
	lines chan string // the helper's lines, prefix removed; closed at EOF
	exit  chan error  // cmd.Wait's result, once
	mu    sync.Mutex
	out   bytes.Buffer // everything it printed, for failure messages
}

// startHelper re-executes the test binary to run only the helper test name,
// with env added to the environment. The helper uses the parent's server
// (through pgtest.DSNEnv) instead of starting its own. The process is
// killed, if still running, when the test ends.
func startHelper(t *testing.T, name string, env ...string) *helperProc {
	t.Helper()
	return startHelperWith(t, osexec.Command, name, env...)
}

// startHelperWith is startHelper with the command made by command, e.g. one
// that runs the helper in a network namespace.
func startHelperWith(t *testing.T, command func(string, ...string) *osexec.Cmd, name string, env ...string) *helperProc {
	t.Helper()
	admin := os.Getenv(pgtest.DSNEnv)
	if admin == "" {
		admin = pgtest.Server().ConnString("postgres")
	}
	cmd := command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), pgtest.DSNEnv+"="+admin)
	cmd.Env = append(cmd.Env, env...)
	p := &helperProc{cmd: cmd, lines: make(chan string, 1024), exit: make(chan error, 1)}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &lockedWriter{p}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", name, err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			if rest, ok := strings.CutPrefix(line, helperPrefix); ok {
				p.lines <- rest
			}
		}
	}()
	go func() {
		<-read // Wait closes stdout: read it all first
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // works on a stopped process too
		for range p.lines {
		}
		<-p.exit
	})
	return p
}

// lockedWriter appends a helper's stderr to its output record.
type lockedWriter struct{ p *helperProc }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// output returns what the helper printed so far.
func (p *helperProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// next returns the helper's next line, failing the test after timeout or
// if the helper's output ends.
func (p *helperProc) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			pgtest.Fatalf(t, "helper ended early; its output:\n%s", p.output())
		}
		return line
	case <-time.After(timeout):
		pgtest.Fatalf(t, "no line from the helper within %v; its output:\n%s", timeout, p.output())
	}
	return ""
}

// wait waits for the helper to exit and fails the test unless it succeeded.
func (p *helperProc) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-p.exit:
		p.exit <- err // for the cleanup
		if err != nil {
			pgtest.Fatalf(t, "helper failed: %v; its output:\n%s", err, p.output())
		}
	case <-time.After(timeout):
		pgtest.Fatalf(t, "helper did not exit within %v; its output:\n%s", timeout, p.output())
	}
}

// helperPrintf prints one line for the parent.
func helperPrintf(format string, args ...any) {
	fmt.Printf(helperPrefix+format+"\n", args...)
}

// The holder's write, guarded by its fencing token: the resource accepts a
// token only if it is larger than every token it has accepted.
const fencedWrite = `UPDATE fenced SET value = $1, token = $2 WHERE id = 1 AND token < $2`

// TestHelperHolder is the child process of TestPausedHolderIsFencedOut. It
// takes Key(7) with a fencing token, reports it, waits for a line on stdin,
// then writes to the fenced resource with that token (whether or not its
// lock is still held: it has no way to know while it was paused) and
// reports how many rows the write changed.
func TestHelperHolder(t *testing.T) {
	dsn := os.Getenv("ALOCK_HELPER_DSN")
	if dsn == "" {
		t.Skip("helper process for TestPausedHolderIsFencedOut")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resource := pgtest.Connect(t, dsn) // opened before: it survives the pause
	s := openSession(t, dsn, &alock.SessionOptions{Fencing: true})
	l := s.NewExclusive(alock.Key(7))
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	var backend uint32
	if err := resource.QueryRow(ctx,
		`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 7 AND granted
		   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&backend); err != nil {
		t.Fatal(err)
	}
	helperPrintf("holder pid=%d backend=%d token=%d", os.Getpid(), backend, l.Token())

	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatalf("read stdin: %v", err)
	}
	lost := "no"
	select {
	case <-l.Lost():
		lost = "yes"
	default:
	}
	tag, err := resource.Exec(ctx, fencedWrite, "stale", l.Token())
	if err != nil {
		t.Fatal(err)
	}
	// Resumed, the holder learns that it lost the lock.
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		lost = "never"
	}
	err = l.Release(ctx)
	helperPrintf("wrote rows=%d lost_before_write=%s release=%v", tag.RowsAffected(), lost, errors.Is(err, alock.ErrLost))
}

// TestPausedHolderIsFencedOut is scenario 14 (process pause): a holder
// process is SIGSTOPped, its backend is terminated, a second holder takes
// the lock with a larger token and writes; when the first holder resumes,
// its write with the old token is rejected by the resource.
func TestPausedHolderIsFencedOut(t *testing.T) {
	// Not parallel: it loads the machine, and runs alone so that the tests
	// that time how fast a loss is signalled are not measured under it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	admin := pgtest.Connect(t, dsn)
	for _, sql := range []string{
		"CREATE TABLE fenced (id int PRIMARY KEY, value text NOT NULL, token bigint NOT NULL)",
		"INSERT INTO fenced VALUES (1, '', 0)",
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}

	child := startHelper(t, "TestHelperHolder", "ALOCK_HELPER_DSN="+dsn)
	var pid int
	var backend uint32
	var staleToken int64
	line := child.next(t, 10*time.Second)
	if _, err := fmt.Sscanf(line, "holder pid=%d backend=%d token=%d", &pid, &backend, &staleToken); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	if pid != child.cmd.Process.Pid || staleToken <= 0 {
		t.Fatalf("helper reported %q (its pid is %d)", line, child.cmd.Process.Pid)
	}
	if got := serverHolder(t, admin, 7); got != backend {
		pgtest.Fatalf(t, "pg_locks: Key(7) held by backend %d, want the helper's %d", got, backend)
	}

	// Pause the holder, then take its lock away on the server.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	var ok bool
	if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", backend).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v %v", backend, ok, err)
	}

	// A second holder takes the lock (the server frees it when the backend
	// ends) and gets a larger token.
	s := openSession(t, dsn, &alock.SessionOptions{Fencing: true})
	l := s.NewExclusive(alock.Key(7))
	actx, acancel := context.WithTimeout(ctx, 5*time.Second)
	defer acancel()
	if err := l.Acquire(actx); err != nil {
		pgtest.Fatalf(t, "second holder: Acquire: %v", err)
	}
	holder := serverHolder(t, admin, 7)
	if holder == 0 || holder == backend {
		pgtest.Fatalf(t, "pg_locks: Key(7) held by backend %d after the second Acquire (the paused holder's was %d)", holder, backend)
	}
	token := l.Token()
	if token <= staleToken {
		t.Fatalf("second holder's token %d is not larger than the paused holder's %d", token, staleToken)
	}
	tag, err := admin.Exec(ctx, fencedWrite, "second", token)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("second holder's fenced write: %v rows, %v; want 1 row", tag.RowsAffected(), err)
	}

	// Resume the paused holder: it writes with its stale token.
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	if _, err := io.WriteString(child.stdin, "write\n"); err != nil {
		t.Fatal(err)
	}
	line = child.next(t, 10*time.Second)
	var rows int64
	var lostBefore string
	var releaseLost bool
	if _, err := fmt.Sscanf(line, "wrote rows=%d lost_before_write=%s release=%t", &rows, &lostBefore, &releaseLost); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	if lostBefore == "never" || !releaseLost {
		t.Errorf("the resumed holder was not told of its loss: Lost fired: %s, Release returned ErrLost: %v", lostBefore, releaseLost)
	}
	child.wait(t, 10*time.Second)
	if rows != 0 {
		t.Errorf("the paused holder's stale write (token %d) changed %d rows, want 0", staleToken, rows)
	}
	var value string
	var stored int64
	if err := admin.QueryRow(ctx, "SELECT value, token FROM fenced WHERE id = 1").Scan(&value, &stored); err != nil {
		t.Fatal(err)
	}
	if value != "second" || stored != token {
		t.Errorf("fenced row holds (%q, %d), want (%q, %d)", value, stored, "second", token)
	}
	if !l.Locked() || serverHolder(t, admin, 7) != holder {
		t.Error("the second holder lost Key(7)")
	}
	mustRelease(t, l)
	if got := serverHolder(t, admin, 7); got != 0 {
		t.Errorf("pg_locks: Key(7) still held by backend %d after Release", got)
	}
	t.Logf("paused holder's token %d, second holder's %d; stale write changed %d rows (its Lost had fired before the write: %s)",
		staleToken, token, rows, lostBefore)
}

// serverHolder returns the backend that holds advisory Key(key) in the
// current database according to pg_locks, or 0.
func serverHolder(t *testing.T, admin *pgx.Conn, key int64) uint32 {
	t.Helper()
	var pid uint32
	err := admin.QueryRow(context.Background(), `
		SELECT coalesce(max(pid), 0) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND (classid::int8 << 32 | objid::int8) = $1`, key).Scan(&pid)
	if err != nil {
		pgtest.Fatalf(t, "pg_locks: %v", err)
	}
	return pid
}
