// Package netns puts test processes behind a network link that a test can
// cut silently: a Linux network namespace joined to the host's by a veth
// pair, with a private /30 network. A cut is a tc blackhole qdisc on one or
// both ends of the pair, which drops every packet leaving that end with no
// reset, no FIN and no ICMP, as a pulled cable or a partitioned switch
// would. It needs root and the ip and tc commands (iproute2).
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Direction names which way a cut drops packets.
type Direction int

const (
	// Both drops every packet, both ways.
	Both Direction = iota
	// ToNamespace drops what the host sends into the namespace (a server's
	// replies to its client inside).
	ToNamespace
	// ToHost drops what the namespace sends to the host (the client's
	// requests, acknowledgements and keepalive probes).
	ToHost
)

func (d Direction) String() string {
	return [...]string{"both ways", "host to namespace", "namespace to host"}[d]
}

// Link is a network namespace with a veth pair to the host.
type Link struct {
	Name     string     // the namespace, for ip netns exec
	Host, NS netip.Addr // the pair's addresses: the host's end, the namespace's end
	hostIf   string
	nsIf     string
}

// cmdTimeout bounds each ip or tc command.
const cmdTimeout = 10 * time.Second

// Available returns nil if namespaces can be made here, or why not.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("netns: needs root (ip netns, tc)")
	}
	for _, c := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("netns: %s (iproute2) not found: %w", c, err)
		}
	}
	return nil
}

// New makes a namespace, a veth pair between it and the host, and a random
// /30 in 10.213.0.0/16 for the pair, and brings it up. Close undoes it.
func New() (*Link, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	tag := hex.EncodeToString(b[:])
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<14))
	k := int(n.Int64())
	base := [4]byte{10, 213, byte(k >> 6), byte(k&63) << 2}
	l := &Link{Name: "alock-" + tag, hostIf: "alk" + tag + "h", nsIf: "alk" + tag + "n"}
	l.Host = netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + 1})
	l.NS = netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + 2})
	err := run([][]string{
		{"ip", "netns", "add", l.Name},
		{"ip", "link", "add", l.hostIf, "type", "veth", "peer", "name", l.nsIf},
		{"ip", "link", "set", l.nsIf, "netns", l.Name},
		{"ip", "addr", "add", l.Host.String() + "/30", "dev", l.hostIf},
		{"ip", "link", "set", l.hostIf, "up"},
		{"ip", "-n", l.Name, "addr", "add", l.NS.String() + "/30", "dev", l.nsIf},
		{"ip", "-n", l.Name, "link", "set", l.nsIf, "up"},
		{"ip", "-n", l.Name, "link", "set", "lo", "up"},
	})
	if err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

// Network returns the pair's /30, for pg_hba.conf.
func (l *Link) Network() string { return netip.PrefixFrom(l.Host, 30).Masked().String() }

// Command returns a command that runs name with args inside the namespace.
func (l *Link) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.Name, name}, args...)...)
}

// Cut starts dropping packets in direction d, silently.
func (l *Link) Cut(d Direction) error {
	var cmds [][]string
	if d != ToHost {
		cmds = append(cmds, []string{"tc", "qdisc", "add", "dev", l.hostIf, "root", "blackhole"})
	}
	if d != ToNamespace {
		cmds = append(cmds, []string{"tc", "-n", l.Name, "qdisc", "add", "dev", l.nsIf, "root", "blackhole"})
	}
	return run(cmds)
}

// Heal removes every cut.
func (l *Link) Heal() error {
	var errs []error
	for _, c := range [][]string{
		{"tc", "qdisc", "del", "dev", l.hostIf, "root"},
		{"tc", "-n", l.Name, "qdisc", "del", "dev", l.nsIf, "root"},
	} {
		if err := run([][]string{c}); err != nil && !strings.Contains(err.Error(), "No such file") &&
			!strings.Contains(err.Error(), "Cannot delete qdisc with handle of zero") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close deletes the pair and the namespace (processes still inside keep
// running, cut off).
func (l *Link) Close() error {
	var errs []error
	if _, err := net.InterfaceByName(l.hostIf); err == nil {
		errs = append(errs, run([][]string{{"ip", "link", "del", l.hostIf}}))
	}
	errs = append(errs, run([][]string{{"ip", "netns", "del", l.Name}}))
	return errors.Join(errs...)
}

// run runs each command in turn, stopping at the first failure.
func run(cmds [][]string) error {
	for _, c := range cmds {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("netns: %s: %w: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
