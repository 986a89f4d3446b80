package inventory

import (
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

const nestingTail = `
cluster "deep" { kubernetes_version = "1.37.2" }
host "cp-1" {
  address = "192.0.2.11"
  roles   = ["master", "compute"]
}
`

// TestNestingTooDeep: sources that HCL would parse or evaluate one stack
// frame per level are refused before that, at the line where the limit is
// passed. 60,000 levels overflowed Go's stack before (issue 12, item 10);
// MaxNesting+10 levels were accepted.
func TestNestingTooDeep(t *testing.T) {
	n := MaxNesting + 10
	cases := map[string]string{
		"brackets 60000":    strings.Repeat("[", 60000) + strings.Repeat("]", 60000),
		"brackets":          strings.Repeat("[", n) + strings.Repeat("]", n),
		"objects":           strings.Repeat("{a=", n) + "1" + strings.Repeat("}", n),
		"calls":             strings.Repeat("abs(", n) + "1" + strings.Repeat(")", n),
		"plus":              "1" + strings.Repeat("+1", n),
		"plus over lines":   "(1" + strings.Repeat("\n+1", n) + ")",
		"not":               strings.Repeat("!", n) + "true",
		"negation":          strings.Repeat("-", n) + "1",
		"conditionals":      strings.Repeat("true ? 1 : ", n) + "2",
		"indexes":           "local.l" + strings.Repeat("[local.z]", n),
		"interpolations":    strings.Repeat(`"${`, n) + "1" + strings.Repeat(`}"`, n),
		"directives":        `"` + strings.Repeat("%{ if true }a", n) + strings.Repeat("%{ endif }", n) + `"`,
		"heredoc templates": "<<EOT\n" + strings.Repeat("${[", n) + strings.Repeat("]}", n) + "\nEOT\n",
	}
	for name, expr := range cases {
		src := "locals {\n  l = [[1]]\n  z = 0\n  x = " + expr + "\n}\n" + nestingTail
		_, diags := Parse([]byte(src), "deep.hcl", testOptions())
		if !hasDiag(diags, hcl.DiagError, "Nesting too deep") {
			t.Errorf("%s: no nesting error in %v", name, diags)
			continue
		}
		if d := diags[0]; d.Subject == nil || d.Subject.Filename != "deep.hcl" || d.Subject.Start.Line < 4 {
			t.Errorf("%s: the error should point into deep.hcl at line 4 or later: %v", name, d.Subject)
		}
	}
	// A block nesting past the limit is refused the same way.
	blocks := strings.Repeat("b {\n", n) + strings.Repeat("}\n", n)
	if _, diags := Parse([]byte(blocks+nestingTail), "deep.hcl", testOptions()); !hasDiag(diags, hcl.DiagError, "Nesting too deep") {
		t.Errorf("nested blocks: %v", diags)
	}
}

// TestNestingWithinLimit: nesting below the limit, and long but flat
// expressions, are fine.
func TestNestingWithinLimit(t *testing.T) {
	n := MaxNesting - 10
	var longObject string
	for i := range 1000 {
		longObject += "  k" + strconv.Itoa(i) + " = 1 + 1 + 1\n"
	}
	cases := map[string]string{
		"brackets":       "length(" + strings.Repeat("[", n) + strings.Repeat("]", n) + ")",
		"long tuple":     "length([" + strings.Repeat("1+1, ", 2000) + "1])",
		"long object":    "length(keys({\n" + longObject + "}))",
		"interpolations": `"` + strings.Repeat("${1}", 2000) + `"`,
		"sum":            "1" + strings.Repeat("+1", n),
	}
	for name, expr := range cases {
		src := "locals {\n  x = " + expr + "\n}\n" + nestingTail
		if _, diags := Parse([]byte(src), "ok.hcl", testOptions()); diags.HasErrors() {
			t.Errorf("%s: %v", name, diags)
		}
	}
}

// TestNestingInVariables: a -var or KPROV_VAR_* value is refused by name,
// and a chain of locals cannot build a value past the limit either.
func TestNestingInVariables(t *testing.T) {
	src := []byte(`variable "zones" { default = ["a"] }` + "\n" + nestingTail)
	deep := strings.Repeat("[", 60000) + strings.Repeat("]", 60000)

	opts := testOptions()
	opts.Vars = map[string]string{"zones": deep}
	_, diags := Parse(src, "vars.hcl", opts)
	if !hasDiag(diags, hcl.DiagError, "Invalid variable value") || !strings.Contains(diags.Error(), `-var zones sets variable "zones": the value nests`) {
		t.Errorf("-var: %v", diags)
	}
	if len(diags.Error()) > 2000 {
		t.Errorf("the error repeats the value: %d bytes", len(diags.Error()))
	}

	opts = testOptions()
	opts.Environ = func() []string { return []string{EnvVarPrefix + "zones=" + deep} }
	_, diags = Parse(src, "vars.hcl", opts)
	if !hasDiag(diags, hcl.DiagError, "Invalid variable value") || !strings.Contains(diags.Error(), "KPROV_VAR_zones sets variable") {
		t.Errorf("KPROV_VAR_: %v", diags)
	}

	var chain strings.Builder
	chain.WriteString("locals {\n  l0 = 1\n")
	for i := 1; i <= 2*MaxNesting; i++ {
		chain.WriteString("  l" + strconv.Itoa(i) + " = [local.l" + strconv.Itoa(i-1) + "]\n")
	}
	chain.WriteString("}\n" + nestingTail)
	_, diags = Parse([]byte(chain.String()), "chain.hcl", testOptions())
	if !hasDiag(diags, hcl.DiagError, "Nesting too deep") || len(diags) != 1 || !strings.Contains(diags[0].Detail, `Local "l129"`) {
		t.Errorf("a chain of locals: want one error at l129, got %v", diags)
	}
}

// TestNestingJSON: a JSON inventory is measured too, including the templates
// in its strings.
func TestNestingJSON(t *testing.T) {
	deep := strings.Repeat("[", 60000) + strings.Repeat("]", 60000)
	for name, src := range map[string]string{
		"arrays":   `{"locals": {"x": ` + deep + `}}`,
		"template": `{"locals": {"x": "${` + deep + `}"}}`,
	} {
		_, diags := Parse([]byte(src), "deep.kprov.json", testOptions())
		if !hasDiag(diags, hcl.DiagError, "Nesting too deep") {
			t.Errorf("%s: %v", name, diags)
		}
	}
}
