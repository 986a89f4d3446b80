package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// EtcdMember is one etcd member as the live cluster reports it, joined with
// what kprov saw on the member's host.
type EtcdMember struct {
	ID      uint64 `json:"id"`
	Name    string `json:"name"`
	PeerURL string `json:"peer_url"`
	// Host is the inventory host whose address is in the member's peer URL
	// (an exact match), "" when no host's is. Every step addressed to the
	// member's host (start, stop, wipe) goes to this host, never to the one
	// its self-reported Name suggests: a stale member may carry a healthy
	// member's name (RELIABILITY 19).
	Host string `json:"host,omitempty"`
	// Departing: no inventory host has the address in the member's peer
	// URL, and Host names the machine at that address instead
	// (DepartingHostName), reached with the inventory's ssh settings so a
	// member that leaves can be stopped and wiped on its own machine. Only
	// a healthy member is tied to its machine this way: one that does not
	// answer as this cluster's member may sit at an address another
	// machine has now.
	Departing     bool   `json:"departing,omitempty"`
	Learner       bool   `json:"learner"`
	Leader        bool   `json:"leader"`
	Healthy       bool   `json:"healthy"`        // answers on its client URL and follows the leader
	Running       bool   `json:"running"`        // its service is active on its host
	HostReachable bool   `json:"host_reachable"` // kprov could reach the member's host over SSH
	ConfigSHA256  string `json:"config_sha256"`  // of the member's config file on its host
	// ConfigCoreSHA256 is the hash of the config with the bootstrap-only
	// settings (initial-cluster*) normalized away; "" when unknown.
	ConfigCoreSHA256 string `json:"config_core_sha256"`
	// Version is the etcd server version the member reports in its status
	// (etcd's StatusResponse.Version), "" when it did not answer. It is the
	// version of the process, which can lag the binary on its host: an
	// upgrade restarts a member only once its new binary is in place.
	Version string `json:"version,omitempty"`
}

// Facts is what kprov saw on the hosts, read-only, before planning. The plan
// is a pure function of the inventory, the rendered files and these facts.
type Facts struct {
	// Offline facts describe fresh hosts nobody connected to (kprov plan --offline).
	Offline bool                  `json:"offline"`
	Hosts   map[string]*HostFacts `json:"hosts"`
	// Etcd is the live member list of the external etcd cluster, read through a
	// tunnel to a member's client port; empty for a cluster not formed yet.
	Etcd []EtcdMember `json:"etcd,omitempty"`
	// EtcdSource says where Etcd came from: EtcdSourceLive (a member answered)
	// or EtcdSourceConfig (no member answered; rebuilt from the members'
	// config files, see docs/facts.md); empty when Etcd is empty.
	EtcdSource string `json:"etcd_source,omitempty"`
	// EtcdDataPresent maps each reachable etcd host (and any other host found
	// with etcd data) to whether its data directory holds a member's data, so
	// a cluster whose members are all stopped is not mistaken for a new one.
	EtcdDataPresent map[string]bool `json:"etcd_data_present,omitempty"`
	// Nodes are the Kubernetes nodes the API server reports, by name.
	Nodes map[string]*NodeFacts `json:"nodes,omitempty"`
	// KubeconfigFetched is true when the state directory holds the admin kubeconfig.
	KubeconfigFetched bool `json:"kubeconfig_fetched"`
	// ImageArchives are the inventory's image archives as read on the
	// operator's machine (checksum verified, index.json parsed), in the
	// inventory's order; offline plans read them too.
	ImageArchives []ImageArchive `json:"image_archives,omitempty"`
}

// Where Facts.Etcd came from.
const (
	EtcdSourceLive   = "live"   // the member list a running member returned
	EtcdSourceConfig = "config" // rebuilt from config files because no member answered
)

