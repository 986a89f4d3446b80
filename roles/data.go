package roles

import "github.com/kprov/kprov/inventory"

// TemplateData is what every template receives; a template in templates_dir
// sees exactly these fields. Lists are in a fixed order (inventory order, or
// sorted) so rendering is deterministic.
type TemplateData struct {
	Cluster ClusterData
	Host    HostData
	Kubeadm *KubeadmData // nil on a dedicated etcd host
	Runtime *RuntimeData // nil on a dedicated etcd host
	Etcd    *EtcdData    // nil unless the host is an external etcd member
	// APIProxy is the node-local API proxy; nil unless the host is a
	// Kubernetes node and api_endpoint is "node-local".
	APIProxy *APIProxyData
}

// APIProxyData is what the node-local API proxy's unit and upstream list need.
type APIProxyData struct {
	Binary        string   // absolute when the artifacts block provides it, else the name systemd looks up
	Listen        string   // 127.0.0.1:PORT, the control-plane endpoint
	UpstreamsPath string   // the file listing Upstreams
	Upstreams     []string // every master's ADDRESS:6443, in inventory order
}

// ClusterData is the cluster-wide part of the template data.
type ClusterData struct {
	Name                 string
	KubernetesVersion    string // with the leading v, as kubeadm wants it: "v1.37.2"
	KubeadmAPIVersion    string // KubeadmV1Beta4, or KubeadmV1Beta3 before Kubernetes 1.31
	ControlPlaneEndpoint string // host:port, or empty
	JoinEndpoint         string // where nodes join: the endpoint, or the only master's address:6443
	APIServerPort        int    // each master's local API server port
	PodSubnet            string
	ServiceSubnet        string
	DNSDomain            string
	CertSANs             []string // every master's address, then the endpoint's host
	EtcdMode             string   // "stacked" or "external"
	EtcdDataDir          string
	EtcdEndpoints        []string // external etcd: https://ADDRESS:2379 of each member
	// EtcdImageTag is stacked etcd's image tag (etcd.local.imageTag): the
	// inventory's etcd version, so kubeadm runs that one and not its own
	// default; empty with external etcd.
	EtcdImageTag string
	// EtcdExtraArgs is stacked etcd's tuning (etcd.local.extraArgs), sorted
	// by name; empty with external etcd, whose members read it from their
	// configuration file.
	EtcdExtraArgs []Arg
	// ImagePullPolicy is nodeRegistration.imagePullPolicy: "Never" when the
	// inventory brings image archives (kprov imports them first, and
	// nothing may pull), empty to keep kubeadm's default.
	ImagePullPolicy string
}

// HostData is the host being rendered.
type HostData struct {
	Name             string
	Address          string
	Roles            []string
	Taints           []inventory.Taint
	KubeletExtraArgs []Arg // sorted by name; node-ip is the host's address unless the inventory sets it
	// KubeletPath is the kubelet binary the unit runs: /usr/local/bin/kubelet
	// from the artifacts block, else /usr/bin/kubelet as the packages install it.
	KubeletPath string
}

// Arg is a command-line flag without its dashes, as kubeadm v1beta4 lists extra args.
type Arg struct {
	Name  string
	Value string
}

// KubeadmData carries the join secrets. In the redacted pass of a render
// they hold placeholders, which is how kprov finds the files with secrets.
type KubeadmData struct {
	BootstrapToken string
	CertificateKey string
	DiscoveryHash  string // sha256:HEX of the cluster CA's public key
	ControlPlane   bool   // the JoinConfiguration is for a further master
}

// EtcdData is an external etcd member's configuration.
type EtcdData struct {
	Name                string
	DataDir             string
	ClientURL           string   // advertised to clients
	PeerURL             string   // listened on and advertised to peers
	ListenClientURLs    []string // the client URL and loopback, for the local health check
	InitialCluster      string   // name=peerURL,... as etcd wants it
	InitialClusterState string   // "new" or "existing"
	InitialClusterToken string
	Tuning              EtcdTuning
}

// EtcdTuning is etcd's tuning from the inventory's etcd block, in the units
// etcd's flags take; the same for external members (their configuration
// file) and stacked ones (kubeadm's etcd.local.extraArgs).
type EtcdTuning struct {
	HeartbeatMS       int64
	ElectionMS        int64
	QuotaBackendBytes int64
	SnapshotCount     int
}

// EtcdTuningOf is the inventory's etcd tuning in etcd's units.
func EtcdTuningOf(e inventory.Etcd) EtcdTuning {
	return EtcdTuning{
		HeartbeatMS:       e.HeartbeatInterval.Milliseconds(),
		ElectionMS:        e.ElectionTimeout.Milliseconds(),
		QuotaBackendBytes: e.QuotaBackendBytes,
		SnapshotCount:     e.SnapshotCount,
	}
}
