package roles

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/templates"
)

// PlanOptions are the choices the person running kprov makes.
type PlanOptions struct {
	// Parallel bounds the stages where hosts are independent (preparation,
	// worker joins, labels); quorum-bound stages are always serial.
	Parallel int
	// Templates to render with; nil means the built-in ones.
	Templates *templates.Set
	// Now is when the join secrets' expiry is judged: the planner reads no
	// clock. The zero time judges none expired, so only secrets already
	// renewed in the state directory (pending) are given to the cluster.
	Now time.Time
}

// UnreachableError is a plan that needs a host kprov could not reach.
type UnreachableError struct {
	Hosts []string
	Errs  []string
}

func (e *UnreachableError) Error() string {
	var b strings.Builder
	b.WriteString("the plan needs hosts that could not be reached:")
	for i, h := range e.Hosts {
		fmt.Fprintf(&b, "\n  %s: %s", h, e.Errs[i])
	}
	b.WriteString("\nbring them back or remove them from the inventory, then plan again")
	return b.String()
}

// Plan computes the ordered stages that take the hosts from what the facts
// show to what the inventory wants, keeping etcd and control-plane quorum at
// every step. It is pure: no network, no clock, no writes.
func Plan(inv *inventory.Inventory, facts *plan.Facts, st *pki.State, opts PlanOptions) (*plan.Plan, error) {
	if opts.Parallel < 1 {
		opts.Parallel = 1
	}
	p := &planner{inv: inv, facts: facts, st: st, opts: opts, etcdCache: map[string]File{}}
	if err := p.checkReachable(); err != nil {
		return nil, err
	}
	p.initMaster = p.chooseInitMaster()
	members := inv.Topology.EtcdMembers
	final, err := Render(inv, st, Options{Templates: opts.Templates, InitMaster: p.initMaster, EtcdBootstrap: p.formed(), Facts: facts.Hosts})
	if err != nil {
		return nil, err
	}
	p.final = final
	if p.rolledCerts, err = p.memberCertsToRoll(); err != nil {
		return nil, err
	}

	out := &plan.Plan{Cluster: inv.Cluster.Name, FactsDigest: facts.Digest()}
	out.Stages = append(out.Stages, p.prepare())
	if inv.Topology.EtcdMode == inventory.EtcdExternal && len(members) > 0 {
		stages, notes, err := p.etcd()
		if err != nil {
			return nil, err
		}
		out.Stages = append(out.Stages, stages...)
		out.Notes = append(out.Notes, notes...)
	}
	images, err := p.images()
	if err != nil {
		return nil, err
	}
	out.Stages = append(out.Stages, images)
	// A dead master's stacked member leaves before a new master joins;
	// every other removal waits until the wanted nodes are Ready.
	removeFirst, remove, notes := p.removeNodes()
	out.Stages = append(out.Stages, removeFirst...)
	out.Stages = append(out.Stages, p.controlPlane()...)
	out.Stages = append(out.Stages, p.nodes()...)
	out.Stages = append(out.Stages, remove...)
	out.Notes = append(out.Notes, notes...)
	if inv.Cluster.PodNetwork == inventory.PodNetworkNone {
		out.Notes = append(out.Notes, `pod_network = "none": kprov installs no pod network, and nodes stay NotReady until yours runs; apply does not wait for Ready`)
	}
	if note := p.apiserverEtcdClientNote(out.Stages); note != "" {
		out.Notes = append(out.Notes, note)
	}
	out.Stages = slices.DeleteFunc(out.Stages, func(s plan.Stage) bool { return len(s.Steps) == 0 })
	if facts.Offline {
		out.Notes = append(out.Notes, "planned offline against fresh hosts: nothing was checked on the hosts")
	}
	out.Count()
	return out, nil
}

type planner struct {
	inv        *inventory.Inventory
	facts      *plan.Facts
	st         *pki.State
	opts       PlanOptions
	initMaster string
	final      *Rendering
	etcdCache  map[string]File
	renderErr  error
	// rolledCerts are the member certificate files each running external
	// etcd member's host must get, uploaded by the etcd planner's rolling
	// restart rather than the prepare stage.
	rolledCerts map[string][]File
}

// apiserverEtcdClientPath is the API server's etcd client certificate on a master with external etcd.
const apiserverEtcdClientPath = pki.RemotePKIDir + "/apiserver-etcd-client.crt"

// apiserverEtcdClientNote says what a plan that writes a renewed
// apiserver-etcd-client to a master whose control plane runs leaves
// undone: kprov does not restart kube-apiserver (the control plane's
// rolling restart is issue 16's). etcd's client transport, which the API
// server uses, loads the certificate files for every new connection, and
// the old certificate stays valid until it expires, so nothing breaks.
func (p *planner) apiserverEtcdClientNote(stages []plan.Stage) string {
	var hosts []string
	for _, s := range stages {
		for _, step := range s.Steps {
			if s.Kind == plan.StagePrepare && step.Path == apiserverEtcdClientPath && p.host(step.Host).ControlPlane {
				hosts = append(hosts, step.Host)
			}
		}
	}
	if len(hosts) == 0 {
		return ""
	}
	return APIServerEtcdClientNotePrefix + strings.Join(hosts, ", ") + ": kube-apiserver uses it for each new connection to etcd; this plan does not restart kube-apiserver for it (kprov certs renew restarts it with the control plane unless --etcd-only), and the old certificate stays valid until it expires"
}

