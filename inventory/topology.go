package inventory

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// TopologyKind is the shape of the control plane, derived from the roles.
type TopologyKind string

// The control-plane shapes kprov serves.
const (
	SingleNode   TopologyKind = "single-node"   // one host runs everything
	SingleMaster TopologyKind = "single-master" // one master and worker hosts; not highly available
	HA           TopologyKind = "ha"            // several masters behind control_plane_endpoint
)

// EtcdMode says where etcd runs.
type EtcdMode string

// Where etcd can run.
const (
	EtcdStacked  EtcdMode = "stacked"  // one member on every master, managed by kubeadm
	EtcdExternal EtcdMode = "external" // a separate set of etcd hosts, managed by kprov
)

// Topology is what the roles add up to. It is derived, never declared.
type Topology struct {
	Kind     TopologyKind `json:"kind"`
	EtcdMode EtcdMode     `json:"etcd_mode"`
	// Host names by role, in inventory order; a host with several roles is in several lists.
	Masters   []string `json:"masters"`
	EtcdHosts []string `json:"etcd_hosts"`
	Infra     []string `json:"infra"`
	Compute   []string `json:"compute"`
	// EtcdMembers are the hosts that should be voting etcd members.
	EtcdMembers []string `json:"etcd_members"`
	// MastersSchedulable is true when masters carry no control-plane taint,
	// because there is no other host to run workloads.
	MastersSchedulable bool `json:"masters_schedulable"`
}

// Quorum is the number of etcd voting members that must agree for the
// cluster to make progress: a strict majority of n.
func Quorum(n int) int { return n/2 + 1 }

// FaultTolerance is how many of n voting members can fail with quorum kept.
func FaultTolerance(n int) int {
	if n < 1 {
		return 0
	}
	return (n - 1) / 2
}

