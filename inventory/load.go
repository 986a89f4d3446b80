package inventory

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/dynblock"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// EnvVarPrefix prefixes environment variables that set inventory variables:
// KPROV_VAR_ssh_user=admin sets var.ssh_user.
const EnvVarPrefix = "KPROV_VAR_"

// Options are the inputs to Load besides the file itself.
type Options struct {
	// Vars are values given with -var NAME=VALUE; they win over the environment.
	Vars map[string]string
	// LookupEnv reads the environment for env() and KPROV_VAR_*; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Environ lists the environment as NAME=VALUE, to find KPROV_VAR_*; nil means os.Environ.
	Environ func() []string
	// HomeDir expands ~ in paths; empty means the current user's home.
	HomeDir string
}

// Load reads, decodes and validates the inventory at path. The inventory is
// nil only when the file cannot be read; when the diagnostics hold errors it
// carries at least Path and Files, so the caller can render them with snippets.
func Load(path string, opts Options) (*Inventory, hcl.Diagnostics) {
	src, err := readInventory(path)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read inventory",
			Detail:   fmt.Sprintf("%v. Create one with `kprov init`, or name another file with -f.", err),
		}}
	}
	return Parse(src, path, opts)
}

// readInventory reads at most one byte past MaxInventoryBytes, so Parse can
// refuse a larger file without it being read whole.
func readInventory(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxInventoryBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return src, nil
}

// Parse is Load over bytes already read; filename is used in diagnostics and
// to resolve relative paths. A name ending in .json is read as HCL's JSON syntax.
func Parse(src []byte, filename string, opts Options) (*Inventory, hcl.Diagnostics) {
	opts = opts.withDefaults()
	dir, err := filepath.Abs(filepath.Dir(filename))
	if err != nil {
		dir = filepath.Dir(filename)
	}
	l := &loader{opts: opts, dir: dir, sens: sensitiveSet{}}
	inv, diags := l.parse(src, filename)
	// Whatever stage stopped the load, nothing it reports may show a
	// sensitive value.
	inv.setSensitive(l.sens)
	redactDiagnostics(diags, inv.redactor, l.marked)
	return inv, diags
}

func (l *loader) parse(src []byte, filename string) (*Inventory, hcl.Diagnostics) {
	if len(src) > MaxInventoryBytes {
		return &Inventory{Path: filename, Dir: l.dir, Files: map[string]*hcl.File{}}, hcl.Diagnostics{tooLargeDiag(filename, int64(len(src)))}
	}
	isJSON := strings.HasSuffix(filename, ".json")
	// HCL's parser recurses once per level of nesting; measure it first.
	// The file is not kept for snippets: its offending line may be huge.
	if diags := checkSourceNesting(src, filename, isJSON); diags.HasErrors() {
		return &Inventory{Path: filename, Dir: l.dir, Files: map[string]*hcl.File{}}, diags
	}
	parser := hclparse.NewParser()
	var file *hcl.File
	var diags hcl.Diagnostics
	if isJSON {
		file, diags = parser.ParseJSON(src, filename)
	} else {
		file, diags = parser.ParseHCL(src, filename)
	}
	partial := &Inventory{Path: filename, Dir: l.dir, Files: parser.Files()}
	if diags.HasErrors() {
		return partial, diags
	}

	ctx, moreDiags := l.evalContext(file.Body)
	diags = append(diags, moreDiags...)
	if len(l.sens) > 0 {
		l.marked = ctx
	}
	if moreDiags.HasErrors() {
		return partial, diags
	}
	// gohcl cannot decode marked values: decode without the marks, and find
	// where sensitive values went by evaluating again with them.
	ctx = unmarkedContext(ctx)
	l.ctx = ctx

	budget, moreDiags := newExpansionBudget(file.Body)
	diags = append(diags, moreDiags...)
	if moreDiags.HasErrors() {
		return partial, diags
	}
	var raw fileSchema
	body := dynblock.Expand(file.Body, ctx, dynblock.OptCheckForEach(budget.check))
	decodeDiags := gohcl.DecodeBody(body, ctx, &raw)
	diags = append(diags, decodeDiags...)
	if l.marked != nil {
		// Also after a failed decoding: its errors may quote values
		// computed from sensitive ones, which the walk finds.
		moreDiags = walkSensitive(file.Body, l.marked, l.sens)
		diags = append(diags, moreDiags...)
		if moreDiags.HasErrors() {
			return partial, diags
		}
	}
	if decodeDiags.HasErrors() {
		return partial, diags
	}

	inv, moreDiags := l.build(&raw)
	diags = append(diags, moreDiags...)
	if inv == nil {
		return partial, diags
	}
	inv.Path, inv.Dir, inv.Files = partial.Path, partial.Dir, partial.Files
	diags = append(diags, validateTopology(inv)...)
	return inv, diags
}

