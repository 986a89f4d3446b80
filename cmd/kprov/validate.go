package main

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"

	"github.com/spf13/cobra"

	"github.com/kprov/kprov/inventory"
)

func init() { commands = append(commands, newValidateCmd) }

func newValidateCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check the inventory and show the topology it describes",
		Long: `validate reads the inventory, evaluates its variables, locals and dynamic
blocks, and checks every topology rule without touching the network. It exits
0 when there are no errors (warnings allowed), 1 when there are errors and 2
when the command line is wrong.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			inv, diags, err := g.loadInventory()
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(g.stdout, validateReport(inv, diags)); err != nil {
					return err
				}
				if diags.HasErrors() {
					return silentFailure
				}
				return nil
			}
			writeDiagnostics(g.stdout, inv, diags)
			errs, warns := diagnosticCounts(diags)
			if errs > 0 {
				fmt.Fprintf(g.stdout, "%s: %s, %s\n", g.file, plural(errs, "error"), plural(warns, "warning"))
				return silentFailure
			}
			fmt.Fprintf(g.stdout, "topology: %s\n", inv.Topology.Summary())
			fmt.Fprintf(g.stdout, "api endpoint: %s\n", inv.Cluster.APIEndpointSummary())
			fmt.Fprintf(g.stdout, "%s: valid, %s, %s\n", g.file, plural(len(inv.Hosts), "host"), plural(warns, "warning"))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON document")
	return cmd
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// validateJSON is the --json document of kprov validate.
type validateJSON struct {
	Valid       bool             `json:"valid"`
	File        string           `json:"file"`
	Diagnostics []jsonDiagnostic `json:"diagnostics"`
	Cluster     *clusterJSON     `json:"cluster,omitempty"`
	Topology    *topologyJSON    `json:"topology,omitempty"`
	Hosts       []hostJSON       `json:"hosts,omitempty"`
}

type clusterJSON struct {
	Name                 string `json:"name"`
	KubernetesVersion    string `json:"kubernetes_version"`
	ControlPlaneEndpoint string `json:"control_plane_endpoint,omitempty"`
	APIEndpoint          string `json:"api_endpoint,omitempty"` // node-local, external or direct
	PodSubnet            string `json:"pod_subnet"`
	ServiceSubnet        string `json:"service_subnet"`
	EtcdVersion          string `json:"etcd_version"`
}

type topologyJSON struct {
	inventory.Topology
	Summary             string `json:"summary"`
	EtcdVotingMembers   int    `json:"etcd_voting_members"`
	EtcdQuorum          int    `json:"etcd_quorum"`
	EtcdFaultTolerance  int    `json:"etcd_fault_tolerance"`
	ControlPlaneHA      bool   `json:"control_plane_ha"`
	InfraProductionSize bool   `json:"infra_production_size"`
}

type hostJSON struct {
	Name    string            `json:"name"`
	Address string            `json:"address"`
	Roles   []inventory.Role  `json:"roles"`
	Labels  map[string]string `json:"labels"`
	Taints  []inventory.Taint `json:"taints"`
	SSHUser string            `json:"ssh_user"`
	SSHPort int               `json:"ssh_port"`
}

func validateReport(inv *inventory.Inventory, diags hcl.Diagnostics) validateJSON {
	out := validateJSON{Valid: !diags.HasErrors(), File: inv.Path, Diagnostics: toJSONDiagnostics(diags)}
	if diags.HasErrors() {
		return out
	}
	c := inv.Cluster
	out.Cluster = &clusterJSON{
		Name:                 c.Name,
		KubernetesVersion:    c.KubernetesVersion,
		ControlPlaneEndpoint: c.ControlPlaneEndpoint,
		APIEndpoint:          c.APIEndpoint,
		PodSubnet:            c.PodSubnet.String(),
		ServiceSubnet:        c.ServiceSubnet.String(),
		EtcdVersion:          inv.Etcd.Version,
	}
	t := inv.Topology
	n := len(t.EtcdMembers)
	out.Topology = &topologyJSON{
		Topology:            t,
		Summary:             t.Summary(),
		EtcdVotingMembers:   n,
		EtcdQuorum:          inventory.Quorum(n),
		EtcdFaultTolerance:  inventory.FaultTolerance(n),
		ControlPlaneHA:      len(t.Masters) > 1,
		InfraProductionSize: len(t.Infra) == 0 || len(t.Infra) >= 3,
	}
	out.Hosts = make([]hostJSON, 0, len(inv.Hosts))
	for _, h := range inv.Hosts {
		taints := h.Taints
		if taints == nil {
			taints = []inventory.Taint{}
		}
		out.Hosts = append(out.Hosts, hostJSON{
			Name: h.Name, Address: h.Address, Roles: h.Roles, Labels: h.Labels, Taints: taints,
			SSHUser: h.SSH.User, SSHPort: h.SSH.Port,
		})
	}
	return out
}
