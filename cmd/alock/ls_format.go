package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// writeTable writes the snapshot as an aligned table, then notes on what
// could not be seen.
func (s *snapshot) writeTable(w io.Writer) error {
	if len(s.rows) == 0 {
		fmt.Fprintf(w, "No advisory locks in database %q.\n", s.database)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tMODE\tSTATE\tFOR\tPID\tUSER\tCLIENT\tAPPLICATION\tBLOCKED BY")
	for _, r := range s.rows {
		state := "held"
		if !r.granted {
			state = "waiting"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.id, orDash(r.name), r.mode, state,
			s.age(&r), r.pidText(), orDash(derefOr(r.user, "")), r.clientText(),
			orDash(derefOr(r.app, "")), joinPIDs(r.blockedBy, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range s.notes() {
		fmt.Fprintln(w, "Note: "+n)
	}
	return nil
}

// age returns how long r has been waiting, or an upper bound of how long
// it has been held (the age of its session): PostgreSQL does not record
// when a lock was granted.
func (s *snapshot) age(r *lockInfo) string {
	switch {
	case !r.granted && r.waitStart != nil:
		return formatAge(s.now.Sub(*r.waitStart))
	case r.granted && r.sessionStart != nil:
		return "<=" + formatAge(s.now.Sub(*r.sessionStart))
	}
	return "?"
}

// formatAge formats d to a tenth of a second under a minute, else to the
// second.
func formatAge(d time.Duration) string {
	if d < time.Minute {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
	return d.Round(time.Second).String()
}

// pidText returns the pid, or "prepared" for a prepared transaction.
func (r *lockInfo) pidText() string {
	if r.pid == nil {
		return prepared
	}
	return strconv.Itoa(int(*r.pid))
}

// prepared stands for a prepared transaction where a pid would be: it has
// no session.
const prepared = "prepared"

// blockerText returns a pid of pg_blocking_pids as pidText would: there, 0
// is a prepared transaction.
func blockerText(p int32) string {
	if p == 0 {
		return prepared
	}
	return strconv.Itoa(int(p))
}

// holderText names a session by the text of its pid (see pidText): "pid
// 42", or "a prepared transaction".
func holderText(pid string) string {
	if pid == prepared {
		return "a prepared transaction"
	}
	return "pid " + pid
}

// clientText returns the client address, "local" for a unix socket, or
// "?" when hidden.
func (r *lockInfo) clientText() string {
	switch {
	case r.client != nil:
		return *r.client
	case r.visible():
		return "local"
	case r.pid == nil:
		return "-"
	}
	return "?"
}

// orDash returns s, or "-" if it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// joinPIDs joins pids (as blockerText shows them) with sep, or returns "-"
// if there are none.
func joinPIDs(pids []int32, sep string) string {
	if len(pids) == 0 {
		return "-"
	}
	parts := make([]string, len(pids))
	for i, p := range pids {
		parts[i] = blockerText(p)
	}
	return strings.Join(parts, sep)
}

// notes says what the snapshot could not show.
func (s *snapshot) notes() []string {
	var hidden, gone, nPrepared int
	for _, r := range s.rows {
		switch {
		case r.pid == nil:
			nPrepared++
		case !r.inActivity:
			gone++
		case !r.visible():
			hidden++
		}
	}
	var notes []string
	if hidden > 0 {
		notes = append(notes, fmt.Sprintf("%d row(s) belong to other users' sessions, whose client address "+
			"and session start are hidden (\"?\"): that needs superuser or the pg_read_all_stats role", hidden))
	}
	if gone > 0 {
		notes = append(notes, fmt.Sprintf("%d row(s) belong to sessions that ended while alock ls looked", gone))
	}
	if nPrepared > 0 {
		notes = append(notes, fmt.Sprintf("%d row(s) are held by prepared transactions, which have no session", nPrepared))
	}
	return notes
}

// jsonSnapshot is the --json schema, documented in lsUsage.
type jsonSnapshot struct {
	Database string     `json:"database"`
	Now      time.Time  `json:"now"`
	Locks    []jsonLock `json:"locks"`
	Notes    []string   `json:"notes"`
}

// jsonLock is one lock of jsonSnapshot.
type jsonLock struct {
	ID              string     `json:"id"`
	Key             *int64     `json:"key"`
	Pair            *[2]int32  `json:"pair"`
	Name            *string    `json:"name"`
	ClassID         uint32     `json:"classid"`
	ObjID           uint32     `json:"objid"`
	ObjSubID        uint16     `json:"objsubid"`
	Mode            string     `json:"mode"`
	Granted         bool       `json:"granted"`
	WaitStart       *time.Time `json:"wait_start"`
	WaitSeconds     *float64   `json:"wait_seconds"`
	PID             *int32     `json:"pid"`
	ApplicationName *string    `json:"application_name"`
	User            *string    `json:"user"`
	ClientAddr      *string    `json:"client_addr"`
	SessionStart    *time.Time `json:"session_start"`
	Visible         bool       `json:"visible"`
	BlockedBy       []int32    `json:"blocked_by"`
}

// writeJSON writes the snapshot as one indented JSON object.
func (s *snapshot) writeJSON(w io.Writer) error {
	out := jsonSnapshot{Database: s.database, Now: s.now, Locks: []jsonLock{}, Notes: s.notes()}
	if out.Notes == nil {
		out.Notes = []string{}
	}
	for _, r := range s.rows {
		out.Locks = append(out.Locks, s.jsonLock(r))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// jsonLock converts r to the JSON schema.
func (s *snapshot) jsonLock(r lockInfo) jsonLock {
	c, o, sub := r.id.LockTag()
	j := jsonLock{ID: r.id.String(), ClassID: c, ObjID: o, ObjSubID: sub, Mode: r.mode, Granted: r.granted,
		WaitStart: r.waitStart, PID: r.pid, ApplicationName: r.app, User: r.user, ClientAddr: r.client,
		SessionStart: r.sessionStart, Visible: r.visible(), BlockedBy: r.blockedBy}
	if sub == 1 {
		k := idKey(r.id)
		j.Key = &k
	} else {
		j.Pair = &[2]int32{int32(c), int32(o)}
	}
	if r.name != "" {
		j.Name = &r.name
	}
	if !r.granted && r.waitStart != nil {
		secs := s.now.Sub(*r.waitStart).Seconds()
		j.WaitSeconds = &secs
	}
	if j.BlockedBy == nil {
		j.BlockedBy = []int32{}
	}
	return j
}
