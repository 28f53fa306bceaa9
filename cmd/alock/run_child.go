package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgalock/alock"
)

// Exit statuses of a COMMAND that could not be run, as the shell's.
const (
	exitCannotRun = 126
	exitNotFound  = 127
)

// child is COMMAND, running in a process group of its own.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd.Wait has returned
}

// startChild starts COMMAND with the environment of `alock run` and std's
// streams, in a new process group.
func startChild(std stdio, o *runOptions, lock *alock.Lock) (*child, error) {
	cmd := exec.Command(o.command[0], o.command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = std.in, std.out, std.err
	cmd.Env = append(os.Environ(), "ALOCK_HELD=1", "ALOCK_IDS="+joinIDArgs(o.idArgs))
	if o.fencing {
		cmd.Env = append(cmd.Env, "ALOCK_FENCING_TOKEN="+strconv.FormatInt(lock.Token(), 10))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	becomeSubreaper()
	cmd.WaitDelay = time.Second // copying to non-file streams stops this long after exit
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the status is in cmd.ProcessState
		close(c.done)
	}()
	return c, nil
}

// signalGroup sends sig to every process of the child's group; a group
// already gone is not an error.
func (c *child) signalGroup(sig syscall.Signal) {
	_ = syscall.Kill(-c.cmd.Process.Pid, sig)
}

// groupGone reports whether no process of the child's group is left,
// after reaping those of its ended processes that were orphaned to alock
// (see becomeSubreaper); zombies left to others count as left. Call it
// only once the child itself has been waited for.
func (c *child) groupGone() bool {
	for {
		pid, err := syscall.Wait4(-c.cmd.Process.Pid, nil, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			break
		}
	}
	return errors.Is(syscall.Kill(-c.cmd.Process.Pid, 0), syscall.ESRCH)
}

// status returns the exit status of the ended child: its own, or 128+N if
// it died of signal N.
func (c *child) status() int {
	ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return c.cmd.ProcessState.ExitCode()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// supervise runs COMMAND while lock, on s, is held: it forwards sigs to COMMAND's
// process group and returns COMMAND's exit status, or, if the lock is lost
// first, stops the group and returns exitLost.
func supervise(std stdio, o *runOptions, s *alock.Session, lock *alock.Lock, sigs <-chan os.Signal) error {
	c, err := startChild(std, o, lock)
	if err != nil {
		fmt.Fprintf(std.err, "alock: run %s: %s\n", strconv.Quote(o.command[0]), oneLine(err.Error()))
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return exitCode(exitNotFound)
		}
		return exitCode(exitCannotRun)
	}
	for {
		select {
		case sig := <-sigs:
			c.signalGroup(sig.(syscall.Signal))
		case <-lock.Lost():
			fmt.Fprintf(std.err, "alock: lost the lock of %s (%s); sending SIGTERM to COMMAND's process group, SIGKILL after %v\n",
				lockDescription(o), sessionErr(s), o.grace.d)
			c.stop(o.grace.d, sigs)
			return exitCode(exitLost)
		case <-c.done:
			return c.ended(std, o, s, lock)
		}
	}
}

// ended returns the status of `alock run` once COMMAND has ended: its own,
// unless the lock turns out to have been lost.
func (c *child) ended(std stdio, o *runOptions, s *alock.Session, lock *alock.Lock) error {
	select {
	case <-lock.Lost():
		fmt.Fprintf(std.err, "alock: lost the lock of %s while COMMAND ran (%s); COMMAND exited with status %d\n",
			lockDescription(o), sessionErr(s), c.status())
		return exitCode(exitLost)
	default:
	}
	// Unlock before exiting, so that the lock is free when alock returns
	// (a Close alone frees it only once the server has ended the session).
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := lock.Release(ctx); errors.Is(err, alock.ErrLost) {
		fmt.Fprintf(std.err, "alock: lost the lock of %s while COMMAND ran (%s); COMMAND exited with status %d\n",
			lockDescription(o), sessionErr(s), c.status())
		return exitCode(exitLost)
	}
	return exitCode(c.status())
}

// stop sends SIGTERM to the child's process group and, unless every process
// of it has ended within grace, SIGKILL; signals from sigs are still
// forwarded meanwhile. It returns once the child has ended and its group is
// gone (or killTimeout after SIGKILL).
func (c *child) stop(grace time.Duration, sigs <-chan os.Signal) {
	c.signalGroup(syscall.SIGTERM)
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case sig := <-sigs:
			c.signalGroup(sig.(syscall.Signal))
			continue
		case <-deadline.C:
			c.signalGroup(syscall.SIGKILL)
			<-c.done
			c.awaitGroup(killTimeout)
			return
		case <-poll.C:
		}
		select {
		case <-c.done:
			if c.groupGone() {
				return
			}
		default:
		}
	}
}

// killTimeout bounds how long alock waits, after SIGKILL, for the processes
// of COMMAND's group to end (orphaned zombies that nobody reaps still count).
const killTimeout = 2 * time.Second

// awaitGroup waits until no process of the child's group is left, or
// timeout has passed.
func (c *child) awaitGroup(timeout time.Duration) {
	for end := time.Now().Add(timeout); !c.groupGone() && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
}

// lockDescription names the ids of o for messages.
func lockDescription(o *runOptions) string {
	return joinIDArgs(o.idArgs)
}

// sessionErr says why s ended, without the library's "alock: " prefixes.
func sessionErr(s *alock.Session) string {
	if err := s.Err(); err != nil {
		return oneLine(strings.ReplaceAll(err.Error(), "alock: ", ""))
	}
	return "the session ended"
}
