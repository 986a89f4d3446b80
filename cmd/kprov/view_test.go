package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/plan"
)

// Confirm refuses at once when nobody can answer (no terminal on stdin),
// with exit 2 and what to do; on a terminal only "yes" applies.
func TestConfirm(t *testing.T) {
	cases := []struct {
		terminal bool
		input    string
		code     int // 0: confirmed
		msg      string
	}{
		{false, "yes\n", exitUsage, "stdin is not a terminal, so nobody can confirm the plan above; nothing was changed: to apply it, run kprov apply --auto-approve"},
		{true, "yes\n", 0, ""},
		{true, " yes \n", 0, ""},
		{true, "y\n", exitError, "apply cancelled; nothing was changed"},
		{true, "", exitError, "apply cancelled; nothing was changed"},
	}
	for _, c := range cases {
		var out bytes.Buffer
		v := &textView{g: &globalOptions{stdout: &out}, stdin: strings.NewReader(c.input), stdinTerminal: c.terminal}
		err := v.Confirm(context.Background())
		var ce *exitCodeError
		switch {
		case c.code == 0 && err != nil:
			t.Errorf("terminal %v, %q: %v, want confirmed", c.terminal, c.input, err)
		case c.code != 0 && (!errors.As(err, &ce) || ce.code != c.code || !strings.Contains(err.Error(), c.msg)):
			t.Errorf("terminal %v, %q: %v, want exit %d with %q", c.terminal, c.input, err, c.code, c.msg)
		}
		if asked := strings.Contains(out.String(), "Apply?"); asked != c.terminal {
			t.Errorf("terminal %v: asked %v (%q)", c.terminal, asked, out.String())
		}
	}
}

func isText(v applyView) bool {
	_, ok := v.(*textView)
	return ok
}

// scriptCluster is the cluster of playApply's run: two etcd hosts and a
// compute host.
func scriptCluster() *provision.Cluster {
	inv := &inventory.Inventory{}
	for _, h := range []struct {
		name string
		role inventory.Role
	}{{"etcd-1", inventory.RoleEtcd}, {"etcd-2", inventory.RoleEtcd}, {"compute-1", inventory.RoleCompute}} {
		inv.Hosts = append(inv.Hosts, &inventory.Host{Name: h.name, Address: "192.0.2.1", Roles: []inventory.Role{h.role}})
	}
	return &provision.Cluster{Inventory: inv}
}

// playApply tells v what an apply of newLiveScript's plan would, calling
// wait at the two points TestTerminalView reads the screen and at the end.
func playApply(v applyView, wait func() error) error {
	defer v.finish()
	inv := scriptCluster().Inventory
	s := newLiveScript()
	pl := &plan.Plan{Cluster: "test", Stages: []plan.Stage{*s.prepare, *s.add}}
	pl.Count()
	prep, add := &pl.Stages[0], &pl.Stages[1]
	if err := v.Plan(pl, pl.HostChanges(inv, plan.FreshFacts([]string{"etcd-1", "etcd-2", "compute-1"}))); err != nil {
		return err
	}
	if err := v.Confirm(context.Background()); err != nil {
		return err
	}
	start := func(st *plan.Stage, i int) {
		v.Step(provision.StepEvent{Stage: st, Host: st.Steps[i].Host, Step: st.Steps[i]})
	}
	done := func(st *plan.Stage, i int, changed bool) {
		v.Step(provision.StepEvent{Stage: st, Host: st.Steps[i].Host, Step: st.Steps[i], Done: true, Changed: changed})
	}
	step := func(st *plan.Stage, i int, changed bool) { start(st, i); done(st, i, changed) }
	const took = 1500 * time.Millisecond

	v.Stage(provision.StageEvent{Index: 1, Total: 2, Stage: prep})
	start(prep, 0)
	start(prep, 2)
	done(prep, 0, true)
	step(prep, 1, true)
	v.Warn("clock skew", "host", "etcd-2", "skew", "1.5s")
	if err := wait(); err != nil { // point A
		return err
	}
	done(prep, 2, true)
	step(prep, 3, false)
	step(prep, 4, true)
	step(prep, 5, true)
	v.Stage(provision.StageEvent{Index: 1, Total: 2, Stage: prep, Done: true, Duration: took, Changed: 5})
	v.Stage(provision.StageEvent{Index: 2, Total: 2, Stage: add})
	start(add, 0)
	if err := wait(); err != nil { // point B
		return err
	}
	done(add, 0, true)
	step(add, 1, true)
	v.Stage(provision.StageEvent{Index: 2, Total: 2, Stage: add, Done: true, Duration: took, Changed: 2})
	rep := &provision.Report{Changes: map[string][]plan.Step{}, Stages: []provision.StageReport{
		{Name: prep.Name(), Hosts: 3, Steps: 6, Changed: 5, Duration: took},
		{Name: add.Name(), Hosts: 1, Steps: 2, Changed: 2, Duration: took},
	}}
	for _, i := range []int{0, 1, 2, 4, 5} {
		rep.Changes[prep.Steps[i].Host] = append(rep.Changes[prep.Steps[i].Host], prep.Steps[i])
	}
	rep.Changes["etcd-2"] = append(rep.Changes["etcd-2"], add.Steps...)
	v.finish()
	v.report(rep, 3*time.Second)
	return wait() // the end
}

// Without a terminal the same run is plain lines, as scripts and the
// end-to-end tests read them: one line as each stage starts and ends, each
// change logged, the summary; no escape sequence, no live area.
func TestTextViewPlainLines(t *testing.T) {
	var out, errOut bytes.Buffer
	g := &globalOptions{stdout: &out, stderr: &errOut, logLevel: "info", logFormat: "text"}
	var err error
	if g.log, err = g.logger(); err != nil {
		t.Fatal(err)
	}
	v := g.applyView(scriptCluster(), false)
	if !isText(v) {
		t.Fatalf("apply picked %T without a terminal", v)
	}
	v.(*textView).stdinTerminal = true
	v.(*textView).stdin = strings.NewReader("yes\n")
	if err := playApply(v, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	wantInOrder(t, strings.Split(out.String(), "\n"),
		"[prepare] preparing hosts: 6 steps on 3 hosts ...",
		"[prepare] preparing hosts: 6 steps on 3 hosts: done in 1.5s, 5 changed",
		"[etcd] adding member 2/3 (etcd-2) ...",
		"[etcd] adding member 2/3 (etcd-2): done in 1.5s, 2 changed",
		"HOST       ROLES    CHANGED",
		"STAGE            HOSTS  STEPS  CHANGED  TIME",
		"7 changes in 3s")
	wantInOrder(t, strings.Split(errOut.String(), "\n"),
		"INFO changed host=etcd-1 step=\"upload-file /etc/kprov/etcd-1.conf (0644)\"",
		"WARN clock skew host=etcd-2 skew=1.5s",
		"INFO changed host=etcd-2 step=\"wait-etcd-caught-up etcd-2\"")
	if n := strings.Count(errOut.String(), "INFO changed"); n != 7 {
		t.Errorf("%d changes logged, want 7, each once:\n%s", n, errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), "\x1b") {
		t.Errorf("escape sequences in plain output:\n%q", out.String())
	}
}
