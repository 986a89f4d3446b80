package roles

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// simMember is one etcd member in the simulated cluster.
type simMember struct {
	id      uint64
	name    string
	peerURL string
	learner bool
	leader  bool
}

// simCluster replays plan steps against a model of etcd membership and of the
// member hosts, enforcing etcd's own rules and kprov's invariants after every step.
type simCluster struct {
	members []*simMember
	nextID  uint64
	running map[string]bool   // host -> etcd process running
	dead    map[string]bool   // host is down: its member is unhealthy and it cannot be reached
	config  map[string]string // host -> config file content
	hasData map[string]bool   // host -> data directory exists
	steps   int
}

func newSim() *simCluster {
	return &simCluster{nextID: 100, running: map[string]bool{}, dead: map[string]bool{}, config: map[string]string{}, hasData: map[string]bool{}}
}

func simPeerURL(name string) string { return "https://" + name + ":2380" }

func testConfig(t EtcdTarget, initial []EtcdTarget, state string) File {
	var ns []string
	for _, m := range initial {
		ns = append(ns, m.Name+"="+m.PeerURL)
	}
	return File{Path: "/etc/etcd/etcd.yaml", Mode: 0o600, Content: []byte(fmt.Sprintf(
		"name: %s\ninitial-cluster: %s\ninitial-cluster-state: %s\n", t.Name, strings.Join(ns, ","), state))}
}

func testNormalize(b []byte) []byte { return plan.NormalizeEtcdConfig(b) }

// addExisting creates a live member that was formed earlier, running with the final config.
func (c *simCluster) addExisting(name string, want []EtcdTarget) {
	c.nextID++
	c.members = append(c.members, &simMember{id: c.nextID, name: name, peerURL: simPeerURL(name)})
	c.running[name] = true
	c.hasData[name] = true
	c.config[name] = string(testConfig(EtcdTarget{Name: name, PeerURL: simPeerURL(name)}, want, StateExisting).Content)
}

func (c *simCluster) member(name string) *simMember {
	for _, m := range c.members {
		if m.name == name {
			return m
		}
	}
	return nil
}

func (c *simCluster) healthy(m *simMember) bool { return c.running[m.name] && !c.dead[m.name] }

func (c *simCluster) voters() (n, healthy int) {
	for _, m := range c.members {
		if !m.learner {
			n++
			if c.healthy(m) {
				healthy++
			}
		}
	}
	return n, healthy
}

func (c *simCluster) hasQuorum() bool {
	n, h := c.voters()
	return n > 0 && h >= inventory.Quorum(n)
}

func (c *simCluster) ensureLeader() {
	for _, m := range c.members {
		if m.leader && c.healthy(m) && !m.learner {
			return
		}
		m.leader = false
	}
	if !c.hasQuorum() {
		return
	}
	for _, m := range c.members {
		if !m.learner && c.healthy(m) {
			m.leader = true
			return
		}
	}
}

// facts reports the cluster as kprov's fact gathering would see it.
func (c *simCluster) facts() []plan.EtcdMember {
	c.ensureLeader()
	anyUp := false
	for _, m := range c.members {
		if c.healthy(m) {
			anyUp = true
		}
	}
	if !anyUp && len(c.members) > 0 {
		// With every member down, the member list comes from the hosts' data directories.
	}
	var out []plan.EtcdMember
	for _, m := range c.members {
		cfg := c.config[m.name]
		out = append(out, plan.EtcdMember{ID: m.id, Name: m.name, PeerURL: m.peerURL, Learner: m.learner, Leader: m.leader,
			Healthy: c.healthy(m) && (c.hasQuorum() || m.learner), Running: c.running[m.name] && !c.dead[m.name], HostReachable: !c.dead[m.name],
			ConfigSHA256: sha([]byte(cfg)), ConfigCoreSHA256: sha(testNormalize([]byte(cfg)))})
	}
	return out
}

