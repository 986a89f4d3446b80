package provision

import (
	"context"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/provision/ssh"
)

// TestApplyRemovesNodes: a removal stage drains the node, then deletes its
// Node, both with kubectl on the master; a node already gone changes
// nothing; a drain that PodDisruptionBudgets or a pod without a controller
// hold up fails naming each pod once, and the Node is not deleted.
func TestApplyRemovesNodes(t *testing.T) {
	inv := applyInventory("m")
	inv.Hosts[0].Roles = []inventory.Role{inventory.RoleMaster}
	stage := func(node string) *plan.Plan {
		return &plan.Plan{Stages: []plan.Stage{{Kind: plan.StageNodesRemove, Target: node, Parallel: 1, Steps: []plan.Step{
			{Op: plan.OpDrainNode, Host: "m", Node: node},
			{Op: plan.OpDeleteNode, Host: "m", Node: node},
		}}}}
	}

	m := newApplyHost(t, "m",
		applyCall{kind: "run", arg: scriptDrainNode("compute-3"), stdout: "node/compute-3 cordoned\nevicting pod default/web-1\npod/web-1 evicted\nnode/compute-3 drained\n"},
		applyCall{kind: "run", arg: scriptDeleteNodeIfPresent("compute-3"), stdout: "changed\n"},
	)
	rep, err := Apply(context.Background(), stage("compute-3"), applyConnector{"m": m}, ApplyOptions{Inventory: inv})
	if err != nil || len(rep.Changes["m"]) != 2 {
		t.Fatalf("drain and delete: %v, changes %v", err, rep.Changes)
	}

	// Run again after the Node went: nothing changes.
	m = newApplyHost(t, "m",
		applyCall{kind: "run", arg: scriptDrainNode("compute-3"), stdout: nodeGone + "\n"},
		applyCall{kind: "run", arg: scriptDeleteNodeIfPresent("compute-3")},
	)
	rep, err = Apply(context.Background(), stage("compute-3"), applyConnector{"m": m}, ApplyOptions{Inventory: inv})
	if err != nil || len(rep.Changes["m"]) != 0 {
		t.Fatalf("a node already gone: %v, changes %v", err, rep.Changes)
	}

	// Held up: kubectl's own lines (its retries repeat the first pod).
	held := `node/compute-4 cordoned
error: unable to drain node "compute-4" due to error: cannot delete Pods that declare no controller (use --force to override): default/bare, kube-system/debug, continuing command...
There are pending nodes to be drained:
 compute-4
evicting pod default/web-2
error when evicting pods/"web-2" -n "default" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
evicting pod default/web-2
error when evicting pods/"web-2" -n "default" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
error: unable to drain node "compute-4" due to error: global timeout reached: 5m0s, continuing command...
`
	m = newApplyHost(t, "m",
		applyCall{kind: "run", arg: scriptDrainNode("compute-4"), stdout: held, err: &ssh.ExitError{Command: "kubectl drain", Status: 1}},
	)
	_, err = Apply(context.Background(), stage("compute-4"), applyConnector{"m": m}, ApplyOptions{Inventory: inv})
	want := "drain compute-4: pods that could not be evicted: default/bare (no controller: deleting it would lose it), kube-system/debug (no controller: deleting it would lose it), default/web-2 (Cannot evict pod as it would violate the pod's disruption budget); let those pods go"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("held-up drain: %v\nwant it to contain %q", err, want)
	}
}