// APIServerEtcdClientNotePrefix begins the note on a renewed
// apiserver-etcd-client that no restart follows.
const APIServerEtcdClientNotePrefix = "renewed apiserver-etcd-client on "

// MemberCertPaths are the files of an external etcd member's own
// certificates on its host: a changed one is rolled out one member at a
// time with a restart, never written to every member at once.
var MemberCertPaths = []string{
	pki.RemotePKIDir + "/etcd/peer.crt", pki.RemotePKIDir + "/etcd/peer.key",
	pki.RemotePKIDir + "/etcd/server.crt", pki.RemotePKIDir + "/etcd/server.key",
}

// memberCertsToRoll picks, for every external etcd member whose process
// runs on its host, the member certificate files that differ there, and
// checks each certificate before any plan uploads it: it must chain to the
// etcd CA every peer trusts, name the member and cover its address
// (pki.VerifyMemberCert), so a member never serves a certificate its peers
// or clients reject.
func (p *planner) memberCertsToRoll() (map[string][]File, error) {
	out := map[string][]File{}
	if p.inv.Topology.EtcdMode != inventory.EtcdExternal {
		return out, nil
	}
	for _, name := range p.inv.Topology.EtcdMembers {
		running := slices.ContainsFunc(p.facts.Etcd, func(m plan.EtcdMember) bool { return m.Host == name && m.Running && !m.Learner })
		if !running {
			continue // prepare writes them before the member starts
		}
		hf := p.host(name)
		for _, f := range p.final.Host(name).Files {
			if !slices.Contains(MemberCertPaths, f.Path) {
				continue
			}
			if have, ok := hf.Files[f.Path]; ok && have == f.SHA256() {
				continue
			}
			if strings.HasSuffix(f.Path, ".crt") {
				if err := pki.VerifyMemberCert(p.st.EtcdCA.Cert, f.Content, name, p.inv.Host(name).Address, p.opts.Now); err != nil {
					return nil, fmt.Errorf("%s: %s: %w: kprov will not put it on the member; run kprov certs renew to issue it again", name, f.Path, err)
				}
			}
			out[name] = append(out[name], f)
		}
	}
	return out, nil
}

func (p *planner) host(name string) *plan.HostFacts {
	if hf := p.facts.Hosts[name]; hf != nil {
		return hf
	}
	return &plan.HostFacts{}
}

// checkReachable refuses to plan when a host the inventory names could not be
// reached: every host takes part in a convergence run, and guessing its state
// could repeat a join or an etcd member add.
func (p *planner) checkReachable() error {
	e := &UnreachableError{}
	for _, h := range p.inv.Hosts {
		hf := p.facts.Hosts[h.Name]
		if hf == nil || !hf.Reachable {
			msg := "no facts gathered"
			if hf != nil && hf.Error != "" {
				msg = hf.Error
			}
			// A dead etcd member leaving the cluster is handled by the etcd
			// planner; every other host must answer.
			e.Hosts = append(e.Hosts, h.Name)
			e.Errs = append(e.Errs, msg)
		}
	}
	if len(e.Hosts) > 0 {
		return e
	}
	return nil
}

// chooseInitMaster keeps the master that already runs a control plane as the
// one the others join; on a fresh cluster it is the first master.
func (p *planner) chooseInitMaster() string {
	for _, name := range p.inv.Topology.Masters {
		if p.host(name).ControlPlane {
			return name
		}
	}
	if len(p.inv.Topology.Masters) == 0 {
		return ""
	}
	return p.inv.Topology.Masters[0]
}

func (p *planner) formed() map[string]EtcdBootstrap {
	if p.inv.Topology.EtcdMode != inventory.EtcdExternal {
		return nil
	}
	return FormedEtcdBootstrap(p.inv.Topology.EtcdMembers)
}

func uploadStep(host string, f File, reason string) plan.Step {
	return plan.Step{Op: plan.OpUploadFile, Host: host, Path: f.Path, Mode: f.Mode, Content: f.Content,
		SHA256: f.SHA256(), Secret: f.Secret, Reason: reason}
}

// ArtifactsFor lists the artifacts host h needs: the etcd binaries on an
// external etcd member, kubeadm, kubelet, kubectl and the container runtime
// (RuntimeArtifacts) on a Kubernetes node.
// Only artifacts the inventory names are listed; the others must already be
// on the host (preflight checks).
func ArtifactsFor(inv *inventory.Inventory, h *inventory.Host) []inventory.Artifact {
	var out []inventory.Artifact
	for _, a := range inv.Artifacts {
		if slices.Contains(NeededBinaries(inv, h), a.Name) {
			out = append(out, a)
		}
	}
	return out
}

