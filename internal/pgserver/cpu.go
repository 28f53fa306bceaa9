package pgserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU returns the CPU time (user and system) that the server's running
// processes have used so far: the postmaster and its children, read from
// /proc (Linux; an error elsewhere). A backend that has exited no longer
// counts, so a difference of two readings is the CPU of the backends that
// lived through the interval between them. It assumes the kernel's
// USER_HZ of 100.
func (s *Server) CPU() (time.Duration, error) {
	pm, err := s.postmasterPID()
	if err != nil {
		return 0, err
	}
	if pm == 0 {
		return 0, fmt.Errorf("pgserver: no postmaster.pid in %s", s.dataDir)
	}
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, fmt.Errorf("pgserver: list /proc: %w", err)
	}
	if len(stats) == 0 {
		return 0, fmt.Errorf("pgserver: no processes in /proc (not Linux?)")
	}
	var ticks int64
	for _, path := range stats {
		pid, ppid, t, ok := readStat(path)
		if ok && (pid == pm || ppid == pm) {
			ticks += t
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// readStat reads a /proc/PID/stat: the pid, its parent and utime+stime in
// clock ticks.
func readStat(path string) (pid, ppid int, ticks int64, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil { // exited meanwhile
		return 0, 0, 0, false
	}
	text := string(data)
	open, end := strings.IndexByte(text, '('), strings.LastIndexByte(text, ')')
	if open < 0 || end < open || end+2 > len(text) {
		return 0, 0, 0, false
	}
	// After "pid (comm) ": state ppid pgrp session tty_nr tpgid flags
	// minflt cminflt majflt cmajflt utime stime ...
	f := strings.Fields(text[end+2:])
	if len(f) < 13 {
		return 0, 0, 0, false
	}
	pid, err1 := strconv.Atoi(strings.TrimSpace(text[:open]))
	ppid, err2 := strconv.Atoi(f[1])
	utime, err3 := strconv.ParseInt(f[11], 10, 64)
	stime, err4 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return 0, 0, 0, false
	}
	return pid, ppid, utime + stime, true
}
