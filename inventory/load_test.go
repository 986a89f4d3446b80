package inventory

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// Each invalid inventory must produce its rule's error, so removing a rule
// fails this test even if someone regenerates the golden files carelessly.
func TestEveryRuleHasItsError(t *testing.T) {
	cases := map[string]string{
		"no-master":         "No master",
		"unknown-role":      "Unknown role",
		"duplicate-name":    "Duplicate host name",
		"duplicate-address": "Duplicate host address",
		"even-stacked":      "Even number of etcd members",
		"even-external":     "Even number of etcd members",
		"mixed-etcd":        "Mixed etcd topology",
		"stacked-partial":   "Master without stacked etcd",
		"bad-cidr":          "Invalid pod_subnet",
		"overlap":           "Overlapping subnets",
		"service-too-large": "service_subnet too large",
		"bad-version":       "Invalid kubernetes_version",
		"not-v1":            "Invalid kubernetes_version",
		"missing-version":   "Missing kubernetes_version",
		"unknown-attribute": "Unsupported argument",
		"unknown-block":     "Unsupported block type",
		"bad-taint-label":   "Invalid taint",
		"syntax-error":      "Unclosed configuration block",
		"undefined-var":     "Unsupported attribute",
		"bad-ssh":           "Invalid host_key_policy",
		"address-in-subnet": "Host address inside a cluster subnet",
		"bad-names":         "Invalid host name",
		"locals-cycle":      "Cycle in local values",
		"bad-etcd":          "Unsupported etcd version",
		"env-unset":         "Invalid function argument",
		"bad-containerd":    "Invalid cgroup_driver",
		"small-pod-subnet":  "pod_subnet too small",
		"bad-artifacts":     "Unknown artifact",
		"bad-address":       "Invalid address",
		"bad-bastion":       "Invalid bastion",
		"bad-endpoint":      "Invalid control_plane_endpoint",
		"bad-data-dir":      "Invalid etcd data_dir",
		"bad-kubelet-args":  "Invalid kubelet_extra_args",
		"deep-nesting":      "Nesting too deep",
		"too-many-hosts":    "Too many hosts",
		"sensitive-values":  "Invalid label",

		"sensitive-function-error": "Error in function call",

		"duplicate-mapped-address": "Duplicate host address",
		"pod-network-name":         "Node address is not an IP address",
		"pod-network-value":        "Invalid pod_network",
		"api-endpoint-mode":        "Invalid api_endpoint mode",
		"api-endpoint-port":        "api_endpoint port in use by Kubernetes",
		"api-endpoint-conflict":    "control_plane_endpoint with a node-local endpoint",
		"api-endpoint-external":    "Missing control_plane_endpoint",
	}
	files, _ := filepath.Glob("testdata/invalid/*.hcl")
	if len(files) != len(cases) {
		t.Errorf("%d invalid inventories but %d cases: keep the table in step with testdata", len(files), len(cases))
	}
	for name, summary := range cases {
		_, diags := Load("testdata/invalid/"+name+".hcl", testOptions())
		if !hasDiag(diags, hcl.DiagError, summary) {
			t.Errorf("%s: no error %q in %v", name, summary, diags)
		}
	}
}

func TestWarnings(t *testing.T) {
	cases := map[string]string{
		"single-node":         "Masters will run workloads",
		"single-master":       "Control plane is not highly available",
		"masters-only":        "Masters will run workloads",
		"openshift-two-infra": "Too few infra hosts for production",
		"many-etcd":           "Many etcd members",
		"etcd-with-compute":   "etcd shares a host with workloads",
		"endpoint-is-master":  "Endpoint is one master",
	}
	for name, summary := range cases {
		_, diags := Load("testdata/valid/"+name+".hcl", testOptions())
		if diags.HasErrors() || !hasDiag(diags, hcl.DiagWarning, summary) {
			t.Errorf("%s: want only warnings including %q, got %v", name, summary, diags)
		}
	}
	// The recommended shapes carry no warning at all.
	for _, name := range []string{"ha-external", "ha-stacked", "single-node-compute"} {
		if _, diags := Load("testdata/valid/"+name+".hcl", testOptions()); len(diags) > 0 {
			t.Errorf("%s: want no diagnostics, got %v", name, diags)
		}
	}
}

func hasDiag(diags hcl.Diagnostics, sev hcl.DiagnosticSeverity, summary string) bool {
	return slices.ContainsFunc(diags, func(d *hcl.Diagnostic) bool { return d.Severity == sev && d.Summary == summary })
}

