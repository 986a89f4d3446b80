package roles

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// ArchiveFile is one file the inventory's cni-plugins archive puts in
// plan.CNIBinDir (a regular file at the archive's top level), with its
// SHA-256: kprov reset removes a plugin only while it has that checksum.
type ArchiveFile struct {
	Name   string
	SHA256 string
}

// ResetInput is what kprov reset plans from besides the inventory and the facts.
type ResetInput struct {
	// Hosts are the hosts to reset (--host); empty resets every host.
	Hosts []string
	// CNIPlugins are the files of the inventory's cni-plugins archive, read
	// on the operator's machine; nil when the inventory has none.
	CNIPlugins []ArchiveFile
}

// MinEtcdMembersAfterReset is how many voting etcd members kprov reset
// --host must leave. With three or more the cluster still survives the loss
// of one member after the reset; with two it would lose its quorum to any
// one failure (twice as likely as with one member), and the 2 -> 1 step
// that usually follows is the one etcd's documentation calls unsafe
// (RELIABILITY 5). So one member of three is refused, one of four or five
// is a scale-in.
const MinEtcdMembersAfterReset = 3

// kubeadmStateFiles are the files whose presence means kubeadm has state
// on a host that kubeadm reset undoes.
var kubeadmStateFiles = []string{plan.KubeletConfPath, plan.BootstrapKubeletConfPath, plan.APIServerManifestPath, plan.KubeletConfigPath}

// resetExtraFiles are files kprov creates on a host while it works, beside
// the rendered files and the artifacts.
var resetExtraFiles = []string{plan.KubeadmLogPath, plan.KubeadmUnitPath, plan.EtcdRestoreSnapshotPath}

// resetUnits are the units kprov reset stops and disables, in this order:
// the kubelet before the runtime it uses, containerd last of the node's.
var resetUnits = []string{"kubelet.service", plan.APIProxyUnit, plan.PodRoutesUnit, plan.SwapOffUnit, plan.ContainerdUnit, plan.EtcdUnit}

// unitPaths are the unit files kprov renders, by unit.
var unitPaths = map[string]string{
	"kubelet.service": plan.KubeletUnitPath, plan.APIProxyUnit: plan.APIProxyUnitPath, plan.PodRoutesUnit: plan.PodRoutesUnitPath,
	plan.SwapOffUnit: plan.SwapOffUnitPath, plan.ContainerdUnit: plan.ContainerdUnitPath, plan.EtcdUnit: plan.EtcdUnitPath,
}

// ResetFiles lists, for every host, the paths whose checksums kprov
// reset's facts need beyond plan.Facts' usual ones (managed, the rendered
// files and artifacts): the files kprov creates while it works, kubeadm's
// state files, and on a Kubernetes node the plugins of the cni-plugins archive.
func ResetFiles(inv *inventory.Inventory, in ResetInput) map[string][]string {
	out := map[string][]string{}
	for _, h := range inv.Hosts {
		paths := slices.Clone(resetExtraFiles)
		if h.IsNode() {
			paths = append(paths, kubeadmStateFiles...)
			if _, ok := inv.Artifact(inventory.CNIPluginsArtifact); ok {
				for _, f := range in.CNIPlugins {
					paths = append(paths, plan.CNIBinDir+"/"+f.Name)
				}
			}
		}
		out[h.Name] = paths
	}
	return out
}

// ResetRefusal is a kprov reset --host that would cost the cluster its etcd
// quorum or its last master, or that kprov cannot do safely: what, why and
// what to do.
type ResetRefusal struct {
	Hosts  []string
	Reason string
	Action string
}

func (e *ResetRefusal) Error() string {
	return fmt.Sprintf("kprov reset --host %s refused: %s; %s", strings.Join(e.Hosts, " --host "), e.Reason, e.Action)
}

