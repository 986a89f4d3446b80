package roles

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
)

// TestPlanRollsRenewedMemberCerts: on a converged ha-external cluster whose
// etcd leaves were all reissued, the prepare stage writes the client
// certificates (healthcheck, apiserver-etcd-client) but no member's own
// certificates; those are written member by member in the etcd restart
// stages, the leader last. A member certificate that does not name its
// member is refused before anything is planned.
func TestPlanRollsRenewedMemberCerts(t *testing.T) {
	inv := loadInventory(t, filepath.Join("..", "examples", "ha-external.kprov.hcl"))
	st := newState(t, inv)
	final, err := Render(inv, st, Options{EtcdBootstrap: FormedEtcdBootstrap(inv.Topology.EtcdMembers)})
	if err != nil {
		t.Fatal(err)
	}
	facts := convergedFacts(t, inv, nil, final)
	var bases []string
	for _, l := range st.EtcdLeaves() {
		bases = append(bases, l.Base)
	}
	renewed, _, err := st.ReissueEtcdLeaves(PKIRequest(inv), bases, issued)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := Plan(inv, facts, renewed, PlanOptions{Parallel: 10, Now: issued})
	if err != nil {
		t.Fatal(err)
	}
	members := inv.Topology.EtcdMembers
	leader := members[0] // convergedFacts makes the first member the leader
	var restarts []string
	for _, s := range pl.Stages {
		switch s.Kind {
		case plan.StagePrepare:
			clients := map[string]int{}
			for _, step := range s.Steps {
				if slices.Contains(MemberCertPaths, step.Path) {
					t.Errorf("prepare writes %s on %s: member certificates roll one member at a time", step.Path, step.Host)
				}
				if strings.HasSuffix(step.Path, "healthcheck-client.crt") || strings.HasSuffix(step.Path, "apiserver-etcd-client.crt") {
					clients[step.Host]++
				}
			}
			for _, h := range append(slices.Clone(members), inv.Topology.Masters...) {
				if clients[h] != 1 {
					t.Errorf("prepare writes %d renewed client certificates on %s, want 1", clients[h], h)
				}
			}
		case plan.StageEtcdRestart:
			restarts = append(restarts, s.Target)
			if got := ops(s.Steps); !slices.Equal(got, certRollOps) {
				t.Errorf("%s: %v", s.Name(), got)
			}
		default:
			for _, step := range s.Steps {
				if step.Op == plan.OpRestartService || step.Op == plan.OpKubeadmInit || step.Op == plan.OpKubeadmJoin {
					t.Errorf("stage %s: %s on %s", s.Name(), step.Op, step.Host)
				}
			}
		}
	}
	if len(restarts) != len(members) || restarts[len(restarts)-1] != leader {
		t.Errorf("restarts %v: want every member once, the leader %s last", restarts, leader)
	}
	if !slices.ContainsFunc(pl.Notes, func(n string) bool {
		return strings.Contains(n, "apiserver-etcd-client") && strings.Contains(n, "does not restart kube-apiserver")
	}) {
		t.Errorf("no note on the API server's renewed etcd client certificate: %q", pl.Notes)
	}

	// The hosts now hold everything: nothing more to do.
	final2, err := Render(inv, renewed, Options{EtcdBootstrap: FormedEtcdBootstrap(members)})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Plan(inv, convergedFacts(t, inv, nil, final2), renewed, PlanOptions{Parallel: 10, Now: issued}); err != nil || !again.Empty() {
		t.Errorf("after the roll: %v %v", err, again)
	}

	// A member certificate for the wrong member is refused.
	swapped := *renewed
	swapped.EtcdMembers = map[string]*pki.EtcdMemberCerts{}
	for k, v := range renewed.EtcdMembers {
		c := *v
		swapped.EtcdMembers[k] = &c
	}
	swapped.EtcdMembers[members[1]].Server = renewed.EtcdMembers[members[2]].Server
	_, err = Plan(inv, facts, &swapped, PlanOptions{Parallel: 10, Now: issued})
	if err == nil || !strings.Contains(err.Error(), members[1]+": /etc/kubernetes/pki/etcd/server.crt") || !strings.Contains(err.Error(), "kprov will not put it on the member") {
		t.Errorf("a swapped member certificate: %v", err)
	}
}
