package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/ssh"
)

func init() { commands = append(commands, newStatusCmd) }

// statusReport is what kprov status --json prints.
type statusReport struct {
	Hosts []hostStatus             `json:"hosts"`
	Etcd  []provision.MemberStatus `json:"etcd,omitempty"`
	// Quorum is the etcd figure, e.g. "3 voting, quorum 2, 3 healthy".
	Quorum    string `json:"quorum,omitempty"`
	EtcdError string `json:"etcd_error,omitempty"`
}

type hostStatus struct {
	Name         string            `json:"name"`
	Reachable    bool              `json:"reachable"`
	Error        string            `json:"error,omitempty"`
	Roles        string            `json:"roles"`
	Versions     map[string]string `json:"versions,omitempty"`
	ControlPlane bool              `json:"control_plane"`
	Joined       bool              `json:"joined"`
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each host (reachable, roles, versions) and the etcd members with the quorum, read-only",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			c, err := g.loadCluster()
			if err != nil {
				return err
			}
			pool := g.sshPool()
			defer pool.Close()
			conn := &provision.PoolConnector{Pool: pool, Inventory: c.inv}
			facts, err := g.gatherFacts(ctx, c, conn, ssh.DefaultParallel)
			if err != nil {
				return err
			}
			rep := statusReport{}
			roles := hostRoles(c)
			for _, h := range c.inv.Hosts {
				hf := facts.Hosts[h.Name]
				hs := hostStatus{Name: h.Name, Roles: roles[h.Name]}
				if hf != nil {
					hs.Reachable, hs.Error, hs.Versions = hf.Reachable, hf.Error, hf.Versions
					hs.ControlPlane, hs.Joined = hf.ControlPlane, hf.Joined
				}
				rep.Hosts = append(rep.Hosts, hs)
			}
			if c.inv.Topology.EtcdMode == inventory.EtcdExternal {
				tlsCfg, err := provision.EtcdClientTLS(c.state)
				if err != nil {
					return err
				}
				if rep.Etcd, err = provision.EtcdStatus(ctx, c.inv, conn, tlsCfg); err != nil {
					rep.EtcdError = err.Error()
				}
				voting, healthy := 0, 0
				for _, m := range rep.Etcd {
					if !m.Learner {
						voting++
						if m.Healthy {
							healthy++
						}
					}
				}
				if len(rep.Etcd) > 0 {
					rep.Quorum = fmt.Sprintf("%d voting, quorum %d, %d healthy", voting, inventory.Quorum(voting), healthy)
				}
			}
			if asJSON {
				return writeJSON(g.stdout, rep)
			}
			writeStatus(g, rep)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func writeStatus(g *globalOptions, rep statusReport) {
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tREACHABLE\tROLES\tVERSIONS\tKUBERNETES")
	for _, h := range rep.Hosts {
		reach := "yes"
		if !h.Reachable {
			reach = "no: " + h.Error
		}
		var vs []string
		for _, b := range []string{"etcd", "kubeadm", "kubelet", "kubectl"} {
			if v, ok := h.Versions[b]; ok {
				vs = append(vs, b+" "+v)
			}
		}
		k8s := "-"
		switch {
		case h.ControlPlane:
			k8s = "control plane"
		case h.Joined:
			k8s = "joined"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Name, reach, h.Roles, strings.Join(vs, ", "), k8s)
	}
	tw.Flush()
	if rep.EtcdError != "" {
		fmt.Fprintf(g.stdout, "\netcd: %s\n", rep.EtcdError)
	}
	if len(rep.Etcd) == 0 {
		return
	}
	fmt.Fprintln(g.stdout)
	tw = tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tID\tVOTING\tHEALTHY\tLEADER\tRAFT INDEX\tDB SIZE")
	for _, m := range rep.Etcd {
		voting := "voter"
		if m.Learner {
			voting = "learner"
		}
		healthy := "yes"
		if !m.Healthy {
			healthy = "no"
			if m.Error != "" {
				healthy = "no: " + m.Error
			}
		}
		leader := ""
		if m.Leader {
			leader = "leader"
		}
		fmt.Fprintf(tw, "%s\t%x\t%s\t%s\t%s\t%d\t%d KiB\n", m.Name, m.ID, voting, healthy, leader, m.RaftIndex, m.DBSize>>10)
	}
	tw.Flush()
	fmt.Fprintf(g.stdout, "\netcd: %s\n", rep.Quorum)
}
