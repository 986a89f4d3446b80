//go:build unix

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision"
	"github.com/kprov/kprov/provision/plan"
)

// TestTerminalRun replays on a real terminal (tmux, 120x40, TERM
// xterm-256color) what the lab showed of an apply that fails and of one
// that converges, with the calls apply makes in its order: the plan, the
// stages' and steps' events, a warning through the log on stderr (the same
// terminal), finish, the summary tables, and the final line (the error as
// main prints it, or the kubeconfig line). Stage titles and the failure are
// wider than the terminal, so their printed lines wrap over rows the live
// area has drawn on. After the run it reads the whole screen (capture-pane
// -J joins wrapped rows): every printed line whole, nothing of the live area
// left anywhere, and the cursor shown.
func TestTerminalRun(t *testing.T) {
	for _, outcome := range []string{"failing", "converging"} {
		t.Run(outcome, func(t *testing.T) { terminalRun(t, outcome) })
	}
}

func terminalRun(t *testing.T, outcome string) {
	tm := newTmuxServer(t)
	ctl := tm.control()
	exitFile := tm.start("run", "TestTerminalRunHelper", 120, 40, "TERM=xterm-256color",
		"KPROV_TERMVIEW_CTL="+ctl.path, "KPROV_TERMRUN="+outcome)
	sc := newRunScript()
	if raw := os.Getenv("KPROV_TERMRUN_RAW"); raw != "" {
		tm.run("pipe-pane", "-t", "run", "-o", "cat >>"+raw)
	}

	// The etcd stage has two of its three hosts done when its last host
	// ends: the stage's line, wider than the terminal, is printed where the
	// live area's progress bar was (as on the lab).
	tm.waitFor("run", "the etcd stage with 2 of 3 hosts done", exitFile, has("2/3 hosts  2/3 steps"))
	ctl.next()
	// The workers join: both busy, the stage's title cut to the width.
	tm.waitFor("run", "both workers busy joining", exitFile, func(s []string) bool {
		return has("compute-1  kubeadm-join")(s) && has("compute-2  kubeadm-join")(s)
	})
	ctl.next()
	// A warning from the log on stderr, wider than the terminal, above the
	// live area.
	tm.waitFor("run", "the warning", exitFile, has("WARN etcd member etcd-3"))
	ctl.next()

	// The helper's exit file can appear before tmux has drawn the last
	// bytes the helper wrote (tmux reads the pane's output on its own
	// schedule, late on a loaded machine): once it exists, the screen is
	// taken when it ends with the run's last words, or after 10 s.
	// The run's last words: the error as main prints it (its first line and
	// its last), or the kubeconfig.
	end := map[string][]string{
		"failing":    {"kprov: apply failed on compute-1 at ", "kubeadm's log on compute-1: /var/log/kprov/kubeadm.log"},
		"converging": {"Admin kubeconfig: /var/lib/kprov/test/admin.conf"},
	}[outcome]
	lastWords := end[len(end)-1]
	tm.waitFor("run", "the end of the run", exitFile, func([]string) bool { return tm.exists(exitFile) })
	var s []string
	for settle := time.Now().Add(10 * time.Second); ; {
		s = tm.screen("run")
		if (len(s) > 0 && s[len(s)-1] == lastWords) || time.Now().After(settle) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	text := strings.Join(s, "\n")
	status, _ := os.ReadFile(exitFile)
	wantCode := map[string]string{"failing": "1", "converging": "0"}[outcome]
	if got := strings.TrimSpace(string(status)); got != wantCode {
		t.Errorf("the helper exited %s, want %s:\n%s", got, wantCode, text)
	}

	// Every printed line is on the screen whole, on a line of its own.
	printed := []string{
		"✓ " + stageLine(provision.StageEvent{Stage: sc.prepare, Done: true, Duration: sc.took, Changed: 5}),
		"✓ " + stageLine(provision.StageEvent{Stage: sc.finalize, Done: true, Duration: sc.took, Changed: 2}),
	}
	if outcome == "failing" {
		printed = append(printed,
			"  ✗ compute-1: "+sc.join.Steps[0].String()+": "+sc.failure,
			"✗ "+stageLine(provision.StageEvent{Stage: sc.join, Done: true, Duration: sc.took, Err: errors.New(sc.failure)}))
	} else {
		printed = append(printed,
			"✓ "+stageLine(provision.StageEvent{Stage: sc.join, Done: true, Duration: sc.took, Changed: 2}),
			"✓ "+stageLine(provision.StageEvent{Stage: sc.ready, Done: true, Duration: sc.took}))
	}
	for _, p := range printed[1:3] {
		if n := utf8.RuneCountInString(p); n <= 120 {
			t.Fatalf("printed line %q is %d wide: the test wants it wider than the terminal", p, n)
		}
	}
	for _, p := range printed {
		if !slices.Contains(s, p) {
			t.Errorf("the screen lacks the line %q whole:\n%s", p, text)
		}
	}
	warn := slices.IndexFunc(s, func(l string) bool { return strings.HasPrefix(l, "WARN etcd member etcd-3") })
	if warn < 0 || !strings.HasSuffix(s[warn], "host=etcd-3") {
		t.Errorf("the warning is not on a line of its own, whole:\n%s", text)
	}
	// The summary, then the last words (end, above).
	wantInOrder(t, s, append([]string{"Plan: ", printed[0], printed[1], printed[2], printed[3],
		"HOST", "etcd-1", "compute-2", "STAGE", "prepare", "nodes/join"}, end...)...)
	if last := end[len(end)-1]; s[len(s)-1] != last {
		t.Errorf("the screen ends with %q, want %q", s[len(s)-1], last)
	}
	for _, l := range s {
		if liveRemnant.MatchString(l) {
			t.Errorf("the live area left %q on the screen", l)
		}
	}
	if cursor := tm.cursor("run"); cursor != "1" {
		t.Errorf("cursor flag %q after the run, want 1 (shown)", cursor)
	}
}

// liveRemnant matches what only the live area draws: its stage header's
// place in the run, a busy host's step count, the waiting count, the
// progress bar and the spinner.
var liveRemnant = regexp.MustCompile(`\(stage \d+ of \d+\)|\(step \d+/\d+, |\d+ waiting|[█░⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]`)

// runScript is the plan TestTerminalRun's helper applies: five hosts, a
// prepare stage, the etcd stage the lab showed, the workers joining (under a
// title wider than the terminal) and the wait for Ready.
type runScript struct {
	cluster                        *provision.Cluster
	plan                           *plan.Plan
	prepare, finalize, join, ready *plan.Stage
	took                           time.Duration
	failure                        string // the first line of compute-1's error
}

func newRunScript() runScript {
	inv := &inventory.Inventory{}
	inv.Cluster.StateDir = "/var/lib/kprov/test"
	for _, h := range []struct {
		name string
		role inventory.Role
	}{{"etcd-1", inventory.RoleEtcd}, {"etcd-2", inventory.RoleEtcd}, {"etcd-3", inventory.RoleEtcd}, {"compute-1", inventory.RoleCompute}, {"compute-2", inventory.RoleCompute}} {
		inv.Hosts = append(inv.Hosts, &inventory.Host{Name: h.name, Address: "192.0.2.1", Roles: []inventory.Role{h.role}})
	}
	pl := &plan.Plan{Cluster: "test", Stages: []plan.Stage{
		{Kind: plan.StagePrepare, Title: "preparing hosts", Parallel: 5},
		{Kind: plan.StageEtcdFinalize, Title: "recording the full member list in every added member's configuration", Parallel: 3},
		{Kind: plan.StageNodesJoin, Title: "joining the workers through the API server's load-balanced endpoint with a freshly created bootstrap token", Parallel: 2},
		{Kind: plan.StageNodesReady, Title: "waiting for every node to be Ready", Target: "etcd-1", Parallel: 1},
	}}
	for _, h := range inv.Hosts {
		pl.Stages[0].Steps = append(pl.Stages[0].Steps, plan.Step{Op: plan.OpUploadFile, Host: h.Name, Path: "/etc/kprov/" + h.Name + ".conf", Mode: 0o644})
	}
	for _, h := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		pl.Stages[1].Steps = append(pl.Stages[1].Steps, plan.Step{Op: plan.OpUploadFile, Host: h, Path: "/etc/etcd/etcd.conf.yml", Mode: 0o600})
	}
	for _, h := range []string{"compute-1", "compute-2"} {
		pl.Stages[2].Steps = append(pl.Stages[2].Steps, plan.Step{Op: plan.OpKubeadmJoin, Host: h})
	}
	pl.Stages[3].Steps = []plan.Step{{Op: plan.OpWaitNodeReady, Host: "etcd-1"}}
	pl.Count()
	return runScript{
		cluster: &provision.Cluster{Inventory: inv},
		plan:    pl,
		prepare: &pl.Stages[0], finalize: &pl.Stages[1], join: &pl.Stages[2], ready: &pl.Stages[3],
		took: 662 * time.Millisecond,
		failure: "run kubeadm join: wait: remote command exited without exit status or exit signal " +
			"(the connection to compute-1 at 192.0.2.1:22 was lost: its machine stopped answering)",
	}
}

