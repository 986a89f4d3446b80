package roles

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// RestoreInput is what kprov restore plans from besides the inventory and
// the facts: the backup's snapshot, extracted and checked on the operator's
// machine.
type RestoreInput struct {
	// SnapshotPath is the snapshot on the operator's machine, with etcd's
	// SHA-256 trailer (etcdutl snapshot restore checks it).
	SnapshotPath string
	// SnapshotSHA256 is the whole file's SHA-256, as the backup's manifest
	// lists it: the upload is checked against it, and it seeds the token.
	SnapshotSHA256 string
	// Revision is the snapshot's revision, for the plan's notes.
	Revision int64
}

// RestoreInitialCluster is etcdutl's --initial-cluster for the new
// members: name=peerURL, in inventory order.
func RestoreInitialCluster(members []EtcdTarget) string {
	parts := make([]string, len(members))
	for i, m := range members {
		parts[i] = m.Name + "=" + m.PeerURL
	}
	return strings.Join(parts, ",")
}

// RestoreToken is the new cluster's initial-cluster-token. It must differ
// from the old cluster's (etcd derives member and cluster IDs from it and
// the peer URLs, and a member of the old cluster still running somewhere
// must never be taken for one of the new), and it must be the same on
// every run of one restore, so a run after an interruption recognises the
// members an earlier run restored (plan.EtcdRestoreMarkerPath). So it is
// derived from the snapshot and the new member list, never drawn at random.
func RestoreToken(cluster, snapshotSHA256 string, members []EtcdTarget) string {
	sum := sha256.Sum256([]byte(snapshotSHA256 + "\n" + RestoreInitialCluster(members)))
	return "kprov-" + cluster + "-restore-" + hex.EncodeToString(sum[:4])
}

// RestoreMarker is the content of plan.EtcdRestoreMarkerPath that a
// restore with this token writes; its SHA-256 is what the facts hold.
func RestoreMarker(token string) File {
	return File{Path: plan.EtcdRestoreMarkerPath, Mode: 0o644, Content: []byte(token + "\n")}
}

// RestoredMember reports whether an etcd host's data directory was filled
// by the restore with this token: it holds a member's data and the marker
// holds the token. That is the rule by which a second run never restores a
// member twice.
func RestoredMember(facts *plan.Facts, host, token string) bool {
	hf := facts.Hosts[host]
	if hf == nil || !facts.EtcdDataPresent[host] {
		return false
	}
	return hf.Files[plan.EtcdRestoreMarkerPath] == RestoreMarker(token).SHA256()
}

// LiveHost is a host kprov restore refuses, with what it found there.
type LiveHost struct {
	Host  string
	Found []string
}

// LiveClusterError refuses a restore onto hosts that hold a live cluster.
// It lists every such host, so one run tells the operator all of them.
type LiveClusterError struct {
	Hosts []LiveHost
}

func (e *LiveClusterError) Error() string {
	var b strings.Builder
	b.WriteString("kprov restore rebuilds a cluster only on hosts that hold none, and these do:")
	for _, h := range e.Hosts {
		fmt.Fprintf(&b, "\n  %s: %s", h.Host, strings.Join(h.Found, "; "))
	}
	b.WriteString("\nkprov restore wipes nothing: wipe these hosts (stop etcd and the kubelet, `kubeadm reset`, empty the etcd data directory) or use fresh hosts, then run kprov restore again")
	return b.String()
}

