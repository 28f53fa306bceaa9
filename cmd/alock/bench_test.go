package main

import (
	"os/exec"
	"testing"

	"github.com/pgalock/alock/internal/pgtest"
)

// BenchmarkRunStartup measures `alock run 1 -- true` (connect, lock, start
// the child, wait, close) against running `true` directly, interleaved, and
// reports the cost of each and their ratio:
//
//	go test -run '^$' -bench BenchmarkRunStartup -benchtime 100x -count 3 ./cmd/alock
func BenchmarkRunStartup(b *testing.B) {
	c := cli{bin: buildAlock(b), dsn: pgtest.NewDatabase(b)}
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip("no true(1)")
	}
	runOrFail := func(cmd *exec.Cmd) func() {
		path, args, env := cmd.Path, cmd.Args, cmd.Env
		return func() {
			cmd := &exec.Cmd{Path: path, Args: args, Env: env}
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%q: %v\n%s", args, err, out)
			}
		}
	}
	spent := pgtest.Interleave(b, runOrFail(exec.Command(truePath)), runOrFail(c.command("run", "1", "--", "true")))
	b.ReportMetric(float64(spent[0].Microseconds())/float64(b.N), "true-µs/op")
	b.ReportMetric(float64(spent[1].Microseconds())/float64(b.N), "alock-run-µs/op")
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "alock-run/true")
}