// Summary renders the topology on one line, e.g.
// "3 masters, external etcd (3 members, quorum 2, tolerates 1 failure), 3 infra, 10 compute".
func (t Topology) Summary() string {
	n := len(t.EtcdMembers)
	parts := []string{
		plural(len(t.Masters), "master", "masters"),
		fmt.Sprintf("%s etcd (%s, quorum %d, tolerates %s)", t.EtcdMode, plural(n, "member", "members"),
			Quorum(n), plural(FaultTolerance(n), "failure", "failures")),
		fmt.Sprintf("%d infra", len(t.Infra)),
		fmt.Sprintf("%d compute", len(t.Compute)),
	}
	s := strings.Join(parts, ", ")
	if t.Kind == SingleNode {
		s = "single node: " + s
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// validateTopology derives the topology and checks every rule that spans hosts.
// It also settles each host's final labels and taints.
func validateTopology(inv *Inventory) hcl.Diagnostics {
	var diags hcl.Diagnostics
	diags = append(diags, checkUnique(inv)...)

	t := &inv.Topology
	for _, h := range inv.Hosts {
		if h.Has(RoleMaster) {
			t.Masters = append(t.Masters, h.Name)
		}
		if h.Has(RoleEtcd) {
			t.EtcdHosts = append(t.EtcdHosts, h.Name)
		}
		if h.Has(RoleInfra) {
			t.Infra = append(t.Infra, h.Name)
		}
		if h.Has(RoleCompute) {
			t.Compute = append(t.Compute, h.Name)
		}
	}
	cluster := inv.Cluster.DefRange

	switch {
	case len(t.Masters) == 0:
		diags = append(diags, errorAt(cluster, "No master",
			"No host has the master role. A cluster needs at least one master to run the control plane; add \"master\" to a host's roles."))
	case len(inv.Hosts) == 1:
		t.Kind = SingleNode
	case len(t.Masters) == 1:
		t.Kind = SingleMaster
	default:
		t.Kind = HA
	}

	diags = append(diags, deriveEtcd(inv)...)

	// Without an api_endpoint block or control_plane_endpoint: several
	// masters get the node-local proxy (every node must reach the API
	// through something that survives the loss of any master), one master
	// is reached directly.
	if c := &inv.Cluster; c.APIEndpoint == "" {
		c.APIEndpoint = APIEndpointDirect
		if len(t.Masters) > 1 {
			c.APIEndpoint, c.APIProxyPort = APIEndpointNodeLocal, DefaultAPIProxyPort
			c.ControlPlaneEndpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultAPIProxyPort))
		}
	}
	if len(t.Masters) > 1 && inv.Cluster.APIEndpoint == APIEndpointExternal && inv.Cluster.ControlPlaneEndpoint != "" {
		epHost, _, _ := net.SplitHostPort(inv.Cluster.ControlPlaneEndpoint)
		for _, h := range inv.HostsWith(RoleMaster) {
			if addressKey(h.Address) == addressKey(epHost) {
				diags = append(diags, warningAt(cluster, "Endpoint is one master",
					"control_plane_endpoint points at master %q (%s): when that host is down, nodes lose the API server even though the other masters are up. Point it at a load balancer, virtual IP or DNS name that spans every master.", h.Name, h.Address))
			}
		}
	}

	workers := 0
	for _, h := range inv.Hosts {
		if (h.Has(RoleCompute) || h.Has(RoleInfra)) && !h.Has(RoleMaster) {
			workers++
		}
	}
	if len(t.Masters) == 1 && workers > 0 {
		m := inv.HostsWith(RoleMaster)[0]
		diags = append(diags, warningAt(m.DefRange, "Control plane is not highly available",
			"Host %q is the only master. When it is down, the cluster cannot be changed or scheduled; this shape is for testing, proof-of-concept and other non-production use. Production wants 3 masters.", m.Name))
	}
	if len(t.Compute) == 0 && len(t.Infra) == 0 && len(t.Masters) > 0 {
		t.MastersSchedulable = true
		diags = append(diags, warningAt(cluster, "Masters will run workloads",
			"No host has the compute or infra role, so the control-plane taint is removed from the masters (%s) and workloads are scheduled on them. Add compute hosts to keep workloads off the control plane.", strings.Join(t.Masters, ", ")))
	}
	if n := len(t.Infra); n == 1 || n == 2 {
		diags = append(diags, warningAt(inv.HostsWith(RoleInfra)[n-1].RolesRange, "Too few infra hosts for production",
			"There %s %s (%s). Infra hosts run the registry, ingress routing, logging and metrics; production wants at least 3 so these services survive maintenance or the loss of a host.",
			map[bool]string{true: "is", false: "are"}[n == 1], plural(n, "infra host", "infra hosts"), strings.Join(t.Infra, ", ")))
	}

	diags = append(diags, checkSubnets(inv)...)
	diags = append(diags, checkPodNetwork(inv)...)
	settleNodeLabelsAndTaints(inv)
	return diags
}

