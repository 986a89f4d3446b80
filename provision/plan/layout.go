package plan

import (
	"net"
	pathpkg "path"
	"slices"
	"strconv"
	"strings"
)

// The host layout: where kprov puts things on a host and what it names them.
// The planner renders into these paths and fact gathering reads the same
// ones, so the two can never drift apart.

// Files kprov renders onto hosts.
const (
	KubeadmInitPath = "/etc/kprov/kubeadm-init.yaml" // first master: kubeadm init --config
	KubeadmJoinPath = "/etc/kprov/kubeadm-join.yaml" // every other node: kubeadm join --config
	EtcdConfigPath  = "/etc/etcd/etcd.yaml"          // an external etcd member's configuration
	EtcdUnitPath    = "/etc/systemd/system/etcd.service"
	// EtcdRestoreMarkerPath records the cluster token of the restore that
	// filled an etcd member's data directory (kprov restore). It
	// is written before the restored data is moved into place, so a data
	// directory that holds a member's data and a marker with this restore's
	// token was restored by this restore: a second run leaves it alone.
	// It lives outside the data directory, which etcdutl wants empty and
	// etcd wants holding only member/.
	EtcdRestoreMarkerPath = "/etc/kprov/etcd-restored"
	// EtcdRestoreSnapshotPath is where kprov restore uploads the snapshot on
	// an etcd host; removed once the member is restored.
	EtcdRestoreSnapshotPath = "/var/lib/kprov/restore-snapshot.db"
	// EtcdRestoreArchivePath is where kprov restore uploads a stacked
	// member's restored data directory (a gzipped tar made on the
	// operator's machine); removed once it is in place.
	EtcdRestoreArchivePath = "/var/lib/kprov/restore-data.tar.gz"
	// EtcdRestoreRevisionBump is etcdutl's --bump-revision for a restore:
	// far above any revision a cluster reaches between backups, so no
	// Kubernetes watcher ever sees a revision go back (etcd's advice for
	// restoring a Kubernetes cluster's etcd).
	EtcdRestoreRevisionBump = 1000000000
	SysctlPath              = "/etc/sysctl.d/99-kprov-kubernetes.conf"
	ModulesPath             = "/etc/modules-load.d/kprov-kubernetes.conf"
	ContainerdConfigPath    = "/etc/containerd/config.toml"
	SwapOffUnitPath         = "/etc/systemd/system/kprov-swapoff.service"
	KubeletUnitPath         = "/etc/systemd/system/kubelet.service"
	// KubeadmLogPath holds the output of the last kubeadm init or join.
	KubeadmLogPath = "/var/lib/kprov/kubeadm.log"
	// KubeadmUnitPath is the oneshot unit kubeadm init and join run in; in
	// /run, so it is gone after a reboot.
	KubeadmUnitPath    = "/run/systemd/system/kprov-kubeadm.service"
	ContainerdUnitPath = "/etc/systemd/system/containerd.service"
	// KubeadmPatchesDir holds the node's own kubeadm patches (kubeadm
	// init/join patches.directory): the ClusterConfiguration's
	// KubeletConfiguration is cluster-wide, but the cgroup driver follows
	// each host.
	KubeadmPatchesDir = "/etc/kprov/patches"
	KubeletPatchPath  = KubeadmPatchesDir + "/kubeletconfiguration+strategic.yaml"
	// PodRoutesUnitPath routes the other nodes' pod subnets (pod_network = "routes").
	PodRoutesUnitPath = "/etc/systemd/system/kprov-pod-routes.service"
	// APIProxyUnitPath and APIProxyUpstreamsPath are the node-local API
	// proxy's unit and its list of API servers (api_endpoint "node-local").
	APIProxyUnitPath      = "/etc/systemd/system/kprov-apiproxy.service"
	APIProxyUpstreamsPath = "/etc/kprov/apiproxy.upstreams"
	// CNIConfPath is the node's bridge network (pod_network = "routes").
	CNIConfPath = CNIConfDir + "/10-kprov-bridge.conflist"
)

// CNIConfDir is where containerd reads CNI network configurations.
const CNIConfDir = "/etc/cni/net.d"

// CNIPluginsMarkerPath records the SHA-256 of the cni-plugins archive last
// unpacked into CNIBinDir, so an unchanged archive is not unpacked again.
const CNIPluginsMarkerPath = CNIBinDir + "/.kprov-cni-plugins.sha256"

// BinDir is where kprov installs the binaries of the inventory's artifacts block.
const BinDir = "/usr/local/bin"

// CNIBinDir is where kprov unpacks the artifacts block's cni-plugins
// archive, and where containerd looks for CNI plugins.
const CNIBinDir = "/opt/cni/bin"

