package inventory

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/dynblock"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
)

// A variable declared with sensitive = true must never be printed. Its value
// is marked (a cty mark, which every HCL operator and function carries from
// its operands to its result), so kprov can tell which values of the
// inventory came from it, however they were computed. gohcl cannot decode
// marked values, so the inventory is decoded without the marks, and a second
// evaluation with them finds every string a sensitive value reached. Those
// strings are what the Inventory redacts: in its own diagnostics here, and
// through SensitiveValues and Redact in whatever prints the inventory, the
// plan or a log.

// Redacted replaces a sensitive value wherever kprov would print it.
const Redacted = "(sensitive)"

// sensitiveMark marks values that came from a sensitive variable.
type sensitiveMarkType struct{}

var sensitiveMark = sensitiveMarkType{}

// sensitiveSet collects the strings to redact.
type sensitiveSet map[string]struct{}

// add records s; the empty string is never sensitive.
func (set sensitiveSet) add(s string) {
	if s == "" {
		return
	}
	set[s] = struct{}{}
}

// addValue records every string and number in v (map keys included), as
// they are printed.
func (set sensitiveSet) addValue(v cty.Value) {
	v, _ = v.UnmarkDeep()
	set.addLeaves(v)
}

func (set sensitiveSet) addLeaves(v cty.Value) {
	if !v.IsKnown() || v.IsNull() {
		return
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		set.add(v.AsString())
	case ty == cty.Number:
		// A bool is one of two words printed everywhere; a number is data.
		set.add(v.AsBigFloat().Text('f', -1))
	case ty.IsMapType() || ty.IsObjectType():
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			set.add(k.AsString())
			set.addLeaves(e)
		}
	case ty.IsCollectionType() || ty.IsTupleType():
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			set.addLeaves(e)
		}
	}
}

// addMarked records the parts of v that carry the sensitive mark: a marked
// string itself, every leaf of a marked collection.
func (set sensitiveSet) addMarked(v cty.Value) {
	if !v.ContainsMarked() {
		return
	}
	plain, marked := v.UnmarkDeepWithPaths()
	for _, pm := range marked {
		if _, ok := pm.Marks[sensitiveMark]; !ok {
			continue
		}
		part, err := pm.Path.Apply(plain)
		if err != nil {
			// A path into a set cannot be applied; redact all of it rather
			// than too little.
			part = plain
		}
		set.addLeaves(part)
	}
}

// contains reports whether s is, or contains, a recorded value.
func (set sensitiveSet) contains(s string) bool {
	for v := range set {
		if strings.Contains(s, v) {
			return true
		}
	}
	return false
}

// sorted returns the values longest first, so a replacer tries a value
// before any shorter one inside it.
func (set sensitiveSet) sorted() []string {
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b string) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b))
	})
	return out
}

// redactor replaces each value, and its %q-quoted form, with Redacted in one
// pass: a replacement is never itself searched again.
func redactor(values []string) *strings.Replacer {
	if len(values) == 0 {
		return nil
	}
	pairs := make([]string, 0, 4*len(values))
	for _, v := range values {
		pairs = append(pairs, strconv.Quote(v), strconv.Quote(Redacted)) // stays a quoted string (JSON, %q)
	}
	for _, v := range values {
		// The escaped form %q prints inside a longer quoted string.
		if q := strconv.Quote(v); q[1:len(q)-1] != v {
			pairs = append(pairs, q[1:len(q)-1], Redacted)
		}
		pairs = append(pairs, v, Redacted)
	}
	return strings.NewReplacer(pairs...)
}

// SensitiveValues returns every string that came from a sensitive variable
// (declared with sensitive = true) or was computed from one, longest first:
// the variables' values as given, each string an expression built from them
// (upper(var.x), "a-${var.x}", an element of a sensitive list, a key or
// value of a sensitive map), and the form kprov stores a field in when it
// rewrites one (a resolved path, a normalized address, a taint's value).
// Numbers are included as printed; bools are not. Any of these may appear in
// Hosts' labels, taints, kubelet_extra_args, addresses, SSH settings,
// artifacts and the cluster's fields. A printer must not show them: see
// Redact.
func (inv *Inventory) SensitiveValues() []string {
	return slices.Clone(inv.sensitive)
}

// Redact returns s with every sensitive value (see SensitiveValues), bare or
// quoted as %q quotes it, replaced by "(sensitive)". Printers of anything
// derived from the inventory (plan text and JSON, saved plans, logs, error
// messages, validate --json) pass each string they print through it, or
// the whole text once it is assembled. It is a no-op without sensitive
// variables.
func (inv *Inventory) Redact(s string) string {
	if inv == nil || inv.redactor == nil {
		return s
	}
	return inv.redactor.Replace(s)
}

// setSensitive installs the values Redact removes.
func (inv *Inventory) setSensitive(set sensitiveSet) {
	inv.sensitive = set.sorted()
	inv.redactor = redactor(inv.sensitive)
}

// redactDiagnostics removes sensitive values from diagnostics: from their
// text, and from the variables HCL's diagnostic writer prints beside an
// expression ("with var.token as ..."), which it skips when marked.
func redactDiagnostics(diags hcl.Diagnostics, r *strings.Replacer, marked *hcl.EvalContext) {
	if r == nil {
		return
	}
	for _, d := range diags {
		d.Summary = r.Replace(d.Summary)
		d.Detail = r.Replace(d.Detail)
		if d.EvalContext == nil || marked == nil {
			continue
		}
		ctx := d.EvalContext.NewChild()
		ctx.Variables = marked.Variables
		d.EvalContext = ctx
		// An evaluation error may quote any value computed inside the
		// expression (a function's argument, say), not only those kprov
		// has seen; when the expression uses a sensitive value, its detail
		// is withheld.
		if d.Expression != nil && usesSensitive(d.Expression, ctx) {
			d.Detail = "The details are withheld because this expression uses the value of a sensitive variable. Check the expression, and the value given to the variable."
		}
	}
}

