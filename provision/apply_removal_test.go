package provision

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// removalPlan is a removal as the planner makes it: the etcd side on a
// member that stays (a command stands in for it here), then stop and wipe
// on the departing member's machine outside the inventory.
func removalPlan(departing string) *plan.Plan {
	return &plan.Plan{Stages: []plan.Stage{{Kind: plan.StageEtcdRemove, Target: "etcd-1", Parallel: 1, Steps: []plan.Step{
		{Op: plan.OpRunCommand, Host: "etcd-2", Command: "remove"},
		{Op: plan.OpStopService, Host: departing, Service: "etcd.service"},
		{Op: plan.OpWipeDataDir, Host: departing, Path: "/var/lib/etcd"},
	}}}}
}

// A serial stage runs its hosts in plan order and stops at the first that
// fails: when a removal through a staying member fails, the departing
// member is neither stopped nor wiped (it may still be a member).
func TestApplySerialStageStopsAtFirstFailedHost(t *testing.T) {
	inv := applyInventory("etcd-2")
	departing := &inventory.Host{Name: plan.DepartingHostName("etcd-1", "192.0.2.9"), Address: "192.0.2.9", Roles: []inventory.Role{inventory.RoleEtcd}}
	via := newApplyHost(t, "etcd-2", applyCall{kind: "run", arg: "remove", err: errors.New("exit status 1")})
	gone := newApplyHost(t, departing.Name) // expects nothing
	rep, err := Apply(context.Background(), removalPlan(departing.Name), applyConnector{"etcd-2": via, departing.Name: gone},
		ApplyOptions{Inventory: inv, Departing: []*inventory.Host{departing}})
	if err == nil || rep.FailedHost != "etcd-2" {
		t.Fatalf("apply: %v (failed host %q), want the removal's failure on etcd-2", err, rep.FailedHost)
	}
	if strings.Contains(err.Error(), departing.Name) {
		t.Errorf("error names the departing machine, which must not have been touched: %v", err)
	}
}

// The departing member's machine is not in the inventory: apply connects
// to it only because the facts put it in ApplyOptions.Departing, and runs
// the stop and the wipe there after the removal.
func TestApplyDepartingMachine(t *testing.T) {
	inv := applyInventory("etcd-2")
	inv.Etcd.DataDir = "/var/lib/etcd"
	departing := &inventory.Host{Name: plan.DepartingHostName("etcd-1", "192.0.2.9"), Address: "192.0.2.9", Roles: []inventory.Role{inventory.RoleEtcd}}
	via := newApplyHost(t, "etcd-2", applyCall{kind: "run", arg: "remove", stdout: "removed"})
	gone := newApplyHost(t, departing.Name,
		applyCall{kind: "run", arg: scriptStopService("etcd.service"), stdout: "changed\n"},
		applyCall{kind: "run", arg: scriptWipeDataDir("/var/lib/etcd"), stdout: "changed\n"})
	conn := applyConnector{"etcd-2": via, departing.Name: gone}
	if _, err := Apply(context.Background(), removalPlan(departing.Name), conn, ApplyOptions{Inventory: inv, Departing: []*inventory.Host{departing}}); err != nil {
		t.Fatal(err)
	}

	// Without it in Departing, the machine is no host of the run's.
	via2 := newApplyHost(t, "etcd-2", applyCall{kind: "run", arg: "remove"})
	_, err := Apply(context.Background(), removalPlan(departing.Name), applyConnector{"etcd-2": via2, departing.Name: newApplyHost(t, departing.Name)}, ApplyOptions{Inventory: inv})
	if err == nil || !strings.Contains(err.Error(), "host "+departing.Name+" is not in the inventory") {
		t.Errorf("apply to a machine outside the inventory and not departing: %v", err)
	}
}

// DepartingHosts lists only the machines gathering reached and tied to a
// departing member, named as the planner addresses them.
func TestDepartingHosts(t *testing.T) {
	facts := &plan.Facts{Etcd: []plan.EtcdMember{
		{Name: "etcd-2", PeerURL: "https://192.0.2.2:2380", Host: "etcd-2", HostReachable: true, Healthy: true},
		{Name: "etcd-1", PeerURL: "https://192.0.2.9:2380", Host: "etcd-1@192.0.2.9", Departing: true, HostReachable: true, Healthy: true},
		{Name: "etcd-3", PeerURL: "https://192.0.2.10:2380"},                                             // dead, on no host
		{Name: "etcd-4", PeerURL: "https://192.0.2.11:2380", Host: "etcd-4@192.0.2.11", Departing: true}, // not reached
	}}
	hs := DepartingHosts(facts)
	if len(hs) != 1 || hs[0].Name != "etcd-1@192.0.2.9" || hs[0].Address != "192.0.2.9" {
		t.Fatalf("departing hosts %+v", hs)
	}
}
