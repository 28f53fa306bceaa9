package main

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/pgalock/alock"
)

// keyCommand runs `alock key NAME...`: the key of each name and its lock
// tag in pg_locks, computed without a server.
func keyCommand(_ context.Context, std stdio, args []string) error {
	fs := newFlagSet("key")
	names, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return usagef("want at least one NAME")
	}
	tw := tabwriter.NewWriter(std.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKEY\tCLASSID\tOBJID\tOBJSUBID")
	for _, n := range names {
		classID, objID, objSubID := alock.Name(n).LockTag()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", strconv.Quote(n), alock.NameKey(n), classID, objID, objSubID)
	}
	return tw.Flush()
}