// NeededBinaries names the binaries host h runs, whether from artifacts or
// from the host's own packages, and on a node the runtime's artifacts
// (RuntimeArtifacts, the cni-plugins archive among them).
func NeededBinaries(inv *inventory.Inventory, h *inventory.Host) []string {
	var out []string
	if inv.Topology.EtcdMode == inventory.EtcdExternal && h.Has(inventory.RoleEtcd) {
		out = append(out, "etcd", "etcdctl", "etcdutl")
	}
	if h.IsNode() {
		out = append(out, "kubeadm", "kubelet", "kubectl")
		out = append(out, RuntimeArtifacts...)
		if inv.Cluster.APIEndpoint == inventory.APIEndpointNodeLocal {
			out = append(out, inventory.APIProxyArtifact)
		}
	}
	return out
}

// RuntimeArtifacts are the container runtime's artifacts every Kubernetes
// node needs. The preflight's runtime rule judges them (containerd's
// version, the CNI plugins in the CNI binary directory), not the binaries rule.
var RuntimeArtifacts = []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc", inventory.CNIPluginsArtifact}

// InstalledPath is the file on a host whose checksum says whether an
// artifact is installed: the binary in plan.BinDir, or for the cni-plugins
// archive the marker file its unpacking leaves (CNIPluginsMarker).
func InstalledPath(name string) string {
	if name == inventory.CNIPluginsArtifact {
		return plan.CNIPluginsMarkerPath
	}
	return plan.BinDir + "/" + name
}

// CNIPluginsMarker is the SHA-256 (as HostFacts.Files holds it) of the
// marker file unpacking a cni-plugins archive with this SHA-256 leaves.
func CNIPluginsMarker(archiveSHA256 string) string {
	return File{Content: []byte(archiveSHA256 + "\n")}.SHA256()
}

// installSteps uploads each artifact whose checksum on the host differs.
func (p *planner) installSteps(name string) []plan.Step {
	var steps []plan.Step
	hf := p.host(name)
	for _, a := range ArtifactsFor(p.inv, p.inv.Host(name)) {
		path := InstalledPath(a.Name)
		have, ok := hf.Files[path]
		if a.Name == inventory.CNIPluginsArtifact {
			if ok && have == CNIPluginsMarker(a.SHA256) {
				continue
			}
			reason := "no CNI plugins from the inventory's cni-plugins archive yet"
			if ok {
				reason = "another cni-plugins archive was unpacked (another version?)"
			}
			steps = append(steps, plan.Step{Op: plan.OpUnpackArchive, Host: name, Path: plan.CNIBinDir,
				SHA256: a.SHA256, Source: a.Path, Reason: reason})
			continue
		}
		if ok && have == a.SHA256 {
			continue
		}
		reason := "missing on the host; from the inventory's artifacts"
		if ok {
			reason = "differs from the inventory's artifact (another version?)"
		}
		steps = append(steps, plan.Step{Op: plan.OpUploadFile, Host: name, Path: path, Mode: 0o755,
			SHA256: a.SHA256, Source: a.Path, Reason: reason})
	}
	return steps
}

// prepare writes every file whose content differs from the host's, runs the
// commands that make a changed file take effect, and starts the host's units.
// Hosts are independent here, so the stage runs in parallel within the bound.
func (p *planner) prepare() plan.Stage {
	stage := plan.Stage{Kind: plan.StagePrepare, Title: "preparing hosts: binaries, files and units", Parallel: p.opts.Parallel}
	for _, hfiles := range p.final.Hosts {
		hf := p.host(hfiles.Name)
		installed := p.installSteps(hfiles.Name)
		stage.Steps = append(stage.Steps, installed...)
		var changed []string
		for _, f := range hfiles.Files {
			if f.Path == plan.EtcdConfigPath {
				continue // written by the etcd stages, in membership order
			}
			if slices.ContainsFunc(p.rolledCerts[hfiles.Name], func(r File) bool { return r.Path == f.Path }) {
				continue // a running member's renewed certificate: its rolling restart writes it
			}
			have, ok := hf.Files[f.Path]
			if ok && have == f.SHA256() {
				continue
			}
			reason := "missing on the host"
			if ok {
				reason = "content differs from the rendered file"
			}
			stage.Steps = append(stage.Steps, uploadStep(hfiles.Name, f, reason))
			changed = append(changed, f.Path)
		}
		for _, path := range changed {
			for _, cmd := range hfiles.OnChange[path] {
				stage.Steps = append(stage.Steps, plan.Step{Op: plan.OpRunCommand, Host: hfiles.Name, Command: cmd,
					Reason: "make the new " + path + " take effect"})
			}
		}
		for _, unit := range hfiles.Units {
			if unit == plan.EtcdUnit || unit == plan.ContainerdUnit {
				continue // started by the etcd stages; containerd below
			}
			if hf.Services[unit] == "active" && !slices.ContainsFunc(changed, func(p string) bool { return strings.HasSuffix(p, "/"+unit) }) {
				continue
			}
			stage.Steps = append(stage.Steps, plan.Step{Op: plan.OpStartService, Host: hfiles.Name, Service: unit,
				Reason: "enable and start " + unit})
		}
		if slices.Contains(hfiles.Units, plan.ContainerdUnit) {
			stage.Steps = append(stage.Steps, containerdSteps(hfiles.Name, hf, changed, installed)...)
		}
		// A running proxy keeps its old binary until restarted. Its
		// clients reconnect at once (kubelets and kube-proxy retry), and
		// the masters' own control plane does not go through it.
		if slices.Contains(hfiles.Units, plan.APIProxyUnit) && serviceActive(hf, plan.APIProxyUnit) &&
			slices.ContainsFunc(installed, func(s plan.Step) bool { return s.Path == InstalledPath(inventory.APIProxyArtifact) }) {
			stage.Steps = append(stage.Steps, plan.Step{Op: plan.OpRestartService, Host: hfiles.Name, Service: plan.APIProxyUnit,
				Reason: "run the new " + InstalledPath(inventory.APIProxyArtifact)})
		}
	}
	return stage
}

