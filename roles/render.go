package roles

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/templates"
)

// Modes of rendered files. Anything with a secret in it is 0600 whatever the template.
const (
	publicMode fs.FileMode = 0o644
	secretMode fs.FileMode = 0o600
)

// Kubeadm configuration API versions; v1beta4 is served from kubeadm 1.31 on.
const (
	KubeadmV1Beta4 = "kubeadm.k8s.io/v1beta4"
	KubeadmV1Beta3 = "kubeadm.k8s.io/v1beta3"
)

// KubeadmAction is how a node enters the cluster.
type KubeadmAction string

// The ways a node enters the cluster.
const (
	KubeadmInit             KubeadmAction = "init"               // the first master creates the cluster
	KubeadmJoinControlPlane KubeadmAction = "join-control-plane" // a further master
	KubeadmJoin             KubeadmAction = "join"               // an infra or compute node
)

// Etcd initial-cluster-state values.
const (
	EtcdStateNew      = "new"      // the first member of a brand-new cluster
	EtcdStateExisting = "existing" // a member added to a running cluster
)

// Options are the choices the planner makes; the zero value renders a fresh cluster.
type Options struct {
	// Templates to render with; nil means the built-in ones. Load them with
	// templates.Load(inv.Cluster.TemplatesDir) to honour templates_dir.
	Templates *templates.Set
	// InitMaster is the master that runs kubeadm init; empty means the
	// first master in the inventory. Every other master joins it.
	InitMaster string
	// EtcdBootstrap is each external etcd member's initial-cluster and
	// initial-cluster-state, by member name. A member left out gets its
	// FreshEtcdBootstrap value. The planner passes FormedEtcdBootstrap once
	// the cluster has formed, and its own value for a member it replaces.
	EtcdBootstrap map[string]EtcdBootstrap
	// Facts are the hosts' facts, by name; the container runtime's settings
	// follow them. A host left out (or nil, as for kprov render) gets a
	// standard host's: plan.DefaultRuntimeFacts.
	Facts map[string]*plan.HostFacts
}

// EtcdBootstrap is how an etcd member with an empty data directory finds its cluster.
type EtcdBootstrap struct {
	State   string   // EtcdStateNew or EtcdStateExisting
	Cluster []string // members in initial-cluster, in order; the member itself included
	// Outside are the peer URLs, by name, of the members of Cluster on no
	// etcd host of the inventory: live members that are leaving (a member
	// replaced while it runs, a scale-in). A member joins with every
	// current member in its initial-cluster, those included, since etcd
	// checks the list against its member list.
	Outside map[string]string
}

// FreshEtcdBootstrap brings a new cluster up one member at a time: the first
// member founds it alone ("new", only itself), and each later member is
// added as a learner and starts "existing" with the members before it plus
// itself, which is what etcd requires of a member added to a running cluster.
func FreshEtcdBootstrap(members []string) map[string]EtcdBootstrap {
	out := make(map[string]EtcdBootstrap, len(members))
	for i, m := range members {
		state := EtcdStateExisting
		if i == 0 {
			state = EtcdStateNew
		}
		out[m] = EtcdBootstrap{State: state, Cluster: slices.Clone(members[:i+1])}
	}
	return out
}

// FormedEtcdBootstrap is every member's configuration once the cluster has
// formed: "existing" with the full member list. A member left with "new"
// and only itself would found a second one-member cluster the day its data
// directory is lost.
func FormedEtcdBootstrap(members []string) map[string]EtcdBootstrap {
	out := make(map[string]EtcdBootstrap, len(members))
	for _, m := range members {
		out[m] = EtcdBootstrap{State: EtcdStateExisting, Cluster: slices.Clone(members)}
	}
	return out
}

// Rendering is everything kprov will push, host by host.
type Rendering struct {
	Cluster           string
	KubeadmAPIVersion string
	// EtcdInitialClusterToken is the external etcd cluster's
	// initial-cluster-token; empty with stacked etcd.
	EtcdInitialClusterToken string
	Hosts                   []*HostFiles // in inventory order
}

