package alocksql_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/pgalock/alock"
	"github.com/pgalock/alock/alocksql"
)

// A session lock over database/sql pins one connection of the pool with
// (*sql.DB).Conn, and hands it back with CloseConn, which refuses while a
// lock is held on it.
func Example() {
	ctx := context.Background()
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	conn, err := db.Conn(ctx)
	if err != nil {
		log.Fatal(err)
	}
	report := alocksql.NewExclusive(conn, alock.Name("nightly-report"))
	err = report.Do(ctx, func(ctx context.Context) error {
		fmt.Println("running the report; no other worker can")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := alocksql.CloseConn(ctx, conn); err != nil {
		log.Fatal(err)
	}
	// Output: running the report; no other worker can
}

// A transaction lock needs no release: it ends with the transaction.
func ExampleLockTx() {
	ctx := context.Background()
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback()
	if err := alocksql.LockTx(ctx, tx, alock.Exclusive, alock.Key(42)); err != nil {
		log.Fatal(err)
	}
	fmt.Println("account 42 is ours until the transaction ends")
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	// Output: account 42 is ours until the transaction ends
}
