package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// writeDot writes the snapshot as a Graphviz wait-for graph: a node per
// session, labelled with what it holds, and an edge from each waiter to
// each session that blocks it, labelled with the lock it waits for.
func (s *snapshot) writeDot(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph alock {\n  label=%s;\n  rankdir=LR;\n  node [shape=box];\n",
		dotQuote(fmt.Sprintf("advisory locks of database %s", s.database)))
	for _, n := range s.dotNodes() {
		fmt.Fprintf(&b, "  %s [label=%s];\n", dotQuote(n.key), dotQuote(n.label))
	}
	for _, r := range s.rows {
		for _, p := range r.blockedBy {
			fmt.Fprintf(&b, "  %s -> %s [label=%s];\n", dotQuote(r.pidText()), dotQuote(blockerText(p)),
				dotQuote(fmt.Sprintf("%s %s, waiting %s", displayID(r), r.mode, s.age(&r))))
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// dotNode is a node of the wait-for graph.
type dotNode struct{ key, label string }

// dotNodes returns a node for every session that holds, awaits or blocks a
// lock, in order of first appearance.
func (s *snapshot) dotNodes() []dotNode {
	var order []string
	labels := make(map[string][]string)
	add := func(key, line string) {
		if _, ok := labels[key]; !ok {
			order = append(order, key)
			labels[key] = []string{holderText(key)}
		}
		if line != "" {
			labels[key] = append(labels[key], line)
		}
	}
	for _, r := range s.rows {
		add(r.pidText(), "")
		if app := derefOr(r.app, ""); app != "" && !slices.Contains(labels[r.pidText()], app) {
			labels[r.pidText()] = slices.Insert(labels[r.pidText()], 1, app)
		}
		if r.granted {
			add(r.pidText(), fmt.Sprintf("holds %s %s", displayID(r), r.mode))
		}
		for _, p := range r.blockedBy {
			add(blockerText(p), "")
		}
	}
	nodes := make([]dotNode, len(order))
	for i, k := range order {
		nodes[i] = dotNode{k, strings.Join(labels[k], "\n")}
	}
	return nodes
}

// displayID returns r's id with its name, if known.
func displayID(r lockInfo) string { return describeID(r.id, r.name) }

// dotQuote quotes s as a Graphviz string; a newline becomes a line break.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