// Host returns the named host's rendering, or nil.
func (r *Rendering) Host(name string) *HostFiles {
	for _, h := range r.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// HostFiles is what one host needs.
type HostFiles struct {
	Name    string
	Address string
	Roles   []inventory.Role
	Files   []File      // sorted by path, each path once
	Node    *NodeSpec   // nil on a dedicated etcd host, which runs no kubelet
	Etcd    *EtcdTarget // nil unless the host is an external etcd member
	// Units are the systemd units the apply enables and starts once the
	// files are in place, in this order.
	Units []string
	// OnChange maps a file's path to the commands that make a changed file
	// take effect without a reboot; the apply runs them only when it wrote the file.
	OnChange map[string][]string
}

// NodeSpec is the Kubernetes node a host becomes.
type NodeSpec struct {
	Name          string
	Kubeadm       KubeadmAction
	KubeadmConfig string // the file kubeadm reads: plan.KubeadmInitPath or plan.KubeadmJoinPath
	// KubeadmArgs is the kubeadm command line, e.g. init --config FILE
	// --upload-certs. The init uploads the control-plane certificates
	// (encrypted with the certificate key) because every control-plane
	// JoinConfiguration names the key, and kubeadm join then downloads them;
	// there is no configuration field for it, only the flag.
	KubeadmArgs []string
	// Labels are the node's final labels. They are not in the kubeadm
	// configuration: the NodeRestriction admission plugin forbids a kubelet
	// to set node-role.kubernetes.io/* labels on its own node, so the apply
	// sets them through the API after the node has registered.
	Labels map[string]string
	// Taints are the node's final taints; kubeadm registers the node with
	// them (nodeRegistration.taints), and the apply checks them afterwards.
	Taints []inventory.Taint
}

// PKIRequest is what the PKI must cover for inv: the external etcd members, if any.
func PKIRequest(inv *inventory.Inventory) pki.Request {
	var req pki.Request
	if inv.Topology.EtcdMode != inventory.EtcdExternal {
		return req
	}
	for _, name := range inv.Topology.EtcdMembers {
		h := inv.Host(name)
		req.EtcdMembers = append(req.EtcdMembers, pki.Member{Name: h.Name, Address: h.Address})
	}
	return req
}

// KubeadmAPIVersion is the kubeadm configuration API for a Kubernetes
// version (MAJOR.MINOR.PATCH): v1beta4 from 1.31, when kubeadm began to
// serve it, v1beta3 before.
func KubeadmAPIVersion(kubernetesVersion string) (string, error) {
	parts := strings.SplitN(kubernetesVersion, ".", 3)
	if len(parts) != 3 || parts[0] != "1" {
		return "", fmt.Errorf("kubernetes version %q: want 1.MINOR.PATCH", kubernetesVersion)
	}
	minor, err := strconv.Atoi(parts[1])
	if err != nil {
		return "", fmt.Errorf("kubernetes version %q: %w", kubernetesVersion, err)
	}
	if minor >= 31 {
		return KubeadmV1Beta4, nil
	}
	return KubeadmV1Beta3, nil
}

// Render produces every file of every host in inv, with the PKI in st
// (pki.Ensure(dir, PKIRequest(inv), now) makes it). It is deterministic:
// the same inputs give byte-identical files in the same order.
func Render(inv *inventory.Inventory, st *pki.State, opts Options) (*Rendering, error) {
	if st == nil {
		return nil, errors.New("render: no PKI state")
	}
	set := opts.Templates
	if set == nil {
		var err error
		if set, err = templates.Builtin(); err != nil {
			return nil, err
		}
	}
	r, cluster, err := newRenderer(inv, st, set, opts)
	if err != nil {
		return nil, err
	}
	out := &Rendering{
		Cluster:                 inv.Cluster.Name,
		KubeadmAPIVersion:       cluster.KubeadmAPIVersion,
		EtcdInitialClusterToken: r.etcdToken,
	}
	var errs []error
	for _, h := range inv.Hosts {
		hf, err := r.host(h)
		if err != nil {
			errs = append(errs, fmt.Errorf("host %q: %w", h.Name, err))
			continue
		}
		out.Hosts = append(out.Hosts, hf)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// renderer holds what every host's rendering shares.
type renderer struct {
	inv        *inventory.Inventory
	st         *pki.State
	set        *templates.Set
	cluster    ClusterData
	initMaster string
	etcd       map[string]EtcdBootstrap
	etcdToken  string
	facts      map[string]*plan.HostFacts
}

func newRenderer(inv *inventory.Inventory, st *pki.State, set *templates.Set, opts Options) (*renderer, ClusterData, error) {
	c := inv.Cluster
	api, err := KubeadmAPIVersion(c.KubernetesVersion)
	if err != nil {
		return nil, ClusterData{}, err
	}
	masters := inv.HostsWith(inventory.RoleMaster)
	if len(masters) == 0 {
		return nil, ClusterData{}, errors.New("render: the inventory has no master")
	}
	initMaster := opts.InitMaster
	if initMaster == "" {
		initMaster = masters[0].Name
	}
	if h := inv.Host(initMaster); h == nil || !h.Has(inventory.RoleMaster) {
		return nil, ClusterData{}, fmt.Errorf("render: init master %q is not a master of the inventory", initMaster)
	}
	cd := ClusterData{
		Name:                 c.Name,
		KubernetesVersion:    "v" + c.KubernetesVersion,
		KubeadmAPIVersion:    api,
		ControlPlaneEndpoint: c.ControlPlaneEndpoint,
		JoinEndpoint:         c.ControlPlaneEndpoint,
		APIServerPort:        inventory.DefaultAPIServerPort,
		PodSubnet:            c.PodSubnet.String(),
		ServiceSubnet:        c.ServiceSubnet.String(),
		DNSDomain:            c.DNSDomain,
		EtcdMode:             string(inv.Topology.EtcdMode),
		EtcdDataDir:          inv.Etcd.DataDir,
	}
	if inv.Topology.EtcdMode == inventory.EtcdStacked {
		cd.EtcdImageTag = EtcdImageTag(etcdVersion(inv))
		t := EtcdTuningOf(inv.Etcd)
		cd.EtcdExtraArgs = []Arg{
			{"election-timeout", strconv.FormatInt(t.ElectionMS, 10)},
			{"heartbeat-interval", strconv.FormatInt(t.HeartbeatMS, 10)},
			{"quota-backend-bytes", strconv.FormatInt(t.QuotaBackendBytes, 10)},
			{"snapshot-count", strconv.Itoa(t.SnapshotCount)},
		}
	}
	if len(inv.Images) > 0 {
		cd.ImagePullPolicy = "Never"
	}
	if cd.JoinEndpoint == "" {
		// Without control_plane_endpoint there is one master, so nodes join it directly.
		cd.JoinEndpoint = net.JoinHostPort(inv.Host(initMaster).Address, strconv.Itoa(inventory.DefaultAPIServerPort))
	}
	// The API server certificate must name every address clients use: each
	// master's own (kubeadm adds the local one, not the others') and the
	// endpoint's host, or clients going through the load balancer fail TLS.
	for _, m := range masters {
		cd.CertSANs = append(cd.CertSANs, m.Address)
	}
	if c.ControlPlaneEndpoint != "" {
		host, _, err := net.SplitHostPort(c.ControlPlaneEndpoint)
		if err != nil {
			return nil, ClusterData{}, fmt.Errorf("control_plane_endpoint %q: %w", c.ControlPlaneEndpoint, err)
		}
		cd.CertSANs = append(cd.CertSANs, host)
	}
	cd.CertSANs = uniqueInOrder(cd.CertSANs)

	r := &renderer{inv: inv, st: st, set: set, initMaster: initMaster, facts: opts.Facts}
	if inv.Topology.EtcdMode == inventory.EtcdExternal {
		members := inv.Topology.EtcdMembers
		for _, name := range members {
			cd.EtcdEndpoints = append(cd.EtcdEndpoints, clientURL(inv.Host(name).Address))
		}
		r.etcd = FreshEtcdBootstrap(members)
		for name, b := range opts.EtcdBootstrap {
			if !slices.Contains(members, name) {
				return nil, ClusterData{}, fmt.Errorf("render: etcd bootstrap for %q, which is not an etcd member of the inventory", name)
			}
			if err := checkBootstrap(name, b, members); err != nil {
				return nil, ClusterData{}, err
			}
			r.etcd[name] = b
		}
		// Derived from the etcd CA, which kprov never replaces: stable for
		// the cluster's life and different for every cluster.
		sum := sha256.Sum256(st.EtcdCA.Cert.Raw)
		r.etcdToken = "kprov-" + c.Name + "-" + hex.EncodeToString(sum[:4])
	}
	r.cluster = cd
	return r, cd, nil
}

// checkBootstrap refuses an etcd bootstrap etcd itself would refuse, or that would found a second cluster.
func checkBootstrap(name string, b EtcdBootstrap, members []string) error {
	if b.State != EtcdStateNew && b.State != EtcdStateExisting {
		return fmt.Errorf("render: etcd member %q: initial-cluster-state %q: want %q or %q", name, b.State, EtcdStateNew, EtcdStateExisting)
	}
	if !slices.Contains(b.Cluster, name) {
		return fmt.Errorf("render: etcd member %q: initial-cluster %v must include the member itself", name, b.Cluster)
	}
	for _, m := range b.Cluster {
		if _, outside := b.Outside[m]; outside && slices.Contains(members, m) {
			return fmt.Errorf("render: etcd member %q: initial-cluster member %q is an etcd member of the inventory and also given a peer URL outside it", name, m)
		}
		if _, outside := b.Outside[m]; !outside && !slices.Contains(members, m) {
			return fmt.Errorf("render: etcd member %q: initial-cluster names %q, which is not an etcd member of the inventory", name, m)
		}
	}
	return nil
}

// The URLs rendered here are the ones fact gathering matches members by, exactly.
func clientURL(addr string) string { return plan.EtcdClientURL(addr) }
func peerURL(addr string) string   { return plan.EtcdPeerURL(addr) }

func uniqueInOrder(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Commands that make a changed node file take effect.
const (
	// ApplySysctls loads the sysctl files. In a container (the lab's
	// machines, or a kind-style node) the kernel and its settings belong to
	// the host, /proc/sys is read-only and sysctl would fail on every key.
	ApplySysctls = "if systemd-detect-virt --container --quiet; then echo 'in a container: kernel settings belong to the host' >&2; else sysctl --system; fi"
	// RestartPodRoutes makes a changed routes unit take effect: its stop
	// removes the routes it added, its start adds the new list. The unit
	// is enabled by the start step that follows.
	RestartPodRoutes = "systemctl daemon-reload && systemctl restart " + plan.PodRoutesUnit
	// ReloadAPIProxy makes a running node-local proxy read its new list of
	// API servers (SIGHUP; its open connections stay); a stopped one reads
	// it when the start step that follows starts it.
	ReloadAPIProxy = "systemctl try-reload-or-restart " + plan.APIProxyUnit
	// RestartAPIProxy makes a changed proxy unit take effect where it runs.
	RestartAPIProxy = "systemctl daemon-reload && systemctl try-restart " + plan.APIProxyUnit
	// EnableKubelet makes a new or changed kubelet unit take effect: enabled
	// (kubeadm starts it during init or join), and restarted where kubeadm
	// already ran.
	EnableKubelet = "systemctl daemon-reload && systemctl enable kubelet.service && if [ -e " + plan.KubeletConfPath + " ]; then systemctl restart kubelet.service; fi"
)

// host renders one host's files.
func (r *renderer) host(h *inventory.Host) (*HostFiles, error) {
	hf := &HostFiles{Name: h.Name, Address: h.Address, Roles: slices.Clone(h.Roles), OnChange: map[string][]string{}}
	external := r.inv.Topology.EtcdMode == inventory.EtcdExternal

	var pkiRoles []inventory.Role
	for _, role := range h.Roles {
		if role == inventory.RoleEtcd && !external {
			continue // stacked: kubeadm issues the member's certificates on the master
		}
		pkiRoles = append(pkiRoles, role)
	}
	pkiFiles, err := r.st.FilesFor(h.Name, pkiRoles...)
	if err != nil {
		return nil, err
	}
	for _, f := range pkiFiles {
		redacted := f.Content
		if f.Secret {
			redacted = []byte(RedactedPrivateKey)
		}
		hf.Files = append(hf.Files, File{Path: f.Path, Mode: f.Mode, Content: f.Content, Secret: f.Secret, Redacted: redacted, Source: "pki"})
	}

	data := TemplateData{Cluster: r.cluster, Host: hostData(h)}
	data.Host.KubeletPath = "/usr/bin/kubelet"
	if _, ok := r.inv.Artifact("kubelet"); ok {
		data.Host.KubeletPath = plan.BinDir + "/kubelet"
	}
	secrets := r.st.Secrets
	var renders []templateFile

	if h.IsNode() {
		node := &NodeSpec{Name: h.Name, Labels: maps.Clone(h.Labels), Taints: slices.Clone(h.Taints)}
		if node.Labels == nil {
			node.Labels = map[string]string{}
		}
		data.Kubeadm = &KubeadmData{
			BootstrapToken: secrets.BootstrapToken.Reveal(),
			CertificateKey: secrets.CertificateKey.Reveal(),
			DiscoveryHash:  r.st.DiscoveryHash(),
		}
		switch {
		case h.Name == r.initMaster:
			node.Kubeadm, node.KubeadmConfig = KubeadmInit, plan.KubeadmInitPath
			node.KubeadmArgs = []string{"init", "--config", plan.KubeadmInitPath, "--upload-certs"}
			renders = append(renders, templateFile{templates.KubeadmInit, plan.KubeadmInitPath, nil})
		case h.Has(inventory.RoleMaster):
			node.Kubeadm, node.KubeadmConfig = KubeadmJoinControlPlane, plan.KubeadmJoinPath
			node.KubeadmArgs = []string{"join", "--config", plan.KubeadmJoinPath}
			data.Kubeadm.ControlPlane = true
			renders = append(renders, templateFile{templates.KubeadmJoin, plan.KubeadmJoinPath, nil})
		default:
			node.Kubeadm, node.KubeadmConfig = KubeadmJoin, plan.KubeadmJoinPath
			node.KubeadmArgs = []string{"join", "--config", plan.KubeadmJoinPath}
			renders = append(renders, templateFile{templates.KubeadmJoin, plan.KubeadmJoinPath, nil})
		}
		hf.Node = node
		data.Runtime = runtimeData(r.inv, h, r.facts[h.Name].RuntimeFacts())
		// containerd reads its configuration and unit only when it starts:
		// the planner restarts it when either (or its binary) changed. The
		// kubelet's patch is read by kubeadm init or join, and containerd
		// picks up a changed CNI configuration by itself.
		renders = append(renders,
			templateFile{templates.Sysctl, plan.SysctlPath, []string{ApplySysctls}},
			templateFile{templates.Modules, plan.ModulesPath, []string{"systemctl restart systemd-modules-load.service"}},
			templateFile{templates.ContainerdConfig, plan.ContainerdConfigPath, nil},
			templateFile{templates.ContainerdUnit, plan.ContainerdUnitPath, nil},
			templateFile{templates.KubeletPatch, plan.KubeletPatchPath, nil},
			templateFile{templates.SwapOffUnit, plan.SwapOffUnitPath, []string{"systemctl daemon-reload"}},
			templateFile{templates.KubeletUnit, plan.KubeletUnitPath, []string{EnableKubelet}},
		)
		hf.Units = append(hf.Units, plan.SwapOffUnit, plan.ContainerdUnit)
		// With pod_network = "none" the user's CNI plugin writes its own
		// configuration; kprov's bridge would compete with it.
		if r.inv.Cluster.PodNetwork == inventory.PodNetworkRoutes {
			renders = append(renders,
				templateFile{templates.CNIBridge, plan.CNIConfPath, nil},
				templateFile{templates.PodRoutesUnit, plan.PodRoutesUnitPath, []string{RestartPodRoutes}},
			)
			hf.Units = append(hf.Units, plan.PodRoutesUnit)
		}
		// The node-local API endpoint answers before kubeadm runs here:
		// init's own clients and every join go through it.
		if r.inv.Cluster.APIEndpoint == inventory.APIEndpointNodeLocal {
			data.APIProxy = r.apiProxyData()
			renders = append(renders,
				templateFile{templates.APIProxyUpstream, plan.APIProxyUpstreamsPath, []string{ReloadAPIProxy}},
				templateFile{templates.APIProxyUnit, plan.APIProxyUnitPath, []string{RestartAPIProxy}},
			)
			hf.Units = append(hf.Units, plan.APIProxyUnit)
		}
	}

	if external && h.Has(inventory.RoleEtcd) {
		b := r.etcd[h.Name]
		member := &EtcdTarget{Name: h.Name, ClientURL: clientURL(h.Address), PeerURL: peerURL(h.Address), Bootstrap: b}
		var initial []string
		for _, name := range b.Cluster {
			if u, outside := b.Outside[name]; outside {
				initial = append(initial, name+"="+u)
				continue
			}
			initial = append(initial, name+"="+peerURL(r.inv.Host(name).Address))
		}
		data.Etcd = &EtcdData{
			Name:                member.Name,
			DataDir:             r.inv.Etcd.DataDir,
			ClientURL:           member.ClientURL,
			PeerURL:             member.PeerURL,
			ListenClientURLs:    []string{member.ClientURL, "https://127.0.0.1:2379"},
			InitialCluster:      strings.Join(initial, ","),
			InitialClusterState: b.State,
			InitialClusterToken: r.etcdToken,
			Tuning:              EtcdTuningOf(r.inv.Etcd),
		}
		hf.Etcd = member
		// A changed etcd configuration takes effect on a restart, which the
		// planner orders one member at a time; the unit change alone needs a reload.
		renders = append(renders,
			templateFile{templates.EtcdConfig, plan.EtcdConfigPath, nil},
			templateFile{templates.EtcdUnit, plan.EtcdUnitPath, []string{"systemctl daemon-reload"}},
		)
		hf.Units = append(hf.Units, plan.EtcdUnit)
	}

	redactedData := data
	if data.Kubeadm != nil {
		k := *data.Kubeadm
		k.BootstrapToken, k.CertificateKey = RedactedBootstrapToken, RedactedCertificateKey
		redactedData.Kubeadm = &k
	}
	for _, tf := range renders {
		f, err := r.execute(tf, data, redactedData)
		if err != nil {
			return nil, err
		}
		hf.Files = append(hf.Files, f)
		if len(tf.onChange) > 0 {
			hf.OnChange[f.Path] = tf.onChange
		}
	}
	slices.SortFunc(hf.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	for i := 1; i < len(hf.Files); i++ {
		if hf.Files[i].Path == hf.Files[i-1].Path {
			return nil, fmt.Errorf("%s: rendered twice (%s and %s)", hf.Files[i].Path, hf.Files[i-1].Source, hf.Files[i].Source)
		}
	}
	return hf, nil
}

// templateFile is a template rendered to a path, with what makes a change take effect.
type templateFile struct {
	name     string
	path     string
	onChange []string
}

// execute renders tf twice: with the secrets, and with placeholders for
// them. Where the two differ the file holds a secret, whichever template
// (built-in or override) put it there, and is marked so.
func (r *renderer) execute(tf templateFile, data, redactedData TemplateData) (File, error) {
	content, err := r.set.Execute(tf.name, data)
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", tf.path, err)
	}
	redacted, err := r.set.Execute(tf.name, redactedData)
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", tf.path, err)
	}
	f := File{Path: tf.path, Mode: publicMode, Content: content, Redacted: redacted, Source: tf.name}
	if !bytes.Equal(content, redacted) {
		f.Secret, f.Mode = true, secretMode
	}
	return f, nil
}

// apiProxyData is the node-local proxy's settings, the same on every node.
func (r *renderer) apiProxyData() *APIProxyData {
	d := &APIProxyData{
		Binary:        inventory.APIProxyArtifact,
		Listen:        r.inv.Cluster.ControlPlaneEndpoint,
		UpstreamsPath: plan.APIProxyUpstreamsPath,
	}
	if _, ok := r.inv.Artifact(inventory.APIProxyArtifact); ok {
		d.Binary = InstalledPath(inventory.APIProxyArtifact)
	}
	for _, m := range r.inv.HostsWith(inventory.RoleMaster) {
		d.Upstreams = append(d.Upstreams, net.JoinHostPort(m.Address, strconv.Itoa(inventory.DefaultAPIServerPort)))
	}
	return d
}

func hostData(h *inventory.Host) HostData {
	hd := HostData{Name: h.Name, Address: h.Address, Taints: slices.Clone(h.Taints)}
	for _, role := range h.Roles {
		hd.Roles = append(hd.Roles, string(role))
	}
	args := maps.Clone(h.KubeletExtraArgs)
	if args == nil {
		args = map[string]string{}
	}
	// The kubelet otherwise reports the address of the default route's
	// interface, which on a host with several networks is not the one etcd
	// and the API server advertise.
	if _, set := args["node-ip"]; !set {
		args["node-ip"] = h.Address
	}
	for _, k := range slices.Sorted(maps.Keys(args)) {
		hd.KubeletExtraArgs = append(hd.KubeletExtraArgs, Arg{Name: k, Value: args[k]})
	}
	return hd
}
