package provision

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// ruleCase is one situation for one preflight rule: the facts and probes of
// preflightInventory's hosts (healthy unless changed) and the hosts the rule
// must name.
type ruleCase struct {
	name   string
	change func(facts *plan.Facts, probes map[string]*preflightProbe, opts *PreflightOptions)
	want   []string // "host: message part"
	// inv changes preflightInventory for the case; nil keeps it.
	inv func(inv *inventory.Inventory)
}

var ruleNow = time.Unix(1_800_000_000, 0)

func healthyProbe() *preflightProbe {
	return &preflightProbe{PortsKnown: true, Listening: []int{22}, Sent: ruleNow, Got: ruleNow.Add(100 * time.Millisecond),
		Clock: ruleNow.Add(50 * time.Millisecond), Binaries: map[string]bool{}, DiskFree: 100 << 30, Fsync: time.Millisecond}
}

// runRule runs one rule alone over each case.
func runRule(t *testing.T, rule func(*preflightEnv) []Problem, cases []ruleCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inv := preflightInventory()
			if c.inv != nil {
				c.inv(inv)
			}
			facts := &plan.Facts{Hosts: map[string]*plan.HostFacts{}}
			probes := map[string]*preflightProbe{}
			for _, h := range inv.Hosts {
				facts.Hosts[h.Name] = goodHost(h.Name)
				probes[h.Name] = healthyProbe()
			}
			opts := PreflightOptions{MaxClockSkew: DefaultMaxClockSkew, MaxFsyncLatency: DefaultMaxFsyncLatency, MinEtcdDiskFree: DefaultMinEtcdDiskFree}
			if c.change != nil {
				c.change(facts, probes, &opts)
			}
			env := &preflightEnv{inv: inv, facts: facts, probes: probes, opts: opts,
				problem: func(host, format string, args ...any) Problem {
					return Problem{Host: host, Check: "rule", Message: fmt.Sprintf(format, args...)}
				}}
			got := rule(env)
			if len(got) != len(c.want) {
				t.Fatalf("problems %v, want %d: %v", got, len(c.want), c.want)
			}
			for i, w := range c.want {
				host, part, _ := strings.Cut(w, ": ")
				if got[i].Host != host || !strings.Contains(got[i].Message, part) {
					t.Errorf("problem %d = %v, want %s mentioning %q", i, got[i], host, part)
				}
			}
		})
	}
}

func TestRuleReachable(t *testing.T) {
	runRule(t, ruleReachable, []ruleCase{
		{name: "all answer"},
		{name: "two down, each named with why", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			f.Hosts["compute-1"] = &plan.HostFacts{Error: "connect: connection refused"}
			delete(f.Hosts, "compute-2")
		}, want: []string{"compute-1: connection refused", "compute-2: no facts gathered"}},
	})
}

func TestRuleOS(t *testing.T) {
	runRule(t, ruleOS, []ruleCase{
		{name: "debian and ubuntu", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			f.Hosts["master-1"].OS = "ubuntu 24.04"
		}},
		{name: "centos and unknown", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			f.Hosts["etcd-1"].OS = "centos 9"
			f.Hosts["compute-2"].OS = ""
		}, want: []string{`etcd-1: "centos 9" is not supported`, `compute-2: "" is not supported`}},
	})
}

func TestRuleArch(t *testing.T) {
	runRule(t, ruleArch, []ruleCase{
		{name: "aarch64 is fine", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			f.Hosts["master-1"].Arch = "aarch64"
		}},
		{name: "riscv64 is not", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			f.Hosts["master-1"].Arch = "riscv64"
		}, want: []string{`master-1: "riscv64"`}},
	})
}

func TestRulePorts(t *testing.T) {
	runRule(t, rulePorts, []ruleCase{
		{name: "free"},
		{name: "taken on every kind of host", change: func(_ *plan.Facts, p map[string]*preflightProbe, _ *PreflightOptions) {
			p["etcd-1"].Listening = []int{2379, 2380}
			p["master-1"].Listening = []int{6443, 10250}
			p["compute-1"].Listening = []int{10250}
		}, want: []string{"etcd-1: port 2379", "etcd-1: port 2380", "master-1: port 6443", "master-1: port 10250", "compute-1: port 10250"}},
		{name: "held by kprov's own running services", change: func(f *plan.Facts, p map[string]*preflightProbe, _ *PreflightOptions) {
			p["etcd-1"].Listening = []int{2379, 2380}
			f.Hosts["etcd-1"].Services["etcd"] = "active"
			p["master-1"].Listening = []int{6443, 10250}
			f.Hosts["master-1"].ControlPlane = true
			p["compute-1"].Listening = []int{10250}
			f.Hosts["compute-1"].Joined = true
		}},
		{name: "ss missing: unknown, not a problem", change: func(_ *plan.Facts, p map[string]*preflightProbe, _ *PreflightOptions) {
			p["master-1"].Listening = []int{6443}
			p["master-1"].PortsKnown = false
		}},
	})
}

