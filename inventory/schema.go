package inventory

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// These structs are the inventory's HCL schema as gohcl decodes it. They stay
// unexported: the rest of kprov sees the validated Inventory, never raw HCL.

// fileSchema is the top level of an inventory file.
type fileSchema struct {
	Variables []*skippedBlock   `hcl:"variable,block"` // decoded in the first pass
	Locals    []*skippedLocal   `hcl:"locals,block"`   // decoded in the first pass
	Clusters  []*clusterBlock   `hcl:"cluster,block"`
	SSH       []*sshBlock       `hcl:"ssh,block"`
	Etcd      []*etcdBlock      `hcl:"etcd,block"`
	Infra     []*infraBlock     `hcl:"infra,block"`
	Artifacts []*artifactsBlock `hcl:"artifacts,block"`
	Hosts     []*hostBlock      `hcl:"host,block"`

	Containerd []*containerdBlock `hcl:"containerd,block"`
}

// artifactsBlock is `artifacts { etcd = { path = "...", sha256 = "..." } ... }`.
// Its entries are read as plain attributes so an unknown binary name gets a
// suggestion instead of HCL's generic "unsupported argument".
type artifactsBlock struct {
	Entries  hcl.Attributes `hcl:",remain"`
	DefRange hcl.Range      `hcl:",def_range"`
}

// skippedBlock and skippedLocal let the second pass accept blocks the first pass already read.
type skippedBlock struct {
	Name   string   `hcl:"name,label"`
	Remain hcl.Body `hcl:",remain"`
}

type skippedLocal struct {
	Remain hcl.Body `hcl:",remain"`
}

// variableBlock is `variable "NAME" { default = ... }`.
type variableBlock struct {
	Name        string         `hcl:"name,label"`
	Default     *hcl.Attribute `hcl:"default,optional"`
	Description string         `hcl:"description,optional"`
	Sensitive   bool           `hcl:"sensitive,optional"`
	DefRange    hcl.Range      `hcl:",def_range"`
}

type clusterBlock struct {
	Name                 string  `hcl:"name,label"`
	KubernetesVersion    *string `hcl:"kubernetes_version,optional"`
	ControlPlaneEndpoint *string `hcl:"control_plane_endpoint,optional"`
	PodSubnet            *string `hcl:"pod_subnet,optional"`
	PodNetwork           *string `hcl:"pod_network,optional"`
	ServiceSubnet        *string `hcl:"service_subnet,optional"`
	DNSDomain            *string `hcl:"dns_domain,optional"`
	TemplatesDir         *string `hcl:"templates_dir,optional"`
	StateDir             *string `hcl:"state_dir,optional"`

	APIEndpoint []*apiEndpointBlock `hcl:"api_endpoint,block"`

	DefRange                  hcl.Range `hcl:",def_range"`
	LabelRange                hcl.Range `hcl:"name,label_range"`
	KubernetesVersionRange    hcl.Range `hcl:"kubernetes_version,attr_range"`
	ControlPlaneEndpointRange hcl.Range `hcl:"control_plane_endpoint,attr_range"`
	PodSubnetRange            hcl.Range `hcl:"pod_subnet,attr_range"`
	PodNetworkRange           hcl.Range `hcl:"pod_network,attr_range"`
	ServiceSubnetRange        hcl.Range `hcl:"service_subnet,attr_range"`
	DNSDomainRange            hcl.Range `hcl:"dns_domain,attr_range"`
}

// apiEndpointBlock is `api_endpoint { mode = "node-local" port = 6444 }`
// inside the cluster block.
type apiEndpointBlock struct {
	Mode *string `hcl:"mode,optional"`
	Port *int    `hcl:"port,optional"`

	DefRange  hcl.Range `hcl:",def_range"`
	ModeRange hcl.Range `hcl:"mode,attr_range"`
	PortRange hcl.Range `hcl:"port,attr_range"`
}

