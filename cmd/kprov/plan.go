package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
	"github.com/kprov/kprov/roles"
)

func init() { commands = append(commands, newPlanCmd) }

// savedPlan is what --out writes: the plan and the facts it was made from,
// so a later apply can refuse it when the hosts have changed since.
type savedPlan struct {
	Version   int         `json:"version"`
	Inventory string      `json:"inventory"`
	Facts     *plan.Facts `json:"facts"`
	Plan      *plan.Plan  `json:"plan"`
}

const savedPlanVersion = 1

func newPlanCmd(g *globalOptions) *cobra.Command {
	var (
		asJSON   bool
		out      string
		offline  bool
		parallel int
	)
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show every step kprov would take, in order, without changing anything",
		Long: `plan connects to every host read-only (strict host keys), gathers facts
(OS, swap, services, the checksum of every file kprov manages, the live etcd
member list and health through an SSH tunnel) and prints the ordered stages
that would bring the hosts to the inventory, with the quorum at every serial
stage. Nothing is changed on any host. --offline plans against fresh hosts
without connecting. --out saves the plan with the facts it was made from.`,
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
			facts, err := g.facts(ctx, c, offline, parallel)
			if err != nil {
				return err
			}
			pl, err := roles.Plan(c.inv, facts, c.state, roles.PlanOptions{Parallel: parallel, Templates: c.tmpl})
			if err != nil {
				return err
			}
			if out != "" {
				if err := writeSavedPlan(out, &savedPlan{Version: savedPlanVersion, Inventory: c.inv.Path, Facts: facts, Plan: pl}); err != nil {
					return err
				}
			}
			if asJSON {
				return writeJSON(g.stdout, pl)
			}
			if err := pl.WriteText(g.stdout, pl.HostChanges(hostNames(c), hostRoles(c), facts)); err != nil {
				return err
			}
			if out != "" {
				fmt.Fprintf(g.stdout, "Saved the plan and the facts it was made from to %s\n", out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	f.StringVar(&out, "out", "", "save the plan and its facts to this file")
	f.BoolVar(&offline, "offline", false, "plan against fresh hosts without connecting")
	f.IntVar(&parallel, "parallel", ssh.DefaultParallel, "hosts worked on at once where quorum allows")
	return cmd
}

// facts gathers live facts, or the facts of fresh hosts when offline.
func (g *globalOptions) facts(ctx context.Context, c *cluster, offline bool, parallel int) (*plan.Facts, error) {
	if offline {
		return plan.FreshFacts(hostNames(c)), nil
	}
	pool := g.sshPool()
	defer pool.Close()
	return g.gatherFacts(ctx, c, &provision.PoolConnector{Pool: pool, Inventory: c.inv}, parallel)
}

func hostNames(c *cluster) []string {
	out := make([]string, len(c.inv.Hosts))
	for i, h := range c.inv.Hosts {
		out[i] = h.Name
	}
	return out
}

func hostRoles(c *cluster) map[string]string {
	out := map[string]string{}
	for _, h := range c.inv.Hosts {
		rs := make([]string, len(h.Roles))
		for i, r := range h.Roles {
			rs[i] = string(r)
		}
		out[h.Name] = strings.Join(rs, ",")
	}
	return out
}

// writeSavedPlan writes the plan file 0600 (it names every host and file of
// the cluster) through a temporary name, so a crash never leaves half a plan.
func writeSavedPlan(path string, sp *savedPlan) error {
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("save plan: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save plan: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
