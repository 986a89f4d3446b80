package provision

import (
	"slices"
	"testing"

	"github.com/kprov/kprov/provision/plan"
)

// TestEveryOperationHasAnExecutor: the plan vocabulary and the executor
// table name the same operations, so a planner can never emit a step that
// apply does not know, and no executor is left for an op nobody plans.
func TestEveryOperationHasAnExecutor(t *testing.T) {
	ops := plan.Ops()
	if len(ops) < 17 {
		t.Fatalf("plan.Ops() lists %d operations, want at least the 17 kprov plans", len(ops))
	}
	for _, op := range ops {
		if executors[op] == nil {
			t.Errorf("operation %s has no executor", op)
		}
	}
	for op := range executors {
		if !slices.Contains(ops, op) {
			t.Errorf("executor for %s, which the plan vocabulary does not know", op)
		}
	}
}
