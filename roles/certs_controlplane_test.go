package roles

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/provision/plan"
)

// RenewControlPlaneStages: one serial stage per master named, the first
// master last; kubeadm renews before anything restarts; with stacked etcd
// the member restarts first and every member is healthy again before the
// API server restarts; the API server answers before the controller
// manager and the scheduler restart; the admin kubeconfig is fetched
// again from the first master only.
func TestRenewControlPlaneStages(t *testing.T) {
	for _, tc := range []struct {
		example string
		stacked bool
	}{{"ha-stacked", true}, {"ha-external", false}} {
		inv := loadInventory(t, filepath.Join("..", "examples", tc.example+".kprov.hcl"))
		masters := inv.Topology.Masters
		stages := RenewControlPlaneStages(inv, append([]string{"not-a-master"}, masters...))
		var order []string
		for _, s := range stages {
			order = append(order, s.Target)
			if s.Kind != plan.StageCertsControlPlane || s.Parallel != 1 {
				t.Errorf("%s: stage %s (parallel %d), want %s one at a time", tc.example, s.Name(), s.Parallel, plan.StageCertsControlPlane)
			}
			var got []string
			for _, st := range s.Steps {
				if st.Host != s.Target {
					t.Errorf("%s: %s addressed to %s in %s's stage", tc.example, st.Op, st.Host, s.Target)
				}
				what := string(st.Op)
				switch {
				case st.Command == RenewKubeadmCertsCommand:
					what += " renew"
				case st.Op == plan.OpRunCommand:
					what += " " + regexp.MustCompile(`\^([a-z-]+)\(`).FindStringSubmatch(st.Command)[1]
				case st.Op == plan.OpWaitEtcdHealthy:
					// Before the member's restart no member is starting;
					// after it, the restarted one is.
					starting := []string{s.Target}
					if len(got) > 0 && got[len(got)-1] == "run-command renew" {
						starting = nil
					}
					if !slices.Equal(st.Voters, masters) || !slices.Equal(st.Starting, starting) {
						t.Errorf("%s: health wait on %v starting %v, want %v", tc.example, st.Voters, st.Starting, starting)
					}
				}
				got = append(got, what)
			}
			api := string(plan.OpWaitAPIServer)
			want := []string{api, "run-command renew"}
			if tc.stacked {
				want = append(want, "wait-etcd-healthy", "run-command etcd", "wait-etcd-healthy")
			}
			want = append(want, "run-command kube-apiserver", api, "run-command kube-controller-manager", "run-command kube-scheduler")
			if s.Target == masters[0] {
				want = append(want, "fetch-kubeconfig")
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: %s's steps %v, want %v", tc.example, s.Target, got, want)
			}
		}
		if want := append(slices.Clone(masters[1:]), masters[0]); !slices.Equal(order, want) {
			t.Errorf("%s: masters in the order %v, want %v", tc.example, order, want)
		}
	}
	if s := RenewControlPlaneStages(loadInventory(t, filepath.Join("..", "examples", "ha-stacked.kprov.hcl")), nil); s != nil {
		t.Errorf("no master named: %v", s)
	}
}

// The restart command, run by sh against a stand-in for the kubelet (a
// loop that starts kube-scheduler again whenever it exits): it stops the
// running process and returns once another one runs; with no process of
// that name it fails, saying so.
func TestRestartComponentCommand(t *testing.T) {
	if _, err := exec.LookPath("pgrep"); err != nil {
		t.Fatal("pgrep (procps) is needed: scripts/setup installs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A name no other test or process uses.
	component := "kube-scheduler-kprovtest"
	kubelet := exec.CommandContext(ctx, "bash", "-c", `while :; do (exec -a `+component+` sleep 600); done`)
	if err := kubelet.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); kubelet.Wait() }()
	for {
		if out, _ := exec.Command("pgrep", "-f", "^"+component+"( |$)").Output(); len(out) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the stand-in never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	out, err := exec.CommandContext(ctx, "sh", "-c", RestartComponentCommand(component)).CombinedOutput()
	if err != nil || !regexp.MustCompile(`^restarted: pid \d+, now \d+\n$`).Match(out) {
		t.Errorf("restart: %v\n%s", err, out)
	}
	if f := strings.Fields(string(out)); len(f) == 5 && strings.TrimSuffix(f[2], ",") == f[4] {
		t.Errorf("the same process before and after: %s", out)
	}
	out, err = exec.CommandContext(ctx, "sh", "-c", RestartComponentCommand("kube-nothing-kprovtest")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "kube-nothing-kprovtest is not running") {
		t.Errorf("restart of a component that does not run: %v\n%s", err, out)
	}
	// The stand-in's sleeps end with it.
	exec.Command("pkill", "-f", "^"+component+"( |$)").Run()
}
