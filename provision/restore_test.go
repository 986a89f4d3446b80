package provision

import (
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/provision/backup"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
)

// TestCheckRestoreBackup: a backup of another cluster, or of the same
// cluster with the other etcd mode, is refused naming both sides.
func TestCheckRestoreBackup(t *testing.T) {
	inv := exampleCluster(t, "ha-external", time.Now()).Inventory
	ok := &backup.Manifest{Cluster: inv.Cluster.Name, EtcdMode: "external"}
	if err := CheckRestoreBackup(inv, ok); err != nil {
		t.Fatalf("a backup of this cluster: %v", err)
	}
	other := &backup.Manifest{Cluster: "elsewhere", EtcdMode: "external"}
	if err := CheckRestoreBackup(inv, other); err == nil || !strings.Contains(err.Error(), `the backup is of cluster "elsewhere", not "`+inv.Cluster.Name+`"`) {
		t.Errorf("another cluster: %v", err)
	}
	stacked := &backup.Manifest{Cluster: inv.Cluster.Name, EtcdMode: "stacked"}
	if err := CheckRestoreBackup(inv, stacked); err == nil || !strings.Contains(err.Error(), "stacked etcd") || !strings.Contains(err.Error(), "describes external etcd") {
		t.Errorf("another etcd mode: %v", err)
	}
}

// TestStaleNodes: only nodes that are no Kubernetes host of the inventory
// go; the inventory's own nodes stay whatever their state.
func TestStaleNodes(t *testing.T) {
	inv := exampleCluster(t, "ha-external", time.Now()).Inventory
	nodes := map[string]*plan.NodeFacts{}
	var want []string
	for _, h := range inv.Hosts {
		if h.IsNode() {
			nodes[h.Name] = &plan.NodeFacts{}
		}
	}
	for _, old := range []string{"old-master-1", "old-worker-2"} {
		nodes[old] = &plan.NodeFacts{Ready: false}
		want = append(want, old)
	}
	if got := roles.StaleNodes(inv, nodes); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("stale nodes %v, want %v", got, want)
	}
}