// deriveEtcd decides between stacked and external etcd and checks the member count.
func deriveEtcd(inv *Inventory) hcl.Diagnostics {
	var diags hcl.Diagnostics
	t := &inv.Topology
	etcdHosts := inv.HostsWith(RoleEtcd)
	var onMasters, alone []*Host
	for _, h := range etcdHosts {
		if h.Has(RoleMaster) {
			onMasters = append(onMasters, h)
		} else {
			alone = append(alone, h)
		}
	}
	switch {
	case len(onMasters) > 0 && len(alone) > 0:
		diags = append(diags, errorAt(alone[0].RolesRange, "Mixed etcd topology",
			"Some etcd hosts are masters (%s) and some are not (%s). etcd is either stacked (every master runs a member, no other host does) or external (a separate set of hosts, none of them masters); choose one.",
			hostNames(onMasters), hostNames(alone)))
		return diags
	case len(alone) > 0:
		t.EtcdMode = EtcdExternal
		t.EtcdMembers = slices.Clone(t.EtcdHosts)
	default:
		t.EtcdMode = EtcdStacked
		t.EtcdMembers = slices.Clone(t.Masters)
		// With stacked etcd kubeadm runs a member on every master, so naming
		// etcd on some masters but not others describes something it cannot build.
		if len(onMasters) > 0 && len(onMasters) < len(t.Masters) {
			var missing []*Host
			for _, m := range inv.HostsWith(RoleMaster) {
				if !m.Has(RoleEtcd) {
					missing = append(missing, m)
				}
			}
			diags = append(diags, errorAt(missing[0].RolesRange, "Master without stacked etcd",
				"With stacked etcd every master runs an etcd member, but some masters lack the etcd role (%s) while others have it (%s). Add \"etcd\" to every master, or to none (stacked is then implied).",
				hostNames(missing), hostNames(onMasters)))
		}
	}

	n := len(t.EtcdMembers)
	if n == 0 {
		return diags
	}
	last := inv.Host(t.EtcdMembers[n-1])
	if n%2 == 0 {
		who := "masters (stacked etcd)"
		fix := "masters"
		if t.EtcdMode == EtcdExternal {
			who, fix = "etcd hosts (external etcd)", "etcd hosts"
		}
		diags = append(diags, errorAt(last.RolesRange, "Even number of etcd members",
			"There are %d %s: %s. etcd commits a change only when a quorum, a majority of voting members, agrees: %d members need %d. n members tolerate floor((n-1)/2) failures, so %d tolerate %d, no more than %d would, while one more member can fail and every write waits on more peers. An even count adds risk without adding tolerance: use %d or %d %s.",
			n, who, strings.Join(t.EtcdMembers, ", "), n, Quorum(n), n, FaultTolerance(n), n-1, n-1, n+1, fix))
	}
	if n > 7 {
		diags = append(diags, warningAt(last.RolesRange, "Many etcd members",
			"There are %d etcd voting members. Every write must reach a majority (%d), so writes slow down as members are added; etcd recommends 3, 5 or at most 7.", n, Quorum(n)))
	}
	if len(inv.Hosts) > 1 {
		for _, name := range t.EtcdMembers {
			h := inv.Host(name)
			if h.Has(RoleCompute) || h.Has(RoleInfra) {
				diags = append(diags, warningAt(h.RolesRange, "etcd shares a host with workloads",
					"Host %q runs an etcd member and also takes workloads (%s). etcd is sensitive to disk and network latency; a busy workload can delay heartbeats and cause leader elections. Prefer dedicated hosts for etcd.", h.Name, rolesString(h)))
			}
		}
	}
	return diags
}

func rolesString(h *Host) string {
	parts := make([]string, len(h.Roles))
	for i, r := range h.Roles {
		parts[i] = string(r)
	}
	return strings.Join(parts, ", ")
}

func hostNames(hs []*Host) string {
	names := make([]string, len(hs))
	for i, h := range hs {
		names[i] = h.Name
	}
	return strings.Join(names, ", ")
}

// checkUnique reports duplicate host names and addresses, naming both places.
func checkUnique(inv *Inventory) hcl.Diagnostics {
	var diags hcl.Diagnostics
	byName := make(map[string]*Host, len(inv.Hosts))
	byAddr := make(map[string]*Host, len(inv.Hosts))
	for _, h := range inv.Hosts {
		if first, dup := byName[h.Name]; dup {
			diags = append(diags, errorAt(h.DefRange, "Duplicate host name",
				"Host %q is already defined at %s. Host names become node names and must be unique; rename one of them.", h.Name, shortRange(first.DefRange)))
		} else {
			byName[h.Name] = h
		}
		if h.Address == "" {
			continue
		}
		key := addressKey(h.Address)
		if first, dup := byAddr[key]; dup {
			same := ""
			if h.Address != first.Address {
				same = fmt.Sprintf(" (%s is the same address as %s)", h.Address, first.Address)
			}
			diags = append(diags, errorAt(h.AddressRange, "Duplicate host address",
				"Host %q uses address %s, already used by host %q at %s%s. Each host needs its own address.", h.Name, h.Address, first.Name, shortRange(first.AddressRange), same))
		} else {
			byAddr[key] = h
		}
	}
	return diags
}

