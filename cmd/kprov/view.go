package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/plan"
)

// textView prints a pipeline's progress as lines: the plan as text, one
// line per stage as it starts and ends (or log records with --log-format
// json, so machines can follow), and the summary tables at the end.
type textView struct {
	g       *globalOptions
	cluster *provision.Cluster
	detail  bool
	stdin   io.Reader
	// stdinTerminal says whether someone can answer Confirm.
	stdinTerminal bool
	// confirm is what Confirm asks and says; the zero value is apply's.
	confirm confirmWords
}

// confirmWords are the words of one command's confirmation.
type confirmWords struct {
	question string // e.g. "Apply?"
	declined string // the error when the answer is not yes
	// noTerminal says how to go on when nobody can answer.
	noTerminal string
}

// applyConfirm is apply's (and restore's) confirmation.
var applyConfirm = confirmWords{
	question:   "Apply?",
	declined:   "apply cancelled; nothing was changed",
	noTerminal: "to apply it, run kprov apply --auto-approve (or save it with kprov plan --out FILE, review it, and run kprov apply FILE --auto-approve)",
}

var _ provision.View = (*textView)(nil)

func (g *globalOptions) textView(c *provision.Cluster, detail bool) *textView {
	return &textView{g: g, cluster: c, detail: detail, stdin: os.Stdin, stdinTerminal: term.IsTerminal(int(os.Stdin.Fd()))}
}

// Plan prints the plan that is about to be confirmed.
func (v *textView) Plan(p *plan.Plan, changes []plan.HostChange) error {
	return p.WriteText(v.g.stdout, changes, plan.TextOptions{Detail: v.detail})
}

// Confirm asks on the terminal. Without one nobody can answer, so it
// refuses: a script never applies a plan nobody saw by accident. The
// pipeline asks only for a plan with changes, so a script can run apply on
// a converged cluster without --auto-approve.
func (v *textView) Confirm(context.Context) error {
	w := v.confirm
	if w.question == "" {
		w = applyConfirm
	}
	if !v.stdinTerminal {
		return usageError("stdin is not a terminal, so nobody can confirm the plan above; nothing was changed: %s", w.noTerminal)
	}
	fmt.Fprintf(v.g.stdout, "\n%s Only 'yes' is accepted. [yes/no]: ", w.question)
	line, err := bufio.NewReader(v.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if strings.TrimSpace(line) != "yes" {
		return &exitCodeError{code: exitError, err: errors.New(w.declined)}
	}
	return nil
}

// Warn logs a warning.
func (v *textView) Warn(msg string, kv ...any) { v.g.log.Warn(msg, kv...) }

// Step logs each change.
func (v *textView) Step(ev provision.StepEvent) {
	if ev.Done && ev.Changed {
		v.g.log.Info("changed", "host", ev.Host, "step", ev.Step.String())
	}
}

// Stage prints one line as a stage starts and one as it ends.
func (v *textView) Stage(ev provision.StageEvent) {
	g := v.g
	st := ev.Stage
	what := stageDescription(st)
	if g.logFormat == "json" {
		kv := []any{"stage", st.Name(), "index", ev.Index, "of", ev.Total, "what", what}
		if ev.Done {
			kv = append(kv, "took", ev.Duration.Round(time.Millisecond).String(), "changed", ev.Changed)
			if ev.Err != nil {
				g.log.Error("stage failed", append(kv, "err", ev.Err)...)
				return
			}
			g.log.Info("stage done", kv...)
			return
		}
		g.log.Info("stage", kv...)
		return
	}
	fmt.Fprintln(g.stdout, stageLine(ev))
}

// stageLine is the line a stage gets as it starts or ends, e.g.
// "[etcd] adding member 2/3 (etcd-2) ..." and "[etcd] adding member 2/3
// (etcd-2): done in 2.1s, 3 changed". Scripts and the end-to-end tests
// follow these lines, so their words change only on purpose.
func stageLine(ev provision.StageEvent) string {
	prefix := "[" + stageTag(ev.Stage) + "] " + stageDescription(ev.Stage)
	switch {
	case !ev.Done:
		return prefix + " ..."
	case ev.Err != nil:
		return fmt.Sprintf("%s: FAILED after %s", prefix, ev.Duration.Round(time.Millisecond))
	default:
		return fmt.Sprintf("%s: done in %s, %d changed", prefix, ev.Duration.Round(time.Millisecond), ev.Changed)
	}
}

// stageTag is the first word of a stage's kind: etcd, control-plane, nodes.
func stageTag(st *plan.Stage) string {
	tag, _, _ := strings.Cut(string(st.Kind), "/")
	return tag
}

// stageDescription is the stage's title; a stage over many hosts adds its
// counts.
func stageDescription(st *plan.Stage) string {
	if st.Target != "" {
		return st.Title
	}
	return fmt.Sprintf("%s: %d steps on %d hosts", st.Title, len(st.Steps), len(st.Hosts()))
}

// report prints the summary: per host what changed, per stage its time.
func (v *textView) report(rep *provision.Report, took time.Duration) {
	w := v.g.stdout
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tROLES\tCHANGED")
	for _, h := range v.cluster.Inventory.Hosts {
		ch := rep.Changes[h.Name]
		what := "-"
		if len(ch) > 0 {
			what = fmt.Sprintf("%d: %s", len(ch), summarizeChanges(ch))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", h.Name, plan.RoleList(h), what)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tHOSTS\tSTEPS\tCHANGED\tTIME")
	for _, s := range rep.Stages {
		status := s.Duration.Round(time.Millisecond).String()
		if s.Err != "" {
			status += " FAILED"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", s.Name, s.Hosts, s.Steps, s.Changed, status)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d changes in %s\n", rep.Changed(), took.Round(time.Millisecond))
}

// summarizeChanges counts a host's changes by operation.
func summarizeChanges(steps []plan.Step) string {
	count := map[plan.Op]int{}
	var order []plan.Op
	for _, s := range steps {
		if count[s.Op] == 0 {
			order = append(order, s.Op)
		}
		count[s.Op]++
	}
	parts := make([]string, 0, len(order))
	for _, op := range order {
		parts = append(parts, fmt.Sprintf("%d %s", count[op], op))
	}
	return strings.Join(parts, ", ")
}
