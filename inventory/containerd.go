package inventory

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/hashicorp/hcl/v2"
)

// Containerd is a containerd block: settings that override what kprov
// derives from each host's facts. A zero field means "from the facts".
type Containerd struct {
	// CgroupDriver is CgroupDriverSystemd or CgroupDriverCgroupfs; the
	// kubelet's cgroupDriver always matches containerd's.
	CgroupDriver string
	// Snapshotter is SnapshotterOverlayfs or SnapshotterNative.
	Snapshotter string
	// RestrictOOMScoreAdj, when set, says whether containerd keeps
	// containers from lowering their oom_score_adj below its own.
	RestrictOOMScoreAdj *bool
}

// The values a containerd block takes.
const (
	CgroupDriverSystemd  = "systemd"
	CgroupDriverCgroupfs = "cgroupfs"
	SnapshotterOverlayfs = "overlayfs"
	SnapshotterNative    = "native"
)

// containerdBlock is `containerd { cgroup_driver = "...", ... }`, at the top
// level or in a host.
type containerdBlock struct {
	CgroupDriver        *string `hcl:"cgroup_driver,optional"`
	Snapshotter         *string `hcl:"snapshotter,optional"`
	RestrictOOMScoreAdj *bool   `hcl:"restrict_oom_score_adj,optional"`

	DefRange          hcl.Range `hcl:",def_range"`
	CgroupDriverRange hcl.Range `hcl:"cgroup_driver,attr_range"`
	SnapshotterRange  hcl.Range `hcl:"snapshotter,attr_range"`
}

// mergeContainerd lays the blocks (at most one is allowed) over dst, field
// by field, so a host's block overrides only what it sets.
func mergeContainerd(dst *Containerd, blocks []*containerdBlock, where string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for i, b := range blocks {
		if i > 0 {
			diags = append(diags, errorAt(b.DefRange, "Duplicate containerd block", "%s has more than one containerd block; merge them.", where))
			continue
		}
		diags = append(diags, choose(&dst.CgroupDriver, b.CgroupDriver, b.CgroupDriverRange, "cgroup_driver",
			"is not a cgroup driver; use \"systemd\" (cgroup v2 with systemd as init) or \"cgroupfs\"",
			CgroupDriverSystemd, CgroupDriverCgroupfs)...)
		diags = append(diags, choose(&dst.Snapshotter, b.Snapshotter, b.SnapshotterRange, "snapshotter",
			"is not a snapshotter kprov configures; use \"overlayfs\" or \"native\" (for a root file system that is itself overlayfs)",
			SnapshotterOverlayfs, SnapshotterNative)...)
		if b.RestrictOOMScoreAdj != nil {
			v := *b.RestrictOOMScoreAdj
			dst.RestrictOOMScoreAdj = &v
		}
	}
	return diags
}

// choose sets *dst to *v when v is set and one of choices, and otherwise
// says why (what) and suggests the nearest choice.
func choose(dst, v *string, r hcl.Range, field, what string, choices ...string) hcl.Diagnostics {
	if v == nil {
		return nil
	}
	if slices.Contains(choices, *v) {
		*dst = *v
		return nil
	}
	return hcl.Diagnostics{errorAt(r, "Invalid "+field, "%q %s, or leave it out to follow each host's facts.%s", *v, what, suggestion(*v, choices))}
}

// Each Kubernetes node gets its own slice of pod_subnet for the bridge
// network kprov configures: a /24 of IPv4 (253 pods), a /64 of IPv6.
const (
	NodePodSubnetBits4 = 24
	NodePodSubnetBits6 = 64
)

// nodePodSubnetBits is the size of one node's slice of p.
func nodePodSubnetBits(p netip.Prefix) int {
	if p.Addr().Is4() {
		return NodePodSubnetBits4
	}
	return NodePodSubnetBits6
}

// podSubnetSlices is how many node slices p holds, capped at 1<<20 (more
// than the hosts an inventory may have).
func podSubnetSlices(p netip.Prefix) int {
	extra := nodePodSubnetBits(p) - p.Bits()
	switch {
	case extra < 0:
		return 0
	case extra > 20:
		return 1 << 20
	}
	return 1 << extra
}

// NodePodSubnet is the slice of pod_subnet the Kubernetes node host uses
// for its pods: the i-th /24 (IPv4) or /64 (IPv6) for the i-th node in
// inventory order. It is false for a host that runs no kubelet. Load
// refuses a pod_subnet too small for every node.
func (inv *Inventory) NodePodSubnet(host string) (netip.Prefix, bool) {
	p := inv.Cluster.PodSubnet
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	i := 0
	for _, h := range inv.Hosts {
		if !h.IsNode() {
			continue
		}
		if h.Name == host {
			if i >= podSubnetSlices(p) {
				return netip.Prefix{}, false
			}
			return nthSlice(p, i), true
		}
		i++
	}
	return netip.Prefix{}, false
}

// nthSlice is the i-th node slice of p (i < podSubnetSlices(p)).
func nthSlice(p netip.Prefix, i int) netip.Prefix {
	bits := nodePodSubnetBits(p)
	a := p.Addr().As16()
	if p.Addr().Is4() {
		v := binary.BigEndian.Uint32(a[12:]) + uint32(i)<<(32-bits)
		binary.BigEndian.PutUint32(a[12:], v)
		return netip.PrefixFrom(netip.AddrFrom16(a).Unmap(), bits)
	}
	// The slice index lives in the upper 64 bits (a /64 per node).
	v := binary.BigEndian.Uint64(a[:8]) + uint64(i)
	binary.BigEndian.PutUint64(a[:8], v)
	return netip.PrefixFrom(netip.AddrFrom16(a), bits)
}

// checkPodSubnetSize refuses a pod_subnet without a slice for every
// Kubernetes node. r is where pod_subnet is set (the cluster block when it
// is left at its default).
func checkPodSubnetSize(inv *Inventory, r hcl.Range) hcl.Diagnostics {
	p := inv.Cluster.PodSubnet
	if !p.IsValid() {
		return nil
	}
	nodes := 0
	for _, h := range inv.Hosts {
		if h.IsNode() {
			nodes++
		}
	}
	if n := podSubnetSlices(p); nodes > n {
		bits := nodePodSubnetBits(p)
		return hcl.Diagnostics{errorAt(r, "pod_subnet too small",
			"Each Kubernetes node gets its own /%d of pod_subnet for its pods; %s holds %s, and the inventory has %d nodes (masters, infra and compute hosts). Use a larger pod_subnet, such as %s.",
			bits, p, plural(n, fmt.Sprintf("/%d", bits), fmt.Sprintf("/%ds", bits)), nodes, DefaultPodSubnet)}
	}
	return nil
}
