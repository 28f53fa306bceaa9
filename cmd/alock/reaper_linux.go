package main

import "syscall"

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER.
const prSetChildSubreaper = 36

// becomeSubreaper makes the orphans of alock's descendants its children
// rather than init's, so that alock can reap COMMAND's grandchildren and
// tell at once when its process group has ended. Failure only makes that
// slower.
func becomeSubreaper() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}
