package inventory

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// MaxHosts is the most hosts one inventory may describe. Kubernetes is tested
// up to 5,000 nodes and etcd recommends at most 7 members, so no real cluster
// comes near it, while an inventory this size still loads in about a second.
// A dynamic block that would expand past it is refused before it expands:
// a million generated hosts once ran for minutes and took 5 GB.
const MaxHosts = 10000

// MaxGeneratedBlocks is the most blocks that dynamic blocks other than hosts
// (a host's ssh block, say) may generate in one inventory, all together.
const MaxGeneratedBlocks = MaxHosts

// MaxInventoryBytes is the largest inventory file kprov reads: 8 MiB, about
// four times a 10,000-host inventory written out host by host. Parsing costs
// memory in proportion to the file, so a larger one is refused unread.
const MaxInventoryBytes = 8 << 20

// expansionBudget counts hosts and generated blocks while dynblock expands
// them: its check runs on each dynamic block's for_each value before a
// single block is generated, so a huge for_each costs its own evaluation and
// nothing more.
type expansionBudget struct {
	hostsLeft, blocksLeft int
	// hostForEach holds the for_each ranges of the top-level dynamic "host"
	// blocks; every other for_each generates other blocks.
	hostForEach map[hcl.Range]bool
}

// topLevelBlocks is the part of the schema the budget needs before decoding.
var topLevelBlocks = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "host", LabelNames: []string{"name"}},
	{Type: "dynamic", LabelNames: []string{"type"}},
}}

var forEachSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "for_each"}}}

// newExpansionBudget counts the file's host blocks. It returns an error at
// the first host block past MaxHosts, in which case nothing else should be
// decoded. Diagnostics about the blocks themselves are left to decoding.
func newExpansionBudget(body hcl.Body) (*expansionBudget, hcl.Diagnostics) {
	b := &expansionBudget{hostsLeft: MaxHosts, blocksLeft: MaxGeneratedBlocks, hostForEach: map[hcl.Range]bool{}}
	content, _, _ := body.PartialContent(topLevelBlocks)
	for _, block := range content.Blocks {
		switch {
		case block.Type == "host":
			if b.hostsLeft--; b.hostsLeft < 0 {
				return nil, hcl.Diagnostics{errorAt(block.DefRange, "Too many hosts",
					"This is host block number %d; an inventory describes at most %d hosts, far more than any cluster (Kubernetes is tested up to 5,000 nodes). Split the inventory.",
					MaxHosts+1, MaxHosts)}
			}
		case len(block.Labels) == 1 && block.Labels[0] == "host":
			spec, _, _ := block.Body.PartialContent(forEachSchema)
			if a := spec.Attributes["for_each"]; a != nil {
				b.hostForEach[a.Expr.Range()] = true
			}
		}
	}
	return b, nil
}

// check is a dynblock.OptCheckForEach function: it refuses a for_each that
// would take the inventory past MaxHosts hosts or MaxGeneratedBlocks other
// blocks, at the for_each's line, before the block expands.
func (b *expansionBudget) check(each cty.Value, expr hcl.Expression, _ *hcl.EvalContext) hcl.Diagnostics {
	v, _ := each.Unmark()
	if !v.IsKnown() || v.IsNull() || !v.CanIterateElements() {
		return nil // dynblock reports these itself
	}
	n := v.LengthInt()
	if b.hostForEach[expr.Range()] {
		return spend(&b.hostsLeft, n, MaxHosts, expr.Range(), "Too many hosts",
			"This dynamic block would generate %d hosts; with the %d already counted, that is more than the %d an inventory may describe, far more than any cluster (Kubernetes is tested up to 5,000 nodes). Check the for_each expression.")
	}
	return spend(&b.blocksLeft, n, MaxGeneratedBlocks, expr.Range(), "Too many generated blocks",
		"This dynamic block would generate %d blocks; with the %d already generated, that is more than the %d that dynamic blocks other than hosts may generate in one inventory. Check the for_each expression.")
}

// spend takes n from *left, or refuses at r, leaving nothing for later
// blocks so that each of them is refused too. format takes n, the number
// already used and limit.
func spend(left *int, n, limit int, r hcl.Range, summary, format string) hcl.Diagnostics {
	if n <= *left {
		*left -= n
		return nil
	}
	d := errorAt(r, summary, format, n, limit-*left, limit)
	*left = 0
	return hcl.Diagnostics{d}
}

// tooLargeDiag is the error for a file over MaxInventoryBytes.
func tooLargeDiag(filename string, size int64) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Inventory too large",
		Detail: fmt.Sprintf("%s is %d bytes; kprov reads inventories of at most %d bytes (8 MiB), several times what %d hosts written out one by one take. Generate hosts with dynamic blocks, or split the inventory.",
			filename, size, MaxInventoryBytes, MaxHosts),
	}
}
