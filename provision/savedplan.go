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
func WriteSavedPlan(path string, sp *SavedPlan) error {
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return err
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
func (sp *SavedPlan) Check(facts *plan.Facts, fresh *plan.Plan) error {
	if sp.Facts.Digest() != facts.Digest() || sp.Plan.FactsDigest != facts.Digest() {
		what := "their facts differ"
		if changes := sp.Facts.Changes(facts); len(changes) > 0 {
			if len(changes) > maxListedChanges {
				changes = append(changes[:maxListedChanges], fmt.Sprintf("%d more", len(changes)-maxListedChanges))
			}
			what = strings.Join(changes, "; ")
		}
		return fmt.Errorf("the hosts changed since the plan was saved (%s): run kprov plan --out again and review it", what)
	}
	want, err := json.Marshal(sp.Plan)
	if err != nil {
		return err
	}
	got, err := json.Marshal(fresh)
	if err != nil {
		return err
	}
	if !bytes.Equal(want, got) {
		return errors.New("the inventory or templates changed since the plan was saved (the same facts now give another plan): run kprov plan --out again and review it")
	}
	return nil
}
