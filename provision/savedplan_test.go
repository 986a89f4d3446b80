package provision

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kprov/kprov/provision/plan"
)

// TestSavedPlanRedactsAndStillMatches: a saved plan holds "(sensitive)" in
// place of a sensitive value, and the same facts and plan still match it,
// while a real change is still refused.
func TestSavedPlanRedactsAndStillMatches(t *testing.T) {
	redact := strings.NewReplacer(`"s3cr3t"`, `"(sensitive)"`, "s3cr3t", "(sensitive)").Replace
	facts := plan.FreshFacts([]string{"node-1"})
	facts.Nodes = map[string]*plan.NodeFacts{"node-1": {Labels: map[string]string{"team": "s3cr3t"}}}
	pl := &plan.Plan{Cluster: "c", FactsDigest: facts.Digest(), Stages: []plan.Stage{{Kind: plan.StageNodesLabels, Title: "labels", Parallel: 1,
		Steps: []plan.Step{{Op: plan.OpLabelNode, Host: "node-1", Labels: map[string]string{"team": "s3cr3t"}, Reason: "r"}}}}}
	path := filepath.Join(t.TempDir(), "plan.json")
	if err := WriteSavedPlan(path, &SavedPlan{Version: SavedPlanVersion, Facts: facts, Plan: pl}, redact); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cr3t") || !strings.Contains(string(b), `"(sensitive)"`) {
		t.Fatalf("saved plan:\n%s", b)
	}
	sp, err := ReadSavedPlan(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Check(facts, pl, redact); err != nil {
		t.Fatalf("the same facts and plan refused: %v", err)
	}
	pl.Stages[0].Steps[0].Labels["team"] = "other"
	if err := sp.Check(facts, pl, redact); err == nil || !strings.Contains(err.Error(), "another plan") {
		t.Fatalf("a changed plan: %v, want refused", err)
	}
}
