package pgtest

import (
	"syscall"
	"time"
)

// CPU returns the CPU time (user and system) used so far by this process
// and by the test server's running processes (see pgserver.Server.CPU);
// ok is false where either cannot be read.
func CPU() (client, srv time.Duration, ok bool) {
	var ru syscall.Rusage
	if server == nil || syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0, false
	}
	srv, err := server.CPU()
	if err != nil {
		return 0, 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), srv, true
}
