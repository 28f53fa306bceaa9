//go:build !linux

package main

// becomeSubreaper does nothing outside Linux: orphans of COMMAND's group
// go to init, which reaps them in its own time.
func becomeSubreaper() {}
