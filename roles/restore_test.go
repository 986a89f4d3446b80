package roles

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

const restoreSnapshotSHA = "5f1c0a7e5f1c0a7e5f1c0a7e5f1c0a7e5f1c0a7e5f1c0a7e5f1c0a7e5f1c0a7e"

func restoreInput() RestoreInput {
	return RestoreInput{SnapshotPath: "/tmp/backup/snapshot.db", SnapshotSHA256: restoreSnapshotSHA, Revision: 1637}
}

// stepsOf lists a stage's steps as "op host" lines.
func stepsOf(st plan.Stage) []string {
	var out []string
	for _, s := range st.Steps {
		out = append(out, string(s.Op)+" "+s.Host)
	}
	return out
}

// TestPlanRestoreFresh plans a restore onto fresh hosts: the hosts
// prepared, every member restored with the same new member list and token
// and its formed configuration, all started together, one wait for all.
func TestPlanRestoreFresh(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	st := newState(t, inv)
	facts := plan.FreshFacts(hostNames(inv))
	pl, token, err := PlanRestore(inv, facts, st, PlanOptions{Parallel: 10}, restoreInput())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, "kprov-"+inv.Cluster.Name+"-restore-") {
		t.Errorf("token %q", token)
	}
	if normal, _ := Render(inv, st, Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers)}); normal.EtcdInitialClusterToken == token {
		t.Errorf("the restore token is the old cluster's (%s): a new cluster needs a new token", token)
	}
	var kinds []plan.StageKind
	for _, s := range pl.Stages {
		kinds = append(kinds, s.Kind)
	}
	want := []plan.StageKind{plan.StagePrepare, plan.StageEtcdRestore, plan.StageEtcdStartRestore}
	if strings.Join(stageKinds(kinds), " ") != strings.Join(stageKinds(want), " ") {
		t.Fatalf("stages %v, want %v", kinds, want)
	}
	for _, s := range pl.Stages[0].Steps {
		if s.Path == plan.EtcdConfigPath || (s.Op == plan.OpStartService && s.Service == plan.EtcdUnit) {
			t.Errorf("prepare must not write etcd.yaml or start etcd before the restore: %v", s)
		}
	}
	restored := map[string]plan.Step{}
	configs := map[string]string{}
	for _, s := range pl.Stages[1].Steps {
		switch s.Op {
		case plan.OpEtcdRestore:
			restored[s.Host] = s
		case plan.OpUploadFile:
			configs[s.Host] = string(s.Content)
		default:
			t.Errorf("unexpected step in the restore stage: %v", s)
		}
	}
	initial := ""
	for _, m := range inv.Topology.EtcdMembers {
		s, ok := restored[m]
		if !ok {
			t.Errorf("member %s not restored", m)
			continue
		}
		if s.ClusterToken != token || s.SHA256 != restoreSnapshotSHA || s.Source != "/tmp/backup/snapshot.db" || s.Path != inv.Etcd.DataDir || s.Member != m {
			t.Errorf("restore step for %s: %+v", m, s)
		}
		if initial == "" {
			initial = s.InitialCluster
		} else if s.InitialCluster != initial {
			t.Errorf("members restored with different member lists: %q and %q", initial, s.InitialCluster)
		}
		if !strings.Contains(configs[m], "initial-cluster-state: existing") && !strings.Contains(configs[m], `initial-cluster-state: "existing"`) {
			t.Errorf("%s's etcd.yaml is not a formed cluster's:\n%s", m, configs[m])
		}
	}
	if n := strings.Count(initial, "=https://"); n != len(inv.Topology.EtcdMembers) {
		t.Errorf("initial cluster %q lists %d members, want %d", initial, n, len(inv.Topology.EtcdMembers))
	}
	if got := stepsOf(pl.Stages[2]); len(got) != len(inv.Topology.EtcdMembers)+1 || !strings.HasPrefix(got[len(got)-1], string(plan.OpWaitEtcdHealthy)) {
		t.Errorf("start stage %v: want every member started, then one wait", got)
	}
	if pl.Stages[2].Parallel != len(inv.Topology.EtcdMembers) {
		t.Errorf("start stage runs %d at once, want all %d together", pl.Stages[2].Parallel, len(inv.Topology.EtcdMembers))
	}
}