// PlanReset plans kprov reset: hosts taken out of service and back to
// clean, removing only what kprov installed or created there. It is pure,
// like Plan.
//
// Without in.Hosts every reachable host is reset in one parallel stage (no
// quorum is kept: the whole cluster goes) and every unreachable one is named
// in the notes with what stays on it. With in.Hosts only those hosts go, as
// a scale-in: refused when it would leave the control plane without a master
// or etcd with fewer than MinEtcdMembersAfterReset voting members; nodes are
// drained through a master that stays; external etcd members are removed
// from the cluster by the etcd planner's own removal stages (every remaining
// member healthy, leadership moved away, member removed, only then stopped
// and wiped); then each host is reset, one at a time; then the Node objects
// are deleted.
func PlanReset(inv *inventory.Inventory, facts *plan.Facts, st *pki.State, opts PlanOptions, in ResetInput) (*plan.Plan, error) {
	if opts.Parallel < 1 {
		opts.Parallel = 1
	}
	for _, name := range in.Hosts {
		if inv.Host(name) == nil {
			return nil, fmt.Errorf("kprov reset --host %s: no host %q in inventory %s", name, name, inv.Path)
		}
	}
	p := &planner{inv: inv, facts: facts, st: st, opts: opts, etcdCache: map[string]File{}}
	p.initMaster = p.chooseInitMaster()
	final, err := Render(inv, st, Options{Templates: opts.Templates, InitMaster: p.initMaster, EtcdBootstrap: p.formed(), Facts: facts.Hosts})
	if err != nil {
		return nil, err
	}
	p.final = final
	r := &resetPlanner{planner: p, in: in}
	out := &plan.Plan{Cluster: inv.Cluster.Name, FactsDigest: facts.Digest()}
	if len(in.Hosts) == 0 {
		err = r.whole(out)
	} else {
		err = r.some(out)
	}
	if err != nil {
		return nil, err
	}
	out.Stages = slices.DeleteFunc(out.Stages, func(s plan.Stage) bool { return len(s.Steps) == 0 })
	out.Count()
	return out, nil
}

type resetPlanner struct {
	*planner
	in ResetInput
}

func (r *resetPlanner) reachable(name string) bool {
	hf := r.facts.Hosts[name]
	return hf != nil && hf.Reachable
}

// whole resets every reachable host in one stage.
func (r *resetPlanner) whole(out *plan.Plan) error {
	stage := plan.Stage{Kind: plan.StageReset, Title: "resetting every host of cluster " + r.inv.Cluster.Name + ": kubeadm state, units, etcd data and kprov's files",
		Parallel: r.opts.Parallel}
	for _, h := range r.inv.Hosts {
		if !r.reachable(h.Name) {
			out.Notes = append(out.Notes, r.skipped(h))
			continue
		}
		steps, notes := r.hostSteps(h, true, true)
		stage.Steps = append(stage.Steps, steps...)
		out.Notes = append(out.Notes, notes...)
	}
	out.Stages = append(out.Stages, stage)
	return nil
}

// skipped says what stays on an unreachable host.
func (r *resetPlanner) skipped(h *inventory.Host) string {
	why := "no facts"
	if hf := r.facts.Hosts[h.Name]; hf != nil && hf.Error != "" {
		why = hf.Error
	}
	var left []string
	if h.IsNode() {
		left = append(left, "kubeadm's state (kubelet.conf, /var/lib/kubelet), the kubelet, containerd and kprov's units, the imported images")
	}
	if r.externalMember(h.Name) {
		left = append(left, "etcd.service and the old cluster's etcd data in "+r.inv.Etcd.DataDir+" (wipe it before the host serves etcd again)")
	} else if h.Has(inventory.RoleMaster) && r.inv.Topology.EtcdMode == inventory.EtcdStacked {
		left = append(left, "its stacked etcd member's data in "+r.inv.Etcd.DataDir)
	}
	left = append(left, "kprov's files (/etc/kprov, /var/lib/kprov, the rendered configuration and certificates, the artifacts' binaries)")
	return fmt.Sprintf("%s is unreachable (%s) and is skipped: left on it are %s; run kprov reset again once it answers", h.Name, why, strings.Join(left, "; "))
}

func (r *resetPlanner) externalMember(name string) bool {
	return r.inv.Topology.EtcdMode == inventory.EtcdExternal && slices.Contains(r.inv.Topology.EtcdMembers, name)
}

