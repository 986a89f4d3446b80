package provision

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

func preflightInventory() *inventory.Inventory {
	inv := &inventory.Inventory{Etcd: inventory.Etcd{DataDir: "/var/lib/etcd"}, Topology: inventory.Topology{EtcdMode: inventory.EtcdExternal}}
	add := func(name, addr string, r inventory.Role) {
		inv.Hosts = append(inv.Hosts, &inventory.Host{Name: name, Address: addr, Roles: []inventory.Role{r}})
	}
	add("etcd-1", "192.0.2.21", inventory.RoleEtcd)
	add("master-1", "192.0.2.11", inventory.RoleMaster)
	add("compute-1", "192.0.2.31", inventory.RoleCompute)
	add("compute-2", "192.0.2.32", inventory.RoleCompute)
	inv.Topology.Masters = []string{"master-1"}
	return inv
}

func goodHost(name string) *plan.HostFacts {
	rt := plan.DefaultRuntimeFacts()
	rt.CNIPlugins = []string{"bridge", "host-local", "loopback", "portmap"}
	return &plan.HostFacts{Reachable: true, Hostname: name, OS: "debian 12", Arch: "x86_64", Services: map[string]string{},
		Versions: map[string]string{"containerd": "2.4.2", "containerd-shim-runc-v2": "", "runc": "1.3.0", "ip": "", "iptables": "1.8.9"}, Runtime: &rt}
}

// Every rule reports its own problem, all of them together in one run.
func TestCheckPreflight(t *testing.T) {
	inv := preflightInventory()
	now := time.Unix(1_800_000_000, 0)
	probe := func(p preflightProbe) *preflightProbe {
		p.Sent, p.Got = now, now.Add(100*time.Millisecond)
		if p.Clock.IsZero() {
			p.Clock = now.Add(50 * time.Millisecond)
		}
		if p.Binaries == nil {
			p.Binaries = map[string]bool{"kubelet": true}
		}
		p.PortsKnown = true
		return &p
	}
	facts := &plan.Facts{Hosts: map[string]*plan.HostFacts{
		"etcd-1":    goodHost("etcd-1"),
		"master-1":  goodHost("master-1"),
		"compute-1": goodHost("same"),
		"compute-2": goodHost("same"),
	}}
	probes := map[string]*preflightProbe{
		"etcd-1":    probe(preflightProbe{Listening: []int{22}, DiskFree: 100 << 30, Fsync: time.Millisecond}),
		"master-1":  probe(preflightProbe{DiskFree: -1}),
		"compute-1": probe(preflightProbe{DiskFree: -1}),
		"compute-2": probe(preflightProbe{DiskFree: -1}),
	}
	opts := PreflightOptions{Binaries: map[string][]string{"compute-1": {"kubelet"}}}
	if got := checkPreflight(inv, facts, probes, opts); len(got) != 2 {
		t.Fatalf("healthy hosts but duplicate hostnames: %v", got)
	}
	facts.Hosts["compute-2"].Hostname = "compute-2"
	if got := checkPreflight(inv, facts, probes, opts); len(got) != 0 {
		t.Fatalf("healthy hosts: %v", got)
	}

	facts.Hosts["etcd-1"].OS = "centos 9"
	facts.Hosts["master-1"].Arch = "riscv64"
	facts.Hosts["compute-2"] = &plan.HostFacts{Reachable: false, Error: "connect: connection refused"}
	probes["etcd-1"] = probe(preflightProbe{Listening: []int{2379}, DiskFree: 1 << 30, Fsync: 30 * time.Millisecond})
	probes["master-1"] = probe(preflightProbe{Listening: []int{6443, 10250}, DiskFree: -1, Clock: now.Add(10 * time.Second)})
	probes["compute-1"] = probe(preflightProbe{DiskFree: -1, Binaries: map[string]bool{}})
	got := checkPreflight(inv, facts, probes, opts)
	var lines []string
	for _, p := range got {
		lines = append(lines, p.Host+" "+p.Check)
	}
	want := "compute-1 binaries,compute-2 reachable,etcd-1 os,etcd-1 ports,etcd-1 disk,etcd-1 fsync,master-1 arch,master-1 ports,master-1 ports,master-1 clock"
	if strings.Join(lines, ",") != want {
		t.Errorf("problems\n%s\nwant\n%s\n%v", strings.Join(lines, ","), want, got)
	}

	// A member already running holds its own ports; a joined node its kubelet's.
	facts.Hosts["etcd-1"].Services["etcd"] = "active"
	facts.Hosts["master-1"].ControlPlane = true
	for _, p := range checkPreflight(inv, facts, probes, opts) {
		if p.Check == "ports" {
			t.Errorf("port problem on a host already running its service: %v", p)
		}
	}
}

// The preflight script runs under a local sh and its output parses.
func TestPreflightScriptRunsLocally(t *testing.T) {
	dir := t.TempDir()
	script := preflightScript([]string{"sh", "kprov-no-such-binary"}, dir+"/etcd/data")
	cmd := exec.CommandContext(context.Background(), "sh", "-s")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, script)
	}
	p, err := parsePreflight(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !p.Binaries["sh"] || p.Binaries["kprov-no-such-binary"] {
		t.Errorf("binaries %v", p.Binaries)
	}
	if p.DiskFree <= 0 || p.Fsync <= 0 || time.Since(p.Clock).Abs() > time.Minute {
		t.Errorf("probe %+v\n%s", p, out)
	}
	if _, err := parsePreflight([]byte("clock=1\n")); err == nil {
		t.Error("output without its end marker parsed")
	}
}