func (o Options) withDefaults() Options {
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.Environ == nil {
		o.Environ = os.Environ
	}
	if o.HomeDir == "" {
		o.HomeDir, _ = os.UserHomeDir()
	}
	return o
}

type loader struct {
	opts Options
	dir  string
	ctx  *hcl.EvalContext // variables, locals and functions, for attributes decoded by hand
	// marked is ctx with the values of sensitive variables, and everything
	// computed from them, marked; nil when no variable is sensitive.
	marked *hcl.EvalContext
	// sens holds the strings that came from sensitive variables.
	sens sensitiveSet
}

// firstPass is the part of the schema read before anything else, because every
// other expression may refer to var.* and local.*.
var firstPass = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "locals"},
	},
}

// evalContext evaluates variables (defaults, environment, -var) and locals, and
// returns the context every other expression is evaluated in.
func (l *loader) evalContext(body hcl.Body) (*hcl.EvalContext, hcl.Diagnostics) {
	content, _, diags := body.PartialContent(firstPass)
	funcs := functions(l.dir, l.opts.LookupEnv)
	base := &hcl.EvalContext{Functions: funcs}

	vars := map[string]cty.Value{}
	declared := map[string]hcl.Range{}
	sensitive := map[string]bool{}
	var locals []*hcl.Attribute
	for _, block := range content.Blocks {
		switch block.Type {
		case "variable":
			var v variableBlock
			d := gohcl.DecodeBody(block.Body, base, &v)
			v.Name = block.Labels[0]
			v.DefRange = block.DefRange
			diags = append(diags, d...)
			if d.HasErrors() {
				continue
			}
			if prev, dup := declared[v.Name]; dup {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Duplicate variable",
					Detail:   fmt.Sprintf("Variable %q is already declared at %s. Remove one of the two.", v.Name, shortRange(prev)),
					Subject:  block.LabelRanges[0].Ptr(),
				})
				continue
			}
			if !hclsyntax.ValidIdentifier(v.Name) {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid variable name",
					Detail:   "A variable name must start with a letter and contain only letters, digits, underscores and dashes.",
					Subject:  block.LabelRanges[0].Ptr(),
				})
				continue
			}
			declared[v.Name] = block.DefRange
			if v.Sensitive {
				sensitive[v.Name] = true
			}
			val := cty.NullVal(cty.DynamicPseudoType)
			if v.Default != nil {
				dv, d := v.Default.Expr.Value(base)
				diags = append(diags, d...)
				val = dv
			}
			vars[v.Name] = val
		case "locals":
			attrs, d := block.Body.JustAttributes()
			diags = append(diags, d...)
			for _, a := range attrs {
				locals = append(locals, a)
			}
		}
	}

	diags = append(diags, l.overrideVars(vars, declared, sensitive)...)
	for name := range sensitive {
		l.sens.addValue(vars[name])
		vars[name] = vars[name].Mark(sensitiveMark)
	}
	for name, v := range vars {
		if v.IsNull() {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Variable has no value",
				Detail:   fmt.Sprintf("Variable %q has no default. Give it one, or set it with -var %s=VALUE or %s%s=VALUE.", name, name, EnvVarPrefix, name),
				Subject:  declared[name].Ptr(),
			})
		}
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(vars)},
		Functions: funcs,
	}
	localVals, d := evalLocals(ctx, locals)
	diags = append(diags, d...)
	ctx.Variables["local"] = cty.ObjectVal(localVals)
	for _, v := range localVals {
		l.sens.addMarked(v)
	}
	return ctx, diags
}