// serviceActive reports whether the facts show unit active, under its
// name or (as the probe reports containerd) its name without ".service".
func serviceActive(hf *plan.HostFacts, unit string) bool {
	return hf.Services[unit] == "active" || hf.Services[strings.TrimSuffix(unit, ".service")] == "active"
}

// containerdSteps starts containerd where it is not running, and restarts
// it where it runs and its configuration, unit or binary changed: it reads
// them only when it starts. A restart leaves running containers alone
// (KillMode=process keeps their shims). Nothing else restarts it.
func containerdSteps(host string, hf *plan.HostFacts, changedFiles []string, installed []plan.Step) []plan.Step {
	var why []string
	for _, f := range changedFiles {
		if f == plan.ContainerdConfigPath || f == plan.ContainerdUnitPath {
			why = append(why, f)
		}
	}
	for _, s := range installed {
		if s.Path == InstalledPath("containerd") {
			why = append(why, s.Path)
		}
	}
	if !serviceActive(hf, plan.ContainerdUnit) {
		return []plan.Step{{Op: plan.OpStartService, Host: host, Service: plan.ContainerdUnit,
			Reason: "enable and start containerd: kubeadm and the kubelet need the container runtime"}}
	}
	if len(why) == 0 {
		return nil
	}
	return []plan.Step{{Op: plan.OpRestartService, Host: host, Service: plan.ContainerdUnit,
		Reason: "containerd reads its configuration, unit and binary only at start: restart it for the new " + strings.Join(why, ", ")}}
}

// etcd plans the external etcd cluster's membership from the live member list.
func (p *planner) etcd() ([]plan.Stage, []string, error) {
	var want []EtcdTarget
	for _, name := range p.inv.Topology.EtcdMembers {
		m := p.final.Host(name).Etcd
		want = append(want, EtcdTarget{Name: m.Name, PeerURL: m.PeerURL})
	}
	var hosts []string
	for _, h := range p.inv.Hosts {
		hosts = append(hosts, h.Name)
	}
	stages, notes, err := PlanEtcd(EtcdInput{
		Live:      p.facts.Etcd,
		Want:      want,
		Hosts:     hosts,
		DataDir:   p.inv.Etcd.DataDir,
		Service:   plan.EtcdUnit,
		Config:    p.etcdConfig,
		Normalize: plan.NormalizeEtcdConfig,
		Version:   etcdVersion(p.inv),
		Binaries:  p.etcdBinaries(),
		Certs:     p.rolledCerts,
	})
	if err == nil && p.renderErr != nil {
		err = p.renderErr
	}
	return stages, notes, err
}

// etcdBinaries is the etcd binary on each external etcd host: whether the
// prepare stage replaces it (installSteps uploads the inventory's artifact
// there) and the version the host's binary printed.
func (p *planner) etcdBinaries() map[string]EtcdBinary {
	out := map[string]EtcdBinary{}
	for _, name := range p.inv.Topology.EtcdMembers {
		b := EtcdBinary{Version: p.host(name).Versions["etcd"]}
		for _, s := range p.installSteps(name) {
			if s.Path == InstalledPath("etcd") {
				b.Replaced = true
			}
		}
		out[name] = b
	}
	return out
}

