package plan

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/kprov/kprov/inventory"
)

// HostChange says what a plan does to one host.
type HostChange struct {
	Host  string
	Roles string
	Kind  string // create, change, reset (kprov reset takes it back to clean) or no changes
	Steps int
}

// HostChanges lists, for each inventory host in order, whether the plan
// creates it (nothing of kprov's there yet), changes it, or leaves it alone.
func (p *Plan) HostChanges(inv *inventory.Inventory, facts *Facts) []HostChange {
	count := map[string]int{}
	reset := map[string]bool{}
	for _, st := range p.Stages {
		for _, s := range st.Steps {
			count[s.Host]++
			if st.Kind == StageReset {
				reset[s.Host] = true
			}
		}
	}
	out := make([]HostChange, 0, len(inv.Hosts))
	for _, h := range inv.Hosts {
		c := HostChange{Host: h.Name, Roles: RoleList(h), Steps: count[h.Name], Kind: "no changes"}
		if c.Steps > 0 {
			c.Kind = "change"
			if hf := facts.Hosts[h.Name]; reset[h.Name] {
				c.Kind = "reset"
			} else if hf == nil || len(hf.Files) == 0 {
				c.Kind = "create"
			}
		}
		out = append(out, c)
	}
	return out
}

// RoleList is a host's roles as one comma-separated word, as tables show them.
func RoleList(h *inventory.Host) string {
	rs := make([]string, len(h.Roles))
	for i, r := range h.Roles {
		rs[i] = string(r)
	}
	return strings.Join(rs, ",")
}

// TextOptions choose how much of a plan WriteText shows.
type TextOptions struct {
	// Detail lists every step of every host with its reason; without it,
	// hosts whose steps are alike are shown as one line per group.
	Detail bool
}

// WriteText prints the plan the way Terraform does: per host what will be
// created, changed or left alone, the stages in order with their concurrency
// and quorum, and the summary line. Secret file contents never appear.
//
// By default each stage shows one line per group of hosts whose steps are
// alike (the same operations on the same paths and units, whatever the
// content), so a plan for a hundred hosts stays a page long; with
// opts.Detail every step is listed with its reason.
func (p *Plan) WriteText(w io.Writer, changes []HostChange, opts TextOptions) error {
	var b strings.Builder
	b.WriteString("Hosts:\n")
	width := 0
	for _, c := range changes {
		width = max(width, len(c.Host))
	}
	symbol := map[string]string{"create": "+", "change": "~", "reset": "-", "no changes": " "}
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
	for i := range p.Stages {
		st := &p.Stages[i]
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
		fmt.Fprintf(&b, "\n%2d. %s: %s (%s)\n", n, st.Name(), st.Title, conc)
		if opts.Detail {
			for _, s := range st.Steps {
				fmt.Fprintf(&b, "      %-10s %s\n", s.Host, s)
				fmt.Fprintf(&b, "      %-10s   # %s\n", "", s.Reason)
			}
			continue
		}
		for _, g := range st.Groups() {
			fmt.Fprintf(&b, "      %s: %s\n", HostRange(g.Hosts), Brief(g.Steps))
		}
	}
	if len(p.Notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, note := range p.Notes {
			fmt.Fprintf(&b, "  - %s\n", note)
		}
	}
	if !opts.Detail {
		b.WriteString("\n(kprov plan --detail lists every step with its reason.)\n")
	}
	fmt.Fprintf(&b, "\n%s\n", p.Summary)
	_, err := io.WriteString(w, b.String())
	return err
}

// Group is hosts of one stage whose steps are alike, with the first
// host's steps standing for all of them.
type Group struct {
	Hosts []string
	Steps []Step
}

// Groups splits the stage's hosts into groups whose steps are alike: the
// same operations in the same order on the same paths, modes, units,
// commands, labels and taints. Content and checksums may differ (each
// host's files carry its own name and address). Groups come in the order
// of their first host.
func (s *Stage) Groups() []Group {
	byHost := map[string][]Step{}
	for _, st := range s.Steps {
		byHost[st.Host] = append(byHost[st.Host], st)
	}
	var out []Group
	index := map[string]int{}
	for _, h := range s.Hosts() {
		key := shape(byHost[h])
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, Group{Steps: byHost[h]})
		}
		out[i].Hosts = append(out[i].Hosts, h)
	}
	return out
}

// shape is what two hosts' steps must share to be shown as one group.
func shape(steps []Step) string {
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&b, "%s|%s|%o|%s|%s|%v|%v|%s\n", s.Op, s.Path, s.Mode, s.Service, s.Command, s.Labels, s.Taints, s.Source)
	}
	return b.String()
}

// Brief says what a run of steps does in a few words: consecutive steps of
// one operation are counted together, e.g. "upload-file ×9, run-command,
// start-service kubelet".
func Brief(steps []Step) string {
	var parts []string
	for i := 0; i < len(steps); {
		j := i + 1
		for j < len(steps) && steps[j].Op == steps[i].Op {
			j++
		}
		parts = append(parts, operations[steps[i].Op].brief(steps[i:j]))
		i = j
	}
	return strings.Join(parts, ", ")
}

// HostRange names hosts compactly: runs of names that differ only in a
// trailing number become "compute-1..40"; the rest are listed.
func HostRange(hosts []string) string {
	var parts []string
	for i := 0; i < len(hosts); {
		prefix, n, ok := splitNumber(hosts[i])
		j := i + 1
		for ok && j < len(hosts) {
			p2, m, ok2 := splitNumber(hosts[j])
			if !ok2 || p2 != prefix || m != n+(j-i) {
				break
			}
			j++
		}
		switch {
		case j-i >= 3:
			parts = append(parts, fmt.Sprintf("%s%d..%d", prefix, n, n+(j-i-1)))
		default:
			parts = append(parts, hosts[i:j]...)
		}
		i = j
	}
	return strings.Join(parts, ", ")
}

// splitNumber splits "compute-12" into "compute-" and 12.
func splitNumber(name string) (string, int, bool) {
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	if i == len(name) || i == 0 || (name[i] == '0' && i < len(name)-1) {
		return "", 0, false
	}
	n, err := strconv.Atoi(name[i:])
	return name[:i], n, err == nil
}
