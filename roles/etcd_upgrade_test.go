package roles

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// upgradeSim is three members e1..e3 running etcd `from` from a binary of
// that version, e1 the leader.
func upgradeSim(from string) *simCluster {
	c := newSim()
	names := seq("e", 1, 3)
	for _, n := range names {
		c.addExisting(n, targets(names...))
		c.binary[n], c.version[n] = from, from
	}
	mm, _ := minorVersion(from)
	c.clusterMinor = mm.minor
	c.memberAt("e1").leader = true
	return c
}

// planUpgrade plans the inventory's etcd version `to` with its artifact:
// every wanted host whose binary is another version has it replaced by the
// prepare stage, which the sim then carries out, as apply runs the prepare
// stage before any etcd stage.
func planUpgrade(c *simCluster, want []EtcdTarget, to string) ([]plan.Stage, error) {
	stages, err := planVersion(c, want, to, true)
	if err == nil {
		for _, t := range want {
			c.binary[t.Name] = to
		}
	}
	return stages, err
}

// restartOps are the steps of one member's restart, in order: every voter
// healthy first, leadership away, the restart, the member caught up to
// the leader's applied index, every voter healthy again.
var restartOps = []plan.Op{plan.OpWaitEtcdHealthy, plan.OpEtcdMoveLeader, plan.OpRestartService, plan.OpWaitCaughtUp, plan.OpWaitEtcdHealthy}

func ops(steps []plan.Step) []plan.Op {
	var out []plan.Op
	for _, s := range steps {
		out = append(out, s.Op)
	}
	return out
}

// TestEtcdRollingUpgrade: a new etcd binary on every member restarts them
// one at a time, the leader last, each restart followed by the waits that
// keep the next one from taking a second member down; nothing else (no
// configuration rewritten); the sim refuses a restart below quorum or of
// the leader, and every member ends on the new version.
func TestEtcdRollingUpgrade(t *testing.T) {
	want := targets(seq("e", 1, 3)...)
	c := upgradeSim("3.6.15")
	stages, err := planUpgrade(c, want, "3.6.16")
	if err != nil {
		t.Fatal(err)
	}
	if got := stageNames(stages); !slices.Equal(got, []string{"etcd/restart/e2", "etcd/restart/e3", "etcd/restart/e1"}) {
		t.Fatalf("one at a time, the leader last: %v", got)
	}
	for _, st := range stages {
		if got := ops(st.Steps); !slices.Equal(got, restartOps) {
			t.Errorf("%s: steps %v, want %v", st.Name(), got, restartOps)
		}
		if want := "upgrading member " + st.Target + ": etcd 3.6.15 to 3.6.16"; st.Title != want || st.Parallel != 1 {
			t.Errorf("%s: title %q parallel %d, want %q, serial", st.Name(), st.Title, st.Parallel, want)
		}
		if last := st.Steps[len(st.Steps)-1]; !slices.Equal(last.Voters, []string{"e1", "e2", "e3"}) {
			t.Errorf("%s: the closing wait is for %v, want every voter", st.Name(), last.Voters)
		}
		if restart := st.Steps[2]; !strings.Contains(restart.Reason, "replaced the etcd binary") {
			t.Errorf("%s: restart reason %q", st.Name(), restart.Reason)
		}
	}
	c.run(t, flatten(stages), -1)
	for _, n := range seq("e", 1, 3) {
		if c.version[n] != "3.6.16" {
			t.Errorf("%s runs %q after the upgrade", n, c.version[n])
		}
	}
	c.assertConverged(t, want)
	if again, err := planVersion(c, want, "3.6.16", false); err != nil || len(again) != 0 {
		t.Errorf("the upgraded cluster plans %v, %v; want nothing", stageNames(again), err)
	}
}

