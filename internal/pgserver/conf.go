package pgserver

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// setting is one postgresql.conf entry.
type setting struct{ name, value string }

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// checkSettings rejects names that could not be a configuration parameter
// (and so could corrupt postgresql.conf).
func checkSettings(m map[string]string) error {
	for name, value := range m {
		if !settingName.MatchString(name) {
			return fmt.Errorf("pgserver: invalid setting name %q", name)
		}
		if strings.ContainsAny(value, "\n\r\x00") {
			return fmt.Errorf("pgserver: invalid value for setting %s: contains a line break or NUL", name)
		}
	}
	return nil
}

// sortedSettings returns m's entries in name order, for reproducible files.
func sortedSettings(m map[string]string) []setting {
	list := make([]setting, 0, len(m))
	for name, value := range m {
		list = append(list, setting{name, value})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })
	return list
}

func (s *Server) confFile() string { return filepath.Join(s.dataDir, "postgresql.conf") }

// appendConf appends settings to a postgresql.conf; later lines override
// earlier ones. Appending keeps the file's owner and mode.
func appendConf(path string, list []setting) error {
	esc := strings.NewReplacer(`\`, `\\`, `'`, `''`)
	var b strings.Builder
	for _, st := range list {
		fmt.Fprintf(&b, "%s = '%s'\n", st.name, esc.Replace(st.value))
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgserver: open postgresql.conf: %w", err)
	}
	if _, err := f.WriteString("\n# added by pgserver\n" + b.String()); err != nil {
		f.Close()
		return fmt.Errorf("pgserver: write postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pgserver: write postgresql.conf: %w", err)
	}
	return nil
}

// connString builds a libpq keyword/value connection string as user
// postgres, quoting values where needed.
func connString(host string, port int, dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable",
		QuoteValue(host), port, QuoteValue(dbname))
}

// QuoteValue quotes a libpq keyword/value connection-string value if it is
// empty or contains spaces, quotes or backslashes.
func QuoteValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r'\\") {
		return v
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}