// etcdConfig renders one member's etcd.yaml for a given initial cluster and
// state; the etcd planner asks for it once per membership step, so results
// are cached by their inputs.
func (p *planner) etcdConfig(t EtcdTarget, initial []EtcdTarget, state string) File {
	names := make([]string, len(initial))
	var outside map[string]string
	keyed := make([]string, len(initial))
	for i, m := range initial {
		names[i], keyed[i] = m.Name, m.Name
		if !slices.Contains(p.inv.Topology.EtcdMembers, m.Name) {
			// A live member leaving the inventory: still in etcd's member
			// list, so in the joining member's initial-cluster.
			if outside == nil {
				outside = map[string]string{}
			}
			outside[m.Name] = m.PeerURL
			keyed[i] += "=" + m.PeerURL
		}
	}
	key := t.Name + "|" + state + "|" + strings.Join(keyed, ",")
	if f, ok := p.etcdCache[key]; ok {
		return f
	}
	boot := p.formed()
	var r *Rendering
	var err error
	if formed := boot[t.Name]; formed.State == state && slices.Equal(formed.Cluster, names) && outside == nil {
		r = p.final
	} else {
		boot[t.Name] = EtcdBootstrap{State: state, Cluster: names, Outside: outside}
		// An etcd member's configuration depends only on the masters and
		// the etcd members, so render just those hosts, not every node.
		sub := *p.inv
		sub.Hosts = slices.DeleteFunc(slices.Clone(p.inv.Hosts), func(h *inventory.Host) bool {
			return !h.Has(inventory.RoleMaster) && !h.Has(inventory.RoleEtcd)
		})
		r, err = Render(&sub, p.st, Options{Templates: p.opts.Templates, InitMaster: p.initMaster, EtcdBootstrap: boot})
	}
	if err != nil {
		p.renderErr = err
		return File{}
	}
	for _, f := range r.Host(t.Name).Files {
		if f.Path == plan.EtcdConfigPath {
			cf := f
			p.etcdCache[key] = cf
			return cf
		}
	}
	p.renderErr = fmt.Errorf("%s: no %s rendered", t.Name, plan.EtcdConfigPath)
	return File{}
}

// restoredStackedData reports whether kprov restore filled the stacked
// member's data directory on host: it holds a member's data and the restore
// marker is there. Only then may kubeadm init run over a data directory
// that is not empty.
func (p *planner) restoredStackedData(host string) bool {
	return p.facts.EtcdDataPresent[host] && p.host(host).Files[plan.EtcdRestoreMarkerPath] != ""
}

func kubeadmCommand(args []string) string { return "kubeadm " + strings.Join(args, " ") }

// controlPlane initializes the first master and joins the others one at a
// time: kubeadm's own CI joins control-plane nodes sequentially, and parallel
// joins race on the stacked etcd membership and the kubeadm-config map.
func (p *planner) controlPlane() []plan.Stage {
	var stages []plan.Stage
	var joined []string
	for _, name := range p.inv.Topology.Masters {
		if p.host(name).ControlPlane {
			joined = append(joined, name)
		}
	}
	stacked := p.inv.Topology.EtcdMode == inventory.EtcdStacked
	if p.initMaster != "" && !p.host(p.initMaster).ControlPlane {
		node := p.final.Host(p.initMaster).Node
		cmd, reason := kubeadmCommand(node.KubeadmArgs), "no master runs a control plane yet; kubeadm uses kprov's CA from /etc/kubernetes/pki"
		if stacked && p.restoredStackedData(p.initMaster) {
			// kubeadm's documented way to bring a stacked control plane
			// back from a snapshot: init with the data directory filled.
			// Only the check that wants it empty is skipped.
			cmd += " " + KubeadmRestoredEtcdPreflight(p.inv.Etcd.DataDir)
			reason = "no master runs a control plane yet; kubeadm's etcd starts from the data directory kprov restore filled, with kprov's CAs from /etc/kubernetes/pki"
		}
		stages = append(stages, plan.Stage{
			Kind: plan.StageControlPlaneInit, Target: p.initMaster, Title: "kubeadm init on " + p.initMaster, Parallel: 1, Quorum: "the first master founds the control plane",
			Steps: []plan.Step{
				{Op: plan.OpKubeadmInit, Host: p.initMaster, Command: cmd, Reason: reason},
				{Op: plan.OpWaitAPIServer, Host: p.initMaster, Reason: "the API server must answer before anything joins it"},
			},
		})
		joined = append(joined, p.initMaster)
	}
	if r := p.joinSecretsToRenew(p.st.Secrets, p.opts.Now); r.BootstrapToken || r.CertificateKey {
		stages = append(stages, p.joinSecretsStage(r))
	}
	for _, name := range p.inv.Topology.Masters {
		if slices.Contains(joined, name) {
			continue
		}
		node := p.final.Host(name).Node
		steps := []plan.Step{
			{Op: plan.OpWaitAPIServer, Host: p.initMaster, Reason: "join only while the control plane answers"},
			{Op: plan.OpKubeadmJoin, Host: name, Command: kubeadmCommand(node.KubeadmArgs),
				Reason: "masters join one at a time; parallel control-plane joins race in kubeadm"},
			{Op: plan.OpWaitAPIServer, Host: name, Reason: "the new master's API server must be healthy before the next master joins"},
		}
		quorum := ""
		if stacked {
			joined = append(joined, name)
			steps = append(steps, plan.Step{Op: plan.OpWaitEtcdHealthy, Host: name, Voters: slices.Clone(joined),
				Reason: "its stacked etcd member must be a healthy voting member before the next master joins"})
			quorum = fmt.Sprintf("stacked etcd grows to %d voting, quorum %d", len(joined), inventory.Quorum(len(joined)))
		} else {
			joined = append(joined, name)
		}
		stages = append(stages, plan.Stage{Kind: plan.StageControlPlaneJoin, Target: name, Title: "joining " + name + " to the control plane", Parallel: 1, Quorum: quorum, Steps: steps})
	}
	if p.initMaster != "" && !p.facts.KubeconfigFetched {
		stages = append(stages, plan.Stage{Kind: plan.StageKubeconfig, Title: "fetching the admin kubeconfig", Parallel: 1, Steps: []plan.Step{
			{Op: plan.OpFetchKubeconfig, Host: p.initMaster, Path: plan.AdminKubeconfigPath,
				Reason: "keep the admin kubeconfig in the state directory (0600) for kubectl and later runs"},
		}})
	}
	return stages
}

