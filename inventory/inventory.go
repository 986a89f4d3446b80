// Package inventory reads a kprov inventory (HCL), resolves its variables,
// locals and dynamic blocks, and judges the topology it describes. It never
// touches the network: everything here is a pure function of the files and
// the variables given.
package inventory

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Role is what a host does in the cluster.
type Role string

// The roles a host can carry.
const (
	RoleMaster  Role = "master"  // kubeadm control plane (API server, scheduler, controller manager)
	RoleEtcd    Role = "etcd"    // etcd member: stacked on masters, or a separate cluster
	RoleInfra   Role = "infra"   // cluster services: registry, ingress routing, logging, metrics
	RoleCompute Role = "compute" // application workloads
)

// AllRoles lists the valid roles in their canonical order.
var AllRoles = []Role{RoleMaster, RoleEtcd, RoleInfra, RoleCompute}

// Pod networks (cluster.pod_network).
const (
	// PodNetworkRoutes: each node's bridge serves its slice of pod_subnet,
	// and every node routes the other nodes' slices through their
	// addresses (hosts on one L2 segment, as flannel's host-gw).
	PodNetworkRoutes = "routes"
	// PodNetworkNone: kprov installs no pod network; the user brings a CNI
	// plugin, and nodes stay NotReady until it runs.
	PodNetworkNone = "none"
)

// API endpoint modes (cluster.api_endpoint.mode): how nodes and kubeadm
// reach the API servers.
const (
	// APIEndpointNodeLocal: every Kubernetes node runs kprov-apiproxy on
	// 127.0.0.1:port, a TCP proxy to every master's API server that checks
	// their health; controlPlaneEndpoint is that loopback address. The
	// default with more than one master and no control_plane_endpoint.
	APIEndpointNodeLocal = "node-local"
	// APIEndpointExternal: control_plane_endpoint names a load balancer,
	// virtual IP or DNS name the user runs.
	APIEndpointExternal = "external"
	// APIEndpointDirect: one master and no endpoint; nodes join that
	// master's address (set by kprov, never written in an inventory).
	APIEndpointDirect = "direct"
)

// APIProxyArtifact is the node-local API proxy's binary.
const APIProxyArtifact = "kprov-apiproxy"

// Defaults applied when the inventory leaves a field out.
const (
	DefaultPodSubnet      = "10.244.0.0/16"
	DefaultServiceSubnet  = "10.96.0.0/12"
	DefaultDNSDomain      = "cluster.local"
	DefaultEtcdVersion    = "3.6.16"
	DefaultEtcdDataDir    = "/var/lib/etcd"
	DefaultKnownHosts     = "~/.ssh/known_hosts"
	DefaultConnectTimeout = 10 * time.Second
	// DefaultConnectAttempts is the first attempt and one short retry: a
	// host that refuses is reported within about a second, one that does
	// not answer within connect_timeout. Hosts that are still booting want
	// more (connect_attempts).
	DefaultConnectAttempts = 2
	MaxConnectAttempts     = 30
	DefaultAPIServerPort   = 6443
	DefaultAPIProxyPort    = 6444
	InfraRoleLabel         = "node-role.kubernetes.io/infra"
	ControlPlaneTaintKey   = "node-role.kubernetes.io/control-plane"
	HostKeyPolicyStrict    = "strict"
	HostKeyPolicyAcceptNew = "accept-new"
)

// Inventory is a loaded, validated inventory.
type Inventory struct {
	Path    string // the file it was read from, as given
	Dir     string // the directory relative paths are resolved against
	Cluster Cluster
	SSH     SSHConfig // defaults from the top-level ssh block
	Etcd    Etcd
	Infra   InfraDefaults
	// Artifacts are binaries pushed from the operator's machine, in
	// ArtifactNames order; empty when the hosts bring their own.
	Artifacts []Artifact
	// Images are container image archives (OCI image layout in a tar)
	// imported into every Kubernetes node's runtime, in the inventory's
	// order; each has Name ImagesField.
	Images   []Artifact
	Hosts    []*Host // in file order, dynamic hosts where their block stands
	Topology Topology

	// Containerd is the top-level containerd block; each host's Containerd
	// is this with the host's own block laid over it.
	Containerd Containerd

	// Files holds the parsed sources, for rendering diagnostics with snippets.
	Files map[string]*hcl.File

	// sensitive and redactor are what SensitiveValues and Redact use.
	sensitive []string
	redactor  *strings.Replacer
}

// Cluster is the cluster block.
type Cluster struct {
	Name                 string
	KubernetesVersion    string // MAJOR.MINOR.PATCH without a leading v
	ControlPlaneEndpoint string // host:port; empty on a single-master cluster without one
	// APIEndpoint is how nodes reach the API servers: APIEndpointNodeLocal,
	// APIEndpointExternal or APIEndpointDirect. With node-local,
	// ControlPlaneEndpoint is 127.0.0.1:APIProxyPort.
	APIEndpoint      string
	APIProxyPort     int       // node-local: the port kprov-apiproxy listens on
	APIEndpointRange hcl.Range // the api_endpoint block, else control_plane_endpoint, else the cluster block
	PodSubnet        netip.Prefix
	// PodNetwork is how pods on different nodes reach each other:
	// PodNetworkRoutes (the default) or PodNetworkNone.
	PodNetwork      string
	PodNetworkRange hcl.Range // where pod_network is set; the cluster block when it is not
	ServiceSubnet   netip.Prefix
	DNSDomain       string
	TemplatesDir    string // absolute, or empty for the built-in templates
	StateDir        string // absolute; default .kprov/<cluster> beside the inventory
	DefRange        hcl.Range
}