// TestTerminalRunHelper is the run TestTerminalRun starts in a tmux pane;
// on its own it skips.
func TestTerminalRunHelper(t *testing.T) {
	outcome := os.Getenv("KPROV_TERMRUN")
	if outcome == "" {
		t.Skip("run by TestTerminalRun inside tmux")
	}
	os.Exit(terminalRunScript(os.Getenv("KPROV_TERMVIEW_CTL"), outcome == "failing"))
}

// terminalRunScript does what apply and main do around the pipeline, with
// the pipeline's events scripted, and returns the exit code.
func terminalRunScript(ctlPath string, fail bool) int {
	ctl, err := os.Open(ctlPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 3
	}
	defer ctl.Close()
	lines := bufio.NewScanner(ctl)
	wait := func() {
		if !lines.Scan() {
			fmt.Fprintln(os.Stderr, "helper: the test stopped talking")
			os.Exit(3)
		}
	}
	// As main: stdout and stderr through their redactors.
	_, g := newRoot(os.Stdout, os.Stderr)
	g.logLevel, g.logFormat = "info", "text"
	if g.log, err = g.logger(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 3
	}
	sc := newRunScript()
	view := g.applyView(sc.cluster, false)
	if _, ok := view.(*termView); !ok {
		fmt.Fprintf(os.Stderr, "helper: apply picked %T on a terminal\n", view)
		return 3
	}
	err = func() error {
		defer view.finish()
		rep, err := sc.apply(view, g, fail, wait)
		view.finish()
		view.report(rep, 3*time.Second)
		if err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "Admin kubeconfig: %s\n", sc.cluster.KubeconfigPath())
		return nil
	}()
	if err != nil {
		// As run prints an error.
		fmt.Fprintf(g.stderr, "kprov: %v\n", err)
		return exitError
	}
	return exitOK
}