// freshRestore is the ha-external example on fresh hosts with the token
// its restore gets.
func freshRestore(t *testing.T) (*inventory.Inventory, *pki.State, *plan.Facts, string) {
	t.Helper()
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	st := newState(t, inv)
	facts := plan.FreshFacts(hostNames(inv))
	_, token, err := PlanRestore(inv, facts, st, PlanOptions{}, restoreInput())
	if err != nil {
		t.Fatal(err)
	}
	return inv, st, facts, token
}

func stageKinds(k []plan.StageKind) []string {
	out := make([]string, len(k))
	for i, x := range k {
		out[i] = string(x)
	}
	return out
}

// TestPlanRestoreResumes: a member an earlier run of the same restore filled
// (data present, marker with this token) is not restored again; the others
// are. Once all are restored and running, nothing is left to do for etcd.
func TestPlanRestoreResumes(t *testing.T) {
	inv, st, facts, token := freshRestore(t)
	first := inv.Topology.EtcdMembers[0]
	facts.EtcdDataPresent = map[string]bool{first: true}
	facts.Hosts[first].Files = map[string]string{plan.EtcdRestoreMarkerPath: RestoreMarker(token).SHA256()}
	pl, token2, err := PlanRestore(inv, facts, st, PlanOptions{}, restoreInput())
	if err != nil {
		t.Fatal(err)
	}
	if token2 != token {
		t.Fatalf("the token changed between runs of one restore: %s, %s", token, token2)
	}
	for _, stg := range pl.Stages {
		for _, s := range stg.Steps {
			if s.Op == plan.OpEtcdRestore && s.Host == first {
				t.Errorf("%s restored twice", first)
			}
		}
	}
	if len(pl.Notes) == 0 || !strings.Contains(pl.Notes[0], first) {
		t.Errorf("notes %q should name %s as restored already", pl.Notes, first)
	}

	// Every member restored and running, with its configuration: nothing.
	for _, m := range inv.Topology.EtcdMembers {
		facts.EtcdDataPresent[m] = true
		hf := facts.Hosts[m]
		hf.Files = map[string]string{plan.EtcdRestoreMarkerPath: RestoreMarker(token).SHA256()}
		hf.Services = map[string]string{"etcd": "active"}
	}
	final, err := Render(inv, st, Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers), Facts: facts.Hosts})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range final.Hosts {
		if facts.Hosts[h.Name].Files == nil {
			facts.Hosts[h.Name].Files = map[string]string{}
		}
		for _, f := range h.Files {
			facts.Hosts[h.Name].Files[f.Path] = f.SHA256()
		}
	}
	pl, _, err = PlanRestore(inv, facts, st, PlanOptions{}, restoreInput())
	if err != nil {
		t.Fatal(err)
	}
	for _, stg := range pl.Stages {
		if stg.Kind == plan.StageEtcdRestore || stg.Kind == plan.StageEtcdStartRestore {
			t.Errorf("a restored, running cluster planned %s: %v", stg.Kind, stepsOf(stg))
		}
	}
}

// TestPlanRestoreRefusesLiveHosts: every host holding a live cluster is
// named, with what was found, and the refusal says nothing is wiped.
// Another restore's marker does not count as this one's.
func TestPlanRestoreRefusesLiveHosts(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	st := newState(t, inv)
	facts := plan.FreshFacts(hostNames(inv))
	e1, e2 := inv.Topology.EtcdMembers[0], inv.Topology.EtcdMembers[1]
	m1 := inv.Topology.Masters[0]
	facts.EtcdDataPresent = map[string]bool{e1: true}
	facts.Hosts[e1].Files = map[string]string{plan.EtcdRestoreMarkerPath: RestoreMarker("kprov-lab-restore-00000000").SHA256()}
	facts.Hosts[e2].Services = map[string]string{"etcd": "active"}
	facts.Hosts[m1].Services = map[string]string{"kubelet": "active"}
	facts.Hosts[m1].ControlPlane = true
	_, _, err := PlanRestore(inv, facts, st, PlanOptions{}, restoreInput())
	var live *LiveClusterError
	if !errors.As(err, &live) {
		t.Fatalf("err = %v, want a LiveClusterError", err)
	}
	var hosts []string
	for _, h := range live.Hosts {
		hosts = append(hosts, h.Host)
	}
	if strings.Join(hosts, " ") != strings.Join([]string{m1, e1, e2}, " ") && strings.Join(hosts, " ") != strings.Join([]string{e1, e2, m1}, " ") {
		t.Errorf("refused hosts %v, want %s, %s and %s", hosts, m1, e1, e2)
	}
	msg := err.Error()
	for _, want := range []string{e1 + ": etcd data directory " + inv.Etcd.DataDir, e2 + ": etcd is running", m1 + ": the kubelet is running; it runs a control plane", "wipes nothing", "fresh hosts"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal lacks %q:\n%s", want, msg)
		}
	}
}

