package inventory

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

const secret = "Hunter2 Secret"

// TestSensitiveNeverInDiagnostics: a value given to a sensitive variable by
// -var or KPROV_VAR_* (so never in the file's own text) does not appear in
// any diagnostic, rendered as kprov validate prints them or as JSON, however
// the value was used. Before, each of these printed it in full.
func TestSensitiveNeverInDiagnostics(t *testing.T) {
	cases := map[string]struct{ decl, use, want string }{
		"label value": {
			`variable "team" {` + "\n  default = \"x\"\n  sensitive = true\n}\n",
			`labels = { team = var.team }`, "Invalid label"},
		"computed label value": {
			`variable "team" {` + "\n  default = \"x\"\n  sensitive = true\n}\n",
			`labels = { team = lower(var.team) }`, "Invalid label"},
		"taint": {
			`variable "team" {` + "\n  default = \"x\"\n  sensitive = true\n}\n",
			`taints = ["team=${var.team}:NoSchedule"]`, "Invalid taint"},
		"kubelet argument": {
			`variable "team" {` + "\n  default = \"x\"\n  sensitive = true\n}\n",
			`kubelet_extra_args = { v = var.team }`, "Invalid kubelet_extra_args"},
		"ssh user": {
			`variable "team" {` + "\n  default = \"x\"\n  sensitive = true\n}\n",
			`ssh { user = var.team }`, "Invalid ssh user"},
		"bastion": {
			`variable "team" {` + "\n  default = \"x\"\n  sensitive = true\n}\n",
			`ssh { bastion = "${var.team}@jump" }`, "Invalid bastion"},
		"function error in a local": {
			`variable "team" {` + "\n  default = \"x\"\n  sensitive = true\n}\nlocals {\n  net = cidrhost(upper(var.team), 1)\n}\n",
			`labels = {}`, "Error in function call"},
		"value that does not parse": {
			`variable "team" {` + "\n  default = 22\n  sensitive = true\n}\n",
			`labels = {}`, "Invalid variable value"},
		"value of the wrong type": {
			`variable "team" {` + "\n  default = [\"zone-a\"]\n  sensitive = true\n}\n",
			`labels = {}`, "Invalid variable value"},
	}
	for name, c := range cases {
		src := c.decl + `
cluster "s" { kubernetes_version = "1.37.2" }
host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
  ` + c.use + `
}
`
		for _, given := range []string{"-var", "env"} {
			opts := testOptions()
			value := secret
			if strings.Contains(name, "wrong type") {
				value = `"` + secret + `"`
			}
			if given == "-var" {
				opts.Vars = map[string]string{"team": value}
			} else {
				opts.Environ = func() []string { return []string{EnvVarPrefix + "team=" + value} }
			}
			inv, diags := Parse([]byte(src), "s.hcl", opts)
			if !hasDiag(diags, hcl.DiagError, c.want) {
				t.Errorf("%s (%s): want %q, got %v", name, given, c.want, diags)
				continue
			}
			text := string(renderResult(t, inv, diags))
			for _, d := range diags {
				text += d.Summary + "\n" + d.Detail + "\n"
			}
			for _, leak := range []string{"Hunter2", "HUNTER2", "hunter2", "Secret", "SECRET"} {
				if strings.Contains(text, leak) {
					t.Errorf("%s (%s): %q printed:\n%s", name, given, leak, text)
					break
				}
			}
		}
	}
}