// apply tells the view what the pipeline's Apply would, waiting for the
// test where it reads the screen, and returns the report and error Apply
// would.
func (sc runScript) apply(v applyView, g *globalOptions, fail bool, wait func()) (*provision.Report, error) {
	facts := plan.FreshFacts([]string{"etcd-1", "etcd-2", "etcd-3", "compute-1", "compute-2"})
	if err := v.Plan(sc.plan, sc.plan.HostChanges(sc.cluster.Inventory, facts)); err != nil {
		return nil, err
	}
	rep := &provision.Report{Changes: map[string][]plan.Step{}}
	total := len(sc.plan.Stages)
	startStage := func(i int) { v.Stage(provision.StageEvent{Index: i + 1, Total: total, Stage: &sc.plan.Stages[i]}) }
	endStage := func(i, changed int, err error) {
		st := &sc.plan.Stages[i]
		v.Stage(provision.StageEvent{Index: i + 1, Total: total, Stage: st, Done: true, Duration: sc.took, Changed: changed, Err: err})
		sr := provision.StageReport{Name: st.Name(), Parallel: st.Parallel, Hosts: len(st.Hosts()), Steps: len(st.Steps), Changed: changed, Duration: sc.took}
		if err != nil {
			sr.Err = err.Error()
		}
		rep.Stages = append(rep.Stages, sr)
	}
	begin := func(st *plan.Stage, i int) {
		v.Step(provision.StepEvent{Stage: st, Host: st.Steps[i].Host, Step: st.Steps[i]})
	}
	end := func(st *plan.Stage, i int, changed bool, err error) {
		s := st.Steps[i]
		v.Step(provision.StepEvent{Stage: st, Host: s.Host, Step: s, Done: true, Changed: changed, Err: err})
		if changed {
			rep.Changes[s.Host] = append(rep.Changes[s.Host], s)
		}
	}

	startStage(0)
	for i := range sc.prepare.Steps {
		begin(sc.prepare, i)
	}
	for i := range sc.prepare.Steps {
		end(sc.prepare, i, true, nil)
	}
	endStage(0, 5, nil)

	startStage(1)
	for i := range sc.finalize.Steps {
		begin(sc.finalize, i)
	}
	end(sc.finalize, 0, true, nil)
	end(sc.finalize, 1, true, nil)
	wait() // the bar at 2/3
	end(sc.finalize, 2, false, nil)
	endStage(1, 2, nil)

	startStage(2)
	begin(sc.join, 0)
	begin(sc.join, 1)
	wait() // both workers busy
	v.Warn("etcd member etcd-3 answered its health check slowly; the cluster stays healthy, but a slow disk on that machine delays every write", "host", "etcd-3")
	wait() // the warning printed
	end(sc.join, 1, true, nil)
	if fail {
		cause := errors.New(sc.failure + "\n\nkubeadm's log on compute-1: /var/log/kprov/kubeadm.log")
		err := &provision.StepError{Host: "compute-1", Step: sc.join.Steps[0], Err: cause}
		end(sc.join, 0, false, cause)
		endStage(2, 1, err)
		rep.FailedStage, rep.FailedHost, rep.FailedStep = sc.join.Name(), "compute-1", sc.join.Steps[0].String()
		return rep, fmt.Errorf("apply failed on %s at %q (stage %s): stage %s: %w", rep.FailedHost, rep.FailedStep, rep.FailedStage, rep.FailedStage, err)
	}
	end(sc.join, 0, true, nil)
	endStage(2, 2, nil)
	startStage(3)
	begin(sc.ready, 0)
	end(sc.ready, 0, false, nil)
	endStage(3, 0, nil)
	return rep, nil
}

