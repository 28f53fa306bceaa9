package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/pgalock/alock"
)

// runOptions are the flags and arguments of `alock run`.
type runOptions struct {
	share, noWait bool
	wait          durationFlag // unset: wait as long as it takes
	conflictCode  exitStatusFlag
	grace         durationFlag
	fencing       bool
	dsn           string
	idArgs        []string // as given
	ids           []alock.ID
	command       []string
}

// defaultGrace is how long COMMAND has between SIGTERM and SIGKILL after a
// loss, unless --grace says otherwise.
const defaultGrace = 10 * time.Second

// forwardedSignals are the signals that `alock run` passes on to COMMAND's
// process group (and that stop a wait for the lock).
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// parseRunArgs parses `alock run [flags] ID... -- COMMAND [ARGS...]`.
func parseRunArgs(args []string) (*runOptions, error) {
	o := &runOptions{grace: durationFlag{d: defaultGrace}, conflictCode: exitConflict}
	fs := newFlagSet("run")
	for _, name := range []string{"s", "share"} {
		fs.BoolVar(&o.share, name, false, "take share locks")
	}
	for _, name := range []string{"n", "no-wait"} {
		fs.BoolVar(&o.noWait, name, false, "do not wait")
	}
	for _, name := range []string{"w", "wait"} {
		fs.Var(&o.wait, name, "longest wait")
	}
	for _, name := range []string{"E", "conflict-exit-code"} {
		fs.Var(&o.conflictCode, name, "exit status on conflict")
	}
	fs.Var(&o.grace, "grace", "time between SIGTERM and SIGKILL after a loss")
	fs.BoolVar(&o.fencing, "fencing", false, "draw a fencing token")
	fs.StringVar(&o.dsn, "dsn", "", "connection string")

	sep := slices.Index(args, "--")
	before := args
	if sep >= 0 {
		before, o.command = args[:sep], args[sep+1:]
	}
	var err error
	if o.idArgs, err = parseArgs(fs, before); err != nil {
		return nil, err
	}
	return o, o.check(sep >= 0)
}

// check validates the parsed options; sawSeparator tells whether "--" was
// given.
func (o *runOptions) check(sawSeparator bool) error {
	var err error
	switch {
	case len(o.idArgs) == 0:
		return usagef("want at least one ID before --")
	case !sawSeparator:
		return usagef("missing -- between the ids and COMMAND")
	case len(o.command) == 0:
		return usagef("want a COMMAND after --")
	case o.noWait && o.wait.set:
		return usagef("-n and -w both say how long to wait: give one")
	}
	if o.ids, err = parseIDs(o.idArgs); err != nil {
		return err
	}
	if n := distinctIDs(o.ids); n > alock.MaxIDs {
		return usagef("%d distinct ids: a lock has at most %d", n, alock.MaxIDs)
	}
	return nil
}

// runCommand runs `alock run`: it takes the ids on a Session, runs COMMAND
// under them and exits with COMMAND's status (see runUsage).
func runCommand(ctx context.Context, std stdio, args []string) error {
	o, err := parseRunArgs(args)
	if err != nil {
		return err
	}
	cfg, err := connConfig(o.dsn)
	if err != nil {
		return err
	}
	cfg.RuntimeParams["application_name"] = runAppName(o.idArgs)

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)

	w := &waiter{opts: o, sigs: sigs}
	s, lock, err := w.lock(ctx, cfg)
	if s != nil {
		defer closeSession(s)
	}
	switch {
	case w.signal != nil:
		fmt.Fprintf(std.err, "alock: %s while waiting for the lock; giving up\n", signalName(w.signal))
		return exitCode(128 + int(w.signal.(syscall.Signal)))
	case errors.Is(err, errConflict):
		fmt.Fprintln(std.err, conflictLine(ctx, cfg, o, lock))
		return exitCode(o.conflictCode)
	case err != nil:
		return err
	}
	return supervise(std, o, s, lock, sigs)
}

// closeSession closes s within closeTimeout, whatever became of the
// caller's context; closing ends the session's locks.
func closeSession(s *alock.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = s.Close(ctx)
}

// signalName returns the conventional name of sig, such as SIGTERM.
func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	}
	return sig.String()
}
