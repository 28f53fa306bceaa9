package alock_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pgalock/alock/internal/netproxy"
	"github.com/pgalock/alock/internal/pgtest"
)

// The soak (scenario 17, after Jepsen's lock and set workloads): workers in
// this process and in child processes, each with its own Session, take
// exclusive locks over soakKeys keys with random short timeouts and early
// cancels, and in each critical section do a read-sleep-write of the key's
// counter row through a separate plain connection, while a nemesis
// terminates their backends, resets the TCP proxies some of them use, and
// cancels their waits. Afterwards:
//
//   - no two critical sections on one key overlap in time, except after the
//     earlier one's loss: a lost section is cut at the fault that took its
//     lock (or at its Lost, if no injected fault explains it);
//   - every section whose Release succeeded (the server held the lock from
//     grant to unlock) had its fenced read and write accepted, and each
//     counter equals the number of accepted writes;
//   - a worker that holds nothing has no advisory lock in pg_locks, its
//     closed Sessions' backends end, and once every Session is closed,
//     pg_locks shows no advisory lock in the database;
//   - every lost hold's Lost channel was closed, and tokens are unique.
//
// The counter is fenced with the lock's token: the read claims the row
// (token := mine, if smaller) and the write succeeds only if the row still
// carries my token. A holder whose backend was killed keeps running until
// its Lost fires (the watchdog parks only after 50 ms idle), and its write
// must not clobber the next holder's: the claim makes the count exact.
const soakKeys = 3

// TestHelperSoakWorker is a child process of TestSoakMutualExclusion and
// TestSoakPartitions: it runs two workers and prints their events as JSON
// lines. The first ALOCK_SOAK_LINKED of them (default 1) open their
// Sessions through ALOCK_SOAK_LINK_DSN, if given: the parent's proxy, or
// the veth link of the namespace the child runs in, named ALOCK_SOAK_LINK.
func TestHelperSoakWorker(t *testing.T) {
	dsn := os.Getenv("ALOCK_SOAK_DSN")
	if dsn == "" {
		t.Skip("helper process for TestSoakMutualExclusion")
	}
	name := os.Getenv("ALOCK_SOAK_NAME")
	seed, _ := strconv.ParseUint(os.Getenv("ALOCK_SOAK_SEED"), 10, 64)
	var mu sync.Mutex
	report := func(ev soakEvent) {
		b, err := json.Marshal(ev)
		if err != nil {
			panic(err)
		}
		mu.Lock()
		defer mu.Unlock()
		helperPrintf("%s", b)
	}
	workers := make([]*soakWorker, 2)
	for i := range workers {
		workers[i] = &soakWorker{
			name: fmt.Sprintf("%s%d", name, i), direct: dsn, sessionDSN: dsn,
			rng: rand.New(rand.NewPCG(seed, uint64(i))), report: report,
		}
	}
	if d := os.Getenv("ALOCK_SOAK_LINK_DSN"); d != "" {
		linked, err := strconv.Atoi(cmp.Or(os.Getenv("ALOCK_SOAK_LINKED"), "1"))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range workers[:linked] {
			w.sessionDSN, w.link = d, os.Getenv("ALOCK_SOAK_LINK")
		}
	}
	helperPrintf("ready")
	var until int64
	if _, err := fmt.Fscanf(os.Stdin, "%d\n", &until); err != nil {
		t.Fatalf("read the deadline: %v", err)
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			if err := w.run(time.Unix(0, until)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// TestSoakMutualExclusion is scenario 17: see soakKeys.
func TestSoakMutualExclusion(t *testing.T) {
	// Not parallel: it loads the machine, and runs alone so that the tests
	// that time how fast a loss is signalled are not measured under it.
	duration := 6 * time.Second // plus about 3 s to start the children and settle
	if testing.Short() {
		duration = 3 * time.Second
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	admin := pgtest.Connect(t, dsn)
	createCounters(t, admin)
	g := newSoakLog()
	proxies := map[string]*netproxy.Proxy{}

	// Two child processes with two workers each, one of them through a
	// proxy of ours.
	var children []*helperProc
	var readers sync.WaitGroup
	for c := range 2 {
		name := fmt.Sprintf("c%d", c)
		proxy, proxyDSN := throughProxy(t, dsn)
		proxies["proxy_"+name] = proxy
		child := startHelper(t, "TestHelperSoakWorker",
			"ALOCK_SOAK_DSN="+dsn, "ALOCK_SOAK_NAME="+name, "ALOCK_SOAK_SEED="+strconv.FormatUint(seed+uint64(c)+1, 10),
			"ALOCK_SOAK_LINK_DSN="+proxyDSN, "ALOCK_SOAK_LINK=proxy_"+name)
		children = append(children, child)
	}
	for _, child := range children {
		g.readChild(t, child, &readers)
	}

	// Six workers here, three of them through proxies.
	var workers []*soakWorker
	for i := range 6 {
		w := &soakWorker{
			name: fmt.Sprintf("p%d", i), direct: dsn, sessionDSN: dsn,
			rng: rand.New(rand.NewPCG(seed, uint64(100+i))), report: g.record,
		}
		if i < 3 {
			w.link = "proxy_" + w.name
			var proxy *netproxy.Proxy
			proxy, w.sessionDSN = throughProxy(t, dsn)
			proxies[w.link] = proxy
		}
		workers = append(workers, w)
	}

	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	startSoak(t, &wg, deadline, children, workers)
	var faults struct{ kills, resets, cancels int }
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(seed, 999))
		proxyNames := make([]string, 0, len(proxies))
		for name := range proxies {
			proxyNames = append(proxyNames, name)
		}
		// Let the workers get going, and stop early enough that the last
		// faults are noticed before the workers stop.
		for time.Sleep(200 * time.Millisecond); time.Until(deadline) > 200*time.Millisecond; {
			time.Sleep(time.Duration(30+rng.IntN(120)) * time.Millisecond)
			switch n := rng.IntN(10); {
			case n < 5: // terminate a worker's backend, often a lock holder's
				killed, err := g.terminate(ctx, admin, rng, n < 3)
				if err != nil {
					t.Errorf("nemesis: %v", err)
					return
				}
				if killed {
					faults.kills++
				}
			case n < 7: // reset a proxy
				name := proxyNames[rng.IntN(len(proxyNames))]
				g.linkFault(name, "reset")
				proxies[name].Reset()
				faults.resets++
			default: // cancel a wait here
				if cancelWait(workers, rng) {
					faults.cancels++
				}
			}
		}
	})
	wg.Wait()
	finishSoak(t, g, admin, children, &readers)
	t.Logf("faults injected: %d backend terminations, %d proxy resets, %d cancels by the nemesis", faults.kills, faults.resets, faults.cancels)
}
