package lab

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/kprov/kprov/inventory"
)

// labArtifacts is one of everything CachedArtifacts offers (runc comes from
// the lab root filesystem, so the lab never lists it).
var labArtifacts = []Artifact{
	{Name: "etcd", Path: "/cache/etcd", SHA256: strings.Repeat("0", 64)},
	{Name: "etcdctl", Path: "/cache/etcdctl", SHA256: strings.Repeat("0", 64)},
	{Name: "etcdutl", Path: "/cache/etcdutl", SHA256: strings.Repeat("0", 64)},
	{Name: "kubeadm", Path: "/cache/kubeadm", SHA256: strings.Repeat("1", 64)},
	{Name: "kubelet", Path: "/cache/kubelet", SHA256: strings.Repeat("1", 64)},
	{Name: "kubectl", Path: "/cache/kubectl", SHA256: strings.Repeat("1", 64)},
	{Name: "containerd", Path: "/cache/containerd", SHA256: strings.Repeat("2", 64)},
	{Name: "ctr", Path: "/cache/ctr", SHA256: strings.Repeat("3", 64)},
	{Name: "containerd-shim-runc-v2", Path: "/cache/containerd-shim-runc-v2", SHA256: strings.Repeat("4", 64)},
	{Name: "cni-plugins", Path: "/cache/cni-plugins.tgz", SHA256: strings.Repeat("5", 64)},
	{Name: "kprov-apiproxy", Path: "/cache/apiproxy-0123456789ab/kprov-apiproxy", SHA256: strings.Repeat("6", 64)},
	{Name: "registry.k8s.io/etcd:3.6.16-0", Path: "/cache/images-v1.37.2/etcd_3.6.16-0.tar", SHA256: strings.Repeat("7", 64), Image: true},
	{Name: "registry.k8s.io/pause:3.10.2", Path: "/cache/images-v1.37.2/pause_3.10.2.tar", SHA256: strings.Repeat("8", 64), Image: true},
}

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
			Artifacts: labArtifacts})
		inv, diags := inventory.Parse(src, fmt.Sprintf("%s.kprov.hcl", topo), inventory.Options{HomeDir: "/root", Environ: func() []string { return nil }})
		if diags.HasErrors() {
			t.Errorf("%s: %v", topo, diags)
			continue
		}
		for _, want := range labArtifacts {
			if want.Image {
				continue
			}
			if a, ok := inv.Artifact(want.Name); !ok || a.Path != want.Path || a.SHA256 != want.SHA256 {
				t.Errorf("%s: artifacts block read %s as %+v", topo, want.Name, a)
			}
		}
		var images []string
		for _, a := range inv.Images {
			images = append(images, a.Path+" "+a.SHA256)
		}
		if want := []string{"/cache/images-v1.37.2/etcd_3.6.16-0.tar " + strings.Repeat("7", 64), "/cache/images-v1.37.2/pause_3.10.2.tar " + strings.Repeat("8", 64)}; !slices.Equal(images, want) {
			t.Errorf("%s: images read as %v, want %v", topo, images, want)
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
