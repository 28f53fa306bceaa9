// Command alock takes PostgreSQL advisory locks from the shell, the way
// package github.com/pgalock/alock takes them from Go.
//
// Usage:
//
//	alock run [flags] ID... -- COMMAND [ARGS...]   run COMMAND while holding the ids
//	alock ls [flags] [ID...]                       show held and awaited advisory locks
//	alock key NAME...                              show the key and lock tag of names
//	alock demo [-dsn DSN]                          walk through the library
//	alock help [SUBCOMMAND]                        print usage
//
// Run 'alock help SUBCOMMAND' for the flags, examples and exit statuses of
// each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit statuses of alock's own making; `alock run` otherwise exits with its
// COMMAND's status.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitConflict = 75 // EX_TEMPFAIL: the lock is held elsewhere (run's default -E)
	exitLost     = 76 // the lock was lost while COMMAND ran
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// stdio is where a subcommand reads and writes.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// command is one subcommand. It returns nil on success, a usageError for a
// command-line mistake, an exitCode when it has already said what there was
// to say, or another error, which run prints.
type command func(ctx context.Context, std stdio, args []string) error

// commands are the subcommands by name. The map is filled in init, as
// help refers back to it.
var commands map[string]command

func init() {
	commands = map[string]command{
		"run":  runCommand,
		"ls":   lsCommand,
		"key":  keyCommand,
		"demo": demoCommand,
		"help": helpCommand,
	}
}

// run executes the command line args (without the program name), reading
// stdin and writing normal output to stdout and diagnostics to stderr, and
// returns the exit status. When ctx ends, or (except for `alock run`, which
// forwards signals to its COMMAND) on SIGINT, SIGTERM, SIGHUP or SIGQUIT, the
// running subcommand stops and cleans up.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil { // a bug; say so in one line, not a stack trace
			fmt.Fprintf(stderr, "alock: internal error: %v\n", r)
			code = exitError
		}
	}()
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "alock: unknown subcommand %q\nRun 'alock help' for usage.\n", name)
		return exitUsage
	}
	if name != "run" {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
		defer stop()
	}
	return exitStatus(ctx, name, cmd(ctx, stdio{stdin, stdout, stderr}, rest), stdout, stderr)
}

// usageError is a command-line mistake.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError with a formatted message.
func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitCode is an exit status whose reason has already been reported.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// exitStatus reports err of subcommand sub on stderr, prefixed "alock: " if
// it is not already, and maps it to an exit status. flag.ErrHelp prints the
// subcommand's usage on stdout.
func exitStatus(ctx context.Context, sub string, err error, stdout, stderr io.Writer) int {
	var ue usageError
	var ec exitCode
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usageOf(sub))
		return exitOK
	case errors.As(err, &ec):
		return int(ec)
	case errors.Is(err, errNoDatabase):
		fmt.Fprintln(stderr, err)
		return exitUsage
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "alock %s: %s\nRun 'alock help %s' for usage.\n", sub, oneLine(ue.err.Error()), sub)
		return exitUsage
	case ctx.Err() != nil:
		fmt.Fprintf(stderr, "alock: interrupted (%s)\n", strings.TrimPrefix(oneLine(err.Error()), "alock: "))
		return exitError
	}
	msg := oneLine(err.Error())
	if !strings.HasPrefix(msg, "alock: ") {
		msg = "alock: " + msg
	}
	fmt.Fprintln(stderr, msg)
	return exitError
}

// oneLine makes a message one line: the lines of a multi-line one are
// joined, after a space where a line ends in ':' (pgx's connect error lists
// its attempts so) and after "; " elsewhere. A line that repeats the one
// before is dropped (sslmode=prefer makes every attempt twice).
func oneLine(msg string) string {
	var b strings.Builder
	prev := ""
	for line := range strings.SplitSeq(msg, "\n") {
		if line = strings.TrimSpace(line); line == "" || line == prev {
			continue
		}
		switch {
		case b.Len() == 0:
		case strings.HasSuffix(prev, ":"):
			b.WriteString(" ")
		default:
			b.WriteString("; ")
		}
		b.WriteString(line)
		prev = line
	}
	return b.String()
}