// apply performs one step, failing on anything etcd or kprov's rules forbid.
func (c *simCluster) apply(s plan.Step) error {
	c.steps++
	host := s.Host
	if c.dead[host] && s.Op != plan.OpEtcdRemove && s.Op != plan.OpWaitEtcdHealthy && s.Op != plan.OpEtcdMoveLeader {
		return fmt.Errorf("step %s on dead host %s", s.Op, host)
	}
	switch s.Op {
	case plan.OpUploadFile:
		c.config[host] = string(s.Content)
	case plan.OpStartService:
		if c.running[host] {
			return nil
		}
		cfg := c.config[host]
		if cfg == "" {
			return fmt.Errorf("%s started without a configuration", host)
		}
		if m := c.member(host); m != nil {
			c.running[host] = true
			c.hasData[host] = true
			return nil
		}
		if strings.Contains(cfg, "initial-cluster-state: new") {
			// Starting "new" while a cluster exists would fork a second cluster.
			if len(c.members) > 0 {
				return fmt.Errorf("%s started with state new beside an existing cluster: a second cluster ID", host)
			}
			c.nextID++
			c.members = append(c.members, &simMember{id: c.nextID, name: host, peerURL: simPeerURL(host), leader: true})
			c.running[host] = true
			c.hasData[host] = true
			return nil
		}
		return fmt.Errorf("%s started with state existing but is not a member", host)
	case plan.OpRestartService:
		n, h := c.voters()
		if m := c.member(host); m != nil && !m.learner && c.healthy(m) && h-1 < inventory.Quorum(n) {
			return fmt.Errorf("restarting %s leaves %d of %d voting members: below quorum", host, h-1, n)
		}
		if m := c.member(host); m != nil && m.leader {
			return fmt.Errorf("restarting the leader %s without moving leadership away", host)
		}
	case plan.OpStopService:
		if c.member(host) != nil {
			return fmt.Errorf("stopping %s while it is still a member", host)
		}
		c.running[host] = false
	case plan.OpWipeDataDir:
		if c.member(host) != nil {
			return fmt.Errorf("wiping %s while it is still a member", host)
		}
		c.hasData[host] = false
	case plan.OpEtcdAddLearner:
		if !c.hasQuorum() {
			return fmt.Errorf("member add without quorum")
		}
		for _, m := range c.members {
			if m.learner {
				return fmt.Errorf("too many learner members: %s is still a learner", m.name)
			}
			if m.peerURL == s.PeerURL {
				return nil // peer URL exists: already done
			}
		}
		c.nextID++
		c.members = append(c.members, &simMember{id: c.nextID, name: s.Member, peerURL: s.PeerURL, learner: true})
	case plan.OpWaitCaughtUp:
		if m := c.member(s.Member); m == nil || !c.healthy(m) {
			return fmt.Errorf("learner %s never caught up", s.Member)
		}
	case plan.OpEtcdPromote:
		m := c.member(s.Member)
		if m == nil || !c.healthy(m) || !c.hasQuorum() {
			return fmt.Errorf("promote %s refused", s.Member)
		}
		m.learner = false
	case plan.OpEtcdMoveLeader:
		c.ensureLeader()
		m := c.member(s.Member)
		if m == nil || !m.leader {
			return nil
		}
		for _, o := range c.members {
			if o != m && !o.learner && c.healthy(o) {
				m.leader, o.leader = false, true
				return nil
			}
		}
		return fmt.Errorf("no healthy member to take leadership from %s", s.Member)
	case plan.OpEtcdRemove:
		if !c.hasQuorum() {
			return fmt.Errorf("member remove without quorum")
		}
		m := c.member(s.Member)
		if m == nil {
			return nil
		}
		if m.leader {
			return fmt.Errorf("removing the leader %s without moving leadership away", s.Member)
		}
		c.members = slices.DeleteFunc(c.members, func(x *simMember) bool { return x == m })
		c.running[host] = false // a removed member stops itself
	case plan.OpWaitEtcdHealthy:
		for _, v := range s.Voters {
			m := c.member(v)
			if m == nil || m.learner || !c.healthy(m) {
				return fmt.Errorf("wait for %v: %s is not a healthy voting member", s.Voters, v)
			}
		}
		if !c.hasQuorum() {
			return fmt.Errorf("wait for %v: no quorum", s.Voters)
		}
	default:
		return fmt.Errorf("unexpected step %s", s.Op)
	}
	return nil
}

