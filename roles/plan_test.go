package roles

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

func hostNames(inv *inventory.Inventory) []string {
	var out []string
	for _, h := range inv.Hosts {
		out = append(out, h.Name)
	}
	return out
}

var shaRE = regexp.MustCompile(`"(sha256|facts_digest)": "[^"]*"`)

// TestPlanGolden plans every starter topology against fresh hosts; the text
// and the JSON plans are golden files a reviewer can read.
// The airgap inventory adds an artifacts block: binaries are uploaded on the
// hosts whose roles run them, except where the host already has the same
// file (etcd on etcd-1 here).
func TestPlanGolden(t *testing.T) {
	inventories := map[string]string{"airgap": filepath.Join("testdata", "inventories", "airgap.kprov.hcl"),
		"images":           filepath.Join("testdata", "inventories", "images.kprov.hcl"),
		"pod-network-none": filepath.Join("testdata", "inventories", "pod-network-none.kprov.hcl")}
	for _, topo := range inventory.StarterTopologies {
		inventories[topo] = filepath.Join("..", "examples", topo+".kprov.hcl")
	}
	for topo, path := range inventories {
		t.Run(topo, func(t *testing.T) {
			inv := loadInventory(t, path)
			st := newState(t, inv)
			facts := plan.FreshFacts(hostNames(inv))
			facts.ImageArchives = testArchives(inv)
			if a, ok := inv.Artifact("etcd"); ok {
				facts.Hosts["etcd-1"].Files = map[string]string{plan.BinDir + "/etcd": a.SHA256}
			}
			pl, err := Plan(inv, facts, st, PlanOptions{Parallel: 10})
			if err != nil {
				t.Fatal(err)
			}
			var text, detail bytes.Buffer
			if err := pl.WriteText(&text, pl.HostChanges(inv, facts), plan.TextOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := pl.WriteText(&detail, pl.HostChanges(inv, facts), plan.TextOptions{Detail: true}); err != nil {
				t.Fatal(err)
			}
			js, err := json.MarshalIndent(pl, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			// Checksums follow the freshly generated keys; the golden file
			// keeps their place, not their value.
			js = shaRE.ReplaceAll(js, []byte(`"$1": "<sha256>"`))
			// Artifact paths are absolute on the operator's machine.
			js = bytes.ReplaceAll(js, []byte(inv.Dir+"/"), []byte("INVENTORY_DIR/"))
			for name, got := range map[string][]byte{topo + ".plan.txt": text.Bytes(), topo + ".plan-detail.txt": detail.Bytes(), topo + ".plan.json": append(js, '\n')} {
				golden := filepath.Join("testdata", "plan", name)
				if *update {
					os.MkdirAll(filepath.Dir(golden), 0o755)
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (go test ./roles -update writes it)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs (go test ./roles -update rewrites it):\n%s", golden, lineDiff(string(want), string(got)))
				}
			}
			if bytes.Contains(js, []byte("BEGIN")) || bytes.Contains(detail.Bytes(), []byte("BEGIN")) {
				t.Error("a private key or certificate body reached the printed plan")
			}
			if tok := st.Secrets.BootstrapToken.Reveal(); bytes.Contains(js, []byte(tok)) || bytes.Contains(detail.Bytes(), []byte(tok)) {
				t.Error("the bootstrap token reached the printed plan")
			}
		})
	}
}

// convergedFacts are the facts of hosts on which the plan has fully run.
func convergedFacts(t *testing.T, inv *inventory.Inventory, _ *plan.Plan, final *Rendering) *plan.Facts {
	t.Helper()
	f := &plan.Facts{Hosts: map[string]*plan.HostFacts{}, Nodes: map[string]*plan.NodeFacts{}, KubeconfigFetched: true}
	for _, h := range final.Hosts {
		hf := &plan.HostFacts{Reachable: true, Files: map[string]string{}, Services: map[string]string{}}
		for _, file := range h.Files {
			hf.Files[file.Path] = file.SHA256()
		}
		for _, u := range h.Units {
			hf.Services[u] = "active"
		}
		if h.Node != nil {
			hf.Joined = true
			hf.ControlPlane = h.Node.Kubeadm != KubeadmJoin
			var taints []string
			for _, tt := range h.Node.Taints {
				taints = append(taints, tt.String())
			}
			f.Nodes[h.Name] = &plan.NodeFacts{Labels: h.Node.Labels, Taints: taints, Ready: true}
		}
		if h.Etcd != nil {
			var cfg []byte
			for _, file := range h.Files {
				if file.Path == plan.EtcdConfigPath {
					cfg = file.Content
				}
			}
			f.Etcd = append(f.Etcd, plan.EtcdMember{ID: uint64(len(f.Etcd) + 1), Name: h.Name, PeerURL: h.Etcd.PeerURL, Host: h.Name,
				Healthy: true, Running: true, HostReachable: true, Leader: len(f.Etcd) == 0,
				ConfigSHA256: sha(cfg), ConfigCoreSHA256: sha(plan.NormalizeEtcdConfig(cfg))})
		}
		f.Hosts[h.Name] = hf
	}
	return f
}

func TestPlanConvergedIsEmpty(t *testing.T) {
	for _, topo := range inventory.StarterTopologies {
		inv := loadInventory(t, filepath.Join("..", "examples", topo+".kprov.hcl"))
		st := newState(t, inv)
		final, err := Render(inv, st, Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers)})
		if err != nil {
			t.Fatal(err)
		}
		if inv.Topology.EtcdMode != inventory.EtcdExternal {
			final, _ = Render(inv, st, Options{})
		}
		facts := convergedFacts(t, inv, nil, final)
		pl, err := Plan(inv, facts, st, PlanOptions{Parallel: 10})
		if err != nil {
			t.Fatal(err)
		}
		if !pl.Empty() {
			t.Errorf("%s: a converged cluster plans changes: %v", topo, pl.Stages)
		}
		var text bytes.Buffer
		pl.WriteText(&text, pl.HostChanges(inv, facts), plan.TextOptions{})
		if !strings.Contains(text.String(), "No changes.") {
			t.Errorf("%s: converged plan text: %s", topo, text.String())
		}
	}
}