// CheckRestoreHosts refuses a restore while any host holds a live cluster:
// an etcd host whose data directory holds a member's data, or that runs
// etcd, unless this restore filled it (RestoredMember); and, until every
// member the restore fills (restored: every external member, or the first
// master with stacked etcd) is restored, a Kubernetes host whose kubelet
// runs or has joined a cluster, or that runs a control plane. Once they
// are all restored, the other hosts are this restore's own work in
// progress (the apply that follows the etcd restore was interrupted, a
// stacked master joined with its member) and are left to that apply, which
// converges from wherever it stopped.
func CheckRestoreHosts(inv *inventory.Inventory, facts *plan.Facts, token string, restored []string) error {
	members := inv.Topology.EtcdMembers
	allRestored := len(restored) > 0
	for _, m := range restored {
		if !RestoredMember(facts, m, token) {
			allRestored = false
		}
	}
	e := &LiveClusterError{}
	for _, h := range inv.Hosts {
		hf := facts.Hosts[h.Name]
		if hf == nil {
			continue // unreachable hosts are refused by the planner, with their errors
		}
		var found []string
		if slices.Contains(members, h.Name) && !allRestored && !RestoredMember(facts, h.Name, token) {
			if facts.EtcdDataPresent[h.Name] {
				found = append(found, fmt.Sprintf("etcd data directory %s holds a member's data (not from this restore)", inv.Etcd.DataDir))
			}
			if hf.Services["etcd"] == "active" {
				found = append(found, "etcd is running")
			}
		}
		if h.IsNode() && !allRestored {
			if hf.Services["kubelet"] == "active" {
				found = append(found, "the kubelet is running")
			}
			if hf.ControlPlane {
				found = append(found, "it runs a control plane (/etc/kubernetes/manifests/kube-apiserver.yaml)")
			} else if hf.Joined {
				found = append(found, "its kubelet has joined a cluster (/etc/kubernetes/kubelet.conf)")
			}
		}
		if len(found) > 0 {
			e.Hosts = append(e.Hosts, LiveHost{Host: h.Name, Found: found})
		}
	}
	if len(e.Hosts) > 0 {
		return e
	}
	return nil
}

// PlanRestore plans the etcd half of kprov restore (RELIABILITY 22).
//
// External etcd: the hosts prepared as apply prepares them (binaries,
// certificates, units; etcd not started), then on every member not
// restored yet the snapshot restored with etcdutl as a member of the new
// cluster and its configuration written as a formed cluster's
// (initial-cluster-state existing, the full member list), then every member
// started together (a restored member alone cannot elect a leader) and a
// wait for one leader with every member healthy.
//
// Stacked etcd: the hosts prepared the same way, then the snapshot restored
// into the first master's data directory as a cluster of that one member
// (kubeadm's way: `kubeadm init` on the first master finds the data
// directory filled and its etcd starts from it; the other masters join it
// one at a time as in any apply, each adding its member). Nothing is
// started here: kubeadm runs etcd.
//
// It is pure, like Plan; the Kubernetes half is apply's ordinary plan, made
// after this one ran. The returned token is the new cluster's
// initial-cluster-token (RestoreToken).
func PlanRestore(inv *inventory.Inventory, facts *plan.Facts, st *pki.State, opts PlanOptions, in RestoreInput) (*plan.Plan, string, error) {
	if len(inv.Topology.EtcdMembers) == 0 {
		return nil, "", fmt.Errorf("inventory %s has no etcd members to restore the snapshot onto", inv.Path)
	}
	stacked := inv.Topology.EtcdMode == inventory.EtcdStacked
	if opts.Parallel < 1 {
		opts.Parallel = 1
	}
	p := &planner{inv: inv, facts: facts, st: st, opts: opts, etcdCache: map[string]File{}}
	if err := p.checkReachable(); err != nil {
		return nil, "", err
	}
	p.initMaster = p.chooseInitMaster()
	final, err := Render(inv, st, Options{Templates: opts.Templates, InitMaster: p.initMaster, EtcdBootstrap: p.formed(), Facts: facts.Hosts})
	if err != nil {
		return nil, "", err
	}
	p.final = final

	members := RestoreMembers(inv, final, p.initMaster)
	var names []string
	for _, m := range members {
		names = append(names, m.Name)
	}
	token := RestoreToken(inv.Cluster.Name, in.SnapshotSHA256, members)
	if err := CheckRestoreHosts(inv, facts, token, names); err != nil {
		return nil, token, err
	}
	initial := RestoreInitialCluster(members)

	out := &plan.Plan{Cluster: inv.Cluster.Name, FactsDigest: facts.Digest()}
	out.Stages = append(out.Stages, p.prepare())
	title := fmt.Sprintf("restoring the snapshot (revision %d) on every etcd member as a new cluster", in.Revision)
	reason := "etcdutl snapshot restore with the new member list and a new cluster token, the revision bumped and the old ones marked compacted so no watcher sees time run backwards"
	if stacked {
		title = fmt.Sprintf("restoring the snapshot (revision %d) into %s's etcd data directory as a new one-member cluster", in.Revision, p.initMaster)
		reason = "etcdutl's snapshot restore (run on this machine: kubeadm's etcd has no etcdutl on the host) with this one member and a new cluster token, the revision bumped and the old ones marked compacted; kubeadm init starts etcd from it, and the other masters join it"
	}
	restore := plan.Stage{Kind: plan.StageEtcdRestore, Parallel: len(members), Quorum: quorumNote(len(members)), Title: title}
	start := plan.Stage{Kind: plan.StageEtcdStartRestore, Parallel: len(members), Quorum: quorumNote(len(members)),
		Title: "starting the restored etcd members together"}
	var restored []string
	running := 0
	for _, m := range members {
		hf := p.host(m.Name)
		if RestoredMember(facts, m.Name, token) {
			restored = append(restored, m.Name)
		} else {
			restore.Steps = append(restore.Steps, plan.Step{Op: plan.OpEtcdRestore, Host: m.Name, Path: inv.Etcd.DataDir,
				Source: in.SnapshotPath, SHA256: in.SnapshotSHA256, Member: m.Name, PeerURL: m.PeerURL,
				InitialCluster: initial, ClusterToken: token, Reason: reason})
		}
		if stacked {
			continue // kubeadm writes the member's manifest and starts it
		}
		var cfg File
		for _, f := range final.Host(m.Name).Files {
			if f.Path == plan.EtcdConfigPath {
				cfg = f
			}
		}
		if hf.Files[cfg.Path] != cfg.SHA256() {
			restore.Steps = append(restore.Steps, uploadStep(m.Name, cfg,
				"initial-cluster-state existing with the full member list, as for any formed cluster: the restored data directory is the member's identity"))
		}
		if hf.Services["etcd"] == "active" {
			running++
			continue
		}
		start.Steps = append(start.Steps, plan.Step{Op: plan.OpStartService, Host: m.Name, Service: plan.EtcdUnit,
			Reason: "restored members start together: none can elect a leader alone"})
	}
	if !stacked && running < len(members) {
		start.Steps = append(start.Steps, plan.Step{Op: plan.OpWaitEtcdHealthy, Host: members[0].Name, Voters: inv.Topology.EtcdMembers,
			Reason: "one leader and every restored member healthy before Kubernetes is brought back on them"})
	}
	out.Stages = append(out.Stages, restore, start)
	out.Stages = slices.DeleteFunc(out.Stages, func(s plan.Stage) bool { return len(s.Steps) == 0 })
	if len(restored) > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("already restored by an earlier run of this restore (data directory and %s with token %s), not restored again: %s",
			plan.EtcdRestoreMarkerPath, token, strings.Join(restored, ", ")))
	}
	if stacked && len(inv.Topology.Masters) > 1 {
		out.Notes = append(out.Notes, fmt.Sprintf("stacked etcd: only %s is restored; the other masters join it with empty data directories, one at a time, each adding its member",
			p.initMaster))
	}
	out.Count()
	return out, token, nil
}

