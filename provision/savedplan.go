package provision

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/kprov/kprov/internal/atomicfile"
	"github.com/kprov/kprov/provision/plan"
)

// SavedPlan is what kprov plan --out writes: the plan and the facts it was
// made from, so a later apply can refuse it when the hosts changed since.
type SavedPlan struct {
	Version   int         `json:"version"`
	Inventory string      `json:"inventory"`
	Facts     *plan.Facts `json:"facts"`
	Plan      *plan.Plan  `json:"plan"`
}

// SavedPlanVersion is the format of a plan file; a file of another version is refused.
const SavedPlanVersion = 1

// maxListedChanges bounds how many changed facts a refused saved plan names.
const maxListedChanges = 5

// ReadSavedPlan reads a plan file written by WriteSavedPlan.
func ReadSavedPlan(path string) (*SavedPlan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plan file: %w", err)
	}
	var sp SavedPlan
	if err := json.Unmarshal(b, &sp); err != nil {
		return nil, fmt.Errorf("plan file %s: %w", path, err)
	}
	if sp.Version != SavedPlanVersion || sp.Plan == nil || sp.Facts == nil {
		return nil, fmt.Errorf("plan file %s: not a kprov plan (version %d)", path, sp.Version)
	}
	return &sp, nil
}

// WriteSavedPlan writes the plan file 0600 (it names every host and file of
// the cluster) through a temporary name, so a crash never leaves half a plan.
// redact (the inventory's Redact, or nil) removes the values of sensitive
// variables: the file holds "(sensitive)" in their place, and Check
// compares plans in that same form.
func WriteSavedPlan(path string, sp *SavedPlan, redact func(string) string) error {
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return err
	}
	if redact != nil {
		b = []byte(redact(string(b)))
		if !json.Valid(b) {
			return errors.New("save plan: redacting sensitive values left invalid JSON")
		}
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save plan: %w", err)
	}
	return nil
}

// Check refuses a saved plan when the hosts changed since it was made
// (other facts), or when the same facts now give another plan (the
// inventory or templates changed). The plan applied is the fresh one, which
// carries the file contents a saved plan leaves out; it equals the saved one.
// redact is what WriteSavedPlan was given: the fresh facts and plan are
// compared in the form the file holds them.
func (sp *SavedPlan) Check(facts *plan.Facts, fresh *plan.Plan, redact func(string) string) error {
	if redact == nil {
		redact = func(s string) string { return s }
	}
	same := func(saved, live any) bool {
		a, err1 := json.Marshal(saved)
		b, err2 := json.Marshal(live)
		return err1 == nil && err2 == nil && bytes.Equal(a, []byte(redact(string(b))))
	}
	if !same(sp.Facts, facts) || sp.Plan.FactsDigest != facts.Digest() {
		what := "their facts differ"
		if changes := sp.Facts.Changes(facts); len(changes) > 0 {
			if len(changes) > maxListedChanges {
				changes = append(changes[:maxListedChanges], fmt.Sprintf("%d more", len(changes)-maxListedChanges))
			}
			what = strings.Join(changes, "; ")
		}
		return fmt.Errorf("the hosts changed since the plan was saved (%s): run kprov plan --out again and review it", what)
	}
	if !same(sp.Plan, fresh) {
		return errors.New("the inventory or templates changed since the plan was saved (the same facts now give another plan): run kprov plan --out again and review it")
	}
	return nil
}
