package inventory_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
)

// TestHostPathsCoverThePlan plans every example topology (and the roles
// tests' air-gapped one, which uploads binaries) on fresh hosts and checks
// that each path a step writes is in inventory.HostPaths, as are the paths
// of the host layout (provision/plan) that kprov and kubeadm write. A new file kprov writes must be added
// to HostPaths, or a data_dir could be pointed at it and wiped.
func TestHostPathsCoverThePlan(t *testing.T) {
	paths := map[string]string{
		"plan.LockPath":             plan.LockPath,
		"plan.EtcdConfigPath":       plan.EtcdConfigPath,
		"plan.KubeadmInitPath":      plan.KubeadmInitPath,
		"plan.KubeadmJoinPath":      plan.KubeadmJoinPath,
		"plan.EtcdUnitPath":         plan.EtcdUnitPath,
		"plan.SysctlPath":           plan.SysctlPath,
		"plan.ModulesPath":          plan.ModulesPath,
		"plan.ContainerdConfigPath": plan.ContainerdConfigPath,
		"plan.SwapOffUnitPath":      plan.SwapOffUnitPath,
		"plan.KubeletConfPath":      plan.KubeletConfPath,
		"plan.APIServerManifest":    plan.APIServerManifestPath,
		"plan.AdminKubeconfigPath":  plan.AdminKubeconfigPath,
		"pki.RemotePKIDir":          pki.RemotePKIDir,
	}
	for _, name := range inventory.ArtifactNames {
		paths["artifact "+name] = plan.BinDir + "/" + name
		if name == inventory.CNIPluginsArtifact {
			paths["artifact "+name] = plan.CNIBinDir + "/bridge"
		}
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
		p, err := roles.Plan(inv, plan.FreshFacts(names), st, roles.PlanOptions{Parallel: 10})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, stage := range p.Stages {
			for _, s := range stage.Steps {
				if s.Path == "" || s.Op == plan.OpWipeDataDir || s.Op == plan.OpFetchKubeconfig {
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