// TestEtcdUpgradeInterrupted crashes the upgrade after every step; the
// members come back by themselves (systemd restarted them), and the next
// plan, whose binaries are already in place, restarts exactly the members
// still running the old version, the leader of the moment last, and
// converges. No member is restarted twice across the two runs.
func TestEtcdUpgradeInterrupted(t *testing.T) {
	want := targets(seq("e", 1, 3)...)
	c := upgradeSim("3.5.21")
	stages, err := planUpgrade(c, want, "3.6.16")
	if err != nil {
		t.Fatal(err)
	}
	steps := flatten(stages)
	for cut := 1; cut < len(steps); cut++ {
		t.Run(fmt.Sprintf("cut after %d %s", cut, steps[cut-1].Op), func(t *testing.T) {
			c := upgradeSim("3.5.21")
			if _, err := planUpgrade(c, want, "3.6.16"); err != nil {
				t.Fatal(err)
			}
			restarted := map[string]int{}
			for _, s := range steps[:cut] {
				if s.Op == plan.OpRestartService {
					restarted[s.Host]++
				}
			}
			c.run(t, steps, cut)
			clear(c.restarting)
			var old []string
			for _, n := range seq("e", 1, 3) {
				if c.version[n] != "3.6.16" {
					old = append(old, n)
				}
			}
			again, err := planVersion(c, want, "3.6.16", false)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, st := range again {
				got = append(got, st.Target)
				if restart := st.Steps[2]; !strings.Contains(restart.Reason, "upgrade left unfinished") {
					t.Errorf("%s: restart reason %q", st.Name(), restart.Reason)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, old) {
				t.Fatalf("the re-plan restarts %v; still on 3.5.21: %v", stageNames(again), old)
			}
			for _, st := range again[:max(len(again)-1, 0)] {
				if c.memberAt(st.Target).leader {
					t.Errorf("the re-plan restarts the leader %s before the others: %v", st.Target, stageNames(again))
				}
			}
			for _, s := range flatten(again) {
				if s.Op == plan.OpRestartService && restarted[s.Host] > 0 {
					t.Errorf("%s restarted again by the re-plan", s.Host)
				}
			}
			c.run(t, flatten(again), -1)
			c.assertConverged(t, want)
		})
	}
}

// TestEtcdUpgradeVersionJumps: the version changes etcd supports member by
// member plan a roll; the others are refused naming the member, what it
// runs, the version asked for and what to do.
func TestEtcdUpgradeVersionJumps(t *testing.T) {
	want := targets(seq("e", 1, 3)...)
	for _, tc := range []struct {
		from, to string
		refusal  []string // substrings of the refusal; none: a roll is planned
	}{
		{from: "3.6.15", to: "3.6.16"},
		{from: "3.5.21", to: "3.6.16"},
		{from: "3.6.16", to: "3.6.15"}, // a patch back within a minor: the data format is the minor's
		{from: "3.6.16", to: "v3.7.0"},
		{from: "3.5.21", to: "3.7.0", refusal: []string{"etcd member e1: it runs etcd 3.5.21 and the inventory's etcd.version is 3.7.0, skipping 3.6", "set etcd.version to a 3.6 release"}},
		{from: "3.7.1", to: "3.6.16", refusal: []string{"etcd member e1: it runs etcd 3.7.1 and the inventory's etcd.version is 3.6.16, a downgrade", "etcdctl downgrade enable 3.6", "set etcd.version back to 3.7.1"}},
		{from: "3.6.16", to: "4.0.0", refusal: []string{"a change of major version", "set etcd.version to a 3.6 release"}},
	} {
		t.Run(tc.from+" to "+tc.to, func(t *testing.T) {
			c := upgradeSim(tc.from)
			stages, err := planUpgrade(c, want, tc.to)
			if len(tc.refusal) > 0 {
				var re *RefusalError
				if !errors.As(err, &re) || re.Member != "e1" {
					t.Fatalf("want a refusal naming e1, got %v (stages %v)", err, stageNames(stages))
				}
				for _, s := range tc.refusal {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("the refusal lacks %q:\n%v", s, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := stageNames(stages); !slices.Equal(got, []string{"etcd/restart/e2", "etcd/restart/e3", "etcd/restart/e1"}) {
				t.Fatalf("stages %v", got)
			}
			c.run(t, flatten(stages), -1)
			c.assertConverged(t, want)
		})
	}

	// Without an etcd artifact the host's own binary is what a restart
	// runs: one two minors ahead of the process is refused the same way.
	c := upgradeSim("3.6.16")
	c.binary["e2"] = "3.8.0"
	_, err := planVersion(c, want, "3.6.16", false)
	var re *RefusalError
	if !errors.As(err, &re) || re.Member != "e2" || !strings.Contains(err.Error(), "the etcd binary on its host is 3.8.0, skipping 3.7") {
		t.Errorf("want a refusal naming e2 and its binary, got %v", err)
	}
}

// TestEtcdUpgradeHostBinary: without an etcd artifact, a member whose
// process lags the binary its host now has (upgraded by the host's own
// packages) is restarted to run it; one whose process runs its binary's
// version is left alone.
func TestEtcdUpgradeHostBinary(t *testing.T) {
	want := targets(seq("e", 1, 3)...)
	c := upgradeSim("3.6.15")
	c.binary["e1"], c.binary["e3"] = "3.6.16", "3.6.16"
	stages, err := planVersion(c, want, "3.6.16", false)
	if err != nil {
		t.Fatal(err)
	}
	if got := stageNames(stages); !slices.Equal(got, []string{"etcd/restart/e3", "etcd/restart/e1"}) {
		t.Fatalf("stages %v, want e3 then the leader e1", got)
	}
	c.run(t, flatten(stages), -1)
	if c.version["e1"] != "3.6.16" || c.version["e2"] != "3.6.15" || c.version["e3"] != "3.6.16" {
		t.Errorf("versions after the roll: %v", c.version)
	}
}

// TestPlanUpgradeUploadsFirst plans the whole ha-external example with a
// new etcd artifact on converged hosts running 3.6.15: the binaries go to
// every etcd host in the prepare stage, before the first restart, and the
// restarts follow one member at a time, the leader (etcd-1 in the facts)
// last.
func TestPlanUpgradeUploadsFirst(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	inv.Etcd.Version = "3.6.16"
	for _, name := range []string{"etcd", "etcdctl", "etcdutl"} {
		inv.Artifacts = append(inv.Artifacts, inventory.Artifact{Name: name, Path: "/cache/etcd-v3.6.16/" + name, SHA256: strings.Repeat("a", 64)})
	}
	st := newState(t, inv)
	final, err := Render(inv, st, Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers)})
	if err != nil {
		t.Fatal(err)
	}
	facts := convergedFacts(t, inv, nil, final)
	for i := range facts.Etcd {
		facts.Etcd[i].Version = "3.6.15"
	}
	for _, name := range inv.Topology.EtcdMembers {
		facts.Hosts[name].Files[plan.BinDir+"/etcd"] = strings.Repeat("b", 64)
		facts.Hosts[name].Versions = map[string]string{"etcd": "3.6.15"}
	}
	pl, err := Plan(inv, facts, st, PlanOptions{Parallel: 10})
	if err != nil {
		t.Fatal(err)
	}
	uploaded := map[string]bool{}
	var restarts []string
	for _, stage := range pl.Stages {
		for _, s := range stage.Steps {
			switch {
			case s.Op == plan.OpUploadFile && s.Path == plan.BinDir+"/etcd":
				if len(restarts) > 0 {
					t.Errorf("%s: etcd uploaded in stage %s, after the restart of %v", s.Host, stage.Name(), restarts)
				}
				uploaded[s.Host] = true
			case s.Op == plan.OpRestartService && s.Service == plan.EtcdUnit:
				restarts = append(restarts, s.Host)
			}
		}
	}
	if !slices.Equal(slices.Sorted(maps.Keys(uploaded)), inv.Topology.EtcdMembers) {
		t.Errorf("etcd uploaded to %v, want every member %v", slices.Sorted(maps.Keys(uploaded)), inv.Topology.EtcdMembers)
	}
	if want := []string{"etcd-2", "etcd-3", "etcd-1"}; !slices.Equal(restarts, want) {
		t.Errorf("restarts %v, want %v", restarts, want)
	}
	if !strings.Contains(pl.Stages[0].Title, "preparing hosts") {
		t.Errorf("the first stage is %q, not the prepare stage", pl.Stages[0].Title)
	}
}
