//go:build e2e

package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/lab"
)

// TestPlanOnLab plans against real, fresh lab machines over SSH with strict
// host keys: every host is to be created, etcd forms one learner at a time.
// Then it checks the refusals: a stopped machine and a changed host key.
func TestPlanOnLab(t *testing.T) {
	specs, err := lab.TopologyMachines("ha-external")
	if err != nil {
		t.Fatal(err)
	}
	l := UpLab(t, specs)
	inv := l.InventoryPath()

	out := kprov(t, "plan", "-f", inv)
	for _, want := range []string{
		"+ etcd-1", "+ master-1", "+ compute-1",
		"etcd/bootstrap/etcd-1: starting member 1/3 (etcd-1) as a new cluster (serial; 1 voting, quorum 1, tolerates 0)",
		"etcd/add/etcd-2: adding member 2/3 (etcd-2) (serial; 1 voting, quorum 1, tolerates 0)",
		"etcd/add/etcd-3: adding member 3/3 (etcd-3) (serial; 2 voting, quorum 2, tolerates 0)",
		"control-plane/init/master-1",
		"control-plane/join/master-2",
		"Plan: 7 hosts to prepare, 3 etcd members to add, 1 masters to join, 2 nodes to join, 0 etcd restarts, 0 to remove",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "planned offline") {
		t.Error("an online plan says it was planned offline")
	}

	// A stopped machine: the plan names it and why, and nothing else happens.
	ctx := context.Background()
	if err := l.Stop(ctx, "compute-1", 0); err != nil {
		t.Fatal(err)
	}
	out, err = kprovErr(t, "plan", "-f", inv)
	if err == nil || !strings.Contains(out, "compute-1:") || !strings.Contains(out, "could not be reached") {
		t.Fatalf("plan with a stopped host: %v\n%s", err, out)
	}
	if err := l.Start(ctx, "compute-1", 2*time.Minute); err != nil {
		t.Fatal(err)
	}

	// A changed host key is refused with both fingerprints, never skipped.
	kh, err := os.ReadFile(l.KnownHostsPath())
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.Machine("etcd-2")
	if err != nil {
		t.Fatal(err)
	}
	other, err := l.Machine("etcd-3")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(string(kh)), "\n") {
		if strings.HasPrefix(line, m.Address.String()+" ") {
			// Pin etcd-2's address to etcd-3's key: what a swapped machine looks like.
			line = m.Address.String() + " " + strings.TrimSpace(other.HostKey)
		}
		lines = append(lines, line)
	}
	if err := os.WriteFile(l.KnownHostsPath(), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = kprovErr(t, "plan", "-f", inv)
	if err == nil || !strings.Contains(out, "etcd-2") || !strings.Contains(out, "SHA256:") {
		t.Fatalf("plan with a changed host key must stop naming the host and fingerprints: %v\n%s", err, out)
	}
	if err := os.WriteFile(l.KnownHostsPath(), kh, 0o600); err != nil {
		t.Fatal(err)
	}
}
