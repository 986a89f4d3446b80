package inventory

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Every starter must validate as written, with the topology its name promises.
func TestStartersValidate(t *testing.T) {
	want := map[string]string{
		"single":      "single node: 1 master, stacked etcd (1 member, quorum 1, tolerates 0 failures), 0 infra, 0 compute",
		"ha-stacked":  "3 masters, stacked etcd (3 members, quorum 2, tolerates 1 failure), 0 infra, 2 compute",
		"ha-external": "3 masters, external etcd (3 members, quorum 2, tolerates 1 failure), 0 infra, 2 compute",
		"openshift":   "3 masters, stacked etcd (3 members, quorum 2, tolerates 1 failure), 3 infra, 2 compute",
	}
	for _, topo := range StarterTopologies {
		src, err := Starter(topo)
		if err != nil {
			t.Fatal(err)
		}
		inv, diags := Parse(src, topo+".hcl", testOptions())
		if diags.HasErrors() {
			t.Errorf("%s: %v", topo, diags)
			continue
		}
		if got := inv.Topology.Summary(); got != want[topo] {
			t.Errorf("%s: topology %q, want %q", topo, got, want[topo])
		}
		if topo != "single" && len(diags) > 0 {
			t.Errorf("%s: a starter should carry no warnings: %v", topo, diags)
		}
	}
	if _, err := Starter("triple"); err == nil {
		t.Error("an unknown topology must be refused")
	}
}

// The examples shipped in examples/ are exactly what kprov init writes.
func TestExamplesMatchStarters(t *testing.T) {
	for _, topo := range StarterTopologies {
		want, err := Starter(topo)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("..", "examples", topo+".kprov.hcl"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("examples/%s.kprov.hcl differs from `kprov init --topology %s`; regenerate it", topo, topo)
		}
	}
}