// overrideVars applies KPROV_VAR_* and then -var on top of the defaults. The
// text given for a sensitive variable is sensitive even when it is refused.
func (l *loader) overrideVars(vars map[string]cty.Value, declared map[string]hcl.Range, sensitive map[string]bool) hcl.Diagnostics {
	var diags hcl.Diagnostics
	set := func(name, raw, source string) {
		if sensitive[name] {
			l.sens.add(raw)
		}
		if _, ok := declared[name]; !ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Undeclared variable",
				Detail:   fmt.Sprintf("%s sets variable %q, but the inventory declares no such variable. Declare it with variable %q { default = ... }.%s", source, name, name, suggestion(name, keys(declared))),
			})
			return
		}
		v, err := parseVarValue(raw, vars[name])
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid variable value",
				Detail:   fmt.Sprintf("%s sets variable %q: %v.", source, name, err),
				Subject:  declared[name].Ptr(),
			})
			return
		}
		vars[name] = v
	}
	env := l.opts.Environ()
	sort.Strings(env)
	for _, kv := range env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvVarPrefix) {
			continue
		}
		name = strings.TrimPrefix(name, EnvVarPrefix)
		// The environment may hold variables meant for other inventories;
		// only a -var for an unknown name is a mistake worth stopping for.
		if _, ok := declared[name]; ok {
			set(name, val, EnvVarPrefix+name)
		}
	}
	for _, name := range keys(l.opts.Vars) {
		set(name, l.opts.Vars[name], "-var "+name)
	}
	return diags
}

// parseVarValue turns a command-line value into the type of the variable's
// default: a string stays a string; anything else is read as an HCL expression
// (so -var masters=5 is a number and -var 'zones=["a","b"]' a list).
func parseVarValue(raw string, def cty.Value) (cty.Value, error) {
	if def.IsNull() || def.Type() == cty.String {
		return cty.StringVal(raw), nil
	}
	if expressionTooDeep([]byte(raw)) {
		return cty.NilVal, fmt.Errorf("the value nests brackets, template interpolations and operators more than %d levels deep; kprov stops rather than exhaust its stack", MaxNesting)
	}
	expr, diags := hclsyntax.ParseExpression([]byte(raw), "-var", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilVal, fmt.Errorf("%q is not a valid value: %s", raw, diags[0].Summary)
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		return cty.NilVal, fmt.Errorf("%q: %s", raw, diags[0].Detail)
	}
	cv, err := convert.Convert(v, def.Type())
	if err != nil {
		return cty.NilVal, fmt.Errorf("%q does not fit the default's type %s: %v", raw, def.Type().FriendlyName(), err)
	}
	return cv, nil
}

