package roles

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kprov/kprov/provision/plan"
)

// TestEtcdRemovalAddressing: a removal talks to etcd (health wait,
// leadership move, member remove) through a healthy member that stays in
// the inventory, removes the member by its ID and exact peer URL, and
// stops and wipes only on the departing member's own machine, and only
// when that machine was reached; otherwise the plan says what it leaves
// there. The first case is issue 15's: etcd-3's machine stopped and
// etcd-3 swapped for a new host in the inventory, which planned the
// removal's wait on etcd-3, a host no longer in the inventory.
func TestEtcdRemovalAddressing(t *testing.T) {
	cases := []struct {
		name   string
		live   []string
		leader string
		dead   []string
		want   []string
		stages []string
		// via is where the etcd steps of every removal go; wiped the
		// members whose machines are stopped and wiped; left the members
		// whose removal leaves their data behind.
		via         string
		wiped, left []string
	}{
		{name: "replace dead", live: seq("e", 1, 3), leader: "e1", dead: []string{"e3"}, want: []string{"e1", "e2", "e4"},
			stages: []string{"etcd/remove/e3", "etcd/add/e4", "etcd/finalize-config"}, via: "e1", left: []string{"e3"}},
		{name: "replace live leader", live: seq("e", 1, 3), leader: "e1", want: []string{"e2", "e3", "e4"},
			stages: []string{"etcd/add/e4", "etcd/remove/e1", "etcd/finalize-config"}, via: "e2", wiped: []string{"e1"}},
		{name: "5→3 leader among those leaving", live: seq("e", 1, 5), leader: "e4", want: seq("e", 1, 3),
			stages: []string{"etcd/remove/e5", "etcd/remove/e4", "etcd/finalize-config"}, via: "e1", wiped: []string{"e5", "e4"}},
		{name: "5→3 with one leaving dead", live: seq("e", 1, 5), leader: "e1", dead: []string{"e5"}, want: seq("e", 1, 3),
			stages: []string{"etcd/remove/e5", "etcd/remove/e4", "etcd/finalize-config"}, via: "e1", wiped: []string{"e4"}, left: []string{"e5"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newSim()
			for _, n := range tc.live {
				c.addExisting(n, targets(tc.live...))
			}
			c.memberAt(tc.leader).leader = true
			for _, n := range tc.dead {
				c.dead[n] = true
			}
			ids := map[string]uint64{}
			for _, m := range c.members {
				ids[m.name] = m.id
			}
			want := targets(tc.want...)
			stages, notes, err := planNotes(c, want, "", false)
			if err != nil {
				t.Fatal(err)
			}
			if got := stageNames(stages); !slices.Equal(got, tc.stages) {
				t.Fatalf("stages %v, want %v", got, tc.stages)
			}
			var wiped, left []string
			for _, st := range stages {
				if st.Kind != plan.StageEtcdRemove {
					continue
				}
				m := st.Target
				machine := plan.DepartingHostName(m, m)
				var ops []plan.Op
				for _, s := range st.Steps {
					ops = append(ops, s.Op)
					switch s.Op {
					case plan.OpStopService, plan.OpWipeDataDir:
						if s.Host != machine {
							t.Errorf("%s: %s on %s, want the member's own machine %s", st.Name(), s.Op, s.Host, machine)
						}
					default:
						if s.Host != tc.via {
							t.Errorf("%s: %s on %s, want it through %s, a healthy member that stays", st.Name(), s.Op, s.Host, tc.via)
						}
					}
					if s.Op == plan.OpEtcdRemove && (s.MemberID != ids[m] || s.PeerURL != simPeerURL(m)) {
						t.Errorf("%s: removes ID %d at %s, want %d at %s", st.Name(), s.MemberID, s.PeerURL, ids[m], simPeerURL(m))
					}
				}
				switch {
				case slices.Equal(ops, []plan.Op{plan.OpWaitEtcdHealthy, plan.OpEtcdMoveLeader, plan.OpEtcdRemove, plan.OpStopService, plan.OpWipeDataDir}):
					wiped = append(wiped, m)
				case slices.Equal(ops, []plan.Op{plan.OpWaitEtcdHealthy, plan.OpEtcdRemove}):
					left = append(left, m)
					if !strings.Contains(st.Title, "left on it") {
						t.Errorf("%s: title %q does not say what is left behind", st.Name(), st.Title)
					}
					if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, m) && strings.Contains(n, "left on it") }) {
						t.Errorf("no note says what %s's removal leaves behind: %q", m, notes)
					}
				default:
					t.Errorf("%s: steps %v", st.Name(), ops)
				}
			}
			if !slices.Equal(wiped, tc.wiped) || !slices.Equal(left, tc.left) {
				t.Errorf("stopped and wiped %v, left %v; want %v, %v", wiped, left, tc.wiped, tc.left)
			}
			c.run(t, flatten(stages), -1)
			c.assertConverged(t, want)
			for _, m := range tc.wiped {
				if c.running[m] || c.hasData[m] {
					t.Errorf("%s: running %v, data %v after its removal", m, c.running[m], c.hasData[m])
				}
			}
		})
	}
}

