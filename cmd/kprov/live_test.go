package main

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/plan"
)

// liveScript is a small apply told to a view: a prepare stage on three
// hosts (two steps each) and a one-host etcd stage.
type liveScript struct {
	prepare, add *plan.Stage
}

func newLiveScript() liveScript {
	var prepare plan.Stage
	prepare.Kind, prepare.Title, prepare.Parallel = plan.StagePrepare, "preparing hosts", 2
	for _, h := range []string{"etcd-1", "etcd-2", "compute-1"} {
		prepare.Steps = append(prepare.Steps,
			plan.Step{Op: plan.OpUploadFile, Host: h, Path: "/etc/kprov/" + h + ".conf", Mode: 0o644},
			plan.Step{Op: plan.OpStartService, Host: h, Service: "kprov-swapoff.service"})
	}
	add := plan.Stage{Kind: plan.StageEtcdAdd, Target: "etcd-2", Title: "adding member 2/3 (etcd-2)", Parallel: 1, Steps: []plan.Step{
		{Op: plan.OpEtcdAddLearner, Host: "etcd-2", Member: "etcd-2", PeerURL: "https://192.0.2.12:2380"},
		{Op: plan.OpWaitCaughtUp, Host: "etcd-2", Member: "etcd-2"},
	}}
	return liveScript{prepare: &prepare, add: &add}
}

func (s liveScript) start(st *plan.Stage, host string, i int) stepMsg {
	return stepMsg{Stage: st, Host: host, Step: st.Steps[i]}
}

func (s liveScript) done(st *plan.Stage, host string, i int, changed bool) stepMsg {
	return stepMsg{Stage: st, Host: host, Step: st.Steps[i], Done: true, Changed: changed}
}

// The live area shows the stage, its counts and each busy host's current
// step with its number and elapsed time; a host whose last step ended folds
// away, a host not started yet is counted as waiting, and nothing is drawn
// between stages or after the run.
func TestLiveModel(t *testing.T) {
	clock := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	var m tea.Model = newLiveModel(lipgloss.NewRenderer(io.Discard), now)
	s := newLiveScript()
	feed := func(msgs ...tea.Msg) {
		t.Helper()
		for _, msg := range msgs {
			m, _ = m.Update(msg)
		}
	}
	view := func() string { return m.View() }
	lines := func() []string { return strings.Split(view(), "\n") }

	feed(tea.WindowSizeMsg{Width: 100, Height: 30})
	if v := view(); v != "" {
		t.Fatalf("before any stage the live area shows %q", v)
	}
	feed(stageMsg{Index: 1, Total: 4, Stage: s.prepare},
		s.start(s.prepare, "etcd-1", 0), s.start(s.prepare, "etcd-2", 2))
	clock = clock.Add(12 * time.Second)
	want := []string{
		"[prepare] preparing hosts (stage 1 of 4)",
		"0/3 hosts  0/6 steps",
		"etcd-1  upload-file /etc/kprov/etcd-1.conf (0644)  (step 1/2, 12s)",
		"etcd-2  upload-file /etc/kprov/etcd-2.conf (0644)  (step 1/2, 12s)",
		"1 waiting",
	}
	checkLines(t, lines(), want)

	// etcd-1 finishes (both steps) and folds away; etcd-2 moves on; compute-1 starts.
	feed(s.done(s.prepare, "etcd-1", 0, true), s.start(s.prepare, "etcd-1", 1), s.done(s.prepare, "etcd-1", 1, false),
		s.done(s.prepare, "etcd-2", 2, true), s.start(s.prepare, "etcd-2", 3),
		s.start(s.prepare, "compute-1", 4))
	clock = clock.Add(65 * time.Second)
	want = []string{
		"[prepare] preparing hosts (stage 1 of 4)",
		"1/3 hosts  3/6 steps",
		"etcd-2     start-service kprov-swapoff.service  (step 2/2, 1m05s)",
		"compute-1  upload-file /etc/kprov/compute-1.conf (0644)  (step 1/2, 1m05s)",
	}
	checkLines(t, lines(), want)
	if strings.Contains(view(), "etcd-1") || strings.Contains(view(), "waiting") {
		t.Errorf("finished etcd-1 or a waiting host still shown:\n%s", view())
	}

	// compute-1 fails: it leaves the list and is counted as failed.
	feed(stepMsg{Stage: s.prepare, Host: "compute-1", Step: s.prepare.Steps[4], Done: true, Err: errors.New("exit status 1")})
	checkLines(t, lines(), []string{"1/3 hosts  3/6 steps  1 failed"})
	if strings.Contains(view(), "compute-1") {
		t.Errorf("failed compute-1 still shown as busy:\n%s", view())
	}

	feed(s.done(s.prepare, "etcd-2", 3, false), stageMsg{Index: 1, Total: 4, Stage: s.prepare, Done: true})
	if v := view(); v != "" {
		t.Errorf("between stages the live area shows %q", v)
	}
	feed(stageMsg{Index: 3, Total: 4, Stage: s.add}, s.start(s.add, "etcd-2", 0))
	checkLines(t, lines(), []string{
		"[etcd] adding member 2/3 (etcd-2) (stage 3 of 4)",
		"0/1 hosts  0/2 steps",
		"etcd-2  etcd-add-learner etcd-2 https://192.0.2.12:2380  (step 1/2, 0s)",
	})
	// An event of another stage (late, or a bug) changes nothing.
	feed(s.done(s.prepare, "etcd-2", 1, true))
	checkLines(t, lines(), []string{"0/1 hosts  0/2 steps"})

	var cmd tea.Cmd
	m, cmd = m.Update(finishMsg{})
	if v := view(); v != "" {
		t.Errorf("after the run the live area shows %q", v)
	}
	if cmd == nil {
		t.Fatal("finish does not quit the program")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Error("finish does not quit the program")
	}
}