// checkInvariants holds after every step: the healthy voting members form a
// majority, and at most one member is in transition (a learner).
func (c *simCluster) checkInvariants(started bool) error {
	learners := 0
	for _, m := range c.members {
		if m.learner {
			learners++
		}
	}
	if learners > 1 {
		return fmt.Errorf("%d learners at once", learners)
	}
	if started && len(c.members) > 0 && !c.hasQuorum() {
		n, h := c.voters()
		return fmt.Errorf("quorum lost: %d of %d voting members healthy", h, n)
	}
	return nil
}

func planFor(c *simCluster, want []EtcdTarget) ([]plan.Stage, error) {
	stages, _, err := PlanEtcd(EtcdInput{Live: c.facts(), Want: want, DataDir: "/var/lib/etcd", Service: "etcd", Config: testConfig, Normalize: testNormalize})
	return stages, err
}

func flatten(stages []plan.Stage) []plan.Step {
	var out []plan.Step
	for _, st := range stages {
		if membership := st.Kind == plan.StageEtcdBootstrap || st.Kind == plan.StageEtcdAdd || st.Kind == plan.StageEtcdRemove || st.Kind == plan.StageEtcdRestart; membership && st.Parallel != 1 {
			panic("membership stage " + st.Name() + " must be serial")
		}
		out = append(out, st.Steps...)
	}
	return out
}

// run applies steps [0, limit) and checks the invariants after each one.
func (c *simCluster) run(t *testing.T, steps []plan.Step, limit int) {
	t.Helper()
	quorate := c.hasQuorum()
	for i, s := range steps {
		if i == limit {
			return
		}
		if err := c.apply(s); err != nil {
			t.Fatalf("step %d (%s on %s): %v", i, s, s.Host, err)
		}
		quorate = quorate || c.hasQuorum()
		if err := c.checkInvariants(quorate); err != nil {
			t.Fatalf("after step %d (%s on %s): %v", i, s, s.Host, err)
		}
	}
}

func (c *simCluster) assertConverged(t *testing.T, want []EtcdTarget) {
	t.Helper()
	var got []string
	for _, m := range c.members {
		if m.learner {
			t.Fatalf("learner %s left behind", m.name)
		}
		if !c.healthy(m) {
			t.Fatalf("member %s unhealthy at the end", m.name)
		}
		got = append(got, m.name)
	}
	var wantNames []string
	for _, w := range want {
		wantNames = append(wantNames, w.Name)
		final := string(testConfig(w, want, StateExisting).Content)
		if c.config[w.Name] != final {
			t.Fatalf("%s config not final:\n%s", w.Name, c.config[w.Name])
		}
	}
	slices.Sort(got)
	slices.Sort(wantNames)
	if !slices.Equal(got, wantNames) {
		t.Fatalf("members %v, want %v", got, wantNames)
	}
	// A converged cluster plans to zero changes.
	stages, err := planFor(c, want)
	if err != nil || len(stages) != 0 {
		t.Fatalf("converged cluster still plans %d stages (%v): %v", len(stages), err, stageNames(stages))
	}
}

func stageNames(stages []plan.Stage) []string {
	var out []string
	for _, s := range stages {
		out = append(out, s.Name())
	}
	return out
}

func targets(names ...string) []EtcdTarget {
	var out []EtcdTarget
	for _, n := range names {
		out = append(out, EtcdTarget{Name: n, PeerURL: simPeerURL(n)})
	}
	return out
}

