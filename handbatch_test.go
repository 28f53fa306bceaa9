package alock_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	dead chan struct{} // closed when the leader has returned, with err set
	err  error

	statements, sent atomic.Int64 // statements sent, and the operations in them
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
	return startBatcher(func(h *handBatcher) error { return h.lead(conn) })
}

// startPipelinedBatcher is startHandBatcher with up to two batches at the
// server at once (a pgconn pipeline): whatever was submitted is sent as
// soon as fewer than two statements are at the server, before the older
// one's result is read, so the server need not wait for the client
// between batches (only when nothing was submitted meanwhile).
// BenchmarkBatchingCeiling compares the two.
func startPipelinedBatcher(conn *pgx.Conn) *handBatcher {
	return startBatcher(func(h *handBatcher) error { return h.leadPipelined(conn) })
}

func startBatcher(lead func(*handBatcher) error) *handBatcher {
	h := &handBatcher{ops: make(chan *handOp, 1024), quit: make(chan struct{}), dead: make(chan struct{})}
	go func() {
		h.err = lead(h)
		close(h.dead) // the submitters waiting for it return, and stop
	}()
	return h
}

// collect returns the ops submitted meanwhile, after waiting for a first
// one if wait is set; nil once stopped.
func (h *handBatcher) collect(batch []*handOp, wait bool) []*handOp {
	batch = batch[:0]
	if wait {
		select {
		case op := <-h.ops:
			batch = append(batch, op)
		case <-h.quit:
			return nil
		}
	}
	for {
		select {
		case op := <-h.ops:
			batch = append(batch, op)
		default:
			return batch
		}
	}
}

// keys returns the keys of batch's unlocks and of its tries.
func keys(batch []*handOp) (unlockKeys, tryKeys []int64) {
	for _, op := range batch {
		if op.unlock {
			unlockKeys = append(unlockKeys, op.key)
		} else {
			tryKeys = append(tryKeys, op.key)
		}
	}
	return unlockKeys, tryKeys
}

// finish checks a batch's result and wakes its submitters.
func finish(batch []*handOp, text string) error {
	// Own keys in these benchmarks: every call succeeds.
	if text != ";" {
		return fmt.Errorf("hand batch: calls failed: %q", text)
	}
	for _, op := range batch {
		op.result <- true
	}
	return nil
}

func (h *handBatcher) lead(conn *pgx.Conn) error {
	var batch []*handOp
	for {
		if batch = h.collect(batch, true); batch == nil {
			return nil
		}
		unlockKeys, tryKeys := keys(batch)
		h.sending(len(batch))
		var text string
		if err := conn.QueryRow(context.Background(), handBatchSQL, unlockKeys, tryKeys).Scan(&text); err != nil {
			return err
		}
		if err := finish(batch, text); err != nil {
			return err
		}
	}
}

func (h *handBatcher) leadPipelined(conn *pgx.Conn) error {
	p := conn.PgConn().StartPipeline(context.Background())
	defer p.Close()
	p.SendPrepare("hand_batch", handBatchSQL, nil)
	if err := p.Sync(); err != nil {
		return err
	}
	for range 2 { // the statement's description, then the sync
		if _, err := p.GetResults(); err != nil {
			return err
		}
	}
	var sent [][]*handOp // at the server, oldest first
	for {
		batch := h.collect(nil, len(sent) == 0)
		if batch == nil && len(sent) == 0 {
			return nil
		}
		if len(batch) > 0 {
			unlockKeys, tryKeys := keys(batch)
			h.sending(len(batch))
			p.SendQueryPrepared("hand_batch", [][]byte{int8Array(unlockKeys), int8Array(tryKeys)}, []int16{1}, nil)
			p.SendPipelineSync()
			if err := p.Flush(); err != nil {
				return err
			}
			sent = append(sent, batch)
		}
		if len(sent) == 2 || len(batch) == 0 && len(sent) > 0 {
			text, err := pipelineText(p)
			if err != nil {
				return err
			}
			if err := finish(sent[0], text); err != nil {
				return err
			}
			sent = sent[1:]
		}
	}
}

// pipelineText reads the next batch's one text value and its sync.
func pipelineText(p *pgconn.Pipeline) (string, error) {
	res, err := p.GetResults()
	if err != nil {
		return "", err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		return "", fmt.Errorf("hand batch: pipeline result %T", res)
	}
	var text string
	for rr.NextRow() {
		text = string(rr.Values()[0])
	}
	if _, err := rr.Close(); err != nil {
		return "", err
	}
	_, err = p.GetResults() // the sync
	return text, err
}

// int8Array is keys in the binary format of int8[].
func int8Array(keys []int64) []byte {
	b := make([]byte, 0, 20+12*len(keys))
	for _, v := range []uint32{1, 0, 20, uint32(len(keys)), 1} { // dimensions, no nulls, int8, length, lower bound
		b = binary.BigEndian.AppendUint32(b, v)
	}
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(k))
	}
	return b
}

// do submits op and waits for its result.
func (h *handBatcher) do(op *handOp) (bool, error) {
	select {
	case h.ops <- op:
	case <-h.dead:
		return false, fmt.Errorf("hand batch: the leader ended: %w", h.err)
	}
	select {
	case ok := <-op.result:
		return ok, nil
	case <-h.dead:
		return false, fmt.Errorf("hand batch: the leader ended: %w", h.err)
	}
}

// sending counts a statement of n operations.
func (h *handBatcher) sending(n int) {
	h.statements.Add(1)
	h.sent.Add(int64(n))
}

// perStatement returns the operations a statement carried on average.
func (h *handBatcher) perStatement() float64 {
	return float64(h.sent.Load()) / float64(max(1, h.statements.Load()))
}

// cycle locks and unlocks key.
func (h *handBatcher) cycle(op *handOp, key int64) error {
	op.key = key
	for _, unlock := range []bool{false, true} {
		op.unlock = unlock
		if ok, err := h.do(op); err != nil || !ok {
			return fmt.Errorf("hand batch: key %d unlock=%v failed: %v", key, unlock, err)
		}
	}
	return nil
}

// cycles returns a window's cycle: goroutine w locks and unlocks key
// first+w with ops[w].
func (h *handBatcher) cycles(ops []*handOp, first int64) func(w int) error {
	return func(w int) error { return h.cycle(ops[w], first+int64(w)) }
}

// newHandOps returns n ops, one for each goroutine of a window.
func newHandOps(n int) []*handOp {
	ops := make([]*handOp, n)
	for i := range ops {
		ops[i] = &handOp{result: make(chan bool, 1)}
	}
	return ops
}

// stop ends the leader and returns its error.
func (h *handBatcher) stop() error {
	close(h.quit)
	<-h.dead
	err := h.err
	if err != nil && strings.Contains(err.Error(), "closed") {
		return nil
	}
	return err
}
