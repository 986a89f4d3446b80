package roles

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// withEtcdMembers is examples/ha-external.kprov.hcl with n etcd members,
// written to a temporary directory.
func withEtcdMembers(t *testing.T, n int) *inventory.Inventory {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	old := "for_each = range(1, 3 + 1)\n  labels   = [format(\"etcd-%d\", host.value)]"
	if !strings.Contains(text, old) {
		t.Fatalf("the example's etcd block changed: want %q in it", old)
	}
	text = strings.Replace(text, old, strings.Replace(old, "3 + 1", fmt.Sprintf("%d + 1", n), 1), 1)
	path := filepath.Join(t.TempDir(), "cluster.kprov.hcl")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	inv := loadInventory(t, path)
	if len(inv.Topology.EtcdMembers) != n {
		t.Fatalf("%d etcd members, want %d", len(inv.Topology.EtcdMembers), n)
	}
	return inv
}

// appliedFacts are the facts of a cluster kprov applied: every rendered
// file and unit in place, kubeadm on every node, etcd data on every member.
func appliedFacts(t *testing.T, inv *inventory.Inventory, st *pki.State) *plan.Facts {
	t.Helper()
	final, err := Render(inv, st, Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers)})
	if err != nil {
		t.Fatal(err)
	}
	f := convergedFacts(t, inv, nil, final)
	f.EtcdSource = plan.EtcdSourceLive
	f.EtcdDataPresent = map[string]bool{}
	for _, h := range inv.Hosts {
		if h.IsNode() {
			f.Hosts[h.Name].Versions = map[string]string{"kubeadm": inv.Cluster.KubernetesVersion}
		}
		if inv.Topology.EtcdMode == inventory.EtcdExternal && h.Has(inventory.RoleEtcd) {
			f.EtcdDataPresent[h.Name] = true
		}
	}
	return f
}

// opsOn lists the ops of a stage's steps on host, in order.
func opsOn(st plan.Stage, host string) []string {
	var out []string
	for _, s := range st.Steps {
		if s.Host == host {
			out = append(out, string(s.Op))
		}
	}
	return out
}