// TestSensitiveValuesAndRedact: a valid inventory records every string a
// sensitive value reached, in the form the Inventory holds it, and Redact
// removes them from whatever a printer prints; values that are not
// sensitive stay.
func TestSensitiveValuesAndRedact(t *testing.T) {
	src := `
variable "team" {
  default   = "blue"
  sensitive = true
}
variable "addr" {
  default   = "2001:DB8::0010"
  sensitive = true
}
variable "tags" {
  default   = { rack = "r7", row = "north" }
  sensitive = true
}
variable "plain" { default = "compute" }
locals {
  shout = upper(var.team)
}
cluster "s" {
  kubernetes_version     = "1.37.2"
  control_plane_endpoint = "api.example.internal"
}
host "cp-1" {
  address            = "192.0.2.11"
  roles              = ["master"]
  labels             = { team = var.team, loud = local.shout, tier = "web" }
  taints             = ["dedicated=${var.team}:NoSchedule", "gpu=true:NoExecute"]
  kubelet_extra_args = { max-pods = "110", v = "${var.team}-2" }
}
host "worker-1" {
  address = var.addr
  roles   = [var.plain]
  labels  = var.tags
  ssh { identity_file = "keys/${var.team}" }
}
`
	inv, diags := Parse([]byte(src), "/inv/s.hcl", testOptions())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	got := inv.SensitiveValues()
	for _, want := range []string{"blue", "BLUE", "2001:DB8::0010", "2001:db8::10", "r7", "north", "rack", "row", "blue-2", "dedicated=blue:NoSchedule", "/inv/keys/blue"} {
		if !slices.Contains(got, want) {
			t.Errorf("SensitiveValues() = %q, missing %q", got, want)
		}
	}
	for _, plain := range []string{"compute", "web", "tier", "110", "gpu=true:NoExecute", "dedicated", "master"} {
		if slices.Contains(got, plain) {
			t.Errorf("SensitiveValues() holds %q, which is not sensitive", plain)
		}
	}
	cp, w := inv.Host("cp-1"), inv.Host("worker-1")
	i := slices.IndexFunc(cp.Taints, func(t Taint) bool { return t.Key == "dedicated" })
	redacted := map[string]string{
		"label team":       cp.Labels["team"],
		"label loud":       cp.Labels["loud"],
		"label rack":       w.Labels["rack"],
		"taint":            cp.Taints[i].String(),
		"taint value":      cp.Taints[i].Value,
		"kubelet argument": cp.KubeletExtraArgs["v"],
		"address":          w.Address,
		"identity file":    w.SSH.IdentityFile,
	}
	for field, v := range redacted {
		if got := inv.Redact(v); got != Redacted {
			t.Errorf("Redact(%s %q) = %q, want %q", field, v, got, Redacted)
		}
	}
	line := `cp-1 labels team="blue" tier=web taint dedicated=blue:NoSchedule`
	if got, want := inv.Redact(line), "cp-1 labels team=\"(sensitive)\" tier=web taint (sensitive)"; got != want {
		t.Errorf("Redact(%q) = %q, want %q", line, got, want)
	}
	if got := inv.Redact(cp.Labels["tier"]); got != "web" {
		t.Errorf("a value that is not sensitive was redacted: %q", got)
	}
	// Without sensitive variables nothing is recorded and Redact changes nothing.
	plain := mustLoad(t, "testdata/valid/ha-stacked.hcl", testOptions())
	if len(plain.SensitiveValues()) != 0 || plain.Redact("cp-a 192.0.2.11") != "cp-a 192.0.2.11" {
		t.Errorf("no sensitive variables: %q", plain.SensitiveValues())
	}
	var nilInv *Inventory
	if nilInv.Redact("x") != "x" {
		t.Error("Redact on a nil inventory")
	}
}

// TestSensitiveForEachAndNames: a sensitive value may not generate hosts or
// name them, since names are printed everywhere.
func TestSensitiveForEachAndNames(t *testing.T) {
	cases := map[string]struct{ decl, block, want string }{
		"for_each": {
			`variable "workers" {` + "\n  default = [1, 2]\n  sensitive = true\n}\n",
			`dynamic "host" {
  for_each = var.workers
  labels   = ["w-${host.key}"]
  content {
    address = "192.0.2.${20 + host.value}"
    roles   = ["compute"]
  }
}`, "Sensitive for_each"},
		"host name": {
			`variable "prefix" {` + "\n  default = \"w\"\n  sensitive = true\n}\n",
			`dynamic "host" {
  for_each = [1, 2]
  labels   = ["${var.prefix}-${host.key}"]
  content {
    address = "192.0.2.${20 + host.value}"
    roles   = ["compute"]
  }
}`, "Sensitive block label"},
	}
	for name, c := range cases {
		src := c.decl + `
cluster "s" { kubernetes_version = "1.37.2" }
host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master"]
}
` + c.block + "\n"
		_, diags := Parse([]byte(src), "s.hcl", testOptions())
		if !hasDiag(diags, hcl.DiagError, c.want) {
			t.Errorf("%s: want %q, got %v", name, c.want, diags)
		}
	}
}
