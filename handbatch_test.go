package alock_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// handBatcher is BenchmarkLockerThroughput's second baseline: the least a
// batching lock client must do, written by hand. One goroutine sends every
// try and unlock submitted meanwhile in one statement on one connection
// (the statement's shape is the library's: one part per function, failures
// listed), and wakes the submitters. It keeps no state: no in-process
// table, no holds, no loss, no cancellation. The gap between it and a
// Locker is what the Locker's own bookkeeping costs.
type handBatcher struct {
	ops  chan *handOp
	quit chan struct{}
	done chan error
}

// handOp is one submitted try or unlock; ok says whether it succeeded.
type handOp struct {
	key    int64
	unlock bool
	result chan bool
}

const handBatchSQL = `SELECT concat(
(SELECT string_agg(o::text, ',') FILTER (WHERE NOT pg_advisory_unlock(k)) FROM unnest($1::int8[]) WITH ORDINALITY AS t(k, o)), ';',
(SELECT string_agg(o::text, ',') FILTER (WHERE NOT pg_try_advisory_lock(k)) FROM unnest($2::int8[]) WITH ORDINALITY AS t(k, o)))`

func startHandBatcher(conn *pgx.Conn) *handBatcher {
	h := &handBatcher{ops: make(chan *handOp, 1024), quit: make(chan struct{}), done: make(chan error, 1)}
	go func() { h.done <- h.lead(conn) }()
	return h
}

func (h *handBatcher) lead(conn *pgx.Conn) error {
	var batch, unlocks, tries []*handOp
	for {
		batch = batch[:0]
		select {
		case op := <-h.ops:
			batch = append(batch, op)
		case <-h.quit:
			return nil
		}
	drain:
		for {
			select {
			case op := <-h.ops:
				batch = append(batch, op)
			default:
				break drain
			}
		}
		unlocks, tries = unlocks[:0], tries[:0]
		var unlockKeys, tryKeys []int64
		for _, op := range batch {
			if op.unlock {
				unlocks, unlockKeys = append(unlocks, op), append(unlockKeys, op.key)
			} else {
				tries, tryKeys = append(tries, op), append(tryKeys, op.key)
			}
		}
		var text string
		if err := conn.QueryRow(context.Background(), handBatchSQL, unlockKeys, tryKeys).Scan(&text); err != nil {
			return err
		}
		// Own keys in this benchmark: every call succeeds.
		if text != ";" {
			return fmt.Errorf("hand batch: calls failed: %q", text)
		}
		for _, op := range batch {
			op.result <- true
		}
	}
}

// do submits op and waits for its result.
func (h *handBatcher) do(op *handOp) bool {
	h.ops <- op
	return <-op.result
}

// cycle locks and unlocks key.
func (h *handBatcher) cycle(op *handOp, key int64) error {
	op.key = key
	for _, unlock := range []bool{false, true} {
		op.unlock = unlock
		if !h.do(op) {
			return fmt.Errorf("hand batch: key %d unlock=%v failed", key, unlock)
		}
	}
	return nil
}

// stop ends the leader and returns its error.
func (h *handBatcher) stop() error {
	close(h.quit)
	err := <-h.done
	if err != nil && strings.Contains(err.Error(), "closed") {
		return nil
	}
	return err
}
