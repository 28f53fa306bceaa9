package main

import (
	"strings"
	"testing"
)

func TestOneLine(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain", "plain"},
		{"", ""},
		// pgx's connect error: a header ending in ':', an attempt a line,
		// each made twice with sslmode=prefer.
		{"failed to connect to `user=u database=d`:\n\t127.0.0.1:1: refused\n\t127.0.0.1:1: refused",
			"failed to connect to `user=u database=d`: 127.0.0.1:1: refused"},
		{"a:\n\tx\n\ty", "a: x; y"},
		// errors.Join: separate errors stay apart.
		{"alock: demo: step: boom\nalock: demo: stop PostgreSQL: gone", "alock: demo: step: boom; alock: demo: stop PostgreSQL: gone"},
		// user text is kept as it is.
		{`database "x: alock: y" does not exist`, `database "x: alock: y" does not exist`},
		{"same\nother\nsame", "same; other; same"},
	} {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestBadConnStringHidesTheString(t *testing.T) {
	for _, dsn := range []string{
		"host=x password = sekrit port=bad",
		"postgres://u:sekrit@127.0.0.1:bad/x",
		"host=x password=sek`: rit port=bad",
	} {
		_, err := connConfig(dsn)
		if err == nil {
			t.Fatalf("connConfig(%q): no error", dsn)
		}
		if msg := err.Error(); !strings.Contains(msg, "bad connection string") || strings.Contains(msg, "sek") {
			t.Errorf("connConfig(%q): %q; want a bad connection string error without the string", dsn, msg)
		}
	}
}
