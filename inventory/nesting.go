package inventory

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// MaxNesting is how deeply an inventory may nest brackets, template
// interpolations and directives, and chains of operators, in its source, in a
// -var or KPROV_VAR_* value, and in the value of a local. HCL's parser and
// evaluator recurse once per level: about 60,000 nested brackets, or a
// million `+1`s, exhaust Go's 1 GB stack and kill kprov without a word about
// where. A real inventory nests fewer than ten levels; 128 leaves room for
// generated ones and stays far from the stack.
const MaxNesting = 128

// frameKind is what opened one level of nesting.
type frameKind uint8

const (
	frameBody      frameKind = iota // the file, or an expression at its top level
	frameBrace                      // { } of a block body or an object
	frameBrack                      // [ ] of a tuple, a for expression or an index
	frameParen                      // ( ) of a call or a parenthesized expression
	frameTemplate                   // "..." or a heredoc
	frameInterp                     // ${ } or %{ }
	frameDirective                  // between %{ if } or %{ for } and its %{ end... }
)

type nestFrame struct {
	kind frameKind
	ops  int // operators in the current item of this frame: each one is a level of the parsed expression
	// opens and closes mark a %{ } holding if/for or endif/endfor.
	opens, closes bool
}

// nestingScan measures nesting on the tokens of HCL's own lexer, so strings,
// heredocs and comments are skipped exactly where the parser skips them, and
// brackets inside template interpolations count. The lexer is a state
// machine without recursion, and the scan is linear in the tokens.
type nestingScan struct {
	frames []nestFrame
	depth  int // len(frames)-1 plus every frame's ops
	prev   hclsyntax.TokenType
}

func newNestingScan(root frameKind) *nestingScan {
	return &nestingScan{frames: []nestFrame{{kind: root}}, prev: hclsyntax.TokenNil}
}

// tooDeep returns the range of the first token past MaxNesting, if any.
func (s *nestingScan) tooDeep(tokens hclsyntax.Tokens) (hcl.Range, bool) {
	for _, tok := range tokens {
		s.token(tok)
		if s.depth > MaxNesting {
			return tok.Range, true
		}
	}
	return hcl.Range{}, false
}

func (s *nestingScan) top() *nestFrame { return &s.frames[len(s.frames)-1] }

func (s *nestingScan) push(k frameKind) {
	s.frames = append(s.frames, nestFrame{kind: k})
	s.depth++
}

// pop closes the innermost frame (and any directive left open inside it, as
// an unterminated %{ if } is when its string ends). The root never closes.
func (s *nestingScan) pop() nestFrame {
	for len(s.frames) > 1 {
		f := s.frames[len(s.frames)-1]
		s.frames = s.frames[:len(s.frames)-1]
		s.depth -= 1 + f.ops
		if f.kind != frameDirective {
			return f
		}
	}
	return nestFrame{kind: frameBody}
}

// endItem starts a new item in the innermost frame: a chain of operators
// ends at a comma, an '=', a '=>', or a newline where newlines separate items.
func (s *nestingScan) endItem() {
	f := s.top()
	s.depth -= f.ops
	f.ops = 0
}

func (s *nestingScan) operator() {
	s.top().ops++
	s.depth++
}

// termEnd are the tokens after which '[' indexes a value (a[x][y] nests one
// level per index) rather than starting a tuple.
func termEnd(t hclsyntax.TokenType) bool {
	switch t {
	case hclsyntax.TokenIdent, hclsyntax.TokenNumberLit, hclsyntax.TokenCBrack, hclsyntax.TokenCParen,
		hclsyntax.TokenCBrace, hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc:
		return true
	}
	return false
}

func (s *nestingScan) token(tok hclsyntax.Token) {
	switch tok.Type {
	case hclsyntax.TokenComment:
		return
	case hclsyntax.TokenNewline:
		// Newlines separate items in bodies and object constructors; inside
		// ( ), [ ] and interpolations the parser skips them.
		if k := s.top().kind; k == frameBody || k == frameBrace {
			s.endItem()
		}
		return
	case hclsyntax.TokenOBrace:
		s.push(frameBrace)
	case hclsyntax.TokenOBrack:
		if termEnd(s.prev) {
			s.operator()
		}
		s.push(frameBrack)
	case hclsyntax.TokenOParen:
		s.push(frameParen)
	case hclsyntax.TokenOQuote, hclsyntax.TokenOHeredoc:
		s.push(frameTemplate)
	case hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
		s.push(frameInterp)
	case hclsyntax.TokenIdent:
		// The keyword right after %{ decides whether a directive opens or closes.
		if f := s.top(); f.kind == frameInterp && s.prev == hclsyntax.TokenTemplateControl {
			switch string(tok.Bytes) {
			case "if", "for":
				f.opens = true
			case "endif", "endfor":
				f.closes = true
			}
		}
	case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen,
		hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc:
		s.pop()
	case hclsyntax.TokenTemplateSeqEnd:
		f := s.pop()
		switch {
		case f.opens:
			s.push(frameDirective)
		case f.closes && s.top().kind == frameDirective:
			s.pop()
		}
	case hclsyntax.TokenComma, hclsyntax.TokenEqual, hclsyntax.TokenFatArrow:
		s.endItem()
	case hclsyntax.TokenPlus, hclsyntax.TokenMinus, hclsyntax.TokenStar, hclsyntax.TokenSlash, hclsyntax.TokenPercent,
		hclsyntax.TokenEqualOp, hclsyntax.TokenNotEqual, hclsyntax.TokenLessThan, hclsyntax.TokenLessThanEq,
		hclsyntax.TokenGreaterThan, hclsyntax.TokenGreaterThanEq, hclsyntax.TokenAnd, hclsyntax.TokenOr,
		hclsyntax.TokenBang, hclsyntax.TokenQuestion:
		s.operator()
	}
	s.prev = tok.Type
}

