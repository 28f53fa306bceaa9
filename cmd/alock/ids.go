package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pgalock/alock"
)

// namePrefix marks an ID argument that is a name: name:TEXT is Name(TEXT).
const namePrefix = "name:"

// parseID parses an ID argument: a number is a Key, A,B a Pair and
// name:TEXT a Name.
func parseID(arg string) (alock.ID, error) {
	if text, ok := strings.CutPrefix(arg, namePrefix); ok {
		if text == "" {
			return alock.ID{}, usagef("malformed ID %q: name: needs a name after it", arg)
		}
		return alock.Name(text), nil
	}
	if a, b, ok := strings.Cut(arg, ","); ok {
		k1, err1 := strconv.ParseInt(a, 10, 32)
		k2, err2 := strconv.ParseInt(b, 10, 32)
		if err1 != nil || err2 != nil {
			return alock.ID{}, usagef("malformed ID %q: a pair is two 32-bit integers, A,B", arg)
		}
		return alock.Pair(int32(k1), int32(k2)), nil
	}
	k, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return alock.ID{}, usagef("malformed ID %q: want a 64-bit integer, A,B (two 32-bit integers) or name:TEXT", arg)
	}
	return alock.Key(k), nil
}

// parseIDs parses every argument with parseID.
func parseIDs(args []string) ([]alock.ID, error) {
	ids := make([]alock.ID, 0, len(args))
	for _, a := range args {
		id, err := parseID(a)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// joinIDArgs joins ID arguments with spaces, quoting (as a Go string, in
// ASCII) those that are not plain printable ASCII without spaces or quotes,
// so that splitIDArgs gets them back. This is the form of ALOCK_IDS and of
// the ids in `alock run`'s application_name, which PostgreSQL restricts to
// printable ASCII.
func joinIDArgs(args []string) string {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = a
		if !plainArg(a) {
			parts[i] = strconv.QuoteToASCII(a)
		}
	}
	return strings.Join(parts, " ")
}

// distinctIDs counts the server locks ids name: ids that name one lock
// (Name("x") and Key(NameKey("x")), or one given twice) count once.
func distinctIDs(ids []alock.ID) int {
	seen := make(map[alock.ID]bool, len(ids))
	for _, id := range ids {
		lock, _ := alock.FromLockTag(id.LockTag()) // the ID of the lock alone, without a name
		seen[lock] = true
	}
	return len(seen)
}

// plainArg reports whether a needs no quoting in joinIDArgs.
func plainArg(a string) bool {
	if a == "" {
		return false
	}
	for _, r := range a {
		if r <= ' ' || r > '~' || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

// splitIDArgs undoes joinIDArgs. A malformed or truncated quoted argument
// ends the list.
func splitIDArgs(s string) []string {
	var out []string
	for s = strings.TrimLeft(s, " "); s != ""; s = strings.TrimLeft(s, " ") {
		if s[0] != '"' {
			word, rest, _ := strings.Cut(s, " ")
			out, s = append(out, word), rest
			continue
		}
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			break
		}
		word, _ := strconv.Unquote(q)
		out, s = append(out, word), s[len(q):]
	}
	return out
}

// runAppPrefix starts the application_name of an `alock run` session.
const runAppPrefix = "alock run "

// maxAppName is the longest application_name PostgreSQL keeps
// (NAMEDATALEN - 1 bytes).
const maxAppName = 63

// runAppName returns the application_name of `alock run` with args.
func runAppName(args []string) string {
	name := runAppPrefix + joinIDArgs(args)
	if len(name) > maxAppName {
		name = name[:maxAppName] // ASCII only: no rune is cut
	}
	return name
}

// namesInAppName returns the names that the `alock run` session with
// application_name app locks, by their keys; nil for another program.
func namesInAppName(app string) map[int64]string {
	rest, ok := strings.CutPrefix(app, runAppPrefix)
	if !ok {
		return nil
	}
	names := make(map[int64]string)
	for _, a := range splitIDArgs(rest) {
		if text, ok := strings.CutPrefix(a, namePrefix); ok && text != "" {
			names[alock.NameKey(text)] = text
		}
	}
	return names
}

// describeID returns id as alock's Go API writes it, with its name if
// known: Key(42), or Key(-8142716046290924356) name:"nightly".
func describeID(id alock.ID, name string) string {
	if name == "" {
		return id.String()
	}
	return fmt.Sprintf("%s name:%s", id, strconv.Quote(name))
}
