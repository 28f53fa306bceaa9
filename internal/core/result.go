package core

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// reply is what a statement that takes or releases locks reports.
type reply struct {
	flags string // one '1' or '0' per tag (tries and unlocks); a batch statement's failure lists (see parseFailures)
	pid   uint32 // the backend that ran the statement
	start string // the server's start time (lock statements only), "" if not reported
	token int64  // the fencing token drawn, 0 for none
}

// parseReply parses the text of lockStatement ("pid@start:token"),
// tryStatement ("flags:pid@start:token", withFlags) or unlockStatement
// ("flags:pid", withFlags and not withToken).
func parseReply(text string, withFlags, withToken bool) (r reply, ok bool) {
	rest := text
	if withFlags {
		if r.flags, rest, ok = strings.Cut(rest, ":"); !ok {
			return reply{}, false
		}
	}
	pid, token := rest, ""
	if withToken {
		if pid, token, ok = strings.Cut(rest, ":"); !ok {
			return reply{}, false
		}
	}
	pid, r.start, _ = strings.Cut(pid, "@")
	n, err := strconv.ParseUint(pid, 10, 32)
	if err != nil {
		return reply{}, false
	}
	r.pid = uint32(n)
	if token != "" {
		if r.token, err = strconv.ParseInt(token, 10, 64); err != nil {
			return reply{}, false
		}
	}
	return r, true
}

// parseFlags turns the '1'/'0' text of tryStatement or unlockStatement into
// one boolean per tag; ok is false if the text does not have one flag per tag.
func parseFlags(s string, n int) (flags []bool, ok bool) {
	if len(s) != n {
		return nil, false
	}
	flags = make([]bool, n)
	for i := range n {
		switch s[i] {
		case '1':
			flags[i] = true
		case '0':
		default:
			return nil, false
		}
	}
	return flags, true
}

// parseHeld parses the text of heldStatement.
func parseHeld(text string) (map[Tag]bool, error) {
	held := make(map[Tag]bool)
	if text == "" {
		return held, nil
	}
	for item := range strings.SplitSeq(text, ",") {
		parts := strings.Split(item, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("unexpected pg_locks entry %q", item)
		}
		c, err1 := strconv.ParseUint(parts[0], 10, 32)
		o, err2 := strconv.ParseUint(parts[1], 10, 32)
		s, err3 := strconv.ParseUint(parts[2], 10, 16)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("unexpected pg_locks entry %q: %w", item, err)
		}
		held[Tag{uint32(c), uint32(o), uint16(s)}] = true
	}
	return held, nil
}