type sshBlock struct {
	User            *string   `hcl:"user,optional"`
	Port            *int      `hcl:"port,optional"`
	IdentityFile    *string   `hcl:"identity_file,optional"`
	KnownHosts      *string   `hcl:"known_hosts,optional"`
	HostKeyPolicy   *string   `hcl:"host_key_policy,optional"`
	Bastion         cty.Value `hcl:"bastion,optional"`
	ConnectTimeout  *string   `hcl:"connect_timeout,optional"`
	ConnectAttempts *int      `hcl:"connect_attempts,optional"`

	DefRange             hcl.Range `hcl:",def_range"`
	PortRange            hcl.Range `hcl:"port,attr_range"`
	UserRange            hcl.Range `hcl:"user,attr_range"`
	HostKeyPolicyRange   hcl.Range `hcl:"host_key_policy,attr_range"`
	BastionRange         hcl.Range `hcl:"bastion,attr_range"`
	ConnectTimeoutRange  hcl.Range `hcl:"connect_timeout,attr_range"`
	ConnectAttemptsRange hcl.Range `hcl:"connect_attempts,attr_range"`
}

type etcdBlock struct {
	Version         *string `hcl:"version,optional"`
	DataDir         *string `hcl:"data_dir,optional"`
	MaxFsyncLatency *string `hcl:"max_fsync_latency,optional"`
	// etcd's own tuning (written to every member's configuration; a change
	// restarts the members one at a time).
	HeartbeatInterval *string `hcl:"heartbeat_interval,optional"`
	ElectionTimeout   *string `hcl:"election_timeout,optional"`
	QuotaBackendBytes *string `hcl:"quota_backend_bytes,optional"`
	SnapshotCount     *int    `hcl:"snapshot_count,optional"`

	DefRange               hcl.Range `hcl:",def_range"`
	VersionRange           hcl.Range `hcl:"version,attr_range"`
	DataDirRange           hcl.Range `hcl:"data_dir,attr_range"`
	MaxFsyncLatencyRange   hcl.Range `hcl:"max_fsync_latency,attr_range"`
	HeartbeatIntervalRange hcl.Range `hcl:"heartbeat_interval,attr_range"`
	ElectionTimeoutRange   hcl.Range `hcl:"election_timeout,attr_range"`
	QuotaBackendBytesRange hcl.Range `hcl:"quota_backend_bytes,attr_range"`
	SnapshotCountRange     hcl.Range `hcl:"snapshot_count,attr_range"`
}

type infraBlock struct {
	Labels *map[string]string `hcl:"labels,optional"`
	Taints *[]string          `hcl:"taints,optional"`

	DefRange    hcl.Range `hcl:",def_range"`
	LabelsRange hcl.Range `hcl:"labels,attr_range"`
	TaintsRange hcl.Range `hcl:"taints,attr_range"`
}

type hostBlock struct {
	Name             string            `hcl:"name,label"`
	Address          string            `hcl:"address"`
	Roles            []string          `hcl:"roles"`
	Labels           map[string]string `hcl:"labels,optional"`
	Taints           []string          `hcl:"taints,optional"`
	HostKey          *string           `hcl:"host_key,optional"`
	KubeletExtraArgs map[string]string `hcl:"kubelet_extra_args,optional"`
	SSH              []*sshBlock       `hcl:"ssh,block"`

	Containerd []*containerdBlock `hcl:"containerd,block"` // the host's own, over the top-level one

	DefRange              hcl.Range `hcl:",def_range"`
	LabelRange            hcl.Range `hcl:"name,label_range"`
	AddressRange          hcl.Range `hcl:"address,attr_range"`
	RolesRange            hcl.Range `hcl:"roles,attr_range"`
	LabelsRange           hcl.Range `hcl:"labels,attr_range"`
	TaintsRange           hcl.Range `hcl:"taints,attr_range"`
	HostKeyRange          hcl.Range `hcl:"host_key,attr_range"`
	KubeletExtraArgsRange hcl.Range `hcl:"kubelet_extra_args,attr_range"`
}