// hostSteps takes one reachable host back to clean, in the order that lets
// each step still work: kubeadm reset while kubeadm and containerd are
// there, the imported images removed while containerd runs, the units
// stopped (the kubelet before its runtime), the etcd data wiped (etcd), then
// the files removed and systemd told. withEtcd is false for an external
// member whose removal stage has stopped and wiped it already; whole says
// every etcd member goes (kubeadm reset then leaves stacked etcd's member
// list alone: no quorum is kept and removing members one by one as the
// masters go would lose it midway).
func (r *resetPlanner) hostSteps(h *inventory.Host, withEtcd, whole bool) ([]plan.Step, []string) {
	hf := r.host(h.Name)
	var steps []plan.Step
	var notes []string
	add := func(s plan.Step) { s.Host = h.Name; steps = append(steps, s) }
	if h.IsNode() && hasKubeadmState(hf) {
		if _, ok := hf.Versions["kubeadm"]; ok {
			cmd := "kubeadm reset -f"
			reason := "undo kubeadm init or join: the kubelet stopped, its containers removed, /etc/kubernetes and /var/lib/kubelet emptied"
			if whole {
				cmd += " --skip-phases remove-etcd-member"
				reason += "; every etcd member goes, so no member is removed from a cluster that is going away"
			} else if h.Has(inventory.RoleMaster) && r.inv.Topology.EtcdMode == inventory.EtcdStacked {
				reason += "; its remove-etcd-member phase takes the master's stacked etcd member out of the cluster first"
			}
			add(plan.Step{Op: plan.OpKubeadmReset, Command: cmd, Reason: reason})
		} else {
			notes = append(notes, h.Name+": kubeadm's state is there but kubeadm is not: /etc/kubernetes and /var/lib/kubelet are left (install kubeadm and run kprov reset again, or run kubeadm reset -f there)")
		}
	}
	if imgs := r.importedImages(hf); len(imgs) > 0 {
		add(plan.Step{Op: plan.OpRemoveImages, Images: imgs,
			Reason: "the images kprov imported from the inventory's archives, while containerd runs; images kprov did not import stay"})
	}
	for _, unit := range resetUnits {
		if unit == plan.EtcdUnit && (!withEtcd || !r.externalMember(h.Name)) {
			continue
		}
		_, present := hf.Files[unitPaths[unit]]
		if serviceActive(hf, unit) || present {
			add(plan.Step{Op: plan.OpStopService, Service: unit, Reason: "stop and disable " + unit + " before its unit file goes"})
		}
	}
	stackedMaster := h.Has(inventory.RoleMaster) && r.inv.Topology.EtcdMode == inventory.EtcdStacked
	if withEtcd && (r.externalMember(h.Name) || stackedMaster) && r.facts.EtcdDataPresent[h.Name] {
		add(plan.Step{Op: plan.OpWipeDataDir, Path: r.inv.Etcd.DataDir, Reason: "the etcd member's data, so the host never rejoins with its old identity"})
	}
	unitRemoved := false
	for _, f := range r.removableFiles(h) {
		have, ok := hf.Files[f.path]
		if !ok || f.sha256 != "" && have != f.sha256 {
			continue
		}
		add(plan.Step{Op: plan.OpRemoveFile, Path: f.path, SHA256: f.sha256, Reason: f.reason})
		if strings.HasSuffix(f.path, ".service") {
			unitRemoved = true
		}
	}
	if unitRemoved {
		add(plan.Step{Op: plan.OpRunCommand, Command: "systemctl daemon-reload", Reason: "systemd forgets the removed units"})
	}
	// A binary that differs from the artifact is not kprov's to remove.
	for _, f := range r.removableFiles(h) {
		if have, ok := hf.Files[f.path]; ok && f.sha256 != "" && have != f.sha256 && strings.HasPrefix(f.path, plan.BinDir+"/") {
			notes = append(notes, fmt.Sprintf("%s: %s differs from the inventory's artifact and is left", h.Name, f.path))
		}
	}
	return steps, notes
}

func hasKubeadmState(hf *plan.HostFacts) bool {
	if hf.Joined || hf.ControlPlane || serviceActive(hf, "kubelet.service") {
		return true
	}
	for _, f := range kubeadmStateFiles {
		if _, ok := hf.Files[f]; ok {
			return true
		}
	}
	return false
}

