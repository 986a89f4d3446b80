package main

import (
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/mod/semver"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/ssh"
)

func init() { commands = append(commands, newStatusCmd) }

func newStatusCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each host (reachable, roles, versions) and the etcd members with the quorum, read-only",
		Long: `status connects to every host read-only (strict host keys) and shows whether
it answers, its roles, its binaries' versions and whether it runs a control
plane or joined the cluster; for an external etcd cluster also every member
(voter or learner, healthy, leader, raft index, database size) and the quorum.

It exits 0 only when every host answers and every etcd voter is healthy, and
1 otherwise, after printing the whole table, so a script can wait on it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			c, err := g.loadCluster()
			if err != nil {
				return err
			}
			p, pool := g.pipeline(c, ssh.DefaultParallel, nil)
			defer pool.Close()
			rep, err := p.Status(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(g.stdout, rep); err != nil {
					return err
				}
			} else {
				writeStatus(g, rep)
			}
			if !rep.Healthy {
				return &exitCodeError{code: exitError, err: fmt.Errorf("not healthy (%s): see why above, bring those hosts back, then run kprov status again",
					strings.Join(rep.Problems, "; "))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON (with healthy and problems)")
	return cmd
}

func writeStatus(g *globalOptions, rep *provision.StatusReport) {
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
		if h.Node != "" {
			k8s += ", node " + h.Node
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
	fmt.Fprintln(tw, "MEMBER\tID\tVOTING\tHEALTHY\tLEADER\tVERSION\tRAFT INDEX\tDB SIZE")
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
		version := m.Version
		if version == "" {
			version = "-"
		}
		fmt.Fprintf(tw, "%s\t%x\t%s\t%s\t%s\t%s\t%d\t%d KiB\n", m.Name, m.ID, voting, healthy, leader, version, m.RaftIndex, m.DBSize>>10)
	}
	tw.Flush()
	fmt.Fprintf(g.stdout, "\netcd: %s\n", rep.Quorum)
	if mixed := mixedEtcdVersions(rep.Etcd); mixed != "" {
		fmt.Fprintf(g.stdout, "etcd: %s\n", mixed)
	}
	for _, m := range rep.Etcd {
		if m.Departing {
			fmt.Fprintf(g.stdout, "etcd: member %s (%s) is on no host of the inventory: kprov apply removes it from the cluster (kprov plan shows how)\n", m.Name, m.PeerURL)
		}
	}
}

// mixedEtcdVersions says which members run which etcd version when they do
// not all run the same one, "" otherwise: a rolling upgrade that stopped
// halfway leaves the cluster so, and the next apply finishes it.
func mixedEtcdVersions(members []provision.MemberStatus) string {
	byVersion := map[string][]string{}
	for _, m := range members {
		if m.Version != "" {
			byVersion[m.Version] = append(byVersion[m.Version], m.Name)
		}
	}
	if len(byVersion) < 2 {
		return ""
	}
	var parts []string
	// etcd reports "3.6.16"; semver wants the leading v.
	byRelease := func(a, b string) int { return semver.Compare("v"+a, "v"+b) }
	for _, v := range slices.SortedFunc(maps.Keys(byVersion), byRelease) {
		parts = append(parts, v+" on "+strings.Join(byVersion[v], ", "))
	}
	return "members run different versions (" + strings.Join(parts, "; ") + "): an upgrade is unfinished; run kprov apply to finish it"
}
