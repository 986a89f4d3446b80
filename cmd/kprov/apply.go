package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

func init() { commands = append(commands, newApplyCmd) }

// applyOptions are apply's own flags.
type applyOptions struct {
	autoApprove bool
	parallel    int
	breakLock   bool
	planFile    string
	detail      bool
	asJSON      bool
}

func newApplyCmd(g *globalOptions) *cobra.Command {
	o := &applyOptions{}
	cmd := &cobra.Command{
		Use:   "apply [PLANFILE]",
		Short: "Bring the hosts to the inventory: preflight, plan, confirm, apply",
		Long: `apply takes the cluster lock on the first master (kept refreshed while it
runs), gathers facts (read-only), runs the preflight checks on every host and
reports all problems together, plans, shows the plan and asks for
confirmation (--auto-approve for scripts), and carries the plan out stage by
stage. Every step checks the live
state first, so running apply again after an interruption converges, and on a
converged cluster it prints "No changes".

With PLANFILE (from kprov plan --out) it applies that plan exactly, and
refuses when the hosts or the inventory changed since it was made.

Without a terminal on stdin nobody can confirm: apply then needs
--auto-approve, but only when the plan has changes; on a converged cluster it
prints "No changes" and exits 0 either way.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.parallel < 1 {
				return usageError("--parallel %d: want 1 or more", o.parallel)
			}
			if len(args) == 1 {
				o.planFile = args[0]
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.apply(ctx, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.autoApprove, "auto-approve", false, "apply without asking (needed when stdin is not a terminal and the plan has changes)")
	f.IntVar(&o.parallel, "parallel", ssh.DefaultParallel, "at most `N` hosts worked on at once where quorum allows")
	f.BoolVar(&o.breakLock, "break-lock", false, "remove a cluster lock left by an apply that died (not refreshed for 30 s), after a warning")
	f.BoolVar(&o.detail, "detail", false, "list every step of the plan with its reason, not one line per group of alike hosts")
	f.BoolVar(&o.asJSON, "json", false, "print one JSON document at the end (plan, report, error); the plan, the question and progress go to stderr")
	return cmd
}

// apply runs the pipeline and prints what it did; the sequence itself is
// provision.Pipeline.Apply.
func (g *globalOptions) apply(ctx context.Context, o *applyOptions) error {
	start := time.Now()
	c, err := g.loadCluster()
	if err != nil {
		return err
	}
	// Before the pipeline's connections exist, which keep sub-loggers.
	var view applyView
	if o.asJSON {
		// stdout is for the document alone; a person still sees the plan,
		// the question and each stage as plain lines on stderr.
		human := *g
		human.stdout = g.stderr
		view = human.textView(c, o.detail)
	} else {
		view = g.applyView(c, o.detail)
	}
	defer view.finish()
	req := provision.ApplyRequest{AutoApprove: o.autoApprove, BreakLock: o.breakLock, LockOwner: lockOwner(start)}
	if o.planFile != "" {
		if req.Saved, err = provision.ReadSavedPlan(o.planFile); err != nil {
			return err
		}
	}
	p, pool := g.pipeline(c, o.parallel, view)
	defer pool.Close()
	res, err := p.Apply(ctx, req)
	view.finish()
	if o.asJSON {
		if jerr := writeJSON(g.stdout, newApplyDocument(res, err)); err == nil {
			err = jerr
		}
		return err
	}
	if res.Report != nil {
		view.report(res.Report, time.Since(start))
	}
	if err != nil {
		return err
	}
	if res.Plan.Empty() {
		fmt.Fprintln(g.stdout, "No changes. The hosts match the inventory.")
		return nil
	}
	if res.Kubeconfig != "" {
		fmt.Fprintf(g.stdout, "Admin kubeconfig: %s\n", res.Kubeconfig)
	}
	return nil
}

// applyDocument is apply --json's one document: what was planned, what ran
// and how it ended. A script reads changes and applied rather than parse
// the text; the exit code says the same as without --json.
type applyDocument struct {
	// Changes is true when the plan had changes (false also when apply
	// stopped before planning).
	Changes bool `json:"changes"`
	// Applied is true when every stage of a plan with changes ran to its end.
	Applied    bool              `json:"applied"`
	Plan       *plan.Plan        `json:"plan,omitempty"`
	Report     *provision.Report `json:"report,omitempty"`
	Kubeconfig string            `json:"kubeconfig,omitempty"`
	Error      string            `json:"error,omitempty"`
}

func newApplyDocument(res *provision.ApplyResult, err error) applyDocument {
	d := applyDocument{Plan: res.Plan, Report: res.Report, Kubeconfig: res.Kubeconfig}
	d.Changes = res.Plan != nil && !res.Plan.Empty()
	d.Applied = d.Changes && err == nil
	if err != nil {
		d.Error = err.Error()
	}
	return d
}

// lockOwner says who holds the lock: user@host, pid and since when.
func lockOwner(start time.Time) string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s@%s pid %d since %s", name, host, os.Getpid(), start.UTC().Format(time.RFC3339))
}