// importedImages are the archives' images the host lists with their digests.
func (r *resetPlanner) importedImages(hf *plan.HostFacts) []plan.ImageRef {
	var out []plan.ImageRef
	for _, a := range r.facts.ImageArchives {
		for _, img := range a.Images {
			if d, ok := hf.Images[img.Ref]; ok && d == img.Digest && !slices.ContainsFunc(out, func(o plan.ImageRef) bool { return o.Ref == img.Ref }) {
				out = append(out, img)
			}
		}
	}
	return out
}

type removable struct {
	path, sha256, reason string
}

// removableFiles are the files kprov puts on h, in path order: every
// rendered file, every artifact (a binary only with the artifact's
// checksum), the cni-plugins archive's plugins (each only with its
// checksum) and marker, and the files kprov creates while it works.
func (r *resetPlanner) removableFiles(h *inventory.Host) []removable {
	var out []removable
	for _, f := range r.final.Host(h.Name).Files {
		out = append(out, removable{path: f.Path, reason: "rendered by kprov"})
	}
	for _, a := range ArtifactsFor(r.inv, h) {
		if a.Name == inventory.CNIPluginsArtifact {
			out = append(out, removable{path: plan.CNIPluginsMarkerPath, reason: "kprov's record of the unpacked cni-plugins archive"})
			for _, f := range r.in.CNIPlugins {
				out = append(out, removable{path: plan.CNIBinDir + "/" + f.Name, sha256: f.SHA256, reason: "from the inventory's cni-plugins archive (same checksum)"})
			}
			continue
		}
		out = append(out, removable{path: InstalledPath(a.Name), sha256: a.SHA256, reason: "the inventory's " + a.Name + " artifact (same checksum)"})
	}
	if r.externalMember(h.Name) {
		out = append(out, removable{path: plan.EtcdRestoreMarkerPath, reason: "kprov restore's marker"})
	}
	for _, f := range resetExtraFiles {
		out = append(out, removable{path: f, reason: "left by an earlier kprov run"})
	}
	slices.SortFunc(out, func(a, b removable) int { return strings.Compare(a.path, b.path) })
	return slices.CompactFunc(out, func(a, b removable) bool { return a.path == b.path })
}

