// Package pgxtext runs the lock statements, which return one text column,
// on a *pgx.Conn without a scan plan: they are on the hot path of every
// front end (package alock, and alocksql through (*sql.Conn).Raw).
package pgxtext

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// QueryText runs sql and returns the first column of its one row as text
// (a text value's bytes are the same in either format; "" for NULL), or
// pgx.ErrNoRows.
func QueryText(ctx context.Context, c *pgx.Conn, sql string, args []any) (string, error) {
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		return "", err
	}
	var s string
	found := rows.Next()
	if found {
		if v := rows.RawValues(); len(v) > 0 {
			s = string(v[0])
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", err
	}
	if !found {
		return "", pgx.ErrNoRows
	}
	return s, nil
}

// Describes reports whether pgx learns a statement's parameter types from
// the server in mode m, and so can encode the arguments of KeysByRef by
// them; in the other modes it goes by the Go type, which it knows only for
// slices.
func Describes(m pgx.QueryExecMode) bool {
	switch m {
	case pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec:
		return true
	}
	return false
}