// TestPlanRestoreKubernetesHostsOnceEtcdIsRestored: once every member is
// restored by this restore, a master with a control plane is the restore's
// own work in progress, not a live cluster.
func TestPlanRestoreKubernetesHostsOnceEtcdIsRestored(t *testing.T) {
	inv, st, facts, token := freshRestore(t)
	facts.EtcdDataPresent = map[string]bool{}
	for _, m := range inv.Topology.EtcdMembers {
		facts.EtcdDataPresent[m] = true
		facts.Hosts[m].Files = map[string]string{plan.EtcdRestoreMarkerPath: RestoreMarker(token).SHA256()}
	}
	m1 := inv.Topology.Masters[0]
	facts.Hosts[m1].ControlPlane, facts.Hosts[m1].Joined = true, true
	if _, _, err := PlanRestore(inv, facts, st, PlanOptions{}, restoreInput()); err != nil {
		t.Fatalf("a master set up by this restore's apply was refused: %v", err)
	}
	// With one member not restored, the same master is a live cluster.
	facts.EtcdDataPresent[inv.Topology.EtcdMembers[2]] = false
	if _, _, err := PlanRestore(inv, facts, st, PlanOptions{}, restoreInput()); err == nil || !strings.Contains(err.Error(), m1) {
		t.Fatalf("err = %v, want %s refused", err, m1)
	}
}