// Files kubeadm writes, whose existence says how far it got on a host.
const (
	KubeletConfPath       = "/etc/kubernetes/kubelet.conf"                  // after any join
	APIServerManifestPath = "/etc/kubernetes/manifests/kube-apiserver.yaml" // after init or a control-plane join
	AdminKubeconfigPath   = "/etc/kubernetes/admin.conf"                    // the admin kubeconfig on masters
)

// LockPath is the file on the first master that says an apply is running
// against the cluster. It lives on a host, not on the operator's machine, so
// two operators on two laptops see each other.
const LockPath = "/var/lib/kprov/apply.lock"

// Systemd units kprov renders or manages.
const (
	EtcdUnit       = "etcd.service"
	SwapOffUnit    = "kprov-swapoff.service"
	ContainerdUnit = "containerd.service"
	PodRoutesUnit  = "kprov-pod-routes.service"
	APIProxyUnit   = "kprov-apiproxy.service"
	// KubeadmUnit is the transient service kubeadm init and join run in.
	KubeadmUnit = "kprov-kubeadm.service"
)

// The ports an external etcd member listens on.
const (
	EtcdClientPort = 2379
	EtcdPeerPort   = 2380
)

// EtcdPeerURL is the peer URL kprov gives the member on a host with this
// address; members are matched to hosts by this exact string.
func EtcdPeerURL(address string) string {
	return "https://" + net.JoinHostPort(address, strconv.Itoa(EtcdPeerPort))
}

// EtcdClientURL is the client URL of the member on a host with this address.
func EtcdClientURL(address string) string {
	return "https://" + net.JoinHostPort(address, strconv.Itoa(EtcdClientPort))
}

// NormalizeEtcdConfig drops the settings etcd reads only when it bootstraps an
// empty data directory (initial-cluster, initial-cluster-state,
// initial-cluster-token), so two configurations that differ only there compare
// equal: such a change is written without restarting the member. The planner
// and fact gathering both hash exactly these bytes.
func NormalizeEtcdConfig(b []byte) []byte {
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "initial-cluster") {
			continue
		}
		keep = append(keep, line)
	}
	return []byte(strings.Join(keep, "\n"))
}

// Files kubeadm leaves on a node, besides KubeletConfPath and
// APIServerManifestPath: whichever of them is there, kubeadm reset has
// something to undo (a join cut short leaves the bootstrap kubeconfig or
// the kubelet's configuration without kubelet.conf).
const (
	BootstrapKubeletConfPath = "/etc/kubernetes/bootstrap-kubelet.conf"
	KubeletConfigPath        = "/var/lib/kubelet/config.yaml"
)

// KprovDirs are the directories kprov creates for its files. After kprov
// reset removes a file, each of these above it that is left empty is
// removed too (rmdir, which never removes anything else), deepest first.
var KprovDirs = []string{
	KubeadmPatchesDir, "/etc/kprov", "/etc/etcd",
	"/etc/kubernetes/pki/etcd", "/etc/kubernetes/pki", "/etc/kubernetes/manifests", "/etc/kubernetes",
	"/etc/containerd", CNIConfDir, "/etc/cni", CNIBinDir, "/opt/cni",
	ImageImportDir, "/var/lib/kprov",
}

// removableFiles are the files kprov writes outside its own directories.
var removableFiles = []string{
	EtcdUnitPath, SysctlPath, ModulesPath, ContainerdUnitPath, SwapOffUnitPath,
	KubeletUnitPath, KubeadmUnitPath, PodRoutesUnitPath, APIProxyUnitPath,
}

// Removable reports whether kprov reset may remove path: a clean absolute
// path inside one of KprovDirs, one of the units and settings files kprov
// renders elsewhere, or a binary in BinDir (which a remove-file step
// removes only while it has the artifact's checksum). The executor checks
// it, so a plan edited by hand cannot turn a remove-file step on anything else.
func Removable(path string) bool {
	if path == "" || path[0] != '/' || pathpkg.Clean(path) != path {
		return false
	}
	if slices.Contains(removableFiles, path) || pathpkg.Dir(path) == BinDir {
		return true
	}
	for _, d := range KprovDirs {
		if strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}

// EmptyDirsAbove lists the directories of KprovDirs above path, and those
// of KprovDirs inside them, deepest first: the ones kprov reset removes
// when they are left empty once path is gone (an empty ImageImportDir
// would otherwise keep /var/lib/kprov).
func EmptyDirsAbove(path string) []string {
	var out []string
	for d := pathpkg.Dir(path); d != "/" && d != "."; d = pathpkg.Dir(d) {
		if !slices.Contains(KprovDirs, d) {
			continue
		}
		for _, k := range KprovDirs {
			if (k == d || strings.HasPrefix(k, d+"/")) && !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out
}
