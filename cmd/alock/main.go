// Command alock demonstrates PostgreSQL advisory locks taken with package
// github.com/pgalock/alock.
//
// Usage:
//
//	alock demo [-dsn DSN]   walk through the library against a live server
//	alock help              print this help
//
// Without -dsn (or ALOCK_DEMO_DSN), demo starts a throwaway PostgreSQL from
// the machine's server binaries and removes it on exit, including on
// Ctrl-C. Exit status: 0 on success, 1 on a runtime error, 2 on a usage
// error.
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

// Exit statuses of run.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usage = `alock: PostgreSQL advisory locks for Go (github.com/pgalock/alock)

Usage:
  alock demo [-dsn DSN]   walk through exclusive, share, all-or-nothing and
                          cancelled acquisitions, showing pg_locks after each
                          step; without -dsn (or env ALOCK_DEMO_DSN) it starts
                          a throwaway local PostgreSQL and removes it afterwards
  alock help              print this help

Run 'alock demo -h' for the demo's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args (without the program name), writing
// normal output to stdout and diagnostics to stderr, and returns the exit
// status. When ctx ends, the running subcommand stops and cleans up.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch name, rest := args[0], args[1:]; name {
	case "demo":
		err = demoCommand(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "alock: unknown subcommand %q\n\n%s", name, usage)
		return exitUsage
	}
	return exitStatus(ctx, err, stderr)
}

// usageError is a command-line mistake; flag has already described it.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitStatus reports err on stderr, prefixed "alock: " if it is not
// already, and maps it to an exit status.
func exitStatus(ctx context.Context, err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case ctx.Err() != nil:
		first, _, _ := strings.Cut(err.Error(), "\n")
		fmt.Fprintf(stderr, "alock: interrupted (%s)\n", strings.TrimPrefix(first, "alock: "))
		return exitError
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "alock: ") {
		msg = "alock: " + msg
	}
	fmt.Fprintln(stderr, msg)
	return exitError
}

// newFlagSet returns a flag set for subcommand name that reports errors on
// stderr and returns them rather than exiting.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("alock "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: alock %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args into fs, wrapping a mistake as a usageError.
// Positional arguments are refused.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "alock: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}
