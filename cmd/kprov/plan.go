package main

import (
	"fmt"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

func init() { commands = append(commands, newPlanCmd) }

func newPlanCmd(g *globalOptions) *cobra.Command {
	var (
		asJSON   bool
		out      string
		offline  bool
		detail   bool
		parallel int
	)
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show every step kprov would take, in order, without changing anything",
		Long: `plan connects to every host read-only (strict host keys), gathers facts
(OS, swap, services, the checksum of every file kprov manages, the live etcd
member list and health through an SSH tunnel) and prints the ordered stages
that would bring the hosts to the inventory, with the quorum at every serial
stage. Hosts whose steps are alike are shown as one line per stage; --detail
lists every step with its reason. Nothing is changed on any host. --offline
plans against fresh hosts without connecting. --out saves the plan with the
facts it was made from.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if parallel < 1 {
				return usageError("--parallel %d: want 1 or more", parallel)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			c, err := g.loadCluster()
			if err != nil {
				return err
			}
			p, pool := g.pipeline(c, parallel, g.textView(c, detail))
			defer pool.Close()
			pl, facts, err := p.PlanOnly(ctx, provision.PlanRequest{Offline: offline, Out: out})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.stdout, pl)
			}
			if err := pl.WriteText(g.stdout, c.HostChanges(pl, facts), plan.TextOptions{Detail: detail}); err != nil {
				return err
			}
			if out != "" {
				fmt.Fprintf(g.stdout, "Saved the plan and the facts it was made from to %s\n", out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the plan as JSON (always complete)")
	f.StringVar(&out, "out", "", "save the plan and the facts it was made from to `FILE` (for kprov apply FILE)")
	f.BoolVar(&offline, "offline", false, "plan against fresh hosts without connecting")
	f.BoolVar(&detail, "detail", false, "list every step with its reason, not one line per group of alike hosts")
	f.IntVar(&parallel, "parallel", ssh.DefaultParallel, "at most `N` hosts worked on at once where quorum allows")
	return cmd
}