// HostFacts is what one host looks like.
type HostFacts struct {
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"` // why it was unreachable
	Hostname  string `json:"hostname,omitempty"`
	OS        string `json:"os,omitempty"` // ID and VERSION_ID from /etc/os-release
	Arch      string `json:"arch,omitempty"`
	SwapOn    bool   `json:"swap_on"`
	// Files maps each path kprov manages to the SHA-256 of its content; absent means missing.
	Files map[string]string `json:"files,omitempty"`
	// Services maps a systemd unit to its ActiveState.
	Services map[string]string `json:"services,omitempty"`
	// Versions of the binaries kprov installs (etcd, kubeadm, kubelet, kubectl).
	Versions map[string]string `json:"versions,omitempty"`
	// Joined is true when the kubelet has joined a cluster (/etc/kubernetes/kubelet.conf exists).
	Joined bool `json:"joined"`
	// ControlPlane is true when the host runs a kubeadm control plane (its API server manifest exists).
	ControlPlane bool `json:"control_plane"`
	// Images maps each image reference in containerd's k8s.io namespace to
	// its digest; read on Kubernetes nodes only.
	Images map[string]string `json:"images,omitempty"`
	// ImagesUnknown says why Images could not be read on a Kubernetes node
	// ("ctr not found", "containerd is not running"); the planner and the
	// preflight then count every image as absent. Empty when it was read.
	ImagesUnknown string `json:"images_unknown,omitempty"`
	// Runtime is what the container runtime's configuration depends on;
	// nil for facts that predate it, read as DefaultRuntimeFacts.
	Runtime *RuntimeFacts `json:"runtime,omitempty"`
}

// RuntimeFacts are the host properties containerd's and the kubelet's
// settings follow (the cgroup driver, the snapshotter, oom_score_adj), and
// what of the runtime the host already has. The installed versions of
// containerd, ctr, containerd-shim-runc-v2 and runc are in HostFacts.Versions.
type RuntimeFacts struct {
	// CgroupVersion is 2 when /sys/fs/cgroup is a cgroup2 file system (the
	// unified hierarchy), 1 when it is a tmpfs of v1 hierarchies, 0 unknown.
	CgroupVersion int `json:"cgroup_version"`
	// SystemdInit is true when systemd is PID 1, so it can manage cgroups.
	SystemdInit bool `json:"systemd_init"`
	// RootFS is the file system type of / as stat -f names it ("ext2/ext3",
	// "xfs", "overlayfs"); "" unknown.
	RootFS string `json:"root_fs,omitempty"`
	// CapSysResource is true when CAP_SYS_RESOURCE is in the bounding set,
	// so root (and runc) may lower a process's oom_score_adj.
	CapSysResource bool `json:"cap_sys_resource"`
	// ContainerdPath is where the host's own containerd is, "" when it has none.
	ContainerdPath string `json:"containerd_path,omitempty"`
	// CNIPlugins are the executables in CNIBinDir, sorted.
	CNIPlugins []string `json:"cni_plugins,omitempty"`
}

// RootOverlay reports whether / is itself an overlay file system, on which
// containerd's overlayfs snapshotter cannot stack its layers.
func (r RuntimeFacts) RootOverlay() bool { return r.RootFS == "overlayfs" || r.RootFS == "overlay" }

// DefaultRuntimeFacts are a standard real host's: cgroup v2, systemd as
// init, a root file system that is not overlayfs, and CAP_SYS_RESOURCE.
func DefaultRuntimeFacts() RuntimeFacts {
	return RuntimeFacts{CgroupVersion: 2, SystemdInit: true, CapSysResource: true}
}

// RuntimeFacts returns the host's runtime facts, or DefaultRuntimeFacts
// when none were gathered.
func (h *HostFacts) RuntimeFacts() RuntimeFacts {
	if h == nil || h.Runtime == nil {
		return DefaultRuntimeFacts()
	}
	return *h.Runtime
}

// NodeFacts is a Kubernetes node's labels and taints as the API server reports them.
type NodeFacts struct {
	Labels map[string]string `json:"labels"`
	Taints []string          `json:"taints"`
	// Ready is the node's Ready condition: True.
	Ready bool `json:"ready"`
}

// FreshFacts are the facts of hosts nobody has touched: what --offline plans against.
func FreshFacts(hosts []string) *Facts {
	f := &Facts{Offline: true, Hosts: map[string]*HostFacts{}}
	for _, h := range hosts {
		rt := DefaultRuntimeFacts()
		f.Hosts[h] = &HostFacts{Reachable: true, Runtime: &rt}
	}
	return f
}

// Digest identifies facts: a saved plan records it, and apply refuses the plan
// when the facts it gathers then have another digest.
func (f *Facts) Digest() string {
	// encoding/json sorts map keys, so equal facts always encode the same.
	b, err := json.Marshal(f)
	if err != nil {
		panic(fmt.Sprintf("facts must always encode: %v", err))
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// DepartingHostName names the machine of a member on no inventory host in
// plan steps: its member name and the address of its peer URL, e.g.
// "etcd-1@10.0.0.11". An inventory host name cannot hold "@", so it never
// names an inventory host.
func DepartingHostName(member, address string) string {
	return member + "@" + address
}
