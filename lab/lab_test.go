package lab

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

func TestPickSubnet(t *testing.T) {
	for _, tc := range []struct {
		name string
		used []string
		want string
	}{
		{"empty host", nil, "198.18.0.0/24"},
		{"first taken", []string{"198.18.0.0/24", "10.0.0.0/8"}, "198.18.1.0/24"},
		{"wider route covers the first", []string{"198.18.0.0/23"}, "198.18.2.0/24"},
		{"all of 198.18", []string{"198.18.0.0/16"}, "198.19.0.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var used []netip.Prefix
			for _, u := range tc.used {
				used = append(used, netip.MustParsePrefix(u))
			}
			got, err := PickSubnet(used)
			if err != nil || got.String() != tc.want {
				t.Errorf("PickSubnet(%v) = %v, %v; want %s", tc.used, got, err, tc.want)
			}
		})
	}
	if _, err := PickSubnet([]netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}); err == nil {
		t.Error("PickSubnet found a subnet in a full range")
	}
	upper := netip.MustParsePrefix("198.19.0.0/16")
	for _, tc := range []struct {
		within string
		used   []string
		want   string
	}{
		{"198.19.0.0/16", []string{"198.18.0.0/24"}, "198.19.0.0/24"},
		{"198.19.0.0/16", []string{"198.19.0.0/24", "198.19.1.0/24"}, "198.19.2.0/24"},
		{"198.18.16.0/20", []string{"198.18.16.0/24"}, "198.18.17.0/24"},
	} {
		var used []netip.Prefix
		for _, u := range tc.used {
			used = append(used, netip.MustParsePrefix(u))
		}
		if got, err := PickSubnetIn(netip.MustParsePrefix(tc.within), used); err != nil || got.String() != tc.want {
			t.Errorf("PickSubnetIn(%s, %v) = %v, %v; want %s", tc.within, tc.used, got, err, tc.want)
		}
	}
	if got, err := PickSubnetIn(upper, []netip.Prefix{upper}); err == nil {
		t.Errorf("PickSubnetIn found %s in a full %s", got, upper)
	}
	for _, bad := range []string{"10.0.0.0/16", "198.18.0.0/14", "198.19.0.0/25"} {
		if got, err := PickSubnetIn(netip.MustParsePrefix(bad), nil); err == nil {
			t.Errorf("PickSubnetIn(%s) = %s, want a refusal", bad, got)
		}
	}
}

func TestAddresses(t *testing.T) {
	s := netip.MustParsePrefix("198.18.7.0/24")
	if g := gatewayAddr(s).String(); g != "198.18.7.1" {
		t.Errorf("gateway %s", g)
	}
	if a := machineAddr(s, 1).String(); a != "198.18.7.11" {
		t.Errorf("machine 1 at %s", a)
	}
	if a := machineAddr(s, MaxMachines).String(); a != "198.18.7.210" {
		t.Errorf("last machine at %s", a)
	}
	for _, bad := range []string{"10.0.0.0/24", "198.18.0.0/16", "198.18.0.5/24"} {
		if checkSubnet(netip.MustParsePrefix(bad)) == nil {
			t.Errorf("checkSubnet accepted %s", bad)
		}
	}
}

func TestNames(t *testing.T) {
	for _, ok := range []string{"lab", "e2e-1a2b3c", "master-1"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a", "Lab", "1lab", "lab-", "a--b", "a.b", "a_b", strings.Repeat("a", 33)} {
		if ValidName(bad) == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		}
	}
	long := strings.Repeat("z", 32)
	for _, n := range []string{bridgeName(long), hostVethName(long, MaxMachines), peerVethName(long, MaxMachines)} {
		if len(n) > 15 {
			t.Errorf("link name %q is longer than Linux's 15 characters", n)
		}
		if !strings.HasPrefix(n, linkPrefix(long)) {
			t.Errorf("link name %q lacks the lab prefix, so down could not find it", n)
		}
	}
	if strings.HasPrefix(netnsName("a-b", "node-1"), netnsPrefix("a")) {
		t.Error("lab a's namespace prefix matches lab a-b's namespaces")
	}
	if bridgeName("lab") == bridgeName("lab2") {
		t.Error("two labs share a bridge name")
	}
	if mac := machineMAC("lab", 258); !strings.HasPrefix(mac, "02:") || !strings.HasSuffix(mac, ":01:02") {
		t.Errorf("machineMAC = %s", mac)
	}
}