// TestPlanWaitsForNotReadyNodes: a converged cluster with one node not
// Ready plans one wait for that node alone, in the last stage.
func TestPlanWaitsForNotReadyNodes(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "openshift.kprov.hcl"))
	st := newState(t, inv)
	final, err := Render(inv, st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	facts := convergedFacts(t, inv, nil, final)
	facts.Nodes["infra-2"].Ready = false
	pl, err := Plan(inv, facts, st, PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Stages) != 1 || pl.Stages[0].Kind != plan.StageNodesReady {
		t.Fatalf("want only the nodes/ready stage, got %v", pl.Stages)
	}
	if steps := pl.Stages[0].Steps; len(steps) != 1 || steps[0].Op != plan.OpWaitNodeReady || steps[0].Host != "infra-2" {
		t.Fatalf("want one wait-node-ready on infra-2, got %v", steps)
	}
	delete(facts.Nodes, "compute-1") // not registered at all
	pl, err = Plan(inv, facts, st, PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, s := range pl.Stages[len(pl.Stages)-1].Steps {
		hosts = append(hosts, s.Host)
	}
	if !slices.Contains(hosts, "compute-1") || !slices.Contains(hosts, "infra-2") {
		t.Errorf("want waits on infra-2 and compute-1, got %v", hosts)
	}
}

func TestPlanOrderingRules(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	st := newState(t, inv)
	pl, err := Plan(inv, plan.FreshFacts(hostNames(inv)), st, PlanOptions{Parallel: 7})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, s := range pl.Stages {
		order = append(order, s.Name())
		serial := s.Kind == plan.StageEtcdAdd || s.Kind == plan.StageEtcdBootstrap || s.Kind == plan.StageControlPlaneInit || s.Kind == plan.StageControlPlaneJoin || s.Kind == plan.StageKubeconfig
		if serial && s.Parallel != 1 {
			t.Errorf("%s must be serial, has parallel %d", s.Name(), s.Parallel)
		}
		if (s.Kind == plan.StagePrepare || s.Kind == plan.StageNodesJoin) && s.Parallel != 7 {
			t.Errorf("%s should use the --parallel bound, has %d", s.Name(), s.Parallel)
		}
	}
	want := []string{"prepare", "etcd/bootstrap/etcd-1", "etcd/add/etcd-2", "etcd/add/etcd-3", "etcd/finalize-config",
		"control-plane/init/master-1", "control-plane/join/master-2", "control-plane/join/master-3", "control-plane/kubeconfig", "nodes/join", "nodes/labels", "nodes/ready"}
	if !slices.Equal(order, want) {
		t.Fatalf("stage order\n got %v\nwant %v", order, want)
	}
	if got := pl.Summary.String(); got != "Plan: 8 hosts to prepare, 3 etcd members to add, 2 masters to join, 2 nodes to join, 0 etcd restarts, 0 to remove" {
		t.Errorf("summary %q", got)
	}
}

func TestPlanRefusesUnreachableHost(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-stacked.kprov.hcl"))
	st := newState(t, inv)
	facts := plan.FreshFacts(hostNames(inv))
	facts.Offline = false
	facts.Hosts["compute-2"] = &plan.HostFacts{Reachable: false, Error: "dial tcp 192.0.2.102:22: i/o timeout"}
	_, err := Plan(inv, facts, st, PlanOptions{Parallel: 4})
	if err == nil || !strings.Contains(err.Error(), "compute-2: dial tcp 192.0.2.102:22: i/o timeout") {
		t.Fatalf("want an error naming the unreachable host and why, got %v", err)
	}
}

// The planner renders an etcd member's configuration from the masters and
// etcd hosts alone; it must be byte-identical to rendering every host.
func TestEtcdConfigFromSubsetMatchesFullRender(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	st := newState(t, inv)
	p := &planner{inv: inv, st: st, etcdCache: map[string]File{}, initMaster: "master-1"}
	full, err := Render(inv, st, Options{InitMaster: "master-1", EtcdBootstrap: p.formed()})
	if err != nil {
		t.Fatal(err)
	}
	p.final = full
	initial := []EtcdTarget{{Name: "etcd-1", PeerURL: "https://192.0.2.21:2380"}, {Name: "etcd-2", PeerURL: "https://192.0.2.22:2380"}}
	got := p.etcdConfig(initial[1], initial, StateExisting)
	boot := p.formed()
	boot["etcd-2"] = EtcdBootstrap{State: StateExisting, Cluster: []string{"etcd-1", "etcd-2"}}
	want, err := Render(inv, st, Options{InitMaster: "master-1", EtcdBootstrap: boot})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range want.Host("etcd-2").Files {
		if f.Path == plan.EtcdConfigPath && !bytes.Equal(f.Content, got.Content) {
			t.Fatalf("subset render differs:\n%s\nwant\n%s", got.Content, f.Content)
		}
	}
	if !bytes.Contains(got.Content, []byte(`initial-cluster-state: "existing"`)) || bytes.Contains(got.Content, []byte("192.0.2.23")) {
		t.Fatalf("etcd-2 joining after etcd-1 must name only those two, state existing:\n%s", got.Content)
	}
}

// TestPlanEtcdTuningChangeRolls: changing the etcd block's tuning on a
// converged external etcd cluster plans nothing but one restart stage per
// member, one member at a time, the leader last, each uploading the new
// configuration between a health wait and the restart and ending with the
// catch-up and health waits.
func TestPlanEtcdTuningChangeRolls(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	st := newState(t, inv)
	final, err := Render(inv, st, Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers)})
	if err != nil {
		t.Fatal(err)
	}
	facts := convergedFacts(t, inv, nil, final)
	leader := facts.Etcd[0].Name
	inv.Etcd.HeartbeatInterval = 200 * time.Millisecond
	inv.Etcd.ElectionTimeout = 2 * time.Second
	pl, err := Plan(inv, facts, st, PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range pl.Stages {
		if s.Kind != plan.StageEtcdRestart || s.Parallel != 1 {
			t.Fatalf("a tuning change planned stage %s (%s, parallel %d): want only rolling restarts", s.Name(), s.Kind, s.Parallel)
		}
		var ops []string
		for _, step := range s.Steps {
			ops = append(ops, string(step.Op))
			if step.Op == plan.OpUploadFile && !bytes.Contains(step.Content, []byte("heartbeat-interval: 200\nelection-timeout: 2000\n")) {
				t.Errorf("%s uploads a configuration without the new tuning:\n%s", s.Target, step.Content)
			}
		}
		want := []string{string(plan.OpWaitEtcdHealthy), string(plan.OpEtcdMoveLeader), string(plan.OpUploadFile), string(plan.OpRestartService), string(plan.OpWaitCaughtUp), string(plan.OpWaitEtcdHealthy)}
		if !slices.Equal(ops, want) {
			t.Errorf("%s: steps %v, want %v", s.Target, ops, want)
		}
		got = append(got, s.Target)
	}
	if len(got) != len(inv.Topology.EtcdMembers) || got[len(got)-1] != leader {
		t.Errorf("restarted %v: want every member of %v once, the leader %s last", got, inv.Topology.EtcdMembers, leader)
	}
}

