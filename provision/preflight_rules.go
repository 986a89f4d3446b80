package provision

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
)

// preflightRule is one named check over every host; it reports each host it
// fails on, so one preflight run shows every problem.
type preflightRule struct {
	name  string
	check func(env *preflightEnv) []Problem
}

// preflightRules are the checks, in the order their problems are listed
// for one host.
var preflightRules = []preflightRule{
	{"reachable", ruleReachable},
	{"os", ruleOS},
	{"arch", ruleArch},
	{"ports", rulePorts},
	{"clock", ruleClock},
	{"binaries", ruleBinaries},
	{"runtime", ruleRuntime},
	{"disk", ruleEtcdDisk},
	{"fsync", ruleEtcdFsync},
	{"hostname", ruleUniqueHostnames},
	{"images", ruleImages},
}

// preflightEnv is what the rules judge: the inventory, the facts, each
// reachable host's probe, and the limits.
type preflightEnv struct {
	inv     *inventory.Inventory
	facts   *plan.Facts
	probes  map[string]*preflightProbe
	opts    PreflightOptions // limits filled with their defaults
	problem func(host, format string, args ...any) Problem
}

// preflightHost is one host that answered, with its facts and (when its
// probe ran) its probe.
type preflightHost struct {
	*inventory.Host
	facts *plan.HostFacts
	probe *preflightProbe
}

// reachable lists the hosts that answered, in inventory order.
func (e *preflightEnv) reachable() []preflightHost {
	var out []preflightHost
	for _, h := range e.inv.Hosts {
		if hf := e.facts.Hosts[h.Name]; hf != nil && hf.Reachable {
			out = append(out, preflightHost{Host: h, facts: hf, probe: e.probes[h.Name]})
		}
	}
	return out
}

// probed lists the hosts whose preflight probe ran.
func (e *preflightEnv) probed() []preflightHost {
	return slices.DeleteFunc(e.reachable(), func(h preflightHost) bool { return h.probe == nil })
}

// etcdHost reports whether h runs an external etcd member.
func (e *preflightEnv) etcdHost(h *inventory.Host) bool {
	return e.inv.Topology.EtcdMode == inventory.EtcdExternal && h.Has(inventory.RoleEtcd)
}