// APIEndpointSummary says in one line how nodes reach the API servers.
func (c Cluster) APIEndpointSummary() string {
	switch c.APIEndpoint {
	case APIEndpointNodeLocal:
		return fmt.Sprintf("node-local: kprov-apiproxy on %s on every node, to every master's API server", c.ControlPlaneEndpoint)
	case APIEndpointExternal:
		return "external: " + c.ControlPlaneEndpoint
	default:
		return "direct: the master's own address"
	}
}

// SSHConfig is how kprov reaches a host: the top-level ssh block merged with the host's own.
type SSHConfig struct {
	User           string   // empty when the inventory sets none: ~/.ssh/config's User, else root
	Port           int      // 0 when the inventory sets none: ~/.ssh/config's Port, else 22
	IdentityFile   string   // absolute, ~ expanded; empty to rely on the agent and ~/.ssh/config
	KnownHosts     string   // absolute, ~ expanded
	HostKeyPolicy  string   // strict | accept-new
	Bastions       []string // jump chain, outermost first, each [user@]host[:port]
	ConnectTimeout time.Duration
	// ConnectAttempts bounds the connection attempts to the host: a
	// refused, reset or unroutable connection and a rejected login are
	// retried (1 s, then doubling), a host-key problem and an attempt that
	// waited its whole ConnectTimeout are not.
	ConnectAttempts int
}

// Etcd is the etcd block.
type Etcd struct {
	Version string
	DataDir string
	// MaxFsyncLatency is the mean synchronous 8 KiB write the preflight
	// accepts on the data directory's file system; 0 means the default
	// (etcd's guidance, 10 ms).
	MaxFsyncLatency time.Duration
	// etcd's tuning, the same on every member (external etcd: the member's
	// configuration file; stacked etcd: kubeadm's etcd.local.extraArgs,
	// read when kubeadm first writes the member's manifest).
	HeartbeatInterval time.Duration // raft heartbeat, default 100ms
	ElectionTimeout   time.Duration // default 1s; at least 5 heartbeats
	QuotaBackendBytes int64         // backend size limit, default 8 GiB
	SnapshotCount     int           // applied entries between raft snapshots, default 10000
}

// etcd tuning defaults: etcd's own heartbeat and election timeout (a LAN
// with round trips well under 50 ms), the largest backend etcd recommends
// (its default 2 GiB fills up in busy clusters and turns etcd read-only),
// and etcd's snapshot count.
const (
	DefaultEtcdHeartbeat     = 100 * time.Millisecond
	DefaultEtcdElection      = time.Second
	DefaultEtcdQuota         = 8 << 30
	DefaultEtcdSnapshotCount = 10000
)

// ArtifactNames are the binaries an artifacts block may name, in the order
// kprov installs them. kprov-apiproxy is kprov's own node-local load
// balancer in front of the masters' API servers (package apiproxy).
var ArtifactNames = []string{"etcd", "etcdctl", "etcdutl", "kubeadm", "kubelet", "kubectl",
	"containerd", "ctr", "containerd-shim-runc-v2", "runc", CNIPluginsArtifact, APIProxyArtifact}

// CNIPluginsArtifact is the artifact that is an archive of CNI plugins
// (binaries at its top level), unpacked into the CNI binary directory.
const CNIPluginsArtifact = "cni-plugins"

// ImagesField is the artifacts block's list of container image archives.
const ImagesField = "images"

// Artifact is one binary kprov uploads to /usr/local/bin instead of letting
// the host download it (air-gapped sites, and the lab).
type Artifact struct {
	Name   string // one of ArtifactNames
	Path   string // on the operator's machine: absolute, ~ expanded
	SHA256 string // lowercase hex; apply refuses a local file that does not match
	Range  hcl.Range
}

// Artifact returns the artifact with the given name and whether there is one.
func (inv *Inventory) Artifact(name string) (Artifact, bool) {
	for _, a := range inv.Artifacts {
		if a.Name == name {
			return a, true
		}
	}
	return Artifact{}, false
}

// InfraDefaults are the label and taints every infra host gets unless it overrides them.
type InfraDefaults struct {
	Labels map[string]string
	Taints []Taint
}

// Taint is a Kubernetes node taint.
type Taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"`
}

// String renders the taint the way kubectl taint takes it: key=value:Effect.
func (t Taint) String() string {
	if t.Value == "" {
		return t.Key + ":" + t.Effect
	}
	return t.Key + "=" + t.Value + ":" + t.Effect
}

// Host is one machine and what it does.
type Host struct {
	Name    string
	Address string
	Roles   []Role // deduplicated, in canonical order
	// Labels and Taints are the node's final labels and taints: infra defaults,
	// the user's own, and the control-plane taint decision, all applied.
	Labels           map[string]string
	Taints           []Taint
	HostKey          string // pinned public key in authorized_keys format, or empty
	KubeletExtraArgs map[string]string
	SSH              SSHConfig
	Containerd       Containerd // the top-level containerd block merged with the host's

	DefRange     hcl.Range
	AddressRange hcl.Range
	RolesRange   hcl.Range
}

// Has reports whether the host carries role r.
func (h *Host) Has(r Role) bool { return slices.Contains(h.Roles, r) }

// IsNode reports whether the host runs a kubelet (every role but a dedicated etcd host does).
func (h *Host) IsNode() bool { return h.Has(RoleMaster) || h.Has(RoleInfra) || h.Has(RoleCompute) }

// Host returns the host with the given name, or nil.
func (inv *Inventory) Host(name string) *Host {
	for _, h := range inv.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// HostsWith returns the hosts carrying role r, in inventory order.
func (inv *Inventory) HostsWith(r Role) []*Host {
	var out []*Host
	for _, h := range inv.Hosts {
		if h.Has(r) {
			out = append(out, h)
		}
	}
	return out
}