func seq(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func TestEtcdTransitions(t *testing.T) {
	cases := []struct {
		name   string
		live   []string
		dead   []string // live hosts that are down
		stop   []string // live members whose service is stopped
		want   []string
		stages []string // expected stage order
	}{
		{name: "0→1", want: seq("e", 1, 1), stages: []string{"etcd/bootstrap/e1", "etcd/finalize-config"}},
		{name: "0→3", want: seq("e", 1, 3), stages: []string{"etcd/bootstrap/e1", "etcd/add/e2", "etcd/add/e3", "etcd/finalize-config"}},
		{name: "1→3", live: seq("e", 1, 1), want: seq("e", 1, 3), stages: []string{"etcd/add/e2", "etcd/add/e3", "etcd/finalize-config"}},
		{name: "3→5", live: seq("e", 1, 3), want: seq("e", 1, 5), stages: []string{"etcd/add/e4", "etcd/add/e5", "etcd/finalize-config"}},
		{name: "5→3", live: seq("e", 1, 5), want: seq("e", 1, 3), stages: []string{"etcd/remove/e4", "etcd/remove/e5", "etcd/finalize-config"}},
		{name: "3→1", live: seq("e", 1, 3), want: seq("e", 1, 1), stages: []string{"etcd/remove/e2", "etcd/remove/e3", "etcd/finalize-config"}},
		{name: "replace dead", live: seq("e", 1, 3), dead: []string{"e3"}, want: []string{"e1", "e2", "e4"},
			stages: []string{"etcd/remove/e3", "etcd/add/e4", "etcd/finalize-config"}},
		{name: "replace live", live: seq("e", 1, 3), want: []string{"e1", "e2", "e4"},
			stages: []string{"etcd/add/e4", "etcd/remove/e3", "etcd/finalize-config"}},
		{name: "all stopped", live: seq("e", 1, 3), stop: seq("e", 1, 3), want: seq("e", 1, 3), stages: []string{"etcd/start-stopped"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newSim()
			want := targets(tc.want...)
			liveWant := targets(tc.live...)
			for _, n := range tc.live {
				c.addExisting(n, liveWant)
			}
			for _, n := range tc.dead {
				c.dead[n] = true
			}
			for _, n := range tc.stop {
				c.running[n] = false
			}
			stages, err := planFor(c, want)
			if err != nil {
				t.Fatal(err)
			}
			if got := stageNames(stages); !slices.Equal(got, tc.stages) {
				t.Fatalf("stages %v, want %v", got, tc.stages)
			}
			if tc.name == "all stopped" {
				st := stages[0]
				if st.Parallel != 3 || len(st.Steps) != 4 || !strings.Contains(st.Steps[0].Reason, "cold start") {
					t.Fatalf("a cold start starts every member together: %+v", st)
				}
			}
			c.run(t, flatten(stages), -1)
			c.assertConverged(t, want)
		})
	}
}

func TestEtcdLeaderLeavesLast(t *testing.T) {
	c := newSim()
	c.addExisting("e1", targets(seq("e", 1, 5)...))
	for _, n := range seq("e", 2, 5) {
		c.addExisting(n, targets(seq("e", 1, 5)...))
	}
	c.member("e4").leader = true
	stages, err := planFor(c, targets("e1", "e2", "e3"))
	if err != nil {
		t.Fatal(err)
	}
	if got := stageNames(stages); !slices.Equal(got, []string{"etcd/remove/e5", "etcd/remove/e4", "etcd/finalize-config"}) {
		t.Fatalf("the leader must be removed last: %v", got)
	}
	steps := stages[1].Steps
	if steps[1].Op != plan.OpEtcdMoveLeader || steps[2].Op != plan.OpEtcdRemove || steps[3].Op != plan.OpStopService || steps[4].Op != plan.OpWipeDataDir {
		t.Fatalf("remove order must be wait, move leader, remove, stop, wipe: %v", steps)
	}
	c.run(t, flatten(stages), -1)
	c.assertConverged(t, targets("e1", "e2", "e3"))
}

func TestEtcdRollingConfigChange(t *testing.T) {
	c := newSim()
	for _, n := range seq("e", 1, 3) {
		c.addExisting(n, targets(seq("e", 1, 3)...))
	}
	c.member("e1").leader = true
	for _, n := range seq("e", 1, 3) {
		c.config[n] += "quota-backend-bytes: 2147483648\n" // drift that needs a restart
	}
	stages, err := planFor(c, targets(seq("e", 1, 3)...))
	if err != nil {
		t.Fatal(err)
	}
	if got := stageNames(stages); !slices.Equal(got, []string{"etcd/restart/e2", "etcd/restart/e3", "etcd/restart/e1"}) {
		t.Fatalf("one at a time, the leader last: %v", got)
	}
	c.run(t, flatten(stages), -1)
	c.assertConverged(t, targets(seq("e", 1, 3)...))

	// Only the bootstrap settings differ: rewritten without any restart.
	c2 := newSim()
	for _, n := range seq("e", 1, 3) {
		c2.addExisting(n, targets(seq("e", 1, 3)...))
	}
	c2.config["e1"] = string(testConfig(EtcdTarget{Name: "e1", PeerURL: simPeerURL("e1")}, targets("e1"), StateNew).Content)
	stages, err = planFor(c2, targets(seq("e", 1, 3)...))
	if err != nil {
		t.Fatal(err)
	}
	if got := stageNames(stages); !slices.Equal(got, []string{"etcd/finalize-config"}) || len(stages[0].Steps) != 1 {
		t.Fatalf("a bootstrap-only difference is a rewrite, not a restart: %v", got)
	}
}

func TestEtcdRefusals(t *testing.T) {
	t.Run("unhealthy member during scale-out", func(t *testing.T) {
		c := newSim()
		for _, n := range seq("e", 1, 3) {
			c.addExisting(n, targets(seq("e", 1, 3)...))
		}
		c.dead["e2"] = true
		_, err := planFor(c, targets(seq("e", 1, 5)...))
		var re *RefusalError
		if !errors.As(err, &re) || re.Member != "e2" || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), "replace it") {
			t.Fatalf("want a refusal naming e2, what was seen and what to do; got %v", err)
		}
	})
	t.Run("quorum lost", func(t *testing.T) {
		c := newSim()
		for _, n := range seq("e", 1, 3) {
			c.addExisting(n, targets(seq("e", 1, 3)...))
		}
		c.dead["e2"], c.dead["e3"] = true, true
		_, err := planFor(c, targets("e1", "e4", "e5"))
		if err == nil || !strings.Contains(err.Error(), "below the quorum of 2") {
			t.Fatalf("want a refusal for lost quorum, got %v", err)
		}
	})
	t.Run("1→2→1", func(t *testing.T) {
		c := newSim()
		c.addExisting("e1", targets("e1"))
		_, err := planFor(c, targets("e2"))
		if err == nil || !strings.Contains(err.Error(), "1→2→1") {
			t.Fatalf("want a refusal to replace the only member, got %v", err)
		}
	})
}