// TestPlanRemovesStaleNodes: after every wanted node is Ready, each node the
// cluster lists and the inventory does not is removed in its own stage,
// one at a time, through kubectl on the first master: a Ready one drained,
// then deleted; one that is not Ready only deleted; a master's Node left
// alone with a note. The notes say what stays on the machines.
func TestPlanRemovesStaleNodes(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	st := newState(t, inv)
	final, err := Render(inv, st, Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers)})
	if err != nil {
		t.Fatal(err)
	}
	facts := convergedFacts(t, inv, nil, final)
	facts.Nodes["old-worker"] = &plan.NodeFacts{Ready: true, Labels: map[string]string{}}
	facts.Nodes["dead-worker"] = &plan.NodeFacts{Ready: false, Labels: map[string]string{}}
	facts.Nodes["old-master"] = &plan.NodeFacts{Ready: true, Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}}
	pl, err := Plan(inv, facts, st, PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range pl.Stages {
		if s.Parallel != 1 || s.Kind != plan.StageNodesRemove {
			t.Errorf("stage %s (parallel %d): want only one-at-a-time node removals", s.Name(), s.Parallel)
		}
		var steps []string
		for _, step := range s.Steps {
			if step.Host != inv.Topology.Masters[0] {
				t.Errorf("%s: %s addressed to %s, want the first master %s", s.Name(), step.Op, step.Host, inv.Topology.Masters[0])
			}
			steps = append(steps, string(step.Op)+" "+step.Node)
		}
		got = append(got, s.Name()+": "+strings.Join(steps, ", "))
	}
	want := []string{"nodes/remove/dead-worker: delete-node dead-worker", "nodes/remove/old-worker: drain-node old-worker, delete-node old-worker"}
	if !slices.Equal(got, want) {
		t.Errorf("stages:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	notes := strings.Join(pl.Notes, "\n")
	for _, w := range []string{"node old-master is a master the inventory no longer lists: kprov removes masters with stacked etcd only so far",
		"node old-worker is no longer in the inventory: it is drained and its Node deleted", "kprov reset --host dead-worker"} {
		if !strings.Contains(notes, w) {
			t.Errorf("notes lack %q:\n%s", w, notes)
		}
	}
}

// stackedFacts are converged facts of the ha-stacked example with its
// masters' stacked members, plus a master the inventory no longer lists
// (old-master at 10.0.0.99, its Node Ready and its member healthy as given).
func stackedFacts(t *testing.T, inv *inventory.Inventory, final *Rendering, oldHealthy bool) *plan.Facts {
	t.Helper()
	facts := convergedFacts(t, inv, nil, final)
	for i, m := range inv.Topology.Masters {
		facts.Etcd = append(facts.Etcd, plan.EtcdMember{ID: uint64(i + 1), Name: m, PeerURL: plan.EtcdPeerURL(inv.Host(m).Address), Host: m,
			Healthy: true, Running: true, HostReachable: true, Leader: i == 0})
	}
	facts.Etcd = append(facts.Etcd, plan.EtcdMember{ID: 99, Name: "old-master", PeerURL: plan.EtcdPeerURL("10.0.0.99"), Healthy: oldHealthy, Running: oldHealthy})
	facts.Nodes["old-master"] = &plan.NodeFacts{Ready: oldHealthy, Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}}
	facts.EtcdSource = plan.EtcdSourceLive
	return facts
}

// A master taken out of the inventory with stacked etcd: drained, its
// member removed through the first master (every staying member healthy
// before and after, leadership moved first), then its Node deleted; after
// every other stage when it is alive, before every control-plane stage
// when it is dead (its member unhealthy, its Node not Ready), and not at
// all while a staying member is unhealthy.
func TestPlanRemovesStackedMaster(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-stacked.kprov.hcl"))
	st := newState(t, inv)
	final, err := Render(inv, st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	via := inv.Topology.Masters[0]
	masters := strings.Join(inv.Topology.Masters, ",")
	stages := func(pl *plan.Plan) []string {
		var out []string
		for _, s := range pl.Stages {
			var steps []string
			for _, step := range s.Steps {
				x := string(step.Op)
				if step.Node != "" {
					x += " " + step.Node
				}
				if step.PeerURL != "" {
					x += fmt.Sprintf(" %x %s", step.MemberID, step.PeerURL)
				}
				if len(step.Voters) > 0 {
					x += " " + strings.Join(step.Voters, ",")
				}
				if step.Host != via {
					x += " on " + step.Host
				}
				steps = append(steps, x)
			}
			out = append(out, s.Name()+" "+s.Title+": "+strings.Join(steps, "; "))
		}
		return out
	}
	peer := plan.EtcdPeerURL("10.0.0.99")

	alive, err := Plan(inv, stackedFacts(t, inv, final, true), st, PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"nodes/remove/old-master removing master old-master and its etcd member: drain-node old-master; wait-etcd-healthy " + masters +
		"; etcd-move-leader 0 " + peer + "; etcd-remove 63 " + peer + "; wait-etcd-healthy " + masters + "; delete-node old-master"}
	if got := stages(alive); !slices.Equal(got, want) {
		t.Errorf("alive old master:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	dead, err := Plan(inv, stackedFacts(t, inv, final, false), st, PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"nodes/remove/old-master removing master old-master and its etcd member: wait-etcd-healthy " + masters +
		"; etcd-remove 63 " + peer + "; wait-etcd-healthy " + masters + "; delete-node old-master"}
	if got := stages(dead); !slices.Equal(got, want) {
		t.Errorf("dead old master:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The dead one goes before a new master joins: master-3 fresh.
	facts := stackedFacts(t, inv, final, false)
	newest := inv.Topology.Masters[len(inv.Topology.Masters)-1]
	facts.Hosts[newest] = &plan.HostFacts{Reachable: true, Runtime: facts.Hosts[newest].Runtime}
	delete(facts.Nodes, newest)
	facts.Etcd = slices.DeleteFunc(facts.Etcd, func(m plan.EtcdMember) bool { return m.Host == newest })
	joining, err := Plan(inv, facts, st, PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	removal, join := -1, -1
	for i, s := range joining.Stages {
		switch {
		case s.Kind == plan.StageNodesRemove:
			removal = i
			for _, step := range s.Steps {
				if step.Op == plan.OpWaitEtcdHealthy && slices.Contains(step.Voters, newest) {
					t.Errorf("the removal before %s joins waits for %s to be healthy: %v", newest, newest, step.Voters)
				}
			}
		case s.Target == newest && join < 0 && slices.ContainsFunc(s.Steps, func(x plan.Step) bool { return x.Op == plan.OpKubeadmJoin }):
			join = i
		}
	}
	if removal < 0 || join < 0 || removal > join {
		t.Errorf("want the dead master's removal (stage %d) before %s joins (stage %d):\n%s", removal, newest, join, strings.Join(stages(joining), "\n"))
	}

	// A staying member unhealthy: no removal, a note saying why.
	facts = stackedFacts(t, inv, final, true)
	facts.Etcd[1].Healthy = false
	held, err := Plan(inv, facts, st, PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range held.Stages {
		if s.Kind == plan.StageNodesRemove {
			t.Errorf("a removal planned while %s's member is unhealthy: %s", facts.Etcd[1].Host, s.Name())
		}
	}
	if notes := strings.Join(held.Notes, "\n"); !strings.Contains(notes, "its etcd member is not removed while the member on "+facts.Etcd[1].Host+" is not healthy") {
		t.Errorf("notes do not say why old-master stays:\n%s", notes)
	}
}
