package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/kprov/kprov/inventory"
)

// The inventory `kprov lab up` writes must be one kprov accepts, for every
// topology and machine count, with the topology the lab promises.
func TestRenderedInventoryValidates(t *testing.T) {
	cases := map[string]string{
		"single":      "single node: 1 master, stacked etcd (1 member, quorum 1, tolerates 0 failures), 0 infra, 0 compute",
		"ha-stacked":  "3 masters, stacked etcd (3 members, quorum 2, tolerates 1 failure), 0 infra, 1 compute",
		"ha-external": "2 masters, external etcd (3 members, quorum 2, tolerates 1 failure), 1 infra, 1 compute",
		"openshift":   "3 masters, stacked etcd (3 members, quorum 2, tolerates 1 failure), 3 infra, 2 compute",
	}
	for topo, want := range cases {
		specs, err := TopologyMachines(topo)
		if err != nil {
			t.Fatal(err)
		}
		s := &State{Name: "demo", Subnet: netip.MustParsePrefix("198.18.3.0/24")}
		for i, sp := range specs {
			s.Machines = append(s.Machines, MachineState{Name: sp.Name, Roles: sp.Roles, Address: machineAddr(s.Subnet, i+1)})
		}
		src := RenderInventory(s, InventoryParams{KubernetesVersion: "1.37.2", EtcdVersion: "3.6.16",
			IdentityPath: "/labs/demo/id_ed25519", KnownHostsPath: "/labs/demo/known_hosts",
			Artifacts: []Artifact{{Name: "etcd", Path: "/cache/etcd", SHA256: strings.Repeat("0", 64)}}})
		inv, diags := inventory.Parse(src, fmt.Sprintf("%s.kprov.hcl", topo), inventory.Options{HomeDir: "/root", Environ: func() []string { return nil }})
		if diags.HasErrors() {
			t.Errorf("%s: %v", topo, diags)
			continue
		}
		if a, ok := inv.Artifact("etcd"); !ok || a.Path != "/cache/etcd" {
			t.Errorf("%s: artifacts block read as %+v", topo, inv.Artifacts)
		}
		if got := inv.Topology.Summary(); got != want {
			t.Errorf("%s: topology %q, want %q", topo, got, want)
		}
		for _, d := range diags {
			if d.Severity == hcl.DiagWarning && d.Summary != "Endpoint is one master" && d.Summary != "Masters will run workloads" && d.Summary != "Too few infra hosts for production" && d.Summary != "Control plane is not highly available" {
				t.Errorf("%s: unexpected warning %q", topo, d.Summary)
			}
		}
	}
}