// A terminal too short for every busy host shows as many as fit and counts
// the rest.
func TestLiveModelShortTerminal(t *testing.T) {
	var m tea.Model = newLiveModel(lipgloss.NewRenderer(io.Discard), time.Now)
	var st plan.Stage
	st.Kind, st.Title, st.Parallel = plan.StageNodesJoin, "joining workers", 10
	for i := range 10 {
		st.Steps = append(st.Steps, plan.Step{Op: plan.OpKubeadmJoin, Host: "compute-" + string(rune('a'+i))})
	}
	m, _ = m.Update(tea.WindowSizeMsg{Width: 80, Height: 7})
	m, _ = m.Update(stageMsg{Index: 1, Total: 1, Stage: &st})
	for _, s := range st.Steps {
		m, _ = m.Update(stepMsg{Stage: &st, Host: s.Host, Step: s})
	}
	lines := strings.Split(m.View(), "\n")
	if len(lines) > 6 {
		t.Errorf("%d lines on a 7-line terminal:\n%s", len(lines), m.View())
	}
	checkLines(t, lines, []string{"compute-a  kubeadm-join", "compute-c  kubeadm-join", "7 more busy"})
}

// checkLines fails unless each wanted line is, trimmed, a line of got (the
// progress bar's characters aside), in order.
func checkLines(t *testing.T, got, want []string) {
	t.Helper()
	i := 0
	for _, g := range got {
		g = strings.TrimSpace(strings.Trim(g, " █░⠋"))
		if i < len(want) && strings.HasPrefix(g, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("live area lacks %q (in order):\n%s", want[i], strings.Join(got, "\n"))
	}
}

// After finish the live area never comes back: a stage event that comes
// late prints its line plainly instead of starting a program that nobody
// would stop (it would hide the cursor and draw over the summary).
func TestTermViewNoProgramAfterFinish(t *testing.T) {
	var out bytes.Buffer
	g := &globalOptions{stdout: &out, stderr: io.Discard, logLevel: "info", logFormat: "text"}
	var err error
	if g.log, err = g.logger(); err != nil {
		t.Fatal(err)
	}
	v := g.newTermView(g.textView(scriptCluster(), false), &out, time.Now)
	s := newLiveScript()
	v.Stage(provision.StageEvent{Index: 1, Total: 2, Stage: s.prepare})
	v.finish()
	out.Reset()
	v.Stage(provision.StageEvent{Index: 2, Total: 2, Stage: s.add})
	v.Stage(provision.StageEvent{Index: 2, Total: 2, Stage: s.add, Done: true, Duration: time.Second, Changed: 2})
	if v.prog != nil {
		t.Fatal("a stage after finish started a live program")
	}
	if want := "✓ [etcd] adding member 2/3 (etcd-2): done in 1s, 2 changed\n"; !strings.HasSuffix(out.String(), want) {
		t.Errorf("after finish the stage printed %q, want the line %q", out.String(), want)
	}
}