// checkSubnets refuses host addresses inside the pod or service subnet:
// traffic to such a host would be routed into the cluster network instead.
func checkSubnets(inv *Inventory) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, h := range inv.Hosts {
		a, err := netip.ParseAddr(h.Address)
		if err != nil {
			continue
		}
		a = a.Unmap() // ::ffff:10.96.0.1 is inside 10.96.0.0/12 too
		for _, s := range []struct {
			name string
			p    netip.Prefix
		}{{"pod_subnet", inv.Cluster.PodSubnet}, {"service_subnet", inv.Cluster.ServiceSubnet}} {
			if s.p.IsValid() && s.p.Contains(a) {
				diags = append(diags, errorAt(h.AddressRange, "Host address inside a cluster subnet",
					"Host %q has address %s, inside %s %s: traffic to it would be routed into the cluster network. Change the host's address or the %s.", h.Name, h.Address, s.name, s.p, s.name))
			}
		}
	}
	return diags
}

// checkPodNetwork refuses a node whose address is a DNS name under
// pod_network = "routes": every node's pod subnet is routed through that
// node's address, and a route takes an address, not a name that may
// resolve differently tomorrow. The families must match too (an IPv4
// pod subnet through IPv4 addresses); a mismatch fails the routes unit on
// the host with ip's own message.
func checkPodNetwork(inv *Inventory) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if inv.Cluster.PodNetwork != PodNetworkRoutes || !inv.Cluster.PodSubnet.IsValid() {
		return nil
	}
	at := fmt.Sprintf("set at %s", shortRange(inv.Cluster.PodNetworkRange))
	if inv.Cluster.PodNetworkRange == inv.Cluster.DefRange {
		at = fmt.Sprintf("the default: the cluster block at %s sets no pod_network", shortRange(inv.Cluster.DefRange))
	}
	for _, h := range inv.Hosts {
		if !h.IsNode() {
			continue
		}
		if _, err := netip.ParseAddr(h.Address); err != nil && h.Address != "" && checkHost(h.Address, zoneAllowed) == nil {
			diags = append(diags, errorAt(h.AddressRange, "Node address is not an IP address",
				"Host %q has address %q, a DNS name, but pod_network = %q (%s) routes every node's pods through the node's IP address. Write the host's IP address here, or set pod_network = %q and install a pod network yourself.",
				h.Name, h.Address, PodNetworkRoutes, at, PodNetworkNone))
		}
	}
	return diags
}

// settleNodeLabelsAndTaints computes each node's final labels and taints: infra
// defaults under the host's own, and the control-plane taint on masters unless
// they are meant to run workloads.
func settleNodeLabelsAndTaints(inv *Inventory) {
	cpTaint := Taint{Key: ControlPlaneTaintKey, Effect: "NoSchedule"}
	for _, h := range inv.Hosts {
		labels := map[string]string{}
		var taints []Taint
		if h.Has(RoleInfra) {
			maps.Copy(labels, inv.Infra.Labels)
			taints = append(taints, inv.Infra.Taints...)
		}
		if h.Has(RoleMaster) && !inv.Topology.MastersSchedulable && !h.Has(RoleCompute) {
			taints = append(taints, cpTaint)
		}
		maps.Copy(labels, h.Labels)
		// A host's own taint replaces a default with the same key and effect,
		// which is how a single host overrides the infra default.
		for _, ut := range h.Taints {
			taints = slices.DeleteFunc(taints, func(t Taint) bool { return t.Key == ut.Key && t.Effect == ut.Effect })
			taints = append(taints, ut)
		}
		h.Labels = labels
		h.Taints = taints
	}
}