// RenewJoinSecretsBefore is how long before its expiry a join secret is
// renewed: a run joins masters one at a time, each within the kubeadm
// timeout, and neither secret may lapse between its renewal and the last join.
const RenewJoinSecretsBefore = time.Hour

// JoinSecretRenewal names the join secrets a plan gives the cluster anew
// before anything joins.
type JoinSecretRenewal struct {
	// BootstrapToken: a node or master joins, and the token is pending or
	// expires within RenewJoinSecretsBefore.
	BootstrapToken bool
	// CertificateKey: a master joins, and the key is pending or the
	// certificates uploaded with it are deleted within RenewJoinSecretsBefore.
	CertificateKey bool
}

// JoinSecretsToRenew says which join secrets a plan against these facts
// renews, with expiry judged at now. It is none while no control plane runs:
// kubeadm init then creates the token and uploads the certificates itself.
//
// The pipeline calls it before planning and renews in the state directory
// each secret it names that is not pending yet (pki.RenewBootstrapToken,
// pki.RenewCertificateKey), so the join configurations the plan renders
// carry the new values; Plan then gives the cluster the pending ones.
func JoinSecretsToRenew(inv *inventory.Inventory, facts *plan.Facts, s pki.Secrets, now time.Time) JoinSecretRenewal {
	p := &planner{inv: inv, facts: facts}
	p.initMaster = p.chooseInitMaster()
	return p.joinSecretsToRenew(s, now)
}

// joinSecretsToRenew decides from the same facts as controlPlane and nodes
// whether a master or a node will join; the token serves both (discovery
// and the kubelet's TLS bootstrap), the certificate key only masters.
func (p *planner) joinSecretsToRenew(s pki.Secrets, now time.Time) JoinSecretRenewal {
	if p.initMaster == "" || !p.host(p.initMaster).ControlPlane {
		return JoinSecretRenewal{}
	}
	var masterJoins, nodeJoins bool
	for _, name := range p.inv.Topology.Masters {
		masterJoins = masterJoins || !p.host(name).ControlPlane
	}
	for _, h := range p.inv.Hosts {
		if h.IsNode() && !h.Has(inventory.RoleMaster) {
			nodeJoins = nodeJoins || !p.host(h.Name).Joined
		}
	}
	soon := now.Add(RenewJoinSecretsBefore)
	return JoinSecretRenewal{
		BootstrapToken: (masterJoins || nodeJoins) && (s.BootstrapTokenPending || !now.IsZero() && s.TokenExpired(soon)),
		CertificateKey: masterJoins && (s.CertificateKeyPending || !now.IsZero() && s.CertificateKeyExpired(soon)),
	}
}

// joinSecretsStage gives the cluster the join secrets on the master that
// runs the control plane, before the first join: kubeadm deletes a
// bootstrap token 24 h after creating it and the uploaded certificates 2 h
// after uploading them, and a join that finds either gone fails. The steps
// carry the secrets in Content, which no printed or saved plan holds.
func (p *planner) joinSecretsStage(r JoinSecretRenewal) plan.Stage {
	s := p.st.Secrets
	at := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	steps := []plan.Step{{Op: plan.OpWaitAPIServer, Host: p.initMaster, Reason: "kubeadm renews the join secrets through the API server"}}
	if r.BootstrapToken {
		reason := fmt.Sprintf("the bootstrap token created %s lives %v and has expired or expires within %v: create it again before anything joins with it",
			at(s.BootstrapTokenCreated), pki.BootstrapTokenTTL, RenewJoinSecretsBefore)
		if s.BootstrapTokenPending {
			reason = fmt.Sprintf("the bootstrap token was renewed in the state directory at %s and is not on the cluster yet: create it (ttl %v) before anything joins with it",
				at(s.BootstrapTokenCreated), pki.BootstrapTokenTTL)
		}
		steps = append(steps, plan.Step{Op: plan.OpCreateBootstrapToken, Host: p.initMaster, Secret: true,
			Content: []byte(s.BootstrapToken.Reveal()), Reason: reason})
	}
	if r.CertificateKey {
		reason := fmt.Sprintf("kubeadm deletes uploaded certificates %v after upload; those uploaded %s are gone or go within %v: upload them again before a master joins",
			pki.CertificateKeyTTL, at(s.CertificateKeyCreated), RenewJoinSecretsBefore)
		if s.CertificateKeyPending {
			reason = fmt.Sprintf("the certificate key was renewed in the state directory at %s: upload the certificates encrypted with it (kubeadm deletes them %v later) before a master joins",
				at(s.CertificateKeyCreated), pki.CertificateKeyTTL)
		}
		steps = append(steps, plan.Step{Op: plan.OpUploadCerts, Host: p.initMaster, Path: p.final.Host(p.initMaster).Node.KubeadmConfig, Secret: true,
			Content: []byte(s.CertificateKey.Reveal()), Reason: reason})
	}
	return plan.Stage{Kind: plan.StageJoinSecrets, Target: p.initMaster, Title: "renewing the join secrets on " + p.initMaster, Parallel: 1, Steps: steps}
}

