package provision

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
)

// TestProbeReportsEveryStartedUnit plans every example topology on fresh
// hosts and checks that the probe reports the state of each unit the plan
// starts: a unit it does not report looks inactive on every run, so a
// converged cluster would be planned to start it again and never show
// "No changes".
func TestProbeReportsEveryStartedUnit(t *testing.T) {
	probed := strings.Fields(probedServices)
	files, _ := filepath.Glob("../examples/*.kprov.hcl")
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	seen := 0
	for _, f := range files {
		inv, diags := inventory.Load(f, inventory.Options{HomeDir: t.TempDir(), Environ: func() []string { return nil }})
		if diags.HasErrors() {
			t.Fatalf("%s: %v", f, diags)
		}
		var names []string
		for _, h := range inv.Hosts {
			names = append(names, h.Name)
		}
		st, _, err := pki.Ensure(filepath.Join(t.TempDir(), "state"), roles.PKIRequest(inv), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		p, err := roles.Plan(inv, plan.FreshFacts(names), st, roles.PlanOptions{Parallel: 10})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, stage := range p.Stages {
			for _, s := range stage.Steps {
				if s.Op != plan.OpStartService {
					continue
				}
				seen++
				if !slices.Contains(probed, s.Service) && !slices.Contains(probed, strings.TrimSuffix(s.Service, ".service")) {
					t.Errorf("%s: the plan starts %s on %s, but the probe does not report it (probedServices)", filepath.Base(f), s.Service, s.Host)
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("no plan started a unit")
	}
}
