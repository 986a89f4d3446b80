package roles

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// renderWithFacts renders inv with every host's runtime facts set to rt.
func renderWithFacts(t *testing.T, inv *inventory.Inventory, rt plan.RuntimeFacts) *Rendering {
	t.Helper()
	facts := map[string]*plan.HostFacts{}
	for _, h := range inv.Hosts {
		r := rt
		facts[h.Name] = &plan.HostFacts{Reachable: true, Runtime: &r}
	}
	r, err := Render(inv, newState(t, inv), Options{Facts: facts})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// content is the rendered file at path on host, which must exist.
func content(t *testing.T, r *Rendering, host, path string) string {
	t.Helper()
	return string(fileAt(t, r.Host(host), path).Content)
}

// TestRuntimeFromFacts renders a node for every combination of the facts
// its runtime settings follow, and checks containerd's configuration, the
// kubelet's patch and kubeadm's preflight skip: the cgroup driver is
// systemd only on cgroup v2 with systemd as init (and the same in
// containerd and the kubelet); failCgroupV1: false and the
// SystemVerification skip only on cgroup v1; the native snapshotter only
// on an overlayfs root; restrict_oom_score_adj only without CAP_SYS_RESOURCE.
func TestRuntimeFromFacts(t *testing.T) {
	inv := loadInventory(t, "../examples/single.kprov.hcl")
	for _, cgroup := range []int{1, 2} {
		for _, systemd := range []bool{false, true} {
			for _, overlay := range []bool{false, true} {
				for _, capRes := range []bool{false, true} {
					rt := plan.RuntimeFacts{CgroupVersion: cgroup, SystemdInit: systemd, RootFS: "ext2/ext3", CapSysResource: capRes}
					if overlay {
						rt.RootFS = "overlayfs"
					}
					name := fmt.Sprintf("cgroup-v%d/systemd-%v/overlay-%v/cap-sys-resource-%v", cgroup, systemd, overlay, capRes)
					t.Run(name, func(t *testing.T) {
						r := renderWithFacts(t, inv, rt)
						cfg := content(t, r, "node-1", plan.ContainerdConfigPath)
						patch := content(t, r, "node-1", plan.KubeletPatchPath)
						kubeadm := content(t, r, "node-1", plan.KubeadmInitPath)

						driver := "cgroupfs"
						if cgroup == 2 && systemd {
							driver = "systemd"
						}
						snapshotter := "overlayfs"
						if overlay {
							snapshotter = "native"
						}
						mustContain(t, cfg, fmt.Sprintf("SystemdCgroup = %v\n", driver == "systemd"))
						mustContain(t, cfg, fmt.Sprintf("snapshotter = %q\n", snapshotter))
						mustContain(t, cfg, fmt.Sprintf("restrict_oom_score_adj = %v\n", !capRes))
						mustContain(t, cfg, `sandbox = "registry.k8s.io/pause:3.10.2"`)
						mustContain(t, cfg, `bin_dirs = ["/opt/cni/bin"]`)
						mustContain(t, cfg, `conf_dir = "/etc/cni/net.d"`)
						mustContain(t, patch, fmt.Sprintf("cgroupDriver: %q\n", driver))
						mustContain(t, kubeadm, "patches:\n  directory: \"/etc/kprov/patches\"\n")
						v1 := cgroup == 1
						if got := strings.Contains(patch, "failCgroupV1: false"); got != v1 {
							t.Errorf("failCgroupV1: false in the patch: %v, want %v:\n%s", got, v1, patch)
						}
						if got := strings.Contains(kubeadm, "ignorePreflightErrors:\n    - SystemVerification\n"); got != v1 {
							t.Errorf("SystemVerification skipped: %v, want %v:\n%s", got, v1, kubeadm)
						}
					})
				}
			}
		}
	}
}

func mustContain(t *testing.T, text, want string) {
	t.Helper()
	if !strings.Contains(text, want) {
		t.Errorf("want %q in:\n%s", want, text)
	}
}

// TestRuntimeDefaults: without facts (kprov render, an offline plan) a
// node gets a standard real host's settings.
func TestRuntimeDefaults(t *testing.T) {
	inv := loadInventory(t, "../examples/single.kprov.hcl")
	r, err := Render(inv, newState(t, inv), Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := content(t, r, "node-1", plan.ContainerdConfigPath)
	for _, want := range []string{"SystemdCgroup = true\n", `snapshotter = "overlayfs"`, "restrict_oom_score_adj = false\n"} {
		mustContain(t, cfg, want)
	}
	if unit := content(t, r, "node-1", plan.ContainerdUnitPath); !strings.Contains(unit, "ExecStart="+DefaultContainerdBinary+"\n") {
		t.Errorf("unit without facts or artifact:\n%s", unit)
	}
}

// TestRuntimeOverrides: the containerd block wins over the facts, a host's
// block over the top-level one, field by field.
func TestRuntimeOverrides(t *testing.T) {
	inv, diags := inventory.Parse([]byte(`
cluster "c" { kubernetes_version = "1.37.2" }
containerd {
  cgroup_driver          = "cgroupfs"
  restrict_oom_score_adj = true
}
host "a" {
  address = "192.0.2.1"
  roles   = ["master"]
}
host "b" {
  address = "192.0.2.2"
  roles   = ["compute"]
  containerd {
    cgroup_driver = "systemd"
    snapshotter   = "native"
  }
}
`), "o.hcl", inventory.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	r := renderWithFacts(t, inv, plan.DefaultRuntimeFacts())
	a, b := content(t, r, "a", plan.ContainerdConfigPath), content(t, r, "b", plan.ContainerdConfigPath)
	for _, want := range []string{"SystemdCgroup = false\n", `snapshotter = "overlayfs"`, "restrict_oom_score_adj = true\n"} {
		mustContain(t, a, want)
	}
	mustContain(t, content(t, r, "a", plan.KubeletPatchPath), `cgroupDriver: "cgroupfs"`)
	for _, want := range []string{"SystemdCgroup = true\n", `snapshotter = "native"`, "restrict_oom_score_adj = true\n"} {
		mustContain(t, b, want)
	}
	mustContain(t, content(t, r, "b", plan.KubeletPatchPath), `cgroupDriver: "systemd"`)
}

// TestRuntimeOldKubelet: a kubelet before 1.31 has no failCgroupV1 field
// and would refuse it, so only the preflight skip is rendered; the v1beta3
// configurations take the same patches directory.
func TestRuntimeOldKubelet(t *testing.T) {
	inv := loadInventory(t, "testdata/inventories/v1beta3.kprov.hcl")
	r := renderWithFacts(t, inv, plan.RuntimeFacts{CgroupVersion: 1, SystemdInit: true, CapSysResource: true})
	if patch := content(t, r, "cp", plan.KubeletPatchPath); strings.Contains(patch, "failCgroupV1") {
		t.Errorf("kubelet 1.30 patch names failCgroupV1:\n%s", patch)
	}
	for host, path := range map[string]string{"cp": plan.KubeadmInitPath, "worker": plan.KubeadmJoinPath} {
		k := content(t, r, host, path)
		mustContain(t, k, "apiVersion: kubeadm.k8s.io/v1beta3")
		mustContain(t, k, "patches:\n  directory: \"/etc/kprov/patches\"\n")
		mustContain(t, k, "- SystemVerification")
	}
	mustContain(t, content(t, r, "cp", plan.ContainerdConfigPath), `sandbox = "registry.k8s.io/pause:3.9"`)
}

func TestPauseImage(t *testing.T) {
	for v, want := range map[string]string{
		"1.37.2": "3.10.2", "1.38.0": "3.10.2", "1.34.1": "3.10.1", "1.36.0": "3.10.1",
		"1.31.0": "3.10", "1.33.5": "3.10", "1.30.9": "3.9", "1.29.0": "3.9",
	} {
		if got := PauseImage(v); got != "registry.k8s.io/pause:"+want {
			t.Errorf("PauseImage(%s) = %s, want pause:%s", v, got, want)
		}
	}
}

// TestContainerdBinary: the unit starts the artifacts block's containerd
// when there is one, else the host's own.
func TestContainerdBinary(t *testing.T) {
	inv := loadInventory(t, "testdata/inventories/airgap.kprov.hcl")
	rt := plan.DefaultRuntimeFacts()
	rt.ContainerdPath = "/usr/bin/containerd"
	r := renderWithFacts(t, inv, rt)
	mustContain(t, content(t, r, "compute-1", plan.ContainerdUnitPath), "ExecStart=/usr/local/bin/containerd\n")

	inv = loadInventory(t, "../examples/single.kprov.hcl")
	rt.ContainerdPath = "/opt/containerd/bin/containerd"
	r = renderWithFacts(t, inv, rt)
	unit := content(t, r, "node-1", plan.ContainerdUnitPath)
	for _, want := range []string{"ExecStart=/opt/containerd/bin/containerd\n", "Delegate=yes\n", "KillMode=process\n", "LimitNOFILE=infinity\n"} {
		mustContain(t, unit, want)
	}
}

// TestBridgePerNode: each node bridges its own /24 of pod_subnet, by its
// place among the nodes in inventory order; a dedicated etcd host gets none.
func TestBridgePerNode(t *testing.T) {
	inv := loadInventory(t, "../examples/ha-external.kprov.hcl")
	r := renderWithFacts(t, inv, plan.DefaultRuntimeFacts())
	i := 0
	for _, h := range inv.Hosts {
		hf := r.Host(h.Name)
		if !h.IsNode() {
			for _, f := range hf.Files {
				if f.Path == plan.CNIConfPath {
					t.Errorf("%s runs no kubelet but gets %s", h.Name, f.Path)
				}
			}
			continue
		}
		conf := content(t, r, h.Name, plan.CNIConfPath)
		mustContain(t, conf, fmt.Sprintf(`"subnet": "10.244.%d.0/24"`, i))
		var list struct {
			CNIVersion string `json:"cniVersion"`
			Plugins    []struct {
				Type string `json:"type"`
			} `json:"plugins"`
		}
		if err := json.Unmarshal([]byte(conf), &list); err != nil || len(list.Plugins) != 2 || list.Plugins[0].Type != "bridge" || list.Plugins[1].Type != "portmap" {
			t.Errorf("%s: %v %+v\n%s", h.Name, err, list, conf)
		}
		i++
	}
}

// TestPlanRuntimeSteps: on a converged air-gapped cluster, each change to
// the runtime plans exactly its own steps on the host it concerns: an
// upload or an unpack, and a restart of containerd only for a new
// configuration, unit or containerd binary; a stopped containerd is
// started, never restarted.
func TestPlanRuntimeSteps(t *testing.T) {
	inv := loadInventory(t, "testdata/inventories/airgap.kprov.hcl")
	st := newState(t, inv)
	final, err := Render(inv, st, Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers)})
	if err != nil {
		t.Fatal(err)
	}
	converged := func() *plan.Facts {
		f := convergedFacts(t, inv, nil, final)
		for _, h := range inv.Hosts {
			for _, a := range ArtifactsFor(inv, h) {
				sum := a.SHA256
				if a.Name == inventory.CNIPluginsArtifact {
					sum = CNIPluginsMarker(a.SHA256)
				}
				f.Hosts[h.Name].Files[InstalledPath(a.Name)] = sum
			}
			if h.IsNode() {
				// As the probe reports it: by the unit's bare name.
				delete(f.Hosts[h.Name].Services, plan.ContainerdUnit)
				f.Hosts[h.Name].Services["containerd"] = "active"
			}
		}
		return f
	}
	steps := func(f *plan.Facts) []string {
		t.Helper()
		pl, err := Plan(inv, f, st, PlanOptions{Parallel: 10})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, stage := range pl.Stages {
			for _, s := range stage.Steps {
				out = append(out, s.Host+": "+s.String())
			}
		}
		return out
	}
	if got := steps(converged()); len(got) != 0 {
		t.Fatalf("converged: %v", got)
	}
	restart := "compute-1: restart-service containerd.service"
	for _, c := range []struct {
		name   string
		change func(hf *plan.HostFacts)
		want   []string
	}{
		{"new containerd configuration", func(hf *plan.HostFacts) { hf.Files[plan.ContainerdConfigPath] = "old" },
			[]string{"compute-1: upload-file /etc/containerd/config.toml (0644)", restart}},
		{"new containerd unit", func(hf *plan.HostFacts) { delete(hf.Files, plan.ContainerdUnitPath) },
			[]string{"compute-1: upload-file /etc/systemd/system/containerd.service (0644)", restart}},
		{"new containerd binary", func(hf *plan.HostFacts) { hf.Files["/usr/local/bin/containerd"] = "old" },
			[]string{"compute-1: upload-file /usr/local/bin/containerd (0755)", restart}},
		{"new runc: used from the next container on", func(hf *plan.HostFacts) { hf.Files["/usr/local/bin/runc"] = "old" },
			[]string{"compute-1: upload-file /usr/local/bin/runc (0755)"}},
		{"new shim: used from the next container on", func(hf *plan.HostFacts) { hf.Files["/usr/local/bin/containerd-shim-runc-v2"] = "old" },
			[]string{"compute-1: upload-file /usr/local/bin/containerd-shim-runc-v2 (0755)"}},
		{"another cni-plugins archive", func(hf *plan.HostFacts) { hf.Files[plan.CNIPluginsMarkerPath] = "old" },
			[]string{"compute-1: unpack-archive into /opt/cni/bin"}},
		{"no CNI plugins yet", func(hf *plan.HostFacts) { delete(hf.Files, plan.CNIPluginsMarkerPath) },
			[]string{"compute-1: unpack-archive into /opt/cni/bin"}},
		{"new bridge network: containerd reloads it itself", func(hf *plan.HostFacts) { hf.Files[plan.CNIConfPath] = "old" },
			[]string{"compute-1: upload-file /etc/cni/net.d/10-kprov-bridge.conflist (0644)"}},
		{"new kubelet patch: read only by kubeadm", func(hf *plan.HostFacts) { hf.Files[plan.KubeletPatchPath] = "old" },
			[]string{"compute-1: upload-file /etc/kprov/patches/kubeletconfiguration+strategic.yaml (0644)"}},
		{"containerd stopped, with a new configuration", func(hf *plan.HostFacts) {
			hf.Services["containerd"] = "inactive"
			hf.Files[plan.ContainerdConfigPath] = "old"
		}, []string{"compute-1: upload-file /etc/containerd/config.toml (0644)", "compute-1: start-service containerd.service"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := converged()
			c.change(f.Hosts["compute-1"])
			if got := steps(f); strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}

	// The host's facts change its configuration: a host found on cgroup v1
	// gets the cgroupfs driver and containerd restarts for it.
	f := converged()
	f.Hosts["compute-1"].Runtime = &plan.RuntimeFacts{CgroupVersion: 1, SystemdInit: true, CapSysResource: true}
	want := []string{"compute-1: upload-file /etc/containerd/config.toml (0644)", "compute-1: upload-file /etc/kprov/kubeadm-join.yaml (0600)",
		"compute-1: upload-file /etc/kprov/patches/kubeletconfiguration+strategic.yaml (0644)", restart}
	if got := steps(f); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cgroup v1 host: got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}
