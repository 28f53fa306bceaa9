package core

import (
	"context"
	"strings"
	"testing"
)

// refuseConn is a session on which every lock is held elsewhere: each try
// gets nothing.
type refuseConn struct {
	grantConn
	sent []string
}

func (c *refuseConn) QueryText(ctx context.Context, sql string, args []any) (string, error) {
	c.sent = append(c.sent, sql)
	text, err := c.grantConn.QueryText(ctx, sql, args)
	return strings.Replace(text, "1", "0", 1) + ":", err // flags:pid:token
}

// TestWaitSlotPreemptedAtOncePolls: the Lock that takes the session's wait
// slot while another user already queues for the session is preempted
// before it could send its wait; it must then try once and come back soon
// (pollMin, not a poller's growing pause), not return having sent nothing
// (under steady traffic it would never try at all: a freed lock reached it
// 1-3 s late, or only once the traffic stopped).
func TestWaitSlotPreemptedAtOncePolls(t *testing.T) {
	ctx := context.Background()
	c := &refuseConn{}
	g := &roundGuard{}
	l := NewLock(c, func() string { return "test" }, Exclusive, []Tag{KeyTag(1)}, Options{Guard: g, PID: grantPID})
	if err := g.Enter(ctx); err != nil { // the Lock's turn at the session
		t.Fatal(err)
	}
	queued := make(chan error, 1)
	go func() { queued <- g.gate.Enter(ctx) }()
	waitUntil(t, "another user queued", func() bool {
		g.gate.mu.Lock()
		defer g.gate.mu.Unlock()
		return g.gate.queue.Len() == 1
	})
	ok, _, next, err := l.takeOrWait(ctx, operation{"acquire", func() string { return "test" }}, false, l.tags)
	l.freeSlot()
	g.Exit()
	if err := <-queued; err != nil {
		t.Fatal(err)
	}
	g.Exit()
	if err != nil || ok || next != soon {
		t.Fatalf("takeOrWait: ok %v, next %d, err %v; want soon (sent %q)", ok, next, err, c.sent)
	}
	if n := c.statements.Load(); n != 1 {
		t.Fatalf("%d statements sent, want the one try: %q", n, c.sent)
	}
}