// some resets the named hosts as a scale-in.
func (r *resetPlanner) some(out *plan.Plan) error {
	targets := r.in.Hosts
	refuse := func(reason, action string) error {
		return &ResetRefusal{Hosts: targets, Reason: reason, Action: action}
	}
	var staying []string
	for _, m := range r.inv.Topology.Masters {
		if !slices.Contains(targets, m) {
			staying = append(staying, m)
		}
	}
	for _, t := range targets {
		if r.inv.Host(t).Has(inventory.RoleMaster) && len(staying) == 0 {
			return refuse("it would take the control plane's last master", "keep a master (add one to the inventory and run kprov apply first), or reset the whole cluster with kprov reset")
		}
	}
	if r.inv.Topology.EtcdMode == inventory.EtcdStacked {
		var leaving []string
		running := 0
		for _, m := range r.inv.Topology.Masters {
			if !r.host(m).ControlPlane {
				continue
			}
			running++
			if slices.Contains(targets, m) {
				leaving = append(leaving, m)
			}
		}
		if len(leaving) > 0 && running-len(leaving) < MinEtcdMembersAfterReset {
			return refuse(fmt.Sprintf("the masters' stacked etcd has %d members and would keep %d, fewer than %d: one more failure would cost it its quorum", running, running-len(leaving), MinEtcdMembersAfterReset),
				"add masters first (kprov apply), so that at least three stay, or reset the whole cluster with kprov reset")
		}
	}
	var etcdTargets []string
	for _, t := range targets {
		if r.externalMember(t) {
			etcdTargets = append(etcdTargets, t)
		}
	}
	var etcdStages []plan.Stage
	var removed []string // external members the etcd stages remove, stop and wipe
	if len(etcdTargets) > 0 {
		var err error
		if etcdStages, removed, err = r.etcdRemoval(etcdTargets, refuse); err != nil {
			return err
		}
	}

	// kubectl runs on a master that stays and runs a control plane.
	via := ""
	for _, m := range staying {
		if r.reachable(m) && r.host(m).ControlPlane {
			via = m
			break
		}
	}
	// The masters whose stacked etcd members are in the cluster, as each
	// reset leaves it.
	var stacked []string
	if r.inv.Topology.EtcdMode == inventory.EtcdStacked {
		for _, m := range r.inv.Topology.Masters {
			if r.host(m).ControlPlane {
				stacked = append(stacked, m)
			}
		}
	}
	drain := plan.Stage{Kind: plan.StageResetDrain, Title: "draining the nodes to reset", Parallel: 1}
	del := plan.Stage{Kind: plan.StageResetDeleteNodes, Title: "deleting the reset nodes' Node objects", Parallel: 1}
	for _, t := range targets {
		if _, registered := r.facts.Nodes[t]; !registered || !r.inv.Host(t).IsNode() {
			continue
		}
		if via == "" {
			return refuse(fmt.Sprintf("node %s is registered, and no master that stays runs a reachable control plane to drain and delete it through", t),
				"bring a master back (kprov status shows which), then run kprov reset again")
		}
		if r.reachable(t) {
			drain.Steps = append(drain.Steps, plan.Step{Op: plan.OpDrainNode, Host: via, Node: t,
				Reason: "its pods move to other nodes before its kubelet stops"})
		}
		del.Steps = append(del.Steps, plan.Step{Op: plan.OpDeleteNode, Host: via, Node: t,
			Reason: "the reset node's kubelet is gone; its Node object would stay NotReady forever"})
	}
	out.Stages = append(out.Stages, drain)
	out.Stages = append(out.Stages, etcdStages...)
	for _, t := range targets {
		h := r.inv.Host(t)
		if !r.reachable(t) {
			out.Notes = append(out.Notes, r.skipped(h))
			continue
		}
		steps, notes := r.hostSteps(h, !slices.Contains(removed, t), false)
		if slices.Contains(stacked, t) && len(steps) > 0 && steps[0].Op == plan.OpKubeadmReset {
			steps = r.stackedRemoval(t, stacked, steps)
			stacked = slices.DeleteFunc(stacked, func(m string) bool { return m == t })
		}
		out.Notes = append(out.Notes, notes...)
		out.Stages = append(out.Stages, plan.Stage{Kind: plan.StageReset, Target: t, Title: "resetting " + t + ": kubeadm state, units and kprov's files",
			Parallel: 1, Steps: steps})
	}
	out.Stages = append(out.Stages, del)
	out.Notes = append(out.Notes, fmt.Sprintf("the inventory still lists %s: the next kprov apply adds it back unless it is removed from the inventory", strings.Join(targets, ", ")))
	return nil
}

// stackedRemoval wraps a stacked master's kubeadm reset, whose
// remove-etcd-member phase takes its etcd member out of the cluster, in the
// etcd planner's rules for a removal: every member healthy first,
// leadership moved away if the member leads, and every member that stays
// healthy afterwards, before anything else goes.
func (r *resetPlanner) stackedRemoval(host string, members []string, steps []plan.Step) []plan.Step {
	stay := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == host })
	peer := plan.EtcdPeerURL(r.inv.Host(host).Address)
	out := []plan.Step{
		{Op: plan.OpWaitEtcdHealthy, Host: host, Voters: slices.Clone(members), Reason: "every stacked etcd member must be healthy before this master's member leaves"},
		{Op: plan.OpEtcdMoveLeader, Host: host, Member: host, PeerURL: peer,
			Reason: "if this master's member leads, leadership moves to a member that stays before kubeadm removes it"},
		steps[0],
		{Op: plan.OpWaitEtcdHealthy, Host: host, Voters: stay, Reason: "the members that stay must be healthy before anything else changes"},
	}
	return append(out, steps[1:]...)
}