func TestRuleClock(t *testing.T) {
	runRule(t, ruleClock, []ruleCase{
		{name: "within the round trip"},
		{name: "ahead and behind", change: func(_ *plan.Facts, p map[string]*preflightProbe, _ *PreflightOptions) {
			p["master-1"].Clock = ruleNow.Add(10 * time.Second)
			p["compute-1"].Clock = ruleNow.Add(-5 * time.Second)
		}, want: []string{"master-1: clock is 9.95s off", "compute-1: clock is -5.05s off"}},
		{name: "a slow round trip widens the allowance", change: func(_ *plan.Facts, p map[string]*preflightProbe, _ *PreflightOptions) {
			p["master-1"].Got = ruleNow.Add(4 * time.Second)
			p["master-1"].Clock = ruleNow.Add(4 * time.Second)
		}},
	})
}

func TestRuleBinaries(t *testing.T) {
	runRule(t, ruleBinaries, []ruleCase{
		{name: "present", change: func(_ *plan.Facts, p map[string]*preflightProbe, o *PreflightOptions) {
			o.Binaries = map[string][]string{"compute-1": {"kubelet"}}
			p["compute-1"].Binaries["kubelet"] = true
		}},
		{name: "missing on two hosts", change: func(_ *plan.Facts, _ map[string]*preflightProbe, o *PreflightOptions) {
			o.Binaries = map[string][]string{"compute-1": {"kubelet", "kubeadm"}, "etcd-1": {"etcd"}}
		}, want: []string{"etcd-1: etcd is not installed", "compute-1: kubelet is not installed", "compute-1: kubeadm is not installed"}},
	})
}

func TestRuleEtcdDisk(t *testing.T) {
	runRule(t, ruleEtcdDisk, []ruleCase{
		{name: "room"},
		{name: "full, and unknown elsewhere", change: func(_ *plan.Facts, p map[string]*preflightProbe, _ *PreflightOptions) {
			p["etcd-1"].DiskFree = 1 << 30
			p["master-1"].DiskFree = 0 // not an etcd host: not checked
		}, want: []string{"etcd-1: 1024 MiB free"}},
	})
}

func TestRuleEtcdFsync(t *testing.T) {
	runRule(t, ruleEtcdFsync, []ruleCase{
		{name: "fast"},
		{name: "slow disk on the etcd host only counts", change: func(_ *plan.Facts, p map[string]*preflightProbe, _ *PreflightOptions) {
			p["etcd-1"].Fsync = 30 * time.Millisecond
			p["compute-1"].Fsync = time.Second
		}, want: []string{"etcd-1: takes 30ms"}},
	})
}

func TestRuleUniqueHostnames(t *testing.T) {
	runRule(t, ruleUniqueHostnames, []ruleCase{
		{name: "unique"},
		{name: "three hosts, one name", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			for _, h := range []string{"master-1", "compute-1", "compute-2"} {
				f.Hosts[h].Hostname = "debian"
			}
		}, want: []string{"master-1: also the hostname of compute-1, compute-2", "compute-1: also the hostname of master-1, compute-2", "compute-2: also the hostname of master-1, compute-1"}},
	})
}

// TestRuleImages: with image archives, every image kubeadm needs on a node
// is in an archive or on the host; each node's missing ones are named in
// one problem (a worker needs no control-plane image). Without archives
// kubeadm pulls, and nothing is checked.
func TestRuleImages(t *testing.T) {
	r := "registry.k8s.io/"
	digest := "sha256:" + strings.Repeat("1", 64)
	withImages := func(inv *inventory.Inventory) {
		inv.Cluster.KubernetesVersion = "1.37.2"
		inv.Images = []inventory.Artifact{{Name: inventory.ImagesField, Path: "/images/all.tar", SHA256: strings.Repeat("a", 64)}}
	}
	archive := func(refs ...string) func(*plan.Facts, map[string]*preflightProbe, *PreflightOptions) {
		return func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			ar := plan.ImageArchive{Path: "/images/all.tar", SHA256: strings.Repeat("a", 64)}
			for _, ref := range refs {
				ar.Images = append(ar.Images, plan.ImageRef{Ref: ref, Digest: digest})
			}
			f.ImageArchives = []plan.ImageArchive{ar}
		}
	}
	all := []string{r + "kube-apiserver:v1.37.2", r + "kube-controller-manager:v1.37.2", r + "kube-scheduler:v1.37.2",
		r + "kube-proxy:v1.37.2", r + "coredns/coredns:v1.14.6", r + "pause:3.10.2"}
	runRule(t, ruleImages, []ruleCase{
		{name: "no-archives-kubeadm-pulls"},
		{name: "all-in-archives", inv: withImages, change: archive(all...)},
		{name: "missing-everywhere", inv: withImages, change: archive(all[:4]...), want: []string{
			"master-1: kubeadm needs registry.k8s.io/coredns/coredns:v1.14.6, registry.k8s.io/pause:3.10.2, in none",
			"compute-1: kubeadm needs registry.k8s.io/coredns/coredns:v1.14.6, registry.k8s.io/pause:3.10.2, in none",
			"compute-2: kubeadm needs registry.k8s.io/coredns/coredns:v1.14.6, registry.k8s.io/pause:3.10.2, in none",
		}},
		{name: "on-the-host-will-do", inv: withImages, change: func(f *plan.Facts, p map[string]*preflightProbe, o *PreflightOptions) {
			archive(all[:5]...)(f, p, o)
			for _, h := range []string{"master-1", "compute-1", "compute-2"} {
				f.Hosts[h].Images = map[string]string{r + "pause:3.10.2": digest}
			}
		}},
		{name: "workers-need-no-control-plane", inv: withImages, change: archive(all[3:]...), want: []string{
			"master-1: kubeadm needs registry.k8s.io/kube-apiserver:v1.37.2, registry.k8s.io/kube-controller-manager:v1.37.2, registry.k8s.io/kube-scheduler:v1.37.2, in none",
		}},
		{name: "unknown-version", inv: func(inv *inventory.Inventory) { withImages(inv); inv.Cluster.KubernetesVersion = "1.36.1" }, change: archive(all...),
			want: []string{"master-1: kprov does not know which images kubeadm 1.36.1 needs"}},
	})
}