func TestTopologies(t *testing.T) {
	count := func(specs []MachineSpec, role inventory.Role) int {
		n := 0
		for _, s := range specs {
			for _, r := range s.Roles {
				if r == role {
					n++
				}
			}
		}
		return n
	}
	for _, tc := range []struct {
		topology                      string
		masters, etcd, infra, compute int
	}{
		{"single", 1, 0, 0, 0},
		{"ha-stacked", 3, 0, 0, 1},
		{"ha-external", 2, 3, 1, 1},
		{"openshift", 3, 0, 3, 2},
	} {
		specs, err := TopologyMachines(tc.topology)
		if err != nil {
			t.Fatal(err)
		}
		got := [4]int{count(specs, inventory.RoleMaster), count(specs, inventory.RoleEtcd), count(specs, inventory.RoleInfra), count(specs, inventory.RoleCompute)}
		if want := [4]int{tc.masters, tc.etcd, tc.infra, tc.compute}; got != want {
			t.Errorf("%s: masters, etcd, infra, compute = %v, want %v", tc.topology, got, want)
		}
	}
	if _, err := TopologyMachines("mesh"); err == nil {
		t.Error("unknown topology accepted")
	}
	for n, masters := range map[int]int{1: 1, 2: 1, 3: 3, 6: 3} {
		specs, err := CountMachines(n)
		if err != nil || len(specs) != n || count(specs, inventory.RoleMaster) != masters {
			t.Errorf("CountMachines(%d) = %v, %v; want %d masters", n, specs, err, masters)
		}
	}
	if _, err := CountMachines(0); err == nil {
		t.Error("CountMachines(0) accepted")
	}
}

func TestMirrorFromApt(t *testing.T) {
	for _, tc := range []struct {
		name, file, text, want string
	}{
		{"deb822", "etc/apt/sources.list.d/debian.sources", `Types: deb
# http://snapshot.example.internal/archive/debian/20250520T000000Z
URIs: http://mirror.example.internal/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example.internal/debian-security
Suites: bookworm-security
Components: main
`, "http://mirror.example.internal/debian"},
		{"deb822 disabled stanza skipped", "etc/apt/sources.list.d/x.sources", `Types: deb
URIs: http://old.example/debian
Suites: bookworm
Enabled: no

Types: deb-src deb
URIs: http://mirror.example/debian/
Suites: bookworm
`, "http://mirror.example/debian"},
		{"one-line with options", "etc/apt/sources.list", `# comment
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main
`, "http://mirror.example/debian"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			path := filepath.Join(root, tc.file)
			os.MkdirAll(filepath.Dir(path), 0o755)
			os.WriteFile(path, []byte(tc.text), 0o644)
			got, err := MirrorFromApt(root, "bookworm")
			if err != nil || got != tc.want {
				t.Errorf("MirrorFromApt = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := MirrorFromApt(t.TempDir(), "bookworm"); err == nil {
		t.Error("no sources, but a mirror was found")
	}
}

// sampleState is a three-machine lab as create records it.
func sampleState(dir string) *State {
	subnet := netip.MustParsePrefix("198.18.3.0/24")
	s := &State{Name: "demo", Dir: dir, Subnet: subnet, Gateway: gatewayAddr(subnet), Bridge: bridgeName("demo"),
		Rootfs: "/var/cache/kprov/rootfs/x", Topology: "ha-external", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	specs, _ := TopologyMachines("ha-external")
	for i, sp := range specs[2:5] {
		s.Machines = append(s.Machines, MachineState{Name: sp.Name, Index: i + 1, Roles: sp.Roles,
			Address: machineAddr(subnet, i+1), Netns: netnsName("demo", sp.Name), HostVeth: hostVethName("demo", i+1),
			Merged: filepath.Join(dir, "machines", sp.Name, "merged"), HostKey: "ssh-ed25519 AAAAkey" + sp.Name + " root@" + sp.Name + "\n"})
	}
	return s
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadState(dir); err == nil || !strings.Contains(err.Error(), ErrNoLab.Error()) {
		t.Fatalf("LoadState of an empty directory: %v", err)
	}
	s := sampleState(dir)
	s.Machines[1].PID, s.Machines[1].Cut = 4242, true
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, stateFile))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode().Perm())
	}
	got, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := got.Machine("master-1")
	if err != nil || m.PID != 4242 || !m.Cut || m.Address != s.Machines[1].Address || got.Subnet != s.Subnet {
		t.Errorf("round trip lost data: %+v, %v", m, err)
	}
	if _, err := got.Machine("nope"); err == nil {
		t.Error("Machine found a machine that is not there")
	}
}