// etcdRemoval plans the external etcd members' removal with the etcd
// planner's own removal stages, asking it for the inventory's members minus
// the targets. Anything else the etcd planner would do (add a member, roll
// a configuration, start a stopped member) is apply's work: reset refuses
// rather than do it on the side.
//
// It returns the stages and the targets they remove. A target that is no
// member any more (an earlier reset removed it) is only cleaned; one whose
// data or running etcd cannot be told apart from a live member tied to no
// inventory host is refused, since wiping it could wipe a voting member.
func (r *resetPlanner) etcdRemoval(targets []string, refuse func(reason, action string) error) ([]plan.Stage, []string, error) {
	var leaving, voters int
	var gone []string
	for _, m := range r.facts.Etcd {
		if m.Learner {
			continue
		}
		voters++
		if slices.Contains(targets, m.Host) {
			leaving++
		}
	}
	if r.facts.EtcdSource == plan.EtcdSourceConfig {
		return nil, nil, refuse("no etcd member answered, so no member can be removed from the cluster",
			"bring etcd back (kprov status, journalctl -u etcd on the members), or reset the whole cluster with kprov reset")
	}
	for _, m := range r.facts.Etcd {
		if !slices.Contains(targets, m.Host) {
			continue
		}
		gone = append(gone, m.Host)
		if !r.reachable(m.Host) {
			return nil, nil, refuse(fmt.Sprintf("etcd member %s's host is unreachable, and kprov removes a member only through its own host so far", m.Host),
				"bring the host back and run kprov reset again, or replace the member with kprov apply (the host swapped for another in the inventory)")
		}
	}
	if leaving > 0 && voters-leaving < MinEtcdMembersAfterReset {
		return nil, nil, refuse(fmt.Sprintf("the etcd cluster has %d voting members and would keep %d, fewer than %d: one more failure would then cost it its quorum", voters, voters-leaving, MinEtcdMembersAfterReset),
			fmt.Sprintf("grow the cluster first (add etcd hosts to the inventory and run kprov apply) so that at least %d stay, or reset the whole cluster with kprov reset", MinEtcdMembersAfterReset))
	}
	for _, t := range targets {
		hf := r.host(t)
		if slices.Contains(gone, t) || !(r.facts.EtcdDataPresent[t] || serviceActive(hf, plan.EtcdUnit)) {
			continue
		}
		for _, m := range r.facts.Etcd {
			if m.Host == "" {
				return nil, nil, refuse(fmt.Sprintf("%s holds etcd data or runs etcd but is no member's host, while member %s (peer URL %s) is tied to no inventory host: it may be the one on %s", t, m.Name, m.PeerURL, t),
					"check with `etcdctl member list -w table` and /etc/etcd/etcd.yaml on the host; remove a stale member with `etcdctl member remove`, then run kprov reset again")
			}
		}
	}
	if len(gone) == 0 {
		return nil, nil, nil // not a member (any more): the host is only cleaned
	}
	var want []EtcdTarget
	var hosts []string
	for _, name := range r.inv.Topology.EtcdMembers {
		if slices.Contains(targets, name) {
			continue
		}
		m := r.final.Host(name).Etcd
		want = append(want, EtcdTarget{Name: m.Name, PeerURL: m.PeerURL})
	}
	for _, h := range r.inv.Hosts {
		hosts = append(hosts, h.Name)
	}
	stages, _, err := PlanEtcd(EtcdInput{
		Live: r.facts.Etcd, Want: want, Hosts: hosts, DataDir: r.inv.Etcd.DataDir, Service: plan.EtcdUnit,
		Config: r.etcdConfig, Normalize: plan.NormalizeEtcdConfig,
	})
	if err == nil && r.renderErr != nil {
		err = r.renderErr
	}
	if err != nil {
		return nil, nil, err
	}
	var other []string
	for _, st := range stages {
		switch {
		case st.Kind == plan.StageEtcdFinalize:
		case st.Kind == plan.StageEtcdRemove && slices.ContainsFunc(st.Steps, func(s plan.Step) bool {
			return s.Op == plan.OpEtcdRemove && slices.ContainsFunc(r.facts.Etcd, func(m plan.EtcdMember) bool { return m.PeerURL == s.PeerURL && slices.Contains(targets, m.Host) })
		}):
		default:
			other = append(other, st.Title)
		}
	}
	if len(other) > 0 {
		return nil, nil, refuse("the etcd cluster does not match the inventory yet (its removal would also mean: "+strings.Join(other, "; ")+")",
			"run kprov apply first, then kprov reset --host again")
	}
	return stages, gone, nil
}
