package alock_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pgalock/alock/internal/netns"
	"github.com/pgalock/alock/internal/pgserver"
	"github.com/pgalock/alock/internal/pgtest"
)

// Partition timing of TestSoakPartitions. The workers' Sessions tell of a
// loss 3 s after a cut and the server frees their locks ~5 s after it
// (KeepaliveInterval 1 s, KeepaliveTimeout 2 s), so a cut held
// soakCutHold (plus up to 1 s) ends every Session inside, and one
// soakCutQuiet before the end lets the cut-off workers reconnect, work
// again, and leave no backend behind.
const (
	soakPartitionRun = 24 * time.Second
	soakCutHold      = 4500 * time.Millisecond
	soakCutQuiet     = 6 * time.Second
)

// TestSoakPartitions is the soak (see soakKeys) with partitions: a private
// server listens on the host's end of two namespaces' veth links; a child
// process in each namespace runs two workers whose Sessions go over the
// link (their counters over the server's unix socket, which no cut
// touches: a cut-off holder can still reach the resource, and only the
// fence stops it), and three workers here go over loopback. Beside
// backend terminations and cancels, the nemesis cuts each link, both
// ways or one way, for a few seconds and heals it. A cut counts as the
// fault of every Session that existed inside at the time (linkFault.ends).
// On top of the soak's checks: a cut ends every Session it is counted
// for, and after the last heal each child's workers lock again.
func TestSoakPartitions(t *testing.T) {
	// Not parallel, as TestSoakMutualExclusion: it loads the machine.
	needNetns(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	links, server := soakPartitionServer(t)
	dsn := server.ConnString("postgres") // the unix socket: counters and the nemesis
	admin := pgtest.Connect(t, dsn)
	createCounters(t, admin)
	g := newSoakLog()

	var children []*helperProc
	var readers sync.WaitGroup
	for c, link := range links {
		name := fmt.Sprintf("n%d", c)
		children = append(children, startHelperWith(t, link.Command, "TestHelperSoakWorker",
			"ALOCK_SOAK_DSN="+dsn, "ALOCK_SOAK_NAME="+name, "ALOCK_SOAK_SEED="+strconv.FormatUint(seed+uint64(c)+1, 10),
			"ALOCK_SOAK_LINK_DSN="+server.ConnStringAt(link.Host.String(), "postgres"),
			"ALOCK_SOAK_LINK=ns_"+name, "ALOCK_SOAK_LINKED=2"))
	}
	for _, child := range children {
		g.readChild(t, child, &readers)
	}
	var workers []*soakWorker
	for i := range 3 {
		workers = append(workers, &soakWorker{
			name: fmt.Sprintf("p%d", i), direct: dsn, sessionDSN: server.TCPConnString("postgres"),
			rng: rand.New(rand.NewPCG(seed, uint64(100+i))), report: g.record,
		})
	}

	deadline := time.Now().Add(soakPartitionRun)
	var wg sync.WaitGroup
	startSoak(t, &wg, deadline, children, workers)
	var kills, cancels int
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(seed, 999))
		for time.Sleep(200 * time.Millisecond); time.Until(deadline) > 200*time.Millisecond; {
			time.Sleep(time.Duration(100+rng.IntN(200)) * time.Millisecond)
			if n := rng.IntN(10); n >= 6 {
				if cancelWait(workers, rng) {
					cancels++
				}
				continue
			}
			killed, err := g.terminate(context.Background(), admin, rng, rng.IntN(2) == 0)
			if err != nil {
				t.Errorf("nemesis: %v", err)
				return
			}
			if killed {
				kills++
			}
		}
	})
	cuts := make([]map[netns.Direction]int, len(links))
	for c, link := range links {
		cuts[c] = map[netns.Direction]int{}
		wg.Go(func() {
			if err := cutAndHeal(g, link, fmt.Sprintf("ns_n%d", c), rand.New(rand.NewPCG(seed, uint64(500+c))), c, deadline, cuts[c]); err != nil {
				t.Errorf("nemesis: %v", err)
			}
		})
	}
	wg.Wait()
	finishSoak(t, g, admin, children, &readers)
	checkCuts(t, g)
	t.Logf("faults injected: %d backend terminations, %d cancels by the nemesis; cuts of each namespace: %v",
		kills, cancels, cuts)
}