func TestTopologyFigures(t *testing.T) {
	for _, c := range []struct{ n, quorum, tolerates int }{{1, 1, 0}, {2, 2, 0}, {3, 2, 1}, {4, 3, 1}, {5, 3, 2}, {7, 4, 3}} {
		if Quorum(c.n) != c.quorum || FaultTolerance(c.n) != c.tolerates {
			t.Errorf("n=%d: quorum %d tolerates %d, want %d and %d", c.n, Quorum(c.n), FaultTolerance(c.n), c.quorum, c.tolerates)
		}
	}
	inv := mustLoad(t, "testdata/valid/ha-external.hcl", testOptions())
	want := "3 masters, external etcd (3 members, quorum 2, tolerates 1 failure), 3 infra, 10 compute"
	if got := inv.Topology.Summary(); got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if inv.Topology.Kind != HA || inv.Topology.EtcdMode != EtcdExternal {
		t.Errorf("kind %s mode %s", inv.Topology.Kind, inv.Topology.EtcdMode)
	}
	stacked := mustLoad(t, "testdata/valid/ha-stacked.hcl", testOptions())
	if stacked.Topology.EtcdMode != EtcdStacked || !slices.Equal(stacked.Topology.EtcdMembers, []string{"cp-a", "cp-b", "cp-c"}) {
		t.Errorf("stacked: %+v", stacked.Topology)
	}
	if stacked.Cluster.ControlPlaneEndpoint != "api.prod.internal:6443" {
		t.Errorf("endpoint without a port should default to 6443, got %q", stacked.Cluster.ControlPlaneEndpoint)
	}
	single := mustLoad(t, "testdata/valid/single-node.hcl", testOptions())
	if single.Topology.Kind != SingleNode || !single.Topology.MastersSchedulable || len(single.Hosts[0].Taints) != 0 {
		t.Errorf("single node: %+v, taints %v", single.Topology, single.Hosts[0].Taints)
	}
}

func TestNodeLabelsAndTaints(t *testing.T) {
	inv := mustLoad(t, "testdata/valid/infra-override.hcl", testOptions())
	infra1, infra3 := inv.Host("infra-1"), inv.Host("infra-3")
	if infra1.Labels["example.com/pool"] != "infra" || len(infra1.Taints) != 1 || infra1.Taints[0].String() != "node-role.kubernetes.io/infra=reserved:NoExecute" {
		t.Errorf("infra-1 should take the infra block's defaults: %v %v", infra1.Labels, infra1.Taints)
	}
	if len(infra3.Taints) != 1 || infra3.Taints[0].Value != "logging" {
		t.Errorf("infra-3's own taint should replace the default with the same key and effect: %v", infra3.Taints)
	}
	cp := inv.Host("cp-1")
	if !slices.Contains(cp.Taints, Taint{Key: ControlPlaneTaintKey, Effect: "NoSchedule"}) {
		t.Errorf("a master in a cluster with workers keeps the control-plane taint: %v", cp.Taints)
	}
	full := mustLoad(t, "testdata/valid/ha-external.hcl", testOptions())
	if got := full.Host("infra-2"); got.Labels[InfraRoleLabel] != "" || len(got.Taints) != 1 || got.Taints[0].Key != InfraRoleLabel {
		t.Errorf("default infra label and taint: %v %v", got.Labels, got.Taints)
	}
}

func TestVariables(t *testing.T) {
	src := []byte(`
variable "ssh_user" { default = "ops" }
variable "workers" { default = 2 }
locals {
  subnet = "192.0.2.0/24"
  first  = cidrhost(local.subnet, local.offset)   # uses a local declared below
  offset = 10
}
cluster "vars" { kubernetes_version = "1.37.2" }
ssh { user = var.ssh_user }
host "cp-1" {
  address = local.first
  roles   = ["master"]
}
dynamic "host" {
  for_each = range(var.workers)
  labels   = ["w-${host.value}"]
  content {
    address = cidrhost(local.subnet, 100 + host.value)
    roles   = ["compute"]
  }
}
`)
	parse := func(opts Options) *Inventory {
		t.Helper()
		inv, diags := Parse(src, "vars.hcl", opts)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return inv
	}
	opts := testOptions()
	inv := parse(opts)
	if inv.SSH.User != "ops" || len(inv.Hosts) != 3 || inv.Hosts[0].Address != "192.0.2.10" {
		t.Fatalf("defaults: user %q, %d hosts, first %q", inv.SSH.User, len(inv.Hosts), inv.Hosts[0].Address)
	}

	opts.Environ = func() []string {
		return []string{"KPROV_VAR_ssh_user=envuser", "KPROV_VAR_workers=4", "KPROV_VAR_unrelated=x"}
	}
	inv = parse(opts)
	if inv.SSH.User != "envuser" || len(inv.Hosts) != 5 {
		t.Errorf("environment: user %q, %d hosts", inv.SSH.User, len(inv.Hosts))
	}

	opts.Vars = map[string]string{"ssh_user": "admin", "workers": "1"}
	inv = parse(opts)
	if inv.SSH.User != "admin" || len(inv.Hosts) != 2 {
		t.Errorf("-var must win over the environment: user %q, %d hosts", inv.SSH.User, len(inv.Hosts))
	}

	opts.Vars = map[string]string{"ssh_usr": "admin"}
	_, diags := Parse(src, "vars.hcl", opts)
	if !hasDiag(diags, hcl.DiagError, "Undeclared variable") || !strings.Contains(diags.Error(), `Did you mean "ssh_user"?`) {
		t.Errorf("an unknown -var should be an error with a suggestion: %v", diags)
	}
	opts.Vars = map[string]string{"workers": "many"}
	if _, diags := Parse(src, "vars.hcl", opts); !hasDiag(diags, hcl.DiagError, "Invalid variable value") {
		t.Errorf("a -var that does not fit the default's type should be an error: %v", diags)
	}
}

func TestPathsResolveAgainstInventoryDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key.pub"), []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKprovtestkey pinned\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := `
cluster "paths" {
  kubernetes_version = "1.37.2"
  templates_dir      = "templates"
}
ssh {
  identity_file = "~/.ssh/id_ed25519"
  known_hosts   = "lab/known_hosts"
  bastion       = "jump.example.internal"
}
host "cp-1" {
  address  = "192.0.2.10"
  roles    = ["master", "compute"]
  host_key = trimspace(file("key.pub"))
  ssh {
    port    = 2222
    bastion = ["ops@outer:22", "inner:2200"]
  }
}
`
	path := filepath.Join(dir, "kprov.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	inv := mustLoad(t, path, testOptions())
	h := inv.Hosts[0]
	checks := map[string][2]string{
		"identity_file": {h.SSH.IdentityFile, "/home/test/.ssh/id_ed25519"},
		"known_hosts":   {h.SSH.KnownHosts, filepath.Join(dir, "lab/known_hosts")},
		"templates_dir": {inv.Cluster.TemplatesDir, filepath.Join(dir, "templates")},
		"state_dir":     {inv.Cluster.StateDir, filepath.Join(dir, ".kprov/paths")},
		"host_key":      {h.HostKey, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKprovtestkey pinned"},
		"bastions":      {strings.Join(h.SSH.Bastions, ","), "ops@outer:22,inner:2200"},
		"unset user":    {h.SSH.User, ""}, // ~/.ssh/config's User, else root, when connecting
		"port":          {fmt.Sprint(h.SSH.Port), "2222"},
		"top bastion":   {strings.Join(inv.SSH.Bastions, ","), "jump.example.internal"},
	}
	for field, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", field, c[0], c[1])
		}
	}
}

func TestJSONSyntax(t *testing.T) {
	src := []byte(`{
  "cluster": {"js": {"kubernetes_version": "1.37.2"}},
  "host": {"cp-1": {"address": "192.0.2.10", "roles": ["master"]}}
}`)
	inv, diags := Parse(src, "inv.kprov.json", testOptions())
	if diags.HasErrors() || len(inv.Hosts) != 1 || inv.Cluster.Name != "js" {
		t.Fatalf("JSON inventory: %v", diags)
	}
}

func TestLoadMissingFile(t *testing.T) {
	inv, diags := Load(filepath.Join(t.TempDir(), "kprov.hcl"), testOptions())
	if inv != nil || !hasDiag(diags, hcl.DiagError, "Cannot read inventory") || !strings.Contains(diags.Error(), "kprov init") {
		t.Errorf("missing file: %v", diags)
	}
}

func mustLoad(t testing.TB, path string, opts Options) *Inventory {
	t.Helper()
	inv, diags := Load(path, opts)
	if diags.HasErrors() {
		t.Fatalf("%s: %v", path, diags)
	}
	return inv
}

// FuzzParse feeds arbitrary bytes to the loader: it may report errors, never panic.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.hcl")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		inv, diags := Parse(src, "fuzz.hcl", testOptions())
		if inv == nil {
			t.Fatal("Parse over bytes must always return an inventory to render diagnostics against")
		}
		if !diags.HasErrors() && inv.Topology.Summary() == "" {
			t.Fatal("a valid inventory has a topology")
		}
	})
}

// BenchmarkLoad5000 validates an inventory of 5000 hosts generated with dynamic blocks.
func BenchmarkLoad5000(b *testing.B) {
	src := []byte(`
cluster "big" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.big.internal:6443"
}
dynamic "host" {
  for_each = range(3)
  labels   = ["cp-${host.value}"]
  content {
    address = cidrhost("172.16.0.0/24", host.value + 10)
    roles   = ["master"]
  }
}
dynamic "host" {
  # range() stops at 1024 values, so build the 4997 indexes from blocks of 1000.
  for_each = [for n in flatten([for b in range(5) : [for i in range(1000) : b * 1000 + i]]) : n if n < 4997]
  labels   = [format("worker-%04d", host.value)]
  content {
    address = cidrhost("172.17.0.0/16", host.value + 10)
    roles   = ["compute"]
    labels  = { "topology.kubernetes.io/zone" = format("zone-%d", host.value % 3) }
  }
}
`)
	b.ReportAllocs()
	for b.Loop() {
		inv, diags := Parse(src, "big.hcl", testOptions())
		if diags.HasErrors() || len(inv.Hosts) != 5000 {
			b.Fatalf("%d hosts, %v", len(inv.Hosts), diags)
		}
	}
}
