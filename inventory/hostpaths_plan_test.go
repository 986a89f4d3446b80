package inventory_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/roles"
)

// TestHostPathsCoverThePlan plans every example topology (and the roles
// tests' air-gapped one, which uploads binaries) on fresh hosts and checks
// that each path a step writes is in inventory.HostPaths, as are the paths
// provision writes outside the plan. A new file kprov writes must be added
// to HostPaths, or a data_dir could be pointed at it and wiped.
func TestHostPathsCoverThePlan(t *testing.T) {
	paths := map[string]string{
		"provision.LockPath":       provision.LockPath,
		"provision.EtcdConfigPath": provision.EtcdConfigPath,
		"pki.RemotePKIDir":         pki.RemotePKIDir,
		"roles.KubeadmInitPath":    roles.KubeadmInitPath,
		"roles.KubeadmJoinPath":    roles.KubeadmJoinPath,
	}
	for _, name := range inventory.ArtifactNames {
		paths["artifact "+name] = roles.BinDir + "/" + name
	}
	files, _ := filepath.Glob("../examples/*.kprov.hcl")
	files = append(files, "../roles/testdata/inventories/airgap.kprov.hcl")
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		inv, diags := inventory.Load(f, inventory.Options{HomeDir: t.TempDir(), Environ: func() []string { return nil }})
		if diags.HasErrors() {
			t.Fatalf("%s: %v", f, diags)
		}
		var names []string
		for _, h := range inv.Hosts {
			names = append(names, h.Name)
		}
		st, _, err := pki.Ensure(filepath.Join(t.TempDir(), "state"), roles.PKIRequest(inv), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		plan, err := roles.Plan(inv, provision.FreshFacts(names), st, roles.PlanOptions{Parallel: 10})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, stage := range plan.Stages {
			for _, s := range stage.Steps {
				if s.Path == "" || s.Op == provision.OpWipeDataDir || s.Op == provision.OpFetchKubeconfig {
					continue // the data directory itself, and a read
				}
				paths[filepath.Base(f)+": "+s.String()] = s.Path
			}
		}
	}
	for what, p := range paths {
		if !covered(p) {
			t.Errorf("%s writes %s, which is not in inventory.HostPaths: add it there", what, p)
		}
		if err := inventory.CheckEtcdDataDir(p); err == nil {
			t.Errorf("%s writes %s, yet it is accepted as etcd's data_dir", what, p)
		}
	}
}

func covered(p string) bool {
	for _, w := range inventory.HostPaths {
		if p == w || strings.HasPrefix(p, w+"/") {
			return true
		}
	}
	return false
}