// evalLocals evaluates locals in dependency order: a local may use other
// locals, in any order of declaration, as long as there is no cycle. The
// order is Kahn's, so the work grows with the number of locals and of
// references, not with their product, however long a chain of locals is.
func evalLocals(ctx *hcl.EvalContext, attrs []*hcl.Attribute) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	vals := map[string]cty.Value{}
	pending := map[string]*hcl.Attribute{}
	for _, a := range attrs {
		if prev, dup := pending[a.Name]; dup {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate local value",
				Detail:   fmt.Sprintf("Local %q is already defined at %s.", a.Name, shortRange(prev.Range)),
				Subject:  a.NameRange.Ptr(),
			})
			continue
		}
		pending[a.Name] = a
	}
	names := keys(pending)
	refs := make(map[string]localRefs, len(names))
	waitingOn := make(map[string]int, len(names))
	dependents := map[string][]string{}
	var ready []string
	for _, name := range names {
		r := localReferences(pending[name], pending)
		refs[name] = r
		waitingOn[name] = len(r.names)
		for _, dep := range r.names {
			dependents[dep] = append(dependents[dep], name)
		}
		if len(r.names) == 0 {
			ready = append(ready, name)
		}
	}
	tooDeep := map[string]bool{} // reported once; the locals built on it are not evaluated
	for i := 0; i < len(ready); i++ {
		name := ready[i]
		if slices.ContainsFunc(refs[name].names, func(n string) bool { return tooDeep[n] }) {
			vals[name], tooDeep[name] = cty.DynamicVal, true
		} else {
			vals[name], tooDeep[name] = evalLocal(ctx, pending[name], refs[name], vals, &diags)
		}
		for _, d := range dependents[name] {
			if waitingOn[d]--; waitingOn[d] == 0 {
				ready = append(ready, d)
			}
		}
	}
	if len(ready) < len(names) {
		var cycle []string
		for _, n := range names {
			if waitingOn[n] > 0 {
				cycle = append(cycle, n)
			}
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Cycle in local values",
			Detail:   fmt.Sprintf("These locals refer to each other in a cycle: %s. Break the cycle.", strings.Join(cycle, ", ")),
			Subject:  pending[cycle[0]].Range.Ptr(),
		})
		for _, n := range cycle {
			vals[n] = cty.DynamicVal
		}
	}
	return vals, diags
}

// localRefs are the other locals an expression uses.
type localRefs struct {
	names []string // declared locals it refers to by name, each once, in order of first use
	// all is set when the expression needs the whole local object: it uses
	// local on its own, or a local that does not exist (so HCL's error can
	// suggest the nearest name among those evaluated).
	all bool
}

// localReferences finds the locals a uses. A local referring to itself is
// left to evaluation, which reports it as unsupported.
func localReferences(a *hcl.Attribute, declared map[string]*hcl.Attribute) localRefs {
	var r localRefs
	seen := map[string]bool{}
	for _, tr := range a.Expr.Variables() {
		if tr.RootName() != "local" {
			continue
		}
		if len(tr) < 2 {
			r.all = true
			continue
		}
		attr, isAttr := tr[1].(hcl.TraverseAttr)
		if !isAttr {
			r.all = true
			continue
		}
		if _, exists := declared[attr.Name]; !exists || attr.Name == a.Name {
			r.all = true
			continue
		}
		if !seen[attr.Name] {
			seen[attr.Name] = true
			r.names = append(r.names, attr.Name)
		}
	}
	return r
}

// evalLocal evaluates one local whose references are all evaluated, and
// reports whether its value was refused as nested too deeply. It sees only
// the locals it names, so each evaluation costs what the local uses, not
// what the file declares.
func evalLocal(ctx *hcl.EvalContext, a *hcl.Attribute, r localRefs, vals map[string]cty.Value, diags *hcl.Diagnostics) (cty.Value, bool) {
	scope := vals
	if !r.all {
		scope = make(map[string]cty.Value, len(r.names))
		for _, n := range r.names {
			scope[n] = vals[n]
		}
	}
	child := ctx.NewChild()
	child.Variables = map[string]cty.Value{"local": cty.ObjectVal(scope)}
	v, d := a.Expr.Value(child)
	*diags = append(*diags, d...)
	if d.HasErrors() {
		v = cty.DynamicVal
	}
	// Each local may add up to MaxNesting levels to the ones it uses, so a
	// chain of locals could build a value deep enough to exhaust the stack
	// in whatever walks it next.
	if deeperThan(v, MaxNesting) {
		*diags = append(*diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Nesting too deep",
			Detail:   fmt.Sprintf("Local %q is a value nested more than %d levels deep; kprov stops rather than exhaust its stack. Flatten it.", a.Name, MaxNesting),
			Subject:  a.Range.Ptr(),
		})
		return cty.DynamicVal, true
	}
	return v, false
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// shortRange renders a range as file:line,col for messages that point at a second place.
func shortRange(r hcl.Range) string {
	return fmt.Sprintf("%s:%d,%d", r.Filename, r.Start.Line, r.Start.Column)
}