func TestRenderInventory(t *testing.T) {
	s := sampleState("/labs/demo")
	got := RenderInventory(s, InventoryParams{KubernetesVersion: "1.37.2", EtcdVersion: "3.6.16",
		IdentityPath: "/labs/demo/id_ed25519", KnownHostsPath: "/labs/demo/known_hosts",
		Artifacts: []Artifact{
			{Name: "etcd", Path: "/cache/etcd-v3.6.16/etcd", SHA256: strings.Repeat("a", 64)},
			{Name: "kubeadm", Path: "/cache/kubernetes-v1.37.2/kubeadm", SHA256: strings.Repeat("b", 64)},
			{Name: "containerd-shim-runc-v2", Path: "/cache/containerd-v2.4.2/containerd-shim-runc-v2", SHA256: strings.Repeat("c", 64)},
			{Name: "cni-plugins", Path: "/cache/cni-plugins-v1.10.0/cni-plugins.tgz", SHA256: strings.Repeat("d", 64)},
			{Name: "registry.k8s.io/kube-apiserver:v1.37.2", Path: "/cache/images-v1.37.2/kube-apiserver_v1.37.2.tar", SHA256: strings.Repeat("e", 64), Image: true},
			{Name: "registry.k8s.io/pause:3.10.2", Path: "/cache/images-v1.37.2/pause_3.10.2.tar", SHA256: strings.Repeat("f", 64), Image: true},
		}})
	got = append(got, "---- known_hosts\n"...)
	got = append(got, RenderKnownHosts(s)...)
	golden := filepath.Join("testdata", "inventory.golden")
	if *update {
		os.WriteFile(golden, got, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("inventory differs from %s (go test ./lab -update rewrites it):\n%s", golden, got)
	}
}

func TestNetemArgs(t *testing.T) {
	got, err := Netem{Delay: 100 * time.Millisecond, Jitter: 10 * time.Millisecond, LossPercent: 5}.args()
	if want := "delay 100000us 10000us loss 5%"; err != nil || strings.Join(got, " ") != want {
		t.Errorf("args = %q, %v; want %q", got, err, want)
	}
	for _, bad := range []Netem{{}, {LossPercent: 101}, {Delay: -1}, {Jitter: time.Millisecond}} {
		if _, err := bad.args(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestParseMountsUnder(t *testing.T) {
	info := `22 1 0:21 / / rw - ext4 /dev/vda rw
90 22 0:50 / /labs/x/machines/node-1/merged rw - overlay overlay rw
91 22 0:51 / /labs/x/machines/node\0401/merged rw - overlay overlay rw
92 90 0:52 / /labs/x/machines/node-1/merged/proc rw - proc proc rw
93 22 0:53 / /labs/xy/merged rw - overlay overlay rw
`
	got, err := parseMountsUnder(strings.NewReader(info), "/labs/x")
	if err != nil {
		t.Fatal(err)
	}
	want := "/labs/x/machines/node-1/merged/proc /labs/x/machines/node-1/merged /labs/x/machines/node 1/merged"
	if strings.Join(got, " ") != want {
		t.Errorf("mounts = %q\nwant %q", got, want)
	}
}