// tmuxServer is a tmux server of a test's own (its socket and
// configuration in the test's directory), killed when the test ends.
type tmuxServer struct {
	t               *testing.T
	tmux, dir, sock string
	conf            string
}

// newTmuxServer skips the test when tmux is missing, except in CI.
func newTmuxServer(t *testing.T) *tmuxServer {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tmux is missing: scripts/setup installs it")
		}
		t.Skip("tmux is not installed (scripts/setup installs it)")
	}
	dir := t.TempDir()
	tm := &tmuxServer{t: t, tmux: tmux, dir: dir, sock: filepath.Join(dir, "tmux.sock"), conf: filepath.Join(dir, "tmux.conf")}
	if err := os.WriteFile(tm.conf, []byte("set -g remain-on-exit on\nset -g status off\nset -g history-limit 5000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(tmux, "-S", tm.sock, "kill-server").CombinedOutput(); err != nil {
			t.Logf("tmux kill-server: %v %s", err, out)
		}
	})
	return tm
}

func (tm *tmuxServer) run(args ...string) string {
	tm.t.Helper()
	cmd := exec.Command(tm.tmux, append([]string{"-S", tm.sock, "-f", tm.conf}, args...)...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "TMUX=") })
	out, err := cmd.CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start runs one helper test of this test binary in a new session of the
// given size and returns the file its exit status is written to (tmux's
// pane_dead_status is not always filled in once the pane is dead). The
// shell around it stays (sleeping, writing nothing) after the helper ends:
// with remain-on-exit, tmux 3.3 hides the cursor of a dead pane itself, so
// only a live pane's cursor flag says what the helper left.
func (tm *tmuxServer) start(name, helper string, width, height int, env ...string) string {
	tm.t.Helper()
	self, err := os.Executable()
	if err != nil {
		tm.t.Fatal(err)
	}
	exitFile := filepath.Join(tm.dir, name+".exit")
	args := []string{"new-session", "-d", "-s", name, "-x", fmt.Sprint(width), "-y", fmt.Sprint(height)}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	tm.run(append(args, "sh", "-c", `"$0" -test.run="^$2\$"; echo $? >"$1.new" && mv "$1.new" "$1"; exec sleep 3600`, self, exitFile, helper)...)
	return exitFile
}

func (tm *tmuxServer) exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// screen is everything the pane shows and has scrolled away, wrapped rows
// joined, without trailing blanks.
func (tm *tmuxServer) screen(name string) []string {
	lines := strings.Split(tm.run("capture-pane", "-p", "-J", "-S", "-", "-t", name), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// waitFor polls the screen until ok; it fails once the helper has ended
// (exitFile written) without the screen showing it, or after a minute.
func (tm *tmuxServer) waitFor(name, what, exitFile string, ok func([]string) bool) []string {
	tm.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		over := tm.exists(exitFile) // before the look: an end after it gets one more
		s := tm.screen(name)
		if ok(s) {
			return s
		}
		if over || time.Now().After(deadline) {
			tm.t.Fatalf("the screen never showed %s:\n%s", what, strings.Join(s, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (tm *tmuxServer) cursor(name string) string {
	return strings.TrimSpace(tm.run("display-message", "-p", "-t", name, "#{cursor_flag}"))
}

// control is the fifo the helper waits on between the test's looks.
func (tm *tmuxServer) control() *controlFifo {
	tm.t.Helper()
	path := filepath.Join(tm.dir, "ctl")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		tm.t.Fatal(err)
	}
	// Read-write, so opening never waits for the helper and a write never
	// fails while it has not opened its end yet.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tm.t.Fatal(err)
	}
	tm.t.Cleanup(func() { f.Close() })
	return &controlFifo{t: tm.t, path: path, f: f}
}

type controlFifo struct {
	t    *testing.T
	path string
	f    *os.File
}

// next lets the helper go on to its next point.
func (c *controlFifo) next() {
	c.t.Helper()
	if _, err := c.f.WriteString("next\n"); err != nil {
		c.t.Fatal(err)
	}
}

func has(sub string) func([]string) bool {
	return func(s []string) bool {
		return slices.ContainsFunc(s, func(l string) bool { return strings.Contains(l, sub) })
	}
}
