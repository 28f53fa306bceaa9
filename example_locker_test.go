package alock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/pgalock/alock"
)

// A Locker serves a whole process: its goroutines exclude each other and
// other processes, over two database sessions whatever their number.
func ExampleLocker() {
	ctx := context.Background()
	locker, err := alock.NewLocker(ctx, os.Getenv("DATABASE_URL"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close(ctx)

	var wg sync.WaitGroup
	balance := 0 // guarded by the lock alone
	for range 100 {
		wg.Go(func() {
			account := locker.NewExclusive(alock.Name("account/42"))
			err := account.Do(ctx, func(ctx context.Context) error {
				// no other goroutine, process or machine holds account/42 here;
				// ctx ends if the lock is lost
				balance++
				return nil
			})
			if err != nil {
				log.Print(err)
			}
		})
	}
	wg.Wait()
	fmt.Println("balance:", balance)
	// Output: balance: 100
}

// Lead runs fn while this process leads; a leader that loses its session
// sees fn's ctx end, and campaigns again.
func ExampleLocker_Lead() {
	ctx, stop := context.WithTimeout(context.Background(), 2*time.Second)
	defer stop()
	locker, err := alock.NewLocker(ctx, os.Getenv("DATABASE_URL"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close(context.Background())

	terms := 0
	for ctx.Err() == nil && terms < 2 {
		err := locker.Lead(ctx, alock.Name("scheduler"), func(ctx context.Context, token int64) error {
			terms++
			fmt.Println("leading, term", terms)
			// Work until ctx ends (shutdown or lost leadership); here, a
			// short term.
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(10 * time.Millisecond):
				return nil // resign
			}
		})
		if errors.Is(err, alock.ErrLost) {
			log.Print("lost the leadership; campaigning again: ", err)
		}
	}
	// Output:
	// leading, term 1
	// leading, term 2
}