// TestEtcdModel replays every plan for start and target sizes up to 7, with up
// to floor((n-1)/2) failed members among those leaving, checks the invariants
// after every step, and then crashes the run after every step and re-plans
// from the resulting state, which must converge too.
func TestEtcdModel(t *testing.T) {
	scenarios := 0
	for start := 0; start <= 7; start++ {
		for target := 1; target <= 7; target++ {
			for keep := 0; keep <= min(start, target); keep++ {
				if start > 0 && keep == 0 {
					continue // replacing every member at once is not a membership change kprov makes
				}
				for failed := 0; failed <= inventory.FaultTolerance(start); failed++ {
					if failed > start-keep {
						continue // failed members among those kept are refused (TestEtcdRefusals)
					}
					liveNames := seq("e", 1, start)
					wantNames := append(slices.Clone(liveNames[:keep]), seq("n", 1, target-keep)...)
					name := fmt.Sprintf("%d→%d keep %d failed %d", start, target, keep, failed)
					scenarios++
					setup := func() *simCluster {
						c := newSim()
						for _, n := range liveNames {
							c.addExisting(n, targets(liveNames...))
						}
						for _, n := range liveNames[start-failed:] {
							c.dead[n] = true
						}
						return c
					}
					want := targets(wantNames...)
					c := setup()
					stages, err := planFor(c, want)
					if start == 1 && keep == 0 && target == 1 {
						if err == nil {
							t.Errorf("%s: replacing the only member must be refused", name)
						}
						continue
					}
					if err != nil {
						t.Errorf("%s: %v", name, err)
						continue
					}
					steps := flatten(stages)
					t.Run(name, func(t *testing.T) {
						c.run(t, steps, -1)
						c.assertConverged(t, want)
						for cut := 1; cut < len(steps); cut++ {
							c := setup()
							c.run(t, steps, cut)
							again, err := planFor(c, want)
							if err != nil {
								t.Fatalf("re-plan after crashing at step %d (%s): %v", cut, steps[cut-1], err)
							}
							c.run(t, flatten(again), -1)
							c.assertConverged(t, want)
						}
					})
				}
			}
		}
	}
	if scenarios < 100 {
		t.Fatalf("only %d scenarios", scenarios)
	}
}