// TestPlanResetEtcdQuorum: reset --host of external etcd members is refused
// when fewer than three voting members would stay (one of three, three of
// five), and otherwise is the etcd planner's scale-in: the remaining
// members waited for, leadership moved, the member removed, and only then
// stopped and wiped, before the host is cleaned. After it ran, planning
// again finds nothing to do.
func TestPlanResetEtcdQuorum(t *testing.T) {
	for _, tc := range []struct {
		members int
		reset   []string
		refused string
	}{
		{members: 3, reset: []string{"etcd-1"}, refused: "has 3 voting members and would keep 2, fewer than 3"},
		{members: 5, reset: []string{"etcd-1", "etcd-2", "etcd-3"}, refused: "has 5 voting members and would keep 2, fewer than 3"},
		{members: 5, reset: []string{"etcd-1"}},
		{members: 5, reset: []string{"etcd-2", "etcd-5"}},
	} {
		t.Run(strings.Join(tc.reset, ",")+" of "+strings.Repeat("I", tc.members), func(t *testing.T) {
			inv := withEtcdMembers(t, tc.members)
			st := newState(t, inv)
			facts := appliedFacts(t, inv, st)
			pl, err := PlanReset(inv, facts, st, PlanOptions{Parallel: 10}, ResetInput{Hosts: tc.reset})
			if tc.refused != "" {
				var refusal *ResetRefusal
				if !errors.As(err, &refusal) || !strings.Contains(err.Error(), tc.refused) || !strings.Contains(err.Error(), "add etcd hosts to the inventory and run kprov apply") {
					t.Fatalf("err = %v, want a refusal saying %q and what to do (plan %v)", err, tc.refused, pl)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, h := range tc.reset {
				want = append(want, "etcd/remove/"+h)
			}
			want = append(want, "etcd/finalize-config")
			for _, h := range tc.reset {
				want = append(want, "reset/"+h)
			}
			if got := stageNames(pl.Stages); !slices.Equal(got, want) {
				t.Fatalf("stages %v, want %v", got, want)
			}
			var stay []string
			for _, m := range inv.Topology.EtcdMembers {
				if !slices.Contains(tc.reset, m) {
					stay = append(stay, m)
				}
			}
			for i, h := range tc.reset {
				rm := pl.Stages[i]
				// The etcd steps go through a member that stays; only the
				// stop and the wipe run on the departing host.
				var all []string
				for _, s := range rm.Steps {
					all = append(all, string(s.Op))
					onHost := s.Op == plan.OpStopService || s.Op == plan.OpWipeDataDir
					if onHost != (s.Host == h) || !onHost && !slices.Contains(stay, s.Host) {
						t.Errorf("%s: %s addressed to %s", h, s.Op, s.Host)
					}
				}
				if got := strings.Join(all, " "); got != "wait-etcd-healthy etcd-move-leader etcd-remove stop-service wipe-data-dir" {
					t.Errorf("%s: removal steps %s", h, got)
				}
				if w := rm.Steps[0]; !slices.Equal(w.Voters, stay) && i == len(tc.reset)-1 {
					t.Errorf("%s: the last removal waits for %v, want the members that stay %v", h, w.Voters, stay)
				}
				cleanup := pl.Stages[len(tc.reset)+1+i]
				for _, s := range cleanup.Steps {
					if s.Host != h || s.Op == plan.OpWipeDataDir || s.Op == plan.OpEtcdRemove || s.Op == plan.OpKubeadmReset {
						t.Errorf("reset/%s has %s on %s", h, s, s.Host)
					}
				}
				ops := opsOn(cleanup, h)
				if len(ops) == 0 || ops[len(ops)-1] != string(plan.OpRunCommand) || !slices.Contains(ops, string(plan.OpRemoveFile)) {
					t.Errorf("reset/%s: %v, want its files removed and systemd reloaded", h, ops)
				}
			}
			for _, s := range pl.Stages[len(tc.reset)].Steps {
				if s.Op != plan.OpUploadFile || s.Path != plan.EtcdConfigPath || !slices.Contains(stay, s.Host) {
					t.Errorf("finalize: %s on %s, want only the staying members' etcd.yaml", s, s.Host)
				}
				for _, gone := range tc.reset {
					if strings.Contains(string(s.Content), gone+"=") {
						t.Errorf("finalize: %s's configuration still lists %s", s.Host, gone)
					}
				}
			}
			if !strings.Contains(strings.Join(pl.Notes, "\n"), "the next kprov apply adds it back") {
				t.Errorf("notes %q do not say the next apply adds the hosts back", pl.Notes)
			}

			// What the plan leaves: the members gone, their hosts clean,
			// the others' configurations rewritten.
			after := afterReset(facts, pl, tc.reset)
			again, err := PlanReset(inv, after, st, PlanOptions{Parallel: 10}, ResetInput{Hosts: tc.reset})
			if err != nil {
				t.Fatal(err)
			}
			if !again.Empty() {
				t.Errorf("a second reset plans %v", stageNames(again.Stages))
			}
		})
	}
}

// afterReset is facts as a reset plan leaves them: the reset hosts' etcd
// members gone, every file it removed absent, every unit it stopped
// inactive, every data directory it wiped empty, the finalize uploads in
// place.
func afterReset(before *plan.Facts, pl *plan.Plan, reset []string) *plan.Facts {
	f := *before
	f.Hosts = map[string]*plan.HostFacts{}
	for name, hf := range before.Hosts {
		c := *hf
		c.Files = map[string]string{}
		for k, v := range hf.Files {
			c.Files[k] = v
		}
		c.Services = map[string]string{}
		for k, v := range hf.Services {
			c.Services[k] = v
		}
		f.Hosts[name] = &c
	}
	f.EtcdDataPresent = map[string]bool{}
	for k, v := range before.EtcdDataPresent {
		f.EtcdDataPresent[k] = v
	}
	f.Etcd = nil
	for _, m := range before.Etcd {
		if !slices.Contains(reset, m.Host) {
			f.Etcd = append(f.Etcd, m)
		}
	}
	for _, st := range pl.Stages {
		for _, s := range st.Steps {
			hf := f.Hosts[s.Host]
			switch s.Op {
			case plan.OpRemoveFile:
				delete(hf.Files, s.Path)
			case plan.OpStopService:
				delete(hf.Services, s.Service)
				delete(hf.Services, strings.TrimSuffix(s.Service, ".service"))
			case plan.OpWipeDataDir:
				f.EtcdDataPresent[s.Host] = false
			case plan.OpKubeadmReset:
				hf.Joined, hf.ControlPlane = false, false
			case plan.OpRemoveImages:
				hf.Images = nil
			case plan.OpDeleteNode:
				delete(f.Nodes, s.Node)
			case plan.OpUploadFile:
				hf.Files[s.Path] = s.SHA256
				for i := range f.Etcd {
					if f.Etcd[i].Host == s.Host && s.Path == plan.EtcdConfigPath {
						f.Etcd[i].ConfigSHA256 = s.SHA256
						f.Etcd[i].ConfigCoreSHA256 = sha(plan.NormalizeEtcdConfig(s.Content))
					}
				}
			}
		}
	}
	return &f
}

// TestPlanResetMasters: the last master is never reset, and stacked etcd's
// masters follow etcd's rule (one of three refused); a master of an
// external-etcd cluster with others left is drained through one that
// stays, reset (kubeadm reset removing no etcd member), and its Node deleted.
func TestPlanResetMasters(t *testing.T) {
	single := loadInventory(t, filepath.Join("..", "examples", "single.kprov.hcl"))
	stacked := loadInventory(t, filepath.Join("..", "examples", "ha-stacked.kprov.hcl"))
	external := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	for _, tc := range []struct {
		inv     *inventory.Inventory
		reset   []string
		refused string
	}{
		{inv: single, reset: []string{single.Topology.Masters[0]}, refused: "the control plane's last master"},
		{inv: external, reset: external.Topology.Masters, refused: "the control plane's last master"},
		{inv: stacked, reset: []string{"master-2"}, refused: "stacked etcd has 3 members and would keep 2, fewer than 3"},
	} {
		st := newState(t, tc.inv)
		_, err := PlanReset(tc.inv, appliedFacts(t, tc.inv, st), st, PlanOptions{Parallel: 10}, ResetInput{Hosts: tc.reset})
		var refusal *ResetRefusal
		if !errors.As(err, &refusal) || !strings.Contains(err.Error(), tc.refused) {
			t.Errorf("%s: reset %v: err = %v, want a refusal: %s", tc.inv.Cluster.Name, tc.reset, err, tc.refused)
		}
	}

	// One master of five with stacked etcd: a scale-in, its member removed
	// by kubeadm reset between the etcd planner's waits, leadership moved
	// away first.
	five := withMasters(t, 5)
	st5 := newState(t, five)
	pl5, err := PlanReset(five, appliedFacts(t, five, st5), st5, PlanOptions{Parallel: 10}, ResetInput{Hosts: []string{"master-1"}})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, s := range pl5.Stages[1].Steps[:5] {
		steps = append(steps, string(s.Op)+" "+strings.Join(s.Voters, ","))
	}
	if want := []string{"wait-etcd-healthy master-1,master-2,master-3,master-4,master-5", "etcd-move-leader ", "kubeadm-reset ",
		"wait-etcd-healthy master-2,master-3,master-4,master-5", "remove-images "}; !slices.Equal(steps[:4], want[:4]) || pl5.Stages[1].Steps[2].Command != "kubeadm reset -f" {
		t.Errorf("stacked master's reset starts %q, want %q with kubeadm reset -f", steps, want[:4])
	}

	st := newState(t, external)
	facts := appliedFacts(t, external, st)
	pl, err := PlanReset(external, facts, st, PlanOptions{Parallel: 10}, ResetInput{Hosts: []string{"master-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := stageNames(pl.Stages), []string{"reset/drain", "reset/master-1", "reset/delete-nodes"}; !slices.Equal(got, want) {
		t.Fatalf("stages %v, want %v", got, want)
	}
	drain, del := pl.Stages[0].Steps, pl.Stages[2].Steps
	if len(drain) != 1 || drain[0].Op != plan.OpDrainNode || drain[0].Node != "master-1" || drain[0].Host != "master-2" {
		t.Errorf("drain %v, want master-1 drained through master-2", drain)
	}
	if len(del) != 1 || del[0].Op != plan.OpDeleteNode || del[0].Node != "master-1" || del[0].Host != "master-2" {
		t.Errorf("delete %v, want master-1's Node deleted through master-2", del)
	}
	reset := pl.Stages[1]
	if s := reset.Steps[0]; s.Op != plan.OpKubeadmReset || s.Command != "kubeadm reset -f" {
		t.Errorf("first step %v, want kubeadm reset -f", s)
	}
	ops := opsOn(reset, "master-1")
	if i, j := slices.Index(ops, string(plan.OpStopService)), slices.Index(ops, string(plan.OpRemoveFile)); i < 0 || j < i {
		t.Errorf("steps %v: want the units stopped before the files go", ops)
	}
	var services []string
	for _, s := range reset.Steps {
		if s.Op == plan.OpStopService {
			services = append(services, s.Service)
		}
		if s.Op == plan.OpWipeDataDir {
			t.Errorf("a master of an external-etcd cluster gets %s", s)
		}
	}
	if k, c := slices.Index(services, "kubelet.service"), slices.Index(services, plan.ContainerdUnit); k < 0 || c < k {
		t.Errorf("services stopped %v: want the kubelet before containerd", services)
	}
	after := afterReset(facts, pl, []string{"master-1"})
	if again, err := PlanReset(external, after, st, PlanOptions{Parallel: 10}, ResetInput{Hosts: []string{"master-1"}}); err != nil || !again.Empty() {
		t.Errorf("a second reset --host master-1: %v, %v", err, again)
	}
}

// TestPlanResetWholeCluster: every reachable host in one parallel stage, no
// etcd membership change, kubeadm reset leaving stacked members alone, the
// data directories wiped; an unreachable host is skipped and named with
// what stays on it; after the reset nothing is left to plan.
func TestPlanResetWholeCluster(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	st := newState(t, inv)
	facts := appliedFacts(t, inv, st)
	facts.Hosts["compute-2"] = &plan.HostFacts{Error: "dial tcp 192.0.2.102:22: connect: no route to host"}
	pl, err := PlanReset(inv, facts, st, PlanOptions{Parallel: 10}, ResetInput{})
	if err != nil {
		t.Fatal(err)
	}
	if got := stageNames(pl.Stages); !slices.Equal(got, []string{"reset"}) {
		t.Fatalf("stages %v, want one reset stage", got)
	}
	stage := pl.Stages[0]
	if stage.Parallel != 10 {
		t.Errorf("parallel %d, want 10", stage.Parallel)
	}
	if slices.Contains(stage.Hosts(), "compute-2") {
		t.Errorf("the unreachable compute-2 has steps")
	}
	notes := strings.Join(pl.Notes, "\n")
	if !strings.Contains(notes, "compute-2 is unreachable (dial tcp 192.0.2.102:22: connect: no route to host) and is skipped: left on it are kubeadm's state") {
		t.Errorf("notes do not name compute-2 and what stays on it:\n%s", notes)
	}
	for _, s := range stage.Steps {
		switch s.Op {
		case plan.OpEtcdRemove, plan.OpEtcdMoveLeader, plan.OpDrainNode, plan.OpDeleteNode:
			t.Errorf("a whole-cluster reset has %s", s)
		case plan.OpKubeadmReset:
			if s.Command != "kubeadm reset -f --skip-phases remove-etcd-member" {
				t.Errorf("%s: %q", s.Host, s.Command)
			}
		case plan.OpRemoveFile:
			if !plan.Removable(s.Path) {
				t.Errorf("%s: %s is not a path kprov reset may remove", s.Host, s.Path)
			}
		}
	}
	for _, m := range inv.Topology.EtcdMembers {
		if got := strings.Join(opsOn(stage, m), " "); !strings.HasPrefix(got, "stop-service wipe-data-dir remove-file") {
			t.Errorf("%s: %s, want etcd stopped, its data wiped, then its files removed", m, got)
		}
	}
	if ops := opsOn(stage, "master-1"); len(ops) == 0 || ops[0] != string(plan.OpKubeadmReset) {
		t.Errorf("master-1: %v, want kubeadm reset first", ops)
	}
	for _, c := range pl.HostChanges(inv, facts) {
		if want := map[bool]string{true: "no changes", false: "reset"}[c.Host == "compute-2"]; c.Kind != want {
			t.Errorf("%s: %s, want %s", c.Host, c.Kind, want)
		}
	}
	if pl.Summary.HostsToReset != len(inv.Hosts)-1 {
		t.Errorf("summary %+v, want %d hosts to reset", pl.Summary, len(inv.Hosts)-1)
	}

	after := afterReset(facts, pl, inv.Topology.EtcdMembers)
	after.Hosts["compute-2"] = &plan.HostFacts{Reachable: true}
	again, err := PlanReset(inv, after, st, PlanOptions{Parallel: 10}, ResetInput{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Empty() {
		t.Errorf("a second reset plans %v: %v", stageNames(again.Stages), again.Stages)
	}
}

// TestPlanResetOnlyKprovsFiles: a binary of the artifacts block is removed
// only while it has the artifact's checksum, a cni plugin only while it
// has the archive's; files kprov does not know are never planned; images
// are removed only when the host lists them with the archive's digest.
func TestPlanResetOnlyKprovsFiles(t *testing.T) {
	inv := loadInventory(t, filepath.Join("testdata", "inventories", "airgap.kprov.hcl"))
	st := newState(t, inv)
	facts := appliedFacts(t, inv, st)
	etcdSHA := "a07eb520a05975c8eac8e1201d4d66e8448680fbcab27449dd2beecf4585f38b"
	facts.Hosts["etcd-1"].Files["/usr/local/bin/etcd"] = etcdSHA
	facts.Hosts["etcd-1"].Files["/usr/local/bin/etcdctl"] = strings.Repeat("0", 64) // replaced since
	facts.Hosts["master-1"].Files[plan.CNIBinDir+"/bridge"] = strings.Repeat("b", 64)
	facts.Hosts["master-1"].Files[plan.CNIBinDir+"/loopback"] = strings.Repeat("9", 64) // not the archive's
	facts.Hosts["master-1"].Files[plan.CNIPluginsMarkerPath] = strings.Repeat("7", 64)
	pause := plan.ImageRef{Ref: "registry.k8s.io/pause:3.10", Digest: "sha256:" + strings.Repeat("c", 64)}
	facts.ImageArchives = []plan.ImageArchive{{Path: "images.tar", Images: []plan.ImageRef{pause, {Ref: "registry.k8s.io/etcd:3.6", Digest: "sha256:" + strings.Repeat("e", 64)}}}}
	facts.Hosts["master-1"].Images = map[string]string{pause.Ref: pause.Digest, "registry.k8s.io/etcd:3.6": "sha256:" + strings.Repeat("f", 64), "docker.io/library/mine:1": "sha256:" + strings.Repeat("1", 64)}
	in := ResetInput{CNIPlugins: []ArchiveFile{{Name: "bridge", SHA256: strings.Repeat("b", 64)}, {Name: "loopback", SHA256: strings.Repeat("a", 64)}}}
	pl, err := PlanReset(inv, facts, st, PlanOptions{Parallel: 10}, in)
	if err != nil {
		t.Fatal(err)
	}
	removed := map[string][]string{}
	for _, s := range pl.Stages[0].Steps {
		switch s.Op {
		case plan.OpRemoveFile:
			removed[s.Host] = append(removed[s.Host], s.Path)
			if strings.HasPrefix(s.Path, plan.BinDir+"/") && s.SHA256 == "" {
				t.Errorf("%s: %s without the artifact's checksum", s.Host, s.Path)
			}
		case plan.OpRemoveImages:
			if s.Host != "master-1" || len(s.Images) != 1 || s.Images[0] != pause {
				t.Errorf("%s: remove-images %v, want only %s (the one the host has with the archive's digest)", s.Host, s.Images, pause.Ref)
			}
		}
	}
	if !slices.Contains(removed["etcd-1"], "/usr/local/bin/etcd") || slices.Contains(removed["etcd-1"], "/usr/local/bin/etcdctl") {
		t.Errorf("etcd-1 removes %v: want etcd (the artifact's checksum) and not etcdctl (changed since)", removed["etcd-1"])
	}
	if !strings.Contains(strings.Join(pl.Notes, "\n"), "etcd-1: /usr/local/bin/etcdctl differs from the inventory's artifact and is left") {
		t.Errorf("notes %q do not say etcdctl is left", pl.Notes)
	}
	m := removed["master-1"]
	if !slices.Contains(m, plan.CNIBinDir+"/bridge") || slices.Contains(m, plan.CNIBinDir+"/loopback") || !slices.Contains(m, plan.CNIPluginsMarkerPath) {
		t.Errorf("master-1 removes %v: want bridge and the marker, not the loopback that is not the archive's", m)
	}
	for host, paths := range removed {
		for _, p := range paths {
			if !plan.Removable(p) {
				t.Errorf("%s: %s is not a path kprov reset may remove", host, p)
			}
		}
	}
}

// withMasters is examples/ha-stacked.kprov.hcl with n masters.
func withMasters(t *testing.T, n int) *inventory.Inventory {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "ha-stacked.kprov.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	old := "for_each = range(1, 3 + 1)\n  labels   = [format(\"master-%d\", host.value)]"
	if !strings.Contains(string(b), old) {
		t.Fatalf("the example's master block changed: want %q in it", old)
	}
	text := strings.Replace(string(b), old, strings.Replace(old, "3 + 1", fmt.Sprintf("%d + 1", n), 1), 1)
	path := filepath.Join(t.TempDir(), "cluster.kprov.hcl")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadInventory(t, path)
}
