package roles

import (
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