// TestPlanReplaceLiveMember plans, with the real templates, the ha-external
// example with etcd-1 swapped for etcd-4 while etcd-1 runs and leads: the
// new member joins first, started with every current member in its
// initial-cluster (etcd-1 included, at its peer URL, though no inventory
// host has it any more: etcd checks the list against its member list);
// then etcd-1 is removed through etcd-2 and stopped and wiped on its own
// machine. Rendering once refused an initial-cluster naming a member
// outside the inventory, so this apply failed on the lab.
func TestPlanReplaceLiveMember(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(src), `# A separate etcd cluster`, `host "etcd-4" {
  address = "192.0.2.24"
  roles   = ["etcd"]
}

# A separate etcd cluster`, 1)
	text = strings.Replace(text, `for_each = range(1, 3 + 1)
  labels   = [format("etcd-%d", host.value)]`, `for_each = range(2, 3 + 1)
  labels   = [format("etcd-%d", host.value)]`, 1)
	path := filepath.Join(t.TempDir(), "swap.kprov.hcl")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	inv := loadInventory(t, path)
	if got := strings.Join(inv.Topology.EtcdMembers, ","); got != "etcd-4,etcd-2,etcd-3" {
		t.Fatalf("etcd members %s", got)
	}
	facts := plan.FreshFacts(hostNames(inv))
	old := plan.EtcdMember{ID: 0x11, Name: "etcd-1", PeerURL: "https://192.0.2.21:2380", Host: plan.DepartingHostName("etcd-1", "192.0.2.21"), Departing: true,
		Healthy: true, Running: true, HostReachable: true, Leader: true}
	facts.Etcd = []plan.EtcdMember{old,
		{ID: 0x12, Name: "etcd-2", PeerURL: "https://192.0.2.22:2380", Host: "etcd-2", Healthy: true, Running: true, HostReachable: true},
		{ID: 0x13, Name: "etcd-3", PeerURL: "https://192.0.2.23:2380", Host: "etcd-3", Healthy: true, Running: true, HostReachable: true},
	}
	facts.EtcdSource = plan.EtcdSourceLive
	pl, err := Plan(inv, facts, newState(t, inv), PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	var etcdStages []string
	for _, st := range pl.Stages {
		switch st.Kind {
		case plan.StageEtcdAdd:
			etcdStages = append(etcdStages, st.Name())
			for _, s := range st.Steps {
				if s.Op == plan.OpUploadFile && s.Path == plan.EtcdConfigPath {
					want := "etcd-1=https://192.0.2.21:2380,etcd-2=https://192.0.2.22:2380,etcd-3=https://192.0.2.23:2380,etcd-4=https://192.0.2.24:2380"
					if !strings.Contains(string(s.Content), want) || !strings.Contains(string(s.Content), "existing") {
						t.Errorf("etcd-4 joins with:\n%s\nwant initial-cluster %s, state existing", s.Content, want)
					}
				}
			}
		case plan.StageEtcdRemove:
			etcdStages = append(etcdStages, st.Name())
			var hosts []string
			for _, s := range st.Steps {
				hosts = append(hosts, string(s.Op)+"@"+s.Host)
			}
			want := []string{"wait-etcd-healthy@etcd-2", "etcd-move-leader@etcd-2", "etcd-remove@etcd-2", "stop-service@" + old.Host, "wipe-data-dir@" + old.Host}
			if !slices.Equal(hosts, want) {
				t.Errorf("etcd-1's removal: %v, want %v", hosts, want)
			}
		}
	}
	if !slices.Equal(etcdStages, []string{"etcd/add/etcd-4", "etcd/remove/etcd-1"}) {
		t.Errorf("etcd stages %v: want etcd-4 added before etcd-1 is removed", etcdStages)
	}
}
