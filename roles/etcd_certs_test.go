package roles

import (
	"maps"
	"slices"
	"testing"

	"github.com/kprov/kprov/provision/plan"
)

// renewedCerts are new member certificate files for every host named.
func renewedCerts(hosts ...string) map[string][]File {
	out := map[string][]File{}
	for _, h := range hosts {
		for _, p := range MemberCertPaths {
			out[h] = append(out[h], File{Path: p, Mode: 0o600, Content: []byte("renewed " + p + " of " + h), Secret: true})
		}
	}
	return out
}

// planCerts plans the sim's cluster with renewed certificates for hosts.
func planCerts(c *simCluster, want []EtcdTarget, certs map[string][]File) ([]plan.Stage, error) {
	for _, t := range want {
		c.addHosts(t.Name)
	}
	c.inv = maps.Clone(c.hosts)
	c.departing = map[string]string{}
	stages, _, err := PlanEtcd(EtcdInput{Live: c.facts(), Want: want, Hosts: slices.Sorted(maps.Keys(c.inv)),
		DataDir: "/var/lib/etcd", Service: "etcd", Config: testConfig, Normalize: testNormalize, Certs: certs})
	return stages, err
}

// certRollOps are one member's certificate roll: every voter healthy,
// leadership away, the four files, the restart, caught up, every voter healthy.
var certRollOps = []plan.Op{plan.OpWaitEtcdHealthy, plan.OpEtcdMoveLeader,
	plan.OpUploadFile, plan.OpUploadFile, plan.OpUploadFile, plan.OpUploadFile,
	plan.OpRestartService, plan.OpWaitCaughtUp, plan.OpWaitEtcdHealthy}

// TestEtcdCertificateRoll: renewed member certificates are written to one
// member at a time, each followed by its restart and the waits, the leader
// last with leadership moved away first; the sim (which refuses a restart
// below quorum or of the leader) runs the plan, and after every step at
// most one member holds renewed certificates it does not serve yet, and no
// member gets them before the one before it is back and every voter
// healthy. In the end every member serves its renewed certificates and a
// new plan has nothing to do.
func TestEtcdCertificateRoll(t *testing.T) {
	want := targets(seq("e", 1, 3)...)
	c := upgradeSim("3.6.16")
	c.memberAt("e1").leader = false
	c.memberAt("e2").leader = true
	certs := renewedCerts("e1", "e2", "e3")
	stages, err := planCerts(c, want, certs)
	if err != nil {
		t.Fatal(err)
	}
	if got := stageNames(stages); !slices.Equal(got, []string{"etcd/restart/e1", "etcd/restart/e3", "etcd/restart/e2"}) {
		t.Fatalf("one member at a time, the leader (e2) last: %v", got)
	}
	for _, st := range stages {
		if got := ops(st.Steps); !slices.Equal(got, certRollOps) || st.Parallel != 1 {
			t.Errorf("%s: steps %v parallel %d, want %v serial", st.Name(), got, st.Parallel, certRollOps)
		}
		if want := "renewing the certificates of member " + st.Target; st.Title != want {
			t.Errorf("%s: title %q, want %q", st.Name(), st.Title, want)
		}
		for _, s := range st.Steps {
			if s.Host != st.Target {
				t.Errorf("%s: step %s on %s", st.Name(), s.Op, s.Host)
			}
			if s.Op == plan.OpUploadFile && (!slices.Contains(MemberCertPaths, s.Path) || !s.Secret) {
				t.Errorf("%s: uploads %s (secret %v)", st.Name(), s.Path, s.Secret)
			}
		}
		if last := st.Steps[len(st.Steps)-1]; !slices.Equal(last.Voters, []string{"e1", "e2", "e3"}) {
			t.Errorf("%s: the closing wait is for %v, want every voter", st.Name(), last.Voters)
		}
	}

	steps := flatten(stages)
	quorate := c.hasQuorum()
	for i, s := range steps {
		if err := c.apply(s); err != nil {
			t.Fatalf("step %d (%s on %s): %v", i, s.Op, s.Host, err)
		}
		quorate = quorate || c.hasQuorum()
		if err := c.checkInvariants(quorate); err != nil {
			t.Fatalf("after step %d (%s on %s): %v", i, s.Op, s.Host, err)
		}
		pending := 0
		for _, h := range seq("e", 1, 3) {
			if len(c.certs[h]) > 0 && !maps.Equal(c.certs[h], c.served[h]) {
				pending++
			}
			if c.restarting[h] && s.Op == plan.OpUploadFile && s.Host != h {
				t.Fatalf("step %d writes %s's certificates while %s is not back", i, s.Host, h)
			}
		}
		if pending > 1 {
			t.Fatalf("after step %d (%s on %s) %d members hold renewed certificates they do not serve", i, s.Op, s.Host, pending)
		}
	}
	for _, h := range seq("e", 1, 3) {
		if len(c.served[h]) != len(MemberCertPaths) || c.served[h][MemberCertPaths[0]] != "renewed "+MemberCertPaths[0]+" of "+h {
			t.Errorf("%s serves %v", h, c.served[h])
		}
	}
	if again, err := planCerts(c, want, nil); err != nil || len(again) != 0 {
		t.Errorf("after the roll: %v, %v; want nothing", stageNames(again), err)
	}
}