func TestRuleRuntime(t *testing.T) {
	runRule(t, ruleRuntime, []ruleCase{
		{name: "containerd 2, runc and the plugins on every node"},
		{name: "nothing installed: each node names what to add; the etcd host needs none", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			for _, h := range []string{"etcd-1", "master-1"} {
				f.Hosts[h].Versions = map[string]string{}
				f.Hosts[h].Runtime = nil
			}
		}, want: []string{
			`master-1: containerd is not installed: add containerd = { path`,
			`master-1: containerd-shim-runc-v2 is not installed: add containerd-shim-runc-v2 = {`,
			`master-1: runc is not installed: add runc = {`,
			`master-1: the CNI plugins bridge, host-local, loopback, portmap are not in /opt/cni/bin: add cni-plugins = {`,
		}},
		{name: "containerd 1.6 from the distribution", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			f.Hosts["compute-1"].Versions["containerd"] = "1.6.20~ds1"
		}, want: []string{`compute-1: containerd "1.6.20~ds1" is installed, but kprov needs containerd 2.0 or newer`}},
		{name: "two plugins missing", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			f.Hosts["compute-2"].Runtime.CNIPlugins = []string{"bridge", "host-local"}
		}, want: []string{`compute-2: the CNI plugins loopback, portmap are not in /opt/cni/bin`}},
		{name: "pod_network routes without ip and iptables", inv: func(inv *inventory.Inventory) {
			inv.Cluster.PodNetwork, inv.Cluster.PodSubnet = inventory.PodNetworkRoutes, netip.MustParsePrefix("10.244.0.0/16")
		}, change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			delete(f.Hosts["compute-1"].Versions, "ip")
			delete(f.Hosts["compute-1"].Versions, "iptables")
		}, want: []string{
			`compute-1: ip is not installed, and pod_network = "routes" runs it for the routes to the other nodes' pods: install it (package iproute2)`,
			`compute-1: iptables is not installed, and pod_network = "routes" runs it`,
		}},
		{name: "pod_network none: only loopback is kprov's concern", inv: func(inv *inventory.Inventory) {
			inv.Cluster.PodNetwork = inventory.PodNetworkNone
		}, change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			f.Hosts["compute-1"].Runtime.CNIPlugins = []string{"loopback"}
			f.Hosts["compute-2"].Runtime.CNIPlugins = nil
			delete(f.Hosts["compute-2"].Versions, "ip")
		}, want: []string{`compute-2: the CNI plugins loopback are not in /opt/cni/bin`}},
		{name: "no systemd as init, and no override: cgroupfs is fine", change: func(f *plan.Facts, _ map[string]*preflightProbe, _ *PreflightOptions) {
			f.Hosts["compute-1"].Runtime.SystemdInit = false
		}},
	})
}

// The artifacts block stands in for what the host lacks; an override the
// host cannot serve is named.
func TestRuleRuntimeArtifactsAndOverrides(t *testing.T) {
	inv := preflightInventory()
	for _, name := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc", inventory.CNIPluginsArtifact} {
		inv.Artifacts = append(inv.Artifacts, inventory.Artifact{Name: name, Path: "/bin/" + name, SHA256: strings.Repeat("a", 64)})
	}
	inv.Host("compute-1").Containerd.CgroupDriver = inventory.CgroupDriverSystemd
	facts := &plan.Facts{Hosts: map[string]*plan.HostFacts{}}
	for _, h := range inv.Hosts {
		facts.Hosts[h.Name] = &plan.HostFacts{Reachable: true, Versions: map[string]string{"containerd": "1.6.20"}}
	}
	facts.Hosts["compute-1"].Runtime = &plan.RuntimeFacts{CgroupVersion: 1}
	env := &preflightEnv{inv: inv, facts: facts, problem: func(host, format string, args ...any) Problem {
		return Problem{Host: host, Message: fmt.Sprintf(format, args...)}
	}}
	got := ruleRuntime(env)
	if len(got) != 1 || got[0].Host != "compute-1" || !strings.Contains(got[0].Message, `cgroup_driver = "systemd", but systemd is not the host's init`) {
		t.Errorf("problems %v", got)
	}
}
