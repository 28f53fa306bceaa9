package main

import (
	"errors"
	"flag"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// newFlagSet returns a flag set for subcommand name that prints nothing:
// exitStatus reports its mistakes, and its usage text is in help.go.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("alock "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// negativeID matches a negative Key or a Pair starting with a negative
// number, which the flag package would take for a flag.
var negativeID = regexp.MustCompile(`^-[0-9]+(,-?[0-9]+)?$`)

// negativeMark hides a negative ID from the flag package; it cannot start
// a flag or an ID.
const negativeMark = "\x00"

// parseArgs parses args into fs, allowing flags and positional arguments
// in any order (an argument after a literal "--" is positional), and
// returns the positional arguments. A flag mistake is a usageError; -h is
// flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	args = markNegativeIDs(fs, args)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, strings.TrimPrefix(args[0], negativeMark))
		args = args[1:]
	}
	return positional, nil
}

// markNegativeIDs prefixes negativeMark to the arguments that look like
// negative ids and are not the value of the flag before them.
func markNegativeIDs(fs *flag.FlagSet, args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if negativeID.MatchString(a) && (i == 0 || !takesValue(fs, args[i-1])) {
			out[i] = negativeMark + a
		}
	}
	return out
}

// takesValue reports whether arg is a flag of fs, without "=value", that
// takes the next argument as its value.
func takesValue(fs *flag.FlagSet, arg string) bool {
	name, ok := strings.CutPrefix(arg, "-")
	if !ok || strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(strings.TrimPrefix(name, "-"))
	if f == nil {
		return false
	}
	b, isBool := f.Value.(interface{ IsBoolFlag() bool })
	return !isBool || !b.IsBoolFlag()
}

// dsnFlag adds --dsn to fs.
func dsnFlag(fs *flag.FlagSet) *string {
	return fs.String("dsn", "", "connection string")
}

// exitStatusFlag is a flag.Value for an exit status, 0 to 255.
type exitStatusFlag int

func (f *exitStatusFlag) String() string { return strconv.Itoa(int(*f)) }

func (f *exitStatusFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return errors.New("an exit status is 0 to 255")
	}
	*f = exitStatusFlag(n)
	return nil
}

// durationFlag is a flag.Value for a duration that must not be negative.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string { return f.d.String() }

func (f *durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration of at most 2562047h (e.g. 500ms, 30s, 2m)")
	}
	if d < 0 {
		return errors.New("negative duration")
	}
	f.d, f.set = d, true
	return nil
}