// usesSensitive reports whether any variable expr refers to holds a value
// that came from a sensitive variable.
func usesSensitive(expr hcl.Expression, ctx *hcl.EvalContext) bool {
	for _, tr := range expr.Variables() {
		if v, diags := tr.TraverseAbs(ctx); !diags.HasErrors() && v.ContainsMarked() {
			return true
		}
		// A traversal that fails (local.x.missing) still names a sensitive
		// root when the root itself carries marks.
		if v, diags := (hcl.Traversal{tr[0]}).TraverseAbs(ctx); !diags.HasErrors() && rootUsesSensitive(v, tr) {
			return true
		}
	}
	return false
}

// rootUsesSensitive checks the first step below var or local: var.x is
// sensitive when x's value carries marks.
func rootUsesSensitive(root cty.Value, tr hcl.Traversal) bool {
	if len(tr) < 2 || !root.Type().IsObjectType() {
		return root.ContainsMarked() && len(tr) < 2
	}
	step, ok := tr[1].(hcl.TraverseAttr)
	if !ok || !root.Type().HasAttribute(step.Name) {
		return false
	}
	return root.GetAttr(step.Name).ContainsMarked()
}

// unmarkedContext is ctx with every mark removed from its variables, for
// gohcl, which cannot decode marked values.
func unmarkedContext(ctx *hcl.EvalContext) *hcl.EvalContext {
	out := &hcl.EvalContext{Functions: ctx.Functions, Variables: make(map[string]cty.Value, len(ctx.Variables))}
	for name, v := range ctx.Variables {
		out.Variables[name], _ = v.UnmarkDeep()
	}
	return out
}

// Blocks whose attributes the sensitivity walk evaluates, with their schemas.
var (
	walkTop = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
		{Type: "cluster", LabelNames: []string{"name"}},
		{Type: "ssh"}, {Type: "etcd"}, {Type: "infra"}, {Type: "artifacts"},
		{Type: "host", LabelNames: []string{"name"}},
	}}
	walkSchemas = map[string]*hcl.BodySchema{
		"cluster": schemaOf(&clusterBlock{}),
		"ssh":     schemaOf(&sshBlock{}),
		"etcd":    schemaOf(&etcdBlock{}),
		"infra":   schemaOf(&infraBlock{}),
		"host":    schemaOf(&hostBlock{}),
	}
)

func schemaOf(v any) *hcl.BodySchema {
	s, _ := gohcl.ImpliedBodySchema(v)
	return s
}

// walkSensitive expands body with the marked context and evaluates every
// attribute kprov reads, recording what a sensitive value reached. It
// returns the errors that only marks reveal: a host named after a sensitive
// value, and a for_each that uses one. Other diagnostics were reported by the
// unmarked decoding already.
func walkSensitive(body hcl.Body, marked *hcl.EvalContext, set sensitiveSet) hcl.Diagnostics {
	budget, _ := newExpansionBudget(body)
	if budget == nil {
		return nil
	}
	var diags hcl.Diagnostics
	refuseMarked := func(each cty.Value, expr hcl.Expression, _ *hcl.EvalContext) hcl.Diagnostics {
		if each.ContainsMarked() {
			d := errorAt(expr.Range(), "Sensitive for_each",
				"for_each uses the value of a sensitive variable; every block it generates would carry it in its names and fields, which kprov prints. Use a value that is not sensitive.")
			return hcl.Diagnostics{d}
		}
		return budget.check(each, expr, nil)
	}
	expanded := dynblock.Expand(body, marked, dynblock.OptCheckForEach(refuseMarked))
	content, _, d := expanded.PartialContent(walkTop)
	diags = append(diags, onlyMarkDiags(d)...)
	for _, block := range content.Blocks {
		diags = append(diags, walkBlock(block, marked, set)...)
	}
	return diags
}

func walkBlock(block *hcl.Block, marked *hcl.EvalContext, set sensitiveSet) hcl.Diagnostics {
	var diags hcl.Diagnostics
	var attrs hcl.Attributes
	var nested hcl.Blocks
	if schema, ok := walkSchemas[block.Type]; ok {
		content, _, d := block.Body.PartialContent(schema)
		diags = append(diags, onlyMarkDiags(d)...)
		attrs, nested = content.Attributes, content.Blocks
	} else {
		attrs, _ = block.Body.JustAttributes() // artifacts: NAME = { ... }
	}
	for _, a := range attrs {
		v, _ := a.Expr.Value(marked)
		set.addMarked(v)
	}
	for _, b := range nested {
		diags = append(diags, walkBlock(b, marked, set)...)
	}
	return diags
}

// onlyMarkDiags keeps the diagnostics that exist only because of marks: a
// dynamic block label from a sensitive value, and the sensitive for_each
// refusal. It rewrites HCL's label message, which speaks of marks.
func onlyMarkDiags(diags hcl.Diagnostics) hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, d := range diags {
		switch {
		case d.Summary == "Sensitive for_each":
			out = append(out, d)
		case d.Summary == "Invalid dynamic block label" && strings.Contains(d.Detail, "marks"):
			out = append(out, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Sensitive block label",
				Detail:   "This label uses the value of a sensitive variable; a host's name becomes its node name and appears in every plan and log. Use a value that is not sensitive.",
				Subject:  d.Subject,
			})
		}
	}
	return out
}
