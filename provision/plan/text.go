package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Digest identifies facts: a saved plan records it, and apply refuses the plan
// when the facts it gathers then have another digest.
func (f *Facts) Digest() string {
	// encoding/json sorts map keys, so equal facts always encode the same.
	b, err := json.Marshal(f)
	if err != nil {
		panic(fmt.Sprintf("facts must always encode: %v", err))
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// HostChange says what a plan does to one host.
type HostChange struct {
	Host  string
	Roles string
	Kind  string // create, change or no changes
	Steps int
}

// HostChanges lists, for each host in order, whether the plan creates it
// (nothing of kprov's there yet), changes it, or leaves it alone.
func (p *Plan) HostChanges(hosts []string, roles map[string]string, facts *Facts) []HostChange {
	count := map[string]int{}
	for _, st := range p.Stages {
		for _, s := range st.Steps {
			count[s.Host]++
		}
	}
	out := make([]HostChange, 0, len(hosts))
	for _, h := range hosts {
		c := HostChange{Host: h, Roles: roles[h], Steps: count[h], Kind: "no changes"}
		if c.Steps > 0 {
			c.Kind = "change"
			if hf := facts.Hosts[h]; hf == nil || len(hf.Files) == 0 {
				c.Kind = "create"
			}
		}
		out = append(out, c)
	}
	return out
}

// WriteText prints the plan the way Terraform does: per host what will be
// created, changed or left alone, the stages in order with their concurrency
// and quorum, and the summary line. Secret file contents never appear.
func (p *Plan) WriteText(w io.Writer, changes []HostChange) error {
	var b strings.Builder
	b.WriteString("Hosts:\n")
	width := 0
	for _, c := range changes {
		width = max(width, len(c.Host))
	}
	symbol := map[string]string{"create": "+", "change": "~", "no changes": " "}
	for _, c := range changes {
		detail := c.Kind
		if c.Steps > 0 {
			detail = fmt.Sprintf("%s (%d steps)", c.Kind, c.Steps)
		}
		fmt.Fprintf(&b, "  %s %-*s  %-22s %s\n", symbol[c.Kind], width, c.Host, c.Roles, detail)
	}
	if p.Empty() {
		b.WriteString("\nNo changes. The cluster matches the inventory.\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	b.WriteString("\nStages, in order:\n")
	n := 0
	for _, st := range p.Stages {
		if len(st.Steps) == 0 {
			continue
		}
		n++
		conc := fmt.Sprintf("parallel %d", st.Parallel)
		if st.Parallel == 1 {
			conc = "serial"
		}
		if st.Quorum != "" {
			conc += "; " + st.Quorum
		}
		fmt.Fprintf(&b, "\n%2d. %s (%s)\n", n, st.Name, conc)
		for _, s := range st.Steps {
			fmt.Fprintf(&b, "      %-10s %s\n", s.Host, s)
			fmt.Fprintf(&b, "      %-10s   # %s\n", "", s.Reason)
		}
	}
	if len(p.Notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, note := range p.Notes {
			fmt.Fprintf(&b, "  - %s\n", note)
		}
	}
	fmt.Fprintf(&b, "\n%s\n", p.Summary)
	_, err := io.WriteString(w, b.String())
	return err
}

// Count fills in the summary from the steps.
func (p *Plan) Count() {
	s := Summary{}
	prepared := map[string]bool{}
	for _, st := range p.Stages {
		for _, step := range st.Steps {
			switch step.Op {
			case OpEtcdAddLearner:
				s.EtcdMembersToAdd++
			case OpEtcdRemove:
				s.EtcdMembersRemoved++
			case OpRestartService:
				s.EtcdRestarts++
			case OpKubeadmJoin:
				if strings.HasPrefix(st.Name, "control-plane/") {
					s.MastersToJoin++
				} else {
					s.NodesToJoin++
				}
			case OpUploadFile:
				s.FilesToWrite++
			}
			if strings.HasPrefix(st.Name, "prepare") {
				prepared[step.Host] = true
			}
		}
	}
	if slices.ContainsFunc(p.Stages, func(st Stage) bool { return strings.HasPrefix(st.Name, "etcd/bootstrap/") }) {
		s.EtcdMembersToAdd++ // the first member of a new cluster is added by starting it
	}
	s.HostsToPrepare = len(prepared)
	p.Summary = s
}
