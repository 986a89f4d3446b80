package inventory

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// testOptions makes Load independent of the machine: a fixed home and environment.
func testOptions() Options {
	env := map[string]string{"KPROV_TEST_ZONE": "zone-a"}
	return Options{
		HomeDir:   "/home/test",
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Environ:   func() []string { return nil },
	}
}

// renderResult is what a golden file holds: the diagnostics as kprov validate
// prints them, then the topology summary and each host's final roles, labels and taints.
func renderResult(t *testing.T, inv *Inventory, diags hcl.Diagnostics) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := hcl.NewDiagnosticTextWriter(&buf, inv.Files, 0, false).WriteDiagnostics(diags); err != nil {
		t.Fatal(err)
	}
	if diags.HasErrors() {
		return buf.Bytes()
	}
	buf.WriteString("topology: " + inv.Topology.Summary() + "\n")
	buf.WriteString("api endpoint: " + inv.Cluster.APIEndpointSummary() + "\n")
	for _, a := range append(slices.Clone(inv.Artifacts), inv.Images...) {
		// The path relative to the inventory's directory keeps goldens machine-independent.
		p := a.Path
		if rel, err := filepath.Rel(inv.Dir, p); err == nil && !strings.HasPrefix(rel, "..") {
			p = "INVENTORY_DIR/" + rel
		}
		buf.WriteString("artifact " + a.Name + " " + p + " sha256=" + a.SHA256 + "\n")
	}
	for _, h := range inv.Hosts {
		buf.WriteString(h.Name + " " + h.Address + " roles=" + rolesString(h))
		for _, k := range keys(h.Labels) {
			buf.WriteString(" label=" + k + "=" + h.Labels[k])
		}
		for _, tt := range h.Taints {
			buf.WriteString(" taint=" + tt.String())
		}
		if c := h.Containerd; c != (Containerd{}) {
			oom := "facts"
			if c.RestrictOOMScoreAdj != nil {
				oom = fmt.Sprint(*c.RestrictOOMScoreAdj)
			}
			fmt.Fprintf(&buf, " containerd=cgroup_driver:%q,snapshotter:%q,restrict_oom_score_adj:%s", c.CgroupDriver, c.Snapshotter, oom)
		}
		buf.WriteString("\n")
	}
	return buf.Bytes()
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*/*.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			inv, diags := Load(path, testOptions())
			if inv == nil {
				t.Fatalf("Load returned no inventory: %v", diags)
			}
			wantErrors := strings.Contains(path, "/invalid/")
			if diags.HasErrors() != wantErrors {
				t.Errorf("HasErrors = %v, want %v: %v", diags.HasErrors(), wantErrors, diags)
			}
			got := renderResult(t, inv, diags)
			golden := strings.TrimSuffix(path, ".hcl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./inventory -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update if the change is intended)\n--- got ---\n%s\n--- want ---\n%s", golden, got, want)
			}
		})
	}
}