// nodes joins infra and compute hosts in parallel within the bound, then
// settles every node's labels and taints through the API.
func (p *planner) nodes() []plan.Stage {
	join := plan.Stage{Kind: plan.StageNodesJoin, Title: "joining workers", Parallel: p.opts.Parallel}
	label := plan.Stage{Kind: plan.StageNodesLabels, Title: "setting node labels and taints", Parallel: p.opts.Parallel}
	ready := plan.Stage{Kind: plan.StageNodesReady, Title: "waiting for every node to be Ready", Parallel: p.opts.Parallel}
	for _, hfiles := range p.final.Hosts {
		node := hfiles.Node
		if node == nil {
			continue
		}
		if node.Kubeadm == KubeadmJoin && !p.host(hfiles.Name).Joined {
			join.Steps = append(join.Steps, plan.Step{Op: plan.OpKubeadmJoin, Host: hfiles.Name, Command: kubeadmCommand(node.KubeadmArgs),
				Reason: "workers are independent of quorum and join in parallel"})
		}
		if step, ok := p.labelStep(hfiles.Name, node); ok {
			label.Steps = append(label.Steps, step)
		}
		// Without a pod network a node cannot become Ready: the user's CNI
		// plugin, installed after apply, makes it so (the plan's note says so).
		if p.inv.Cluster.PodNetwork == inventory.PodNetworkNone {
			continue
		}
		if nf := p.facts.Nodes[node.Name]; nf == nil || !nf.Ready {
			ready.Steps = append(ready.Steps, plan.Step{Op: plan.OpWaitNodeReady, Host: hfiles.Name,
				Reason: "a node that joined is done only when its kubelet, runtime and network make it Ready"})
		}
	}
	return []plan.Stage{join, label, ready}
}

// labelStep sets labels the kubelet may not set itself (NodeRestriction
// forbids node-role.kubernetes.io/* from the node) and checks the taints.
func (p *planner) labelStep(host string, node *NodeSpec) (plan.Step, bool) {
	if len(node.Labels) == 0 && len(node.Taints) == 0 {
		return plan.Step{}, false
	}
	var taints []string
	for _, t := range node.Taints {
		taints = append(taints, t.String())
	}
	if nf := p.facts.Nodes[node.Name]; nf != nil {
		missing := false
		for k, v := range node.Labels {
			if got, ok := nf.Labels[k]; !ok || got != v {
				missing = true
			}
		}
		for _, t := range taints {
			if !slices.Contains(nf.Taints, t) {
				missing = true
			}
		}
		if !missing {
			return plan.Step{}, false
		}
	}
	return plan.Step{Op: plan.OpLabelNode, Host: host, Labels: node.Labels, Taints: taints,
		Reason: "node-role labels cannot come from the kubelet itself; set them and the taints through the API"}, true
}

