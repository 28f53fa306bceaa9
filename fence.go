package alock

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgalock/alock/internal/core"
)

// fenceSchema is the schema of a FenceSequence named without one: the same
// for every role, whatever its search_path, so that every holder of a lock
// draws from one sequence.
const fenceSchema = "public"

// qualifyFence returns the quoted, schema-qualified name of the fencing
// sequence: "alock_fence" is "public"."alock_fence".
func qualifyFence(name string) string {
	parts := strings.Split(name, ".")
	if len(parts) == 1 {
		parts = []string{fenceSchema, name}
	}
	return pgx.Identifier(parts).Sanitize()
}

// fenceSettingsSQL reads the settings of a sequence that decide whether its
// values come out in order (no row if the relation is missing or is not a
// sequence).
const fenceSettingsSQL = `SELECT seqincrement, seqcache, seqcycle, seqmin
FROM pg_catalog.pg_sequence WHERE seqrelid = to_regclass($1)`

// prepareFence makes sure the fencing sequence exists, creating it if it is
// missing, and refuses one whose settings can hand out tokens out of order.
// It returns the name to draw from: schema-qualified and quoted.
func prepareFence(ctx context.Context, conn *pgx.Conn, sequence string) (string, error) {
	name := qualifyFence(sequence)
	var increment, cache int64
	var cycle bool
	var minValue int64
	err := conn.QueryRow(ctx, fenceSettingsSQL, name).Scan(&increment, &cache, &cycle, &minValue)
	if errors.Is(err, pgx.ErrNoRows) {
		if err = createFence(ctx, conn, name); err != nil {
			return "", err
		}
		err = conn.QueryRow(ctx, fenceSettingsSQL, name).Scan(&increment, &cache, &cycle, &minValue)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", fmt.Errorf("alock: open: the fencing sequence %s: a relation of that name exists and is not a sequence", name)
		}
	}
	if err != nil {
		return "", fmt.Errorf("alock: open: the fencing sequence %s: %w", name, err)
	}
	var bad []string
	if increment <= 0 {
		bad = append(bad, fmt.Sprintf("INCREMENT %d (want a positive one)", increment))
	}
	if cache > 1 {
		bad = append(bad, fmt.Sprintf("CACHE %d (want 1: each session caches its own range)", cache))
	}
	if cycle {
		bad = append(bad, "CYCLE (want NO CYCLE)")
	}
	if minValue < 1 {
		bad = append(bad, fmt.Sprintf("MINVALUE %d (want 1 or more: a token of 0 or less means none)", minValue))
	}
	if len(bad) > 0 {
		return "", fmt.Errorf("alock: open: the fencing sequence %s can hand out tokens out of order: %s", name, strings.Join(bad, ", "))
	}
	return name, nil
}

// createFence creates the fencing sequence if it is missing, with a commit
// that is durable whatever the session's synchronous_commit: a creation
// lost in a crash would start the tokens over. CREATE SEQUENCE IF NOT
// EXISTS is not safe against a concurrent creator, which makes it fail with
// a unique violation (23505) or "already exists" (42P07) once the other has
// committed: then it exists, as a second try confirms.
func createFence(ctx context.Context, conn *pgx.Conn, name string) error {
	sql := "BEGIN; SET LOCAL synchronous_commit TO on; CREATE SEQUENCE IF NOT EXISTS " + name + "; COMMIT"
	var err error
	for range 3 {
		if _, err = conn.Exec(ctx, sql); err == nil {
			return nil
		}
		if conn.PgConn().TxStatus() != 'I' {
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
		if state := core.SQLState(err); state != "23505" && state != "42P07" {
			break
		}
	}
	if core.SQLState(err) == "42501" {
		return fmt.Errorf("alock: open: create the fencing sequence %s: %w (have it created once by a role that may, and GRANT USAGE ON SEQUENCE %s to the roles that lock; see the package documentation)", name, err, name)
	}
	return fmt.Errorf("alock: open: create the fencing sequence %s: %w", name, err)
}