// soakPartitionServer makes two namespaces and a private server listening
// on their links' host ends.
func soakPartitionServer(t *testing.T) ([]*netns.Link, *pgserver.Server) {
	t.Helper()
	opts := &pgserver.Options{}
	var links []*netns.Link
	for range 2 {
		link, err := netns.New()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := link.Close(); err != nil {
				t.Error(err)
			}
		})
		links = append(links, link)
		opts.ListenAddresses = append(opts.ListenAddresses, link.Host.String())
		opts.TrustedNetworks = append(opts.TrustedNetworks, link.Network())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	server, err := pgserver.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Stop() })
	return links, server
}

// cutAndHeal cuts link (named name in g) again and again until deadline,
// each cut held soakCutHold plus up to a second, in a direction that turns
// with each cut (starting at first), and counts the cuts by direction in
// counts. The last heal comes soakCutQuiet before deadline at the latest.
func cutAndHeal(g *soakLog, link *netns.Link, name string, rng *rand.Rand, first int, deadline time.Time, counts map[netns.Direction]int) error {
	directions := []netns.Direction{netns.Both, netns.ToHost, netns.ToNamespace}
	for i := first; ; i++ {
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		hold := soakCutHold + time.Duration(rng.IntN(1000))*time.Millisecond
		if time.Until(deadline) < hold+soakCutQuiet {
			return nil
		}
		d := directions[i%len(directions)]
		f := g.linkFault(name, "cut "+d.String())
		if err := link.Cut(d); err != nil {
			return err
		}
		counts[d]++
		time.Sleep(hold)
		if err := link.Heal(); err != nil {
			return err
		}
		g.mu.Lock()
		f.Until = time.Now()
		g.mu.Unlock()
	}
}

// checkCuts checks that each cut ended every Session it is counted for
// (none acquired a lock more than a second after the heal: a Session that
// rode out a cut would make the cut a false explanation of its later
// losses), and that each worker in a namespace acquired locks after the
// last heal.
func checkCuts(t *testing.T, g *soakLog) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	lastHeal := map[string]time.Time{}
	for link, faults := range g.linkFaults {
		for _, f := range faults {
			lastHeal[link] = maxTime(lastHeal[link], f.Until)
		}
	}
	survived, after := 0, map[string]int{}
	var byCut, byKill, byNone int
	var told time.Duration // longest from a cut to the Lost it caused
	for _, s := range g.sections {
		session := g.sessions[s.Session]
		if s.lost() {
			switch at, ok := g.faultAt(s.Session); {
			case !ok:
				byNone++
			case g.kills[s.Session].Equal(at):
				byKill++
			default:
				byCut++
				told = max(told, s.LostAt.Sub(at))
				what := ""
				for _, f := range g.linkFaults[session.Link] {
					if f.At.Equal(at) {
						what = f.What
					}
				}
				t.Logf("lost to a %s of %s: %s's Key(%d) acquired %v after the cut began, Release called after %v, Lost after %v",
					what, session.Link, s.Session, s.Key, s.Acq.Sub(at).Round(time.Millisecond),
					s.End.Sub(at).Round(time.Millisecond), s.LostAt.Sub(at).Round(time.Millisecond))
			}
		}
		for _, f := range g.linkFaults[session.Link] {
			if f.ends(session) && s.Acq.After(f.Until.Add(time.Second)) {
				survived++
				if survived <= 5 {
					t.Errorf("session %s outlived the cut of %s from %v to %v: acquired Key(%d) at %v",
						s.Session, session.Link, f.At.Format(time.StampMicro), f.Until.Format(time.StampMicro),
						s.Key, s.Acq.Format(time.StampMicro))
				}
			}
		}
		if session.Link != "" && s.Acq.After(lastHeal[session.Link]) {
			after[s.Worker]++
		}
	}
	for _, s := range g.sessions {
		if _, ok := lastHeal[s.Link]; ok && after[s.Worker] == 0 {
			t.Errorf("worker %s (in %s) acquired nothing after the last heal at %v", s.Worker, s.Link, lastHeal[s.Link].Format(time.StampMicro))
			after[s.Worker] = -1 // once
		}
	}
	t.Logf("lost sections: %d after a cut (Lost at most %v after it), %d after a backend termination, %d after no injected fault",
		byCut, told.Round(time.Millisecond), byKill, byNone)
	t.Logf("sections acquired after the last heal, by worker in a namespace: %v", after)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
