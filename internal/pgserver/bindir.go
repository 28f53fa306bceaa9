package pgserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNotInstalled is returned (wrapped) by BinDir and Start when no directory
// holding the PostgreSQL server binaries initdb, postgres and pg_ctl can be
// found. Test with errors.Is.
var ErrNotInstalled = errors.New("pgserver: PostgreSQL server binaries not found")

// serverBinaries are the programs a usable bin directory must contain.
var serverBinaries = []string{"initdb", "postgres", "pg_ctl"}

// BinDir returns the directory holding the PostgreSQL server binaries
// (initdb, postgres and pg_ctl). It looks, in order, at the directory of
// initdb found on PATH (with symlinks resolved when the real directory also
// holds all three binaries), at `pg_config --bindir`, and at the newest
// /usr/lib/postgresql/<version>/bin. If none qualifies it returns an error
// wrapping ErrNotInstalled.
func BinDir() (string, error) {
	if dir, ok := fromPath(); ok {
		return dir, nil
	}
	if dir, ok := fromPgConfig(); ok {
		return dir, nil
	}
	if dir, ok := newestDebianBinDir(); ok {
		return dir, nil
	}
	return "", fmt.Errorf("%w (looked in PATH, pg_config --bindir and /usr/lib/postgresql/*/bin; "+
		"install PostgreSQL, e.g. scripts/install-postgres.sh)", ErrNotInstalled)
}

// hasServerBinaries reports whether dir contains all of serverBinaries as
// executable regular files (after following symlinks).
func hasServerBinaries(dir string) bool {
	for _, name := range serverBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

func fromPath() (string, bool) {
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		return "", false
	}
	dir := filepath.Dir(initdb)
	if real, err := filepath.EvalSymlinks(initdb); err == nil && hasServerBinaries(filepath.Dir(real)) {
		return filepath.Dir(real), true
	}
	if hasServerBinaries(dir) {
		return dir, true
	}
	return "", false
}

func fromPgConfig() (string, bool) {
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		return "", false
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" || !hasServerBinaries(dir) {
		return "", false
	}
	return dir, true
}

// newestDebianBinDir picks the highest-versioned /usr/lib/postgresql/*/bin
// that holds the server binaries.
func newestDebianBinDir() (string, bool) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, true
		}
	}
	return "", false
}

// versionOf maps /usr/lib/postgresql/<v>/bin to a sortable number (9.6 <
// 10 < 15); unparsable versions sort last.
func versionOf(binDir string) float64 {
	v := filepath.Base(filepath.Dir(binDir))
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return -1
	}
	return f
}