// TestEtcdCertificateRollWithUpgrade: a member that restarts for another
// reason takes its renewed certificates in that same restart; a member
// that is not running gets them written without a restart, after the roll.
func TestEtcdCertificateRollWithUpgrade(t *testing.T) {
	want := targets(seq("e", 1, 3)...)
	c := upgradeSim("3.6.15")
	certs := renewedCerts("e2", "e3")
	for _, t := range want {
		c.addHosts(t.Name)
	}
	c.inv = maps.Clone(c.hosts)
	c.departing = map[string]string{}
	bins := map[string]EtcdBinary{}
	for _, tg := range want {
		bins[tg.Name] = EtcdBinary{Replaced: true, Version: "3.6.15"}
	}
	stages, _, err := PlanEtcd(EtcdInput{Live: c.facts(), Want: want, Hosts: slices.Sorted(maps.Keys(c.inv)),
		DataDir: "/var/lib/etcd", Service: "etcd", Config: testConfig, Normalize: testNormalize, Version: "3.6.16", Binaries: bins, Certs: certs})
	if err != nil {
		t.Fatal(err)
	}
	if got := stageNames(stages); !slices.Equal(got, []string{"etcd/restart/e2", "etcd/restart/e3", "etcd/restart/e1"}) {
		t.Fatalf("stages %v", got)
	}
	for _, st := range stages {
		uploads := 0
		for _, s := range st.Steps {
			if s.Op == plan.OpUploadFile {
				uploads++
			}
		}
		if wantUploads := map[string]int{"e1": 0, "e2": 4, "e3": 4}[st.Target]; uploads != wantUploads {
			t.Errorf("%s: %d uploads, want %d", st.Name(), uploads, wantUploads)
		}
	}

	// A stopped member: started with the cluster's others by recover, it
	// read the files the prepare stage left; renewed ones given to the
	// planner anyway are written once, with no restart.
	c = upgradeSim("3.6.16")
	c.running["e3"] = false
	stages, err = planCerts(c, want, renewedCerts("e3"))
	if err != nil {
		t.Fatal(err)
	}
	last := stages[len(stages)-1]
	if last.Title != "writing the renewed certificates of member e3" || !slices.Equal(ops(last.Steps), []plan.Op{plan.OpUploadFile, plan.OpUploadFile, plan.OpUploadFile, plan.OpUploadFile}) {
		t.Errorf("stages %v; the last %q %v", stageNames(stages), last.Title, ops(last.Steps))
	}
}
