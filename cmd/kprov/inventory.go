package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/term"

	"github.com/kprov/kprov/inventory"
)

// parseVarFlags turns repeated -var NAME=VALUE flags into a map; the last one wins.
func parseVarFlags(vars []string) (map[string]string, error) {
	out := make(map[string]string, len(vars))
	for _, kv := range vars {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return nil, usageError("-var %q: want NAME=VALUE", kv)
		}
		out[name] = val
	}
	return out, nil
}

// loadInventory reads the inventory named by -f with the -var values.
func (g *globalOptions) loadInventory() (*inventory.Inventory, hcl.Diagnostics, error) {
	vars, err := parseVarFlags(g.vars)
	if err != nil {
		return nil, nil, err
	}
	inv, diags := inventory.Load(g.file, inventory.Options{Vars: vars})
	if inv != nil {
		for _, r := range g.redactors {
			r.set(inv.Redact)
		}
	}
	return inv, diags, nil
}

// writeDiagnostics renders diagnostics the way Terraform does: file:line:col,
// a source snippet, the summary and the detail.
func writeDiagnostics(w io.Writer, inv *inventory.Inventory, diags hcl.Diagnostics) {
	if len(diags) == 0 {
		return
	}
	var files map[string]*hcl.File
	if inv != nil {
		files = inv.Files
	}
	width, color := uint(0), false
	if f, ok := asFile(w); ok && term.IsTerminal(int(f.Fd())) {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil {
			width = uint(cols)
		}
		color = os.Getenv("NO_COLOR") == ""
	}
	_ = hcl.NewDiagnosticTextWriter(w, files, width, color).WriteDiagnostics(diags)
}

// diagnosticCounts returns the number of errors and warnings.
func diagnosticCounts(diags hcl.Diagnostics) (errs, warns int) {
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs++
		} else {
			warns++
		}
	}
	return errs, warns
}

// jsonDiagnostic is one diagnostic in --json output.
type jsonDiagnostic struct {
	Severity  string `json:"severity"`
	Summary   string `json:"summary"`
	Detail    string `json:"detail,omitempty"`
	File      string `json:"file,omitempty"`
	Line      int    `json:"line,omitempty"`
	Column    int    `json:"column,omitempty"`
	EndLine   int    `json:"end_line,omitempty"`
	EndColumn int    `json:"end_column,omitempty"`
}

func toJSONDiagnostics(diags hcl.Diagnostics) []jsonDiagnostic {
	out := make([]jsonDiagnostic, 0, len(diags))
	for _, d := range diags {
		jd := jsonDiagnostic{Severity: "warning", Summary: d.Summary, Detail: d.Detail}
		if d.Severity == hcl.DiagError {
			jd.Severity = "error"
		}
		if d.Subject != nil {
			jd.File = d.Subject.Filename
			jd.Line, jd.Column = d.Subject.Start.Line, d.Subject.Start.Column
			jd.EndLine, jd.EndColumn = d.Subject.End.Line, d.Subject.End.Column
		}
		out = append(out, jd)
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}