// TestPlanRestoreStacked plans a stacked restore onto fresh hosts: the
// hosts prepared, then only the first master's data directory restored as
// a one-member cluster named after its node with kubeadm's peer URL, and
// nothing started (kubeadm init starts etcd). The apply that follows runs
// kubeadm init over that data directory, told to skip only kubeadm's check
// that wants it empty; the other masters join as in any apply.
func TestPlanRestoreStacked(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-stacked.kprov.hcl"))
	st := newState(t, inv)
	facts := plan.FreshFacts(hostNames(inv))
	pl, token, err := PlanRestore(inv, facts, st, PlanOptions{Parallel: 10}, restoreInput())
	if err != nil {
		t.Fatal(err)
	}
	var kinds []plan.StageKind
	for _, s := range pl.Stages {
		kinds = append(kinds, s.Kind)
	}
	if strings.Join(stageKinds(kinds), " ") != strings.Join(stageKinds([]plan.StageKind{plan.StagePrepare, plan.StageEtcdRestore}), " ") {
		t.Fatalf("stages %v, want prepare and restore only (kubeadm starts etcd)", kinds)
	}
	m1 := inv.Topology.Masters[0]
	if got := stepsOf(pl.Stages[1]); strings.Join(got, ",") != "etcd-restore "+m1 {
		t.Fatalf("restore stage %v, want only %s restored", got, m1)
	}
	s := pl.Stages[1].Steps[0]
	peer := "https://" + inv.Host(m1).Address + ":2380"
	if s.Member != m1 || s.PeerURL != peer || s.InitialCluster != m1+"="+peer || s.ClusterToken != token || s.Path != inv.Etcd.DataDir || s.SHA256 != restoreSnapshotSHA {
		t.Errorf("restore step %+v, want member %s at %s alone", s, m1, peer)
	}
	if len(pl.Notes) == 0 || !strings.Contains(strings.Join(pl.Notes, "\n"), "join it with empty data directories") {
		t.Errorf("notes %q should say the other masters join", pl.Notes)
	}

	// Plain apply on fresh hosts: kubeadm init with every preflight check.
	normal, err := Plan(inv, facts, st, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := initCommand(t, normal); strings.Contains(got, "ignore-preflight") {
		t.Errorf("kubeadm init on fresh hosts ignores preflight errors: %s", got)
	}
	// The apply after the restore filled the data directory: only the
	// data directory's emptiness check is skipped.
	facts.EtcdDataPresent = map[string]bool{m1: true}
	facts.Hosts[m1].Files = map[string]string{plan.EtcdRestoreMarkerPath: RestoreMarker(token).SHA256()}
	after, err := Plan(inv, facts, st, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := initCommand(t, after), "kubeadm init --config "+plan.KubeadmInitPath+" --upload-certs --ignore-preflight-errors=DirAvailable--var-lib-etcd"; got != want {
		t.Errorf("kubeadm init after the restore:\n got %s\nwant %s", got, want)
	}
	// Data without a restore marker is not kprov's to init over.
	facts.Hosts[m1].Files = nil
	if got := initCommand(t, mustPlan(t, inv, facts, st)); strings.Contains(got, "ignore-preflight") {
		t.Errorf("kubeadm init over data kprov restore did not write: %s", got)
	}
}

// TestPlanRestoreStackedResumes: the first master restored by this restore
// is not restored again; once it is, masters that joined (etcd data, a
// running kubelet, a control plane) are the restore's own apply at work,
// not a live cluster. Before it is, they are refused.
func TestPlanRestoreStackedResumes(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-stacked.kprov.hcl"))
	st := newState(t, inv)
	facts := plan.FreshFacts(hostNames(inv))
	_, token, err := PlanRestore(inv, facts, st, PlanOptions{}, restoreInput())
	if err != nil {
		t.Fatal(err)
	}
	m1, m2 := inv.Topology.Masters[0], inv.Topology.Masters[1]
	facts.EtcdDataPresent = map[string]bool{m1: true, m2: true}
	facts.Hosts[m1].Files = map[string]string{plan.EtcdRestoreMarkerPath: RestoreMarker(token).SHA256()}
	for _, m := range []string{m1, m2} {
		facts.Hosts[m].ControlPlane, facts.Hosts[m].Joined = true, true
		facts.Hosts[m].Services = map[string]string{"kubelet": "active"}
	}
	pl, token2, err := PlanRestore(inv, facts, st, PlanOptions{}, restoreInput())
	if err != nil {
		t.Fatalf("a run after the first master's restore refused its own work: %v", err)
	}
	if token2 != token {
		t.Fatalf("token changed between runs: %s, %s", token, token2)
	}
	for _, stg := range pl.Stages {
		if stg.Kind == plan.StageEtcdRestore {
			t.Errorf("restored again: %v", stepsOf(stg))
		}
	}
	// The first master's data is not this restore's: every host is live.
	facts.Hosts[m1].Files = map[string]string{plan.EtcdRestoreMarkerPath: RestoreMarker("kprov-example-restore-00000000").SHA256()}
	_, _, err = PlanRestore(inv, facts, st, PlanOptions{}, restoreInput())
	var live *LiveClusterError
	if !errors.As(err, &live) || len(live.Hosts) != 2 || !strings.Contains(err.Error(), m1+": etcd data directory") || !strings.Contains(err.Error(), m2+": etcd data directory") {
		t.Fatalf("err = %v, want %s and %s refused", err, m1, m2)
	}
}

func initCommand(t *testing.T, pl *plan.Plan) string {
	t.Helper()
	for _, stg := range pl.Stages {
		for _, s := range stg.Steps {
			if s.Op == plan.OpKubeadmInit {
				return s.Command
			}
		}
	}
	t.Fatal("no kubeadm init in the plan")
	return ""
}

func mustPlan(t *testing.T, inv *inventory.Inventory, facts *plan.Facts, st *pki.State) *plan.Plan {
	t.Helper()
	pl, err := Plan(inv, facts, st, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pl
}
