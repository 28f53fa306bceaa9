package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgalock/alock/internal/pgtest"
)

// cliTimeout bounds one run of the binary in a test.
const cliTimeout = 20 * time.Second

// cliTests are the tests that run the built binary, as subtests of TestCLI,
// which builds it once.
var cliTests = []struct {
	name string
	fn   func(t *testing.T, bin string)
}{
	{"RunExitStatus", testRunExitStatus},
	{"RunEnvironment", testRunEnvironment},
	{"RunContention", testRunContention},
	{"RunShare", testRunShare},
	{"RunLost", testRunLost},
	{"RunSignals", testRunSignals},
	{"BadInput", testBadInput},
	{"Connection", testConnection},
	{"Help", testHelp},
	{"Ls", testLs},
	{"LsNotSuperuser", testLsNotSuperuser},
	{"Key", testKey},
}

func TestCLI(t *testing.T) {
	bin := buildAlock(t)
	for _, tt := range cliTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, bin)
		})
	}
}

// buildAlock builds the alock command into a temporary directory of t.
func buildAlock(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "alock")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// cli runs the binary with DATABASE_URL set to dsn (unset if dsn is "")
// and no PG* variables.
type cli struct {
	bin, dsn string
	dir      string   // working directory; "" for the test's
	extraEnv []string // added to the environment
}

// result is what one run of the binary did.
type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

// env returns the environment of the binary.
func (c cli) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	if c.dsn != "" {
		env = append(env, "DATABASE_URL="+c.dsn)
	}
	return append(env, c.extraEnv...)
}

// command returns an unstarted run of the binary with args.
func (c cli) command(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bin, args...)
	cmd.Env, cmd.Dir = c.env(), c.dir
	return cmd
}

// run runs the binary with args to its end, within cliTimeout.
func (c cli) run(t *testing.T, args ...string) result {
	t.Helper()
	cmd := c.command(args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start alock: %v", err)
	}
	timer := time.AfterFunc(cliTimeout, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	r := result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errOut.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("alock %q: %v", args, err)
	}
	if strings.Contains(r.stderr, "goroutine ") {
		t.Errorf("alock %q printed a Go stack trace:\n%s", args, r.stderr)
	}
	return r
}

// expect fails the test unless r exited with code and its stderr contains
// every one of wantErr.
func (r result) expect(t *testing.T, what string, code int, wantErr ...string) {
	t.Helper()
	ok := r.code == code
	for _, w := range wantErr {
		ok = ok && strings.Contains(r.stderr, w)
	}
	if !ok {
		t.Errorf("%s: exit %d, want %d with stderr containing %q\nstdout:\n%s\nstderr:\n%s",
			what, r.code, code, wantErr, r.stdout, r.stderr)
	}
}

// background is a run of the binary that the test lets go on while it does
// other things. Its stdout comes line by line.
type background struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
}

// start starts the binary with args in the background; t's clean-up stops
// it (SIGTERM, which it forwards, then SIGKILL) if it is still running.
func (c cli) start(t *testing.T, args ...string) *background {
	t.Helper()
	cmd := c.command(args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &background{cmd: cmd, lines: make(chan string, 100), stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start alock: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
		close(b.lines)
		_ = cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() { b.stop() })
	return b
}

// line returns the next line of output, failing the test after cliTimeout.
func (b *background) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-b.lines:
		if !ok {
			t.Fatalf("alock %q ended without the expected output; stderr:\n%s", b.cmd.Args[1:], b.stderr)
		}
		return l
	case <-time.After(cliTimeout):
		t.Fatalf("alock %q: no output within %v; stderr:\n%s", b.cmd.Args[1:], cliTimeout, b.stderr)
	}
	return ""
}

// wait waits for the run to end and returns its exit status.
func (b *background) wait(t *testing.T) int {
	t.Helper()
	for range b.lines { // drain
	}
	select {
	case <-b.done:
	case <-time.After(cliTimeout):
		t.Fatalf("alock %q did not end within %v; stderr:\n%s", b.cmd.Args[1:], cliTimeout, b.stderr)
	}
	return b.cmd.ProcessState.ExitCode()
}

// signal sends sig to the alock process.
func (b *background) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal alock: %v", err)
	}
}

// stop ends the run if it is still going.
func (b *background) stop() {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitWaiters waits until the database of dsn shows n advisory-lock rows with
// granted = false.
func waitWaiters(t *testing.T, dsn string, n int) {
	t.Helper()
	conn := pgtest.Connect(t, dsn)
	pgtest.WaitFor(t, "waiting advisory locks", func() bool {
		var got int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
			AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&got)
		return err == nil && got == n
	})
}
