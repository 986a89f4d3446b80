package roles

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// RuntimeData is how a Kubernetes node's container runtime is configured:
// containerd's configuration and unit, the kubelet's per-node patch and the
// bridge network. Each setting follows the host's facts unless the
// inventory's containerd block sets it, so a real host gets the standard
// settings and a host with quirks (the lab's machines) gets its own because
// its facts differ, not because kprov knows what it is.
type RuntimeData struct {
	// CgroupDriver is "systemd" on a cgroup v2 host with systemd as init,
	// "cgroupfs" otherwise; containerd (SystemdCgroup) and the kubelet
	// (cgroupDriver) use the same one, or two managers fight over the tree.
	CgroupDriver string
	// CgroupV1 is true on a cgroup v1 host: kubeadm 1.37's SystemVerification
	// refuses it unless skipped explicitly.
	CgroupV1 bool
	// KubeletAllowCgroupV1 renders failCgroupV1: false in the kubelet's
	// patch: a cgroup v1 host, and a kubelet (1.31+) that has the field.
	KubeletAllowCgroupV1 bool
	// Snapshotter is "overlayfs" unless the root file system is itself
	// overlayfs, where overlayfs cannot stack on it and "native" copies.
	Snapshotter string
	// RestrictOOMScoreAdj is true where the host lacks CAP_SYS_RESOURCE:
	// runc then cannot lower a process's oom_score_adj, and containerd must
	// not ask it to.
	RestrictOOMScoreAdj bool
	SandboxImage        string // the pause image kubeadm expects for the Kubernetes version
	CNIBinDir           string
	CNIConfDir          string
	// ContainerdBinary is what the unit starts: /usr/local/bin/containerd
	// when the artifacts block provides it, else the host's own.
	ContainerdBinary string
	PatchesDir       string // kubeadm's patches.directory
	// PodSubnet is the node's own slice of pod_subnet for the bridge
	// network, and DefaultRoute the route pods get ("0.0.0.0/0" or "::/0").
	PodSubnet    string
	DefaultRoute string
	// PodRoutes are the other Kubernetes nodes' slices of pod_subnet,
	// each through that node's address, in inventory order
	// (pod_network = "routes"; empty otherwise).
	PodRoutes []PodRoute
	// PodRouteProtocol marks the routes kprov adds (ip route ... proto N)
	// so the unit removes exactly those.
	PodRouteProtocol int
	// IPTables is "iptables" or "ip6tables" (pod_subnet's family), and
	// MasqueradeRule the POSTROUTING rule that masquerades this node's pods'
	// traffic leaving pod_subnet.
	IPTables       string
	MasqueradeRule string
}

// PodRoute is a route to another node's pods.
type PodRoute struct {
	Node   string
	Subnet string // the node's slice of pod_subnet
	Via    string // the node's address
}

// PodRouteProtocol is the routing protocol number on the routes kprov adds
// for pod_network = "routes": iproute2's rt_protos names none with it.
const PodRouteProtocol = 77

// DefaultContainerdBinary is where Debian's and Ubuntu's containerd
// package installs it, for a unit rendered without facts.
const DefaultContainerdBinary = "/usr/bin/containerd"

// pauseVersions is the pause image tag kubeadm expects (its PauseVersion
// constant, `kubeadm config images list`) by Kubernetes minor: the only
// place kprov keeps it.
var pauseVersions = []struct {
	minor int
	tag   string
}{
	{30, "3.9"},
	{31, "3.10"},
	{34, "3.10.1"},
	{37, "3.10.2"},
}

// PauseImage is the sandbox image kubeadm expects for a Kubernetes version
// (MAJOR.MINOR.PATCH): the entry for the newest minor at or below its
// minor, or the oldest entry for an older one.
func PauseImage(kubernetesVersion string) string {
	tag := pauseVersions[0].tag
	if minor, ok := kubernetesMinor(kubernetesVersion); ok {
		for _, e := range pauseVersions {
			if e.minor <= minor {
				tag = e.tag
			}
		}
	}
	return "registry.k8s.io/pause:" + tag
}