// tooDeepDiag is the error for source nested past MaxNesting at r. The file
// is left out of the snippets (its line may be megabytes long), so the
// detail names the column.
func tooDeepDiag(r hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Nesting too deep",
		Detail: fmt.Sprintf("Brackets, template interpolations and chains of operators nest more than %d levels deep at column %d; kprov stops rather than exhaust its stack. Simplify the expression, or move parts of it into locals.",
			MaxNesting, r.Start.Column),
		Subject: r.Ptr(),
	}
}

// checkSourceNesting scans an inventory before HCL parses it. A JSON
// inventory is scanned for [ and {, and each of its strings as the template
// HCL will later parse it as.
func checkSourceNesting(src []byte, filename string, isJSON bool) hcl.Diagnostics {
	if isJSON {
		if r, deep := jsonTooDeep(src, filename); deep {
			return hcl.Diagnostics{tooDeepDiag(r)}
		}
		return nil
	}
	// The lexer reports its own errors again when the parser runs; only
	// the depth matters here.
	tokens, _ := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	if r, deep := newNestingScan(frameBody).tooDeep(tokens); deep {
		return hcl.Diagnostics{tooDeepDiag(r)}
	}
	return nil
}

// expressionTooDeep reports whether a -var or KPROV_VAR_* value, read as an
// HCL expression, nests past MaxNesting.
func expressionTooDeep(src []byte) bool {
	tokens, _ := hclsyntax.LexExpression(src, "-var", hcl.InitialPos)
	_, deep := newNestingScan(frameBody).tooDeep(tokens)
	return deep
}

// jsonTooDeep walks JSON text without recursion: arrays and objects count a
// level each, and every string is scanned as an HCL template starting at the
// depth where it stands. The position of the first level too deep is
// returned as line and column.
func jsonTooDeep(src []byte, filename string) (hcl.Range, bool) {
	depth := 0
	line, lineStart := 1, 0
	at := func(i int) hcl.Range {
		p := hcl.Pos{Line: line, Column: i - lineStart + 1, Byte: i}
		return hcl.Range{Filename: filename, Start: p, End: p}
	}
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case '\n':
			line, lineStart = line+1, i+1
		case '[', '{':
			depth++
			if depth > MaxNesting {
				return at(i), true
			}
		case ']', '}':
			depth--
		case '"':
			end := jsonStringEnd(src, i)
			var s string
			if json.Unmarshal(src[i:end], &s) == nil && strings.ContainsAny(s, "$%") {
				tokens, _ := hclsyntax.LexTemplate([]byte(s), filename, hcl.InitialPos)
				scan := newNestingScan(frameTemplate)
				scan.depth = depth
				if _, deep := scan.tooDeep(tokens); deep {
					return at(i), true
				}
			}
			i = end - 1
		}
	}
	return hcl.Range{}, false
}

// jsonStringEnd returns the index just past the string that starts at src[i].
func jsonStringEnd(src []byte, i int) int {
	for j := i + 1; j < len(src); j++ {
		switch src[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(src)
}

// deeperThan reports whether v nests collections more than n levels deep. It
// recurses at most n+1 levels, however deep v is.
func deeperThan(v cty.Value, n int) bool {
	v, _ = v.Unmark()
	if !v.IsKnown() || v.IsNull() {
		return false
	}
	ty := v.Type()
	if !ty.IsCollectionType() && !ty.IsTupleType() && !ty.IsObjectType() {
		return false
	}
	if n == 0 {
		return true
	}
	for it := v.ElementIterator(); it.Next(); {
		if _, e := it.Element(); deeperThan(e, n-1) {
			return true
		}
	}
	return false
}