// checkPreflight runs every rule; it is pure, so each rule has a table test.
func checkPreflight(inv *inventory.Inventory, facts *plan.Facts, probes map[string]*preflightProbe, opts PreflightOptions) []Problem {
	opts.MaxClockSkew = orDefault(opts.MaxClockSkew, DefaultMaxClockSkew)
	opts.MaxFsyncLatency = orDefault(opts.MaxFsyncLatency, DefaultMaxFsyncLatency)
	if opts.MinEtcdDiskFree <= 0 {
		opts.MinEtcdDiskFree = DefaultMinEtcdDiskFree
	}
	var out []Problem
	for _, r := range preflightRules {
		env := &preflightEnv{inv: inv, facts: facts, probes: probes, opts: opts}
		env.problem = func(host, format string, args ...any) Problem {
			return Problem{Host: host, Check: r.name, Message: fmt.Sprintf(format, args...)}
		}
		out = append(out, r.check(env)...)
	}
	slices.SortStableFunc(out, func(a, b Problem) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// ruleReachable: every host must answer; the plan needs them all.
func ruleReachable(e *preflightEnv) []Problem {
	var out []Problem
	for _, h := range e.inv.Hosts {
		if hf := e.facts.Hosts[h.Name]; hf == nil || !hf.Reachable {
			msg := "no facts gathered"
			if hf != nil && hf.Error != "" {
				msg = hf.Error
			}
			out = append(out, e.problem(h.Name, "%s", msg))
		}
	}
	return out
}

// supportedOS and supportedArch are what kprov's templates and the
// artifacts are made for.
var (
	supportedOS   = []string{"debian", "ubuntu"}
	supportedArch = []string{"x86_64", "aarch64"}
)

// ruleOS: the templates are written for Debian and Ubuntu.
func ruleOS(e *preflightEnv) []Problem {
	var out []Problem
	for _, h := range e.reachable() {
		if id, _, _ := strings.Cut(h.facts.OS, " "); !slices.Contains(supportedOS, id) {
			out = append(out, e.problem(h.Name, "%q is not supported (want Debian or Ubuntu)", h.facts.OS))
		}
	}
	return out
}

// ruleArch: the artifacts are built for x86_64 and aarch64.
func ruleArch(e *preflightEnv) []Problem {
	var out []Problem
	for _, h := range e.reachable() {
		if !slices.Contains(supportedArch, h.facts.Arch) {
			out = append(out, e.problem(h.Name, "%q is not supported (want x86_64 or aarch64)", h.facts.Arch))
		}
	}
	return out
}

// rulePorts: ports another process already holds would make etcd or the
// kubelet fail to bind long after the plan started. A service kprov already
// runs there holds its own ports, which is fine.
func rulePorts(e *preflightEnv) []Problem {
	var out []Problem
	for _, h := range e.probed() {
		if !h.probe.PortsKnown {
			continue
		}
		var ports []int
		if e.etcdHost(h.Host) && h.facts.Services["etcd"] != "active" {
			ports = append(ports, plan.EtcdClientPort, plan.EtcdPeerPort)
		}
		if h.Has(inventory.RoleMaster) && !h.facts.ControlPlane {
			ports = append(ports, inventory.DefaultAPIServerPort)
		}
		if h.IsNode() && !h.facts.Joined && !h.facts.ControlPlane {
			ports = append(ports, 10250)
		}
		if h.IsNode() && e.inv.Cluster.APIEndpoint == inventory.APIEndpointNodeLocal && h.facts.Services[plan.APIProxyUnit] != "active" {
			ports = append(ports, e.inv.Cluster.APIProxyPort)
		}
		for _, port := range ports {
			if slices.Contains(h.probe.Listening, port) {
				out = append(out, e.problem(h.Name, "port %d is already in use (ss -ltnp shows by what)", port))
			}
		}
	}
	return out
}

// ruleClock: etcd's leases and every certificate's validity need clocks
// that agree. The host's clock is compared with the middle of the probe's
// round trip, allowing half of it either way.
func ruleClock(e *preflightEnv) []Problem {
	var out []Problem
	for _, h := range e.probed() {
		p := h.probe
		if p.Clock.IsZero() {
			continue
		}
		half := p.Got.Sub(p.Sent) / 2
		skew := p.Clock.Sub(p.Sent.Add(half))
		if skew > e.opts.MaxClockSkew+half || -skew > e.opts.MaxClockSkew+half {
			out = append(out, e.problem(h.Name, "clock is %s off the operator's (at most %s): run an NTP client (chrony, systemd-timesyncd)", skew.Round(time.Millisecond), e.opts.MaxClockSkew))
		}
	}
	return out
}

// ruleBinaries: a binary the host's roles need must be there when no
// artifact provides it.
func ruleBinaries(e *preflightEnv) []Problem {
	var out []Problem
	for _, h := range e.probed() {
		for _, bin := range e.opts.Binaries[h.Name] {
			if !h.probe.Binaries[bin] {
				out = append(out, e.problem(h.Name, "%s is not installed and the inventory's artifacts block does not provide it", bin))
			}
		}
	}
	return out
}

// cniPluginsNeeded are the CNI plugins a node's bridge network runs
// (templates/cni-bridge.conflist.tmpl), loopback included: containerd sets
// up every pod's loopback interface with it. With pod_network = "none" only
// loopback is kprov's concern; the user's pod network brings its own.
func cniPluginsNeeded(podNetwork string) []string {
	if podNetwork == inventory.PodNetworkNone {
		return []string{"loopback"}
	}
	return []string{"bridge", "host-local", "loopback", "portmap"}
}

// ruleRuntime: a Kubernetes node needs containerd 2 (kprov writes a
// version 3 configuration, which containerd 1 does not read), its runc shim,
// runc and the CNI plugins, each from the artifacts block or already on the
// host; and a cgroup driver the host can serve. It judges the facts, so it
// names exactly what is missing and what to add to the artifacts block.
func ruleRuntime(e *preflightEnv) []Problem {
	var out []Problem
	provided := func(name string) bool { _, ok := e.inv.Artifact(name); return ok }
	entry := func(name string) string { return name + ` = { path = "...", sha256 = "..." }` }
	for _, h := range e.reachable() {
		if !h.IsNode() {
			continue
		}
		v := h.facts.Versions
		if !provided("containerd") {
			have, ok := v["containerd"]
			switch {
			case !ok:
				out = append(out, e.problem(h.Name, "containerd is not installed: add %s (with ctr and containerd-shim-runc-v2) to the artifacts block, or install containerd 2 on the host", entry("containerd")))
			case !containerd2(have):
				out = append(out, e.problem(h.Name, "containerd %q is installed, but kprov needs containerd 2.0 or newer (its configuration is version 3): add %s (with ctr and containerd-shim-runc-v2) to the artifacts block, or upgrade containerd on the host", have, entry("containerd")))
			}
		}
		for _, bin := range []string{"containerd-shim-runc-v2", "runc"} {
			if _, ok := v[bin]; !ok && !provided(bin) {
				out = append(out, e.problem(h.Name, "%s is not installed: add %s to the artifacts block, or install it on the host", bin, entry(bin)))
			}
		}
		rt := h.facts.RuntimeFacts()
		if !provided(inventory.CNIPluginsArtifact) {
			var missing []string
			for _, p := range cniPluginsNeeded(e.inv.Cluster.PodNetwork) {
				if !slices.Contains(rt.CNIPlugins, p) {
					missing = append(missing, p)
				}
			}
			if len(missing) > 0 {
				out = append(out, e.problem(h.Name, "the CNI plugins %s are not in %s: add %s (a .tgz with the plugins at its top level) to the artifacts block, or install them there",
					strings.Join(missing, ", "), plan.CNIBinDir, entry(inventory.CNIPluginsArtifact)))
			}
		}
		if e.inv.Cluster.PodNetwork == inventory.PodNetworkRoutes {
			// kprov-pod-routes.service runs ip (routes) and iptables or
			// ip6tables (masquerade), pod_subnet's family.
			ipt := "iptables"
			if e.inv.Cluster.PodSubnet.Addr().Is6() {
				ipt = "ip6tables"
			}
			for _, bin := range []struct{ name, pkg string }{{"ip", "iproute2"}, {ipt, "iptables"}} {
				if _, ok := v[bin.name]; !ok {
					out = append(out, e.problem(h.Name, "%s is not installed, and pod_network = %q runs it for the routes to the other nodes' pods: install it (package %s), or set pod_network = %q and bring your own pod network",
						bin.name, inventory.PodNetworkRoutes, bin.pkg, inventory.PodNetworkNone))
				}
			}
		}
		if h.Containerd.CgroupDriver == inventory.CgroupDriverSystemd && !rt.SystemdInit {
			out = append(out, e.problem(h.Name, "the containerd block sets cgroup_driver = \"systemd\", but systemd is not the host's init and cannot manage its cgroups: set \"cgroupfs\" for it, or leave cgroup_driver out"))
		}
	}
	return out
}

// containerd2 reports whether a containerd version (2.4.2, 1.6.20~ds1) is 2.0 or newer.
func containerd2(version string) bool {
	major, _, _ := strings.Cut(version, ".")
	n, err := strconv.Atoi(major)
	return err == nil && n >= 2
}

// ruleEtcdDisk: etcd needs room for its backend quota, WAL and snapshots.
func ruleEtcdDisk(e *preflightEnv) []Problem {
	var out []Problem
	for _, h := range e.probed() {
		if e.etcdHost(h.Host) && h.probe.DiskFree >= 0 && h.probe.DiskFree < e.opts.MinEtcdDiskFree {
			out = append(out, e.problem(h.Name, "%d MiB free for etcd's data directory %s, want at least %d MiB", h.probe.DiskFree>>20, e.inv.Etcd.DataDir, e.opts.MinEtcdDiskFree>>20))
		}
	}
	return out
}

// ruleEtcdFsync: slow WAL fsyncs make heartbeats late and leaders flap.
func ruleEtcdFsync(e *preflightEnv) []Problem {
	var out []Problem
	for _, h := range e.probed() {
		if e.etcdHost(h.Host) && h.probe.Fsync > e.opts.MaxFsyncLatency {
			out = append(out, e.problem(h.Name, "a synchronous write on %s takes %s on average, etcd needs under %s: use an SSD for the data directory", e.inv.Etcd.DataDir, h.probe.Fsync.Round(100*time.Microsecond), e.opts.MaxFsyncLatency))
		}
	}
	return out
}

// ruleUniqueHostnames: Kubernetes nodes and etcd members are named after
// their hosts, so two hosts with one hostname collide.
func ruleUniqueHostnames(e *preflightEnv) []Problem {
	byName := map[string][]string{}
	var names []string
	for _, h := range e.reachable() {
		if h.facts.Hostname == "" {
			continue
		}
		if _, ok := byName[h.facts.Hostname]; !ok {
			names = append(names, h.facts.Hostname)
		}
		byName[h.facts.Hostname] = append(byName[h.facts.Hostname], h.Name)
	}
	var out []Problem
	for _, name := range names {
		hosts := byName[name]
		if len(hosts) < 2 {
			continue
		}
		for _, h := range hosts {
			others := slices.DeleteFunc(slices.Clone(hosts), func(x string) bool { return x == h })
			out = append(out, e.problem(h, "hostname %q is also the hostname of %s: Kubernetes and etcd need unique names", name, strings.Join(others, ", ")))
		}
	}
	return out
}

// ruleImages: with image archives in the inventory nothing is pulled
// (kubeadm's imagePullPolicy is Never), so every image kubeadm needs on a
// node (roles.NodeImages) must be in an archive or already in the host's
// containerd, or kubeadm's own preflight stops halfway through the apply,
// after etcd has formed. Every image missing on a node is named in one
// problem. Without archives kubeadm pulls its images as it always has,
// and the rule checks nothing: the hosts need the registry then.
func ruleImages(e *preflightEnv) []Problem {
	if len(e.inv.Images) == 0 {
		return nil
	}
	inArchives := map[string]bool{}
	for _, ar := range e.facts.ImageArchives {
		for _, im := range ar.Images {
			inArchives[im.Ref] = true
		}
	}
	version := e.inv.Cluster.KubernetesVersion
	var out []Problem
	for _, h := range e.reachable() {
		need, err := roles.NodeImages(e.inv, h.Host)
		if err != nil {
			// Said once, on the first node: it is the same for all.
			if len(out) == 0 {
				out = append(out, e.problem(h.Name, "%v, so it cannot check that the image archives hold them: bring images for a version kprov knows, or add the version to roles' table", err))
			}
			continue
		}
		var missing []string
		for _, ref := range need {
			if _, onHost := h.facts.Images[ref]; !inArchives[ref] && !onHost {
				missing = append(missing, ref)
			}
		}
		if len(missing) > 0 {
			out = append(out, e.problem(h.Name, "kubeadm needs %s, in none of the inventory's image archives and not on the host (nothing is pulled when the inventory brings images): add archives holding them to artifacts.images (kubeadm config images list --kubernetes-version v%s lists every image)",
				strings.Join(missing, ", "), version))
		}
	}
	return out
}

func orDefault(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}