// kubernetesMinor is the minor of a 1.MINOR.PATCH version.
func kubernetesMinor(v string) (int, bool) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return 0, false
	}
	n, err := strconv.Atoi(parts[1])
	return n, err == nil
}

// ContainerdSettings decides a node's runtime settings from its facts, with
// the inventory's containerd block (o) winning where it sets a field.
func ContainerdSettings(f plan.RuntimeFacts, o inventory.Containerd) (driver, snapshotter string, restrictOOM bool) {
	driver = inventory.CgroupDriverCgroupfs
	if f.CgroupVersion == 2 && f.SystemdInit {
		driver = inventory.CgroupDriverSystemd
	}
	if o.CgroupDriver != "" {
		driver = o.CgroupDriver
	}
	snapshotter = inventory.SnapshotterOverlayfs
	if f.RootOverlay() {
		snapshotter = inventory.SnapshotterNative
	}
	if o.Snapshotter != "" {
		snapshotter = o.Snapshotter
	}
	restrictOOM = !f.CapSysResource
	if o.RestrictOOMScoreAdj != nil {
		restrictOOM = *o.RestrictOOMScoreAdj
	}
	return driver, snapshotter, restrictOOM
}

// runtimeData is the runtime configuration of node h with facts f.
func runtimeData(inv *inventory.Inventory, h *inventory.Host, f plan.RuntimeFacts) *RuntimeData {
	driver, snapshotter, restrictOOM := ContainerdSettings(f, h.Containerd)
	rd := &RuntimeData{
		CgroupDriver:        driver,
		CgroupV1:            f.CgroupVersion == 1,
		Snapshotter:         snapshotter,
		RestrictOOMScoreAdj: restrictOOM,
		SandboxImage:        PauseImage(inv.Cluster.KubernetesVersion),
		CNIBinDir:           plan.CNIBinDir,
		CNIConfDir:          plan.CNIConfDir,
		ContainerdBinary:    DefaultContainerdBinary,
		PatchesDir:          plan.KubeadmPatchesDir,
	}
	// failCgroupV1 is a KubeletConfiguration field from 1.31 on; an older
	// kubelet refuses a configuration that names it.
	if minor, ok := kubernetesMinor(inv.Cluster.KubernetesVersion); ok && minor >= 31 {
		rd.KubeletAllowCgroupV1 = rd.CgroupV1
	}
	if _, ok := inv.Artifact("containerd"); ok {
		rd.ContainerdBinary = plan.BinDir + "/containerd"
	} else if f.ContainerdPath != "" {
		rd.ContainerdBinary = f.ContainerdPath
	}
	if p, ok := inv.NodePodSubnet(h.Name); ok {
		rd.PodSubnet = p.String()
		rd.DefaultRoute = netip.PrefixFrom(netip.IPv4Unspecified(), 0).String()
		if p.Addr().Is6() {
			rd.DefaultRoute = netip.PrefixFrom(netip.IPv6Unspecified(), 0).String()
		}
		if inv.Cluster.PodNetwork == inventory.PodNetworkRoutes {
			rd.PodRoutes = podRoutes(inv, h.Name)
			rd.PodRouteProtocol = PodRouteProtocol
			rd.IPTables = "iptables"
			if p.Addr().Is6() {
				rd.IPTables = "ip6tables"
			}
			rd.MasqueradeRule = "-s " + p.String() + " ! -d " + inv.Cluster.PodSubnet.String() +
				" -m comment --comment kprov-pod-masquerade -j MASQUERADE"
		}
	}
	return rd
}

// podRoutes are the routes node self needs to every other Kubernetes
// node's pods.
func podRoutes(inv *inventory.Inventory, self string) []PodRoute {
	var routes []PodRoute
	for _, h := range inv.Hosts {
		if !h.IsNode() || h.Name == self {
			continue
		}
		if p, ok := inv.NodePodSubnet(h.Name); ok {
			routes = append(routes, PodRoute{Node: h.Name, Subnet: p.String(), Via: h.Address})
		}
	}
	return routes
}