// RestoreMembers are the members kprov restore fills from the snapshot, in
// order: every external member with the name and peer URL it is rendered
// with; with stacked etcd only the first master (initMaster), named after
// its node and with the peer URL kubeadm gives its member
// (https://ADDRESS:2380), so the member kubeadm's etcd manifest describes
// is the one the data directory holds.
func RestoreMembers(inv *inventory.Inventory, final *Rendering, initMaster string) []EtcdTarget {
	if inv.Topology.EtcdMode == inventory.EtcdStacked {
		h := inv.Host(initMaster)
		if h == nil {
			return nil
		}
		return []EtcdTarget{{Name: h.Name, PeerURL: plan.EtcdPeerURL(h.Address)}}
	}
	var members []EtcdTarget
	for _, name := range inv.Topology.EtcdMembers {
		m := final.Host(name).Etcd
		members = append(members, EtcdTarget{Name: m.Name, PeerURL: m.PeerURL})
	}
	return members
}

// KubeadmRestoredEtcdPreflight is the one preflight error kubeadm init must
// be told to ignore on a stacked first master whose data directory kprov
// restore filled: kubeadm's DirAvailable check of the etcd data directory
// (named after the path, "/" replaced by "-"). Every other check still runs.
func KubeadmRestoredEtcdPreflight(dataDir string) string {
	return "--ignore-preflight-errors=DirAvailable-" + strings.ReplaceAll(dataDir, "/", "-")
}