// StaleNodes are the nodes the API lists that are no Kubernetes node of
// the inventory, sorted.
func StaleNodes(inv *inventory.Inventory, nodes map[string]*plan.NodeFacts) []string {
	var out []string
	for name := range nodes {
		if h := inv.Host(name); h == nil || !h.IsNode() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// controlPlaneLabel marks the Node of a master (kubeadm sets it).
const controlPlaneLabel = "node-role.kubernetes.io/control-plane"

// StaleMasters are the stale nodes (StaleNodes) that are masters.
func StaleMasters(inv *inventory.Inventory, nodes map[string]*plan.NodeFacts) []string {
	return slices.DeleteFunc(StaleNodes(inv, nodes), func(name string) bool {
		_, master := nodes[name].Labels[controlPlaneLabel]
		return !master
	})
}

// removeNodes takes the nodes the cluster lists and the inventory no longer
// has out of the cluster, one at a time, after every wanted node is Ready
// (so their pods have somewhere to go): a Ready node is drained (cordoned,
// its pods evicted as their PodDisruptionBudgets allow), then its Node is
// deleted; a node that is not Ready has no kubelet to drain it, and its
// pods go with its Node. All through kubectl on the first master, since the
// inventory no longer says how to reach the machine: the notes say what is
// left on it.
//
// A master with stacked etcd also takes its etcd member out, between the
// drain and the Node's deletion (removeMaster). When that member is not
// healthy (the master is dead), its stage comes first, before any master
// joins (first): a join adds a member, and with a dead one still listed
// the cluster would count it towards the quorum the join needs. A master
// with external etcd is left alone with a note.
func (p *planner) removeNodes() (first, later []plan.Stage, notes []string) {
	via := p.initMaster
	for _, name := range StaleNodes(p.inv, p.facts.Nodes) {
		nf := p.facts.Nodes[name]
		_, master := nf.Labels[controlPlaneLabel]
		if master && p.inv.Topology.EtcdMode != inventory.EtcdStacked {
			notes = append(notes, fmt.Sprintf("node %s is a master the inventory no longer lists: kprov removes masters with stacked etcd only so far, so its Node stays and its control plane keeps running against the external etcd; put it back in the inventory, or stop its control plane (kubeadm reset on it) and delete the Node", name))
			continue
		}
		var steps []plan.Step
		if nf.Ready {
			steps = append(steps, plan.Step{Op: plan.OpDrainNode, Host: via, Node: name,
				Reason: "the node is no longer in the inventory: cordon it and evict its pods, as their PodDisruptionBudgets allow, before it goes"})
		}
		title := "removing node " + name
		dead := false
		if master {
			etcdSteps, member, note := p.removeMaster(name, via)
			if note != "" {
				notes = append(notes, note)
				continue
			}
			steps = append(steps, etcdSteps...)
			title = "removing master " + name
			if member != nil {
				title += " and its etcd member"
				dead = !member.Healthy
			}
		}
		reason := "the node is drained; its Node object goes"
		if !nf.Ready {
			reason = "the node is not Ready, so no kubelet can drain it: its Node object goes, and its pods with it"
		}
		steps = append(steps, plan.Step{Op: plan.OpDeleteNode, Host: via, Node: name, Reason: reason})
		stage := plan.Stage{Kind: plan.StageNodesRemove, Target: name, Title: title, Parallel: 1, Steps: steps}
		if dead {
			first = append(first, stage)
		} else {
			later = append(later, stage)
		}
		left := "its kubelet, containerd and files stay there (it registers again if its kubelet restarts)"
		if master {
			left = "its kubelet, containerd, files and control-plane manifests stay there (its kubelet restarts them, and its API server, without an etcd member, fails)"
		}
		notes = append(notes, fmt.Sprintf("node %s is no longer in the inventory: it is drained and its Node deleted through the API; kprov cannot reach the machine itself, so %s: wipe it, or list it in an inventory and run kprov reset --host %s", name, left, name))
	}
	return first, later, notes
}

// removeMaster is the etcd part of taking out a master the inventory no
// longer lists, with stacked etcd: its member (named after its node, on no
// inventory host) leaves through via, a master that stays, the way every
// removal does (RELIABILITY): every staying member healthy, leadership
// moved away if it leads, removed by ID and peer URL, every staying member
// healthy again. It returns nothing but a note when the removal must wait
// (a staying member is not healthy: one more member down would cost the
// quorum) and no steps when the member is already gone.
func (p *planner) removeMaster(name, via string) ([]plan.Step, *plan.EtcdMember, string) {
	var member *plan.EtcdMember
	var staying []string
	for i, m := range p.facts.Etcd {
		switch {
		case m.Name == name && m.Host == "":
			member = &p.facts.Etcd[i]
		case m.Host != "" && slices.Contains(p.inv.Topology.Masters, m.Host) && !m.Learner:
			staying = append(staying, m.Host)
			if !m.Healthy {
				return nil, nil, fmt.Sprintf("master %s is no longer in the inventory, but its etcd member is not removed while the member on %s is not healthy: removing it then could cost etcd its quorum; bring %s back (kprov status) and run kprov apply again", name, m.Host, m.Host)
			}
		}
	}
	if member == nil {
		return nil, nil, ""
	}
	// Masters of the inventory that have no member yet join in this apply
	// (before this stage, unless the departing member is dead): the waits
	// expect them.
	voters := slices.Clone(staying)
	if member.Healthy {
		voters = slices.Clone(p.inv.Topology.Masters)
	}
	slices.Sort(voters)
	wait := func(reason string) plan.Step {
		return plan.Step{Op: plan.OpWaitEtcdHealthy, Host: via, Voters: voters, Reason: reason}
	}
	steps := []plan.Step{wait("every member that stays must be healthy before a member is removed")}
	if member.Healthy && !member.Learner {
		steps = append(steps, plan.Step{Op: plan.OpEtcdMoveLeader, Host: via, Member: member.Name, PeerURL: member.PeerURL,
			Reason: "if this member leads, leadership moves to a healthy member first so the cluster never waits out an election"})
	}
	steps = append(steps,
		plan.Step{Op: plan.OpEtcdRemove, Host: via, Member: member.Name, MemberID: member.ID, PeerURL: member.PeerURL,
			Reason: fmt.Sprintf("master %s's stacked etcd member leaves the cluster by its ID and peer URL, through %s, a master that stays", name, via)},
		wait("every member that stays must be healthy after the removal"),
	)
	return steps, member, ""
}
