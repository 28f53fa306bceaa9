package pgserver

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// checkNetworks rejects listen addresses that are not IP addresses and
// trusted networks that are not CIDR prefixes.
func checkNetworks(opts *Options) error {
	for _, a := range opts.ListenAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Errorf("pgserver: listen address %q: %w", a, err)
		}
	}
	for _, n := range opts.TrustedNetworks {
		if _, err := netip.ParsePrefix(n); err != nil {
			return fmt.Errorf("pgserver: trusted network %q: %w", n, err)
		}
	}
	return nil
}

// trust appends pg_hba.conf lines that trust TCP connections from networks.
func (s *Server) trust(networks []string) error {
	if len(networks) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("\n# added by pgserver\n")
	for _, n := range networks {
		fmt.Fprintf(&b, "host all all %s trust\nhost replication all %s trust\n", n, n)
	}
	f, err := os.OpenFile(filepath.Join(s.dataDir, "pg_hba.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgserver: open pg_hba.conf: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("pgserver: write pg_hba.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pgserver: write pg_hba.conf: %w", err)
	}
	return nil
}

// ConnStringAt returns a libpq keyword/value connection string for database
// dbname as user postgres over TCP to host (one of ListenAddresses).
func (s *Server) ConnStringAt(host, dbname string) string {
	return connString(host, s.port, dbname)
}
