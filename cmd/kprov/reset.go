package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/ssh"
)

func init() { commands = append(commands, newResetCmd) }

// resetOptions are reset's own flags.
type resetOptions struct {
	hosts       []string
	autoApprove bool
	parallel    int
	breakLock   bool
	detail      bool
}

// resetConfirm is reset's confirmation.
var resetConfirm = confirmWords{
	question:   "Reset these hosts? What the plan lists is deleted.",
	declined:   "reset cancelled; nothing was changed",
	noTerminal: "to reset them, run kprov reset again with --auto-approve",
}

func newResetCmd(g *globalOptions) *cobra.Command {
	o := &resetOptions{}
	cmd := &cobra.Command{
		Use:   "reset [--host NAME ...]",
		Short: "Take hosts out of service and back to clean, removing only what kprov put there",
		Long: `reset takes hosts out of service and back to where a fresh kprov apply
works, removing only what kprov installed or created there: kubeadm's state
(kubeadm reset -f), the images kprov imported, kprov's units (stopped and
disabled), the etcd data directory, the rendered files and certificates,
the artifacts' binaries (only while they have the artifact's checksum) and
kprov's directories when they are left empty.

Without --host it resets every host of the inventory; an unreachable host is
skipped, and the plan says so and what stays on it. The admin kubeconfig in
the state directory goes too; the CAs and keys stay.

With --host (repeatable) it resets only those hosts, as a scale-in, and
refuses when that would take the control plane's last master or leave etcd
(external, or stacked on the masters) with fewer than 3 voting members:
nodes are drained first through a master that stays; an external etcd
member is removed from the cluster while every other member is healthy
(leadership moved away first), and only then stopped and wiped; the Node
objects are deleted last. The inventory still lists the hosts afterwards:
the next kprov apply adds them back unless they are removed from it.

It takes the cluster lock, shows the plan and asks (--auto-approve for
scripts). Run again, it finds nothing left and prints "No changes".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.parallel < 1 {
				return usageError("--parallel %d: want 1 or more", o.parallel)
			}
			for _, h := range o.hosts {
				if strings.TrimSpace(h) == "" {
					return usageError("--host: want a host name of the inventory")
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.reset(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.hosts, "host", nil, "reset only host `NAME` (repeatable); without it every host of the inventory")
	f.BoolVar(&o.autoApprove, "auto-approve", false, "reset without asking (needed when stdin is not a terminal and there is something to reset)")
	f.IntVar(&o.parallel, "parallel", ssh.DefaultParallel, "at most `N` hosts worked on at once where quorum allows")
	f.BoolVar(&o.breakLock, "break-lock", false, "remove a cluster lock left by a run that died (not refreshed for 30 s), after a warning")
	f.BoolVar(&o.detail, "detail", false, "list every step of the plan with its reason")
	return cmd
}

// reset runs the pipeline's reset and prints what it did.
func (g *globalOptions) reset(ctx context.Context, o *resetOptions) error {
	start := time.Now()
	c, err := g.loadCluster()
	if err != nil {
		return err
	}
	view := g.applyView(c, o.detail)
	setConfirm(view, resetConfirm)
	defer view.finish()
	p, pool := g.pipeline(c, o.parallel, view)
	defer pool.Close()
	res, err := p.Reset(ctx, provision.ResetRequest{Hosts: o.hosts, AutoApprove: o.autoApprove, BreakLock: o.breakLock, LockOwner: lockOwner(start)})
	view.finish()
	if res.Report != nil {
		view.report(res.Report, time.Since(start))
	}
	if err != nil {
		return err
	}
	if res.RemovedKubeconfig != "" {
		fmt.Fprintf(g.stdout, "Removed %s: the cluster it named is gone (the CAs and keys in the state directory stay for the next kprov apply).\n", res.RemovedKubeconfig)
	}
	if res.Plan.Empty() {
		if !res.Changed() {
			fmt.Fprintln(g.stdout, "No changes. Nothing of kprov's is left to reset on the reachable hosts.")
		}
		for _, n := range res.Plan.Notes {
			fmt.Fprintf(g.stdout, "Note: %s\n", n)
		}
		return nil
	}
	if len(o.hosts) > 0 {
		fmt.Fprintf(g.stdout, "Reset %s. The inventory still lists %s: the next kprov apply adds %s back unless %s removed from the inventory.\n",
			strings.Join(o.hosts, ", "), strings.Join(o.hosts, ", "), them(len(o.hosts)), isAre(len(o.hosts)))
	}
	return nil
}

func them(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

func isAre(n int) string {
	if n == 1 {
		return "it is"
	}
	return "they are"
}

// setConfirm gives a view the words of its command's confirmation.
func setConfirm(v applyView, w confirmWords) {
	switch v := v.(type) {
	case *textView:
		v.confirm = w
	case *termView:
		v.confirm = w
	}
}
