//go:build unix

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestTerminalView runs the terminal view in a real terminal: tmux starts
// this test binary (TestTerminalViewHelper) in a pane of its own server,
// the helper drives the view with a scripted apply, and the test reads the
// screen with capture-pane at points where the script waits for it. It
// checks what a person sees: the plan and the question (answered by typing
// yes), a warning above the live area, the stage with its counts, a busy
// host with its current step, a finished host folded away, a finished stage
// printed above, and at the end the summary tables on a screen with nothing
// of the live area left and the cursor shown again. It never looks at the
// clock: each wait ends when the screen shows what it should (or the helper
// ends); the deadline only bounds a failing run.
func TestTerminalView(t *testing.T) {
	tm := newTmuxServer(t)
	ctl := tm.control()
	next := ctl.next
	exitFile := tm.start("kprov", "TestTerminalViewHelper", 100, 40, "KPROV_TERMVIEW_CTL="+ctl.path)
	screen := func() []string { return tm.screen("kprov") }
	waitFor := func(what string, ok func([]string) bool) []string {
		t.Helper()
		return tm.waitFor("kprov", what, exitFile, ok)
	}

	// The plan, then the question; typing yes starts the run.
	waitFor("the question", has("Apply? Only 'yes' is accepted."))
	tm.run("send-keys", "-t", "kprov", "yes", "Enter")

	// Point A: etcd-1 has finished both its steps, etcd-2 is on its first,
	// compute-1 waits for a slot (the stage runs 2 hosts at once). The
	// screen is redrawn as events come, so wait for the warning, the last
	// event before this point, to be drawn with the area under it.
	s := waitFor("the warning over the prepare stage", func(s []string) bool {
		return has("WARN clock skew")(s) && has("1/3 hosts  2/6 steps")(s)
	})
	live := liveArea(t, s, "[prepare] preparing hosts (stage 1 of 2)")
	wantInOrder(t, s, "WARN clock skew host=etcd-2", "[prepare] preparing hosts (stage 1 of 2)")
	wantInOrder(t, live, "1/3 hosts  2/6 steps", "etcd-2  upload-file /etc/kprov/etcd-2.conf (0644)  (step 1/2, ", "1 waiting")
	if has("etcd-1")(live) || has("compute-1")(live) {
		t.Errorf("the live area shows a finished or waiting host by name:\n%s", strings.Join(live, "\n"))
	}
	next()

	// Point B: the prepare stage is printed above as done; etcd-2 is busy
	// in the next stage.
	s = waitFor("the etcd stage", has("etcd-2  etcd-add-learner etcd-2 https://192.0.2.12:2380  (step 1/2, "))
	live = liveArea(t, s, "[etcd] adding member 2/3 (etcd-2) (stage 2 of 2)")
	wantInOrder(t, s, "✓ [prepare] preparing hosts: 6 steps on 3 hosts: done in 1.5s, 5 changed", "[etcd] adding member 2/3 (etcd-2) (stage 2 of 2)")
	wantInOrder(t, live, "0/1 hosts  0/2 steps")
	next()

	// The end, while the helper still runs: the last stage printed above,
	// the summary, and nothing of the live area anywhere.
	s = waitFor("the summary", has("7 changes in 3s"))
	wantInOrder(t, s, "Plan: ", "Apply? Only 'yes' is accepted. [yes/no]: yes",
		"✓ [prepare] preparing hosts: 6 steps on 3 hosts: done in 1.5s, 5 changed",
		"✓ [etcd] adding member 2/3 (etcd-2): done in 1.5s, 2 changed",
		"HOST", "etcd-1", "etcd-2", "compute-1", "STAGE", "prepare", "etcd/add/etcd-2", "7 changes in 3s")
	if got := s[len(s)-1]; got != "7 changes in 3s" {
		t.Errorf("the screen ends with %q, want the summary's last line", got)
	}
	for _, l := range s {
		if strings.Contains(l, "(stage ") || strings.ContainsAny(l, "█░⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏") || strings.Contains(l, " waiting") || strings.Contains(l, "(step ") {
			t.Errorf("the live area left %q on the screen", l)
		}
	}
	cursor := strings.Fields(tm.run("display-message", "-p", "-t", "kprov", "#{cursor_flag} #{cursor_x}"))
	if len(cursor) != 2 || cursor[0] != "1" || cursor[1] != "0" {
		t.Errorf("cursor flag and column %v, want shown (1) at column 0", cursor)
	}
	next()
	var status []byte
	for deadline := time.Now().Add(60 * time.Second); status == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		status, _ = os.ReadFile(exitFile)
	}
	if status := strings.TrimSpace(string(status)); status != "0" {
		t.Errorf("the helper exited %s:\n%s", status, strings.Join(screen(), "\n"))
	}
}

// liveArea is the screen from the live area's first line (the stage's
// header) down.
func liveArea(t *testing.T, screen []string, header string) []string {
	t.Helper()
	for i := len(screen) - 1; i >= 0; i-- {
		if strings.Contains(screen[i], header) {
			return screen[i:]
		}
	}
	t.Fatalf("no live area headed %q:\n%s", header, strings.Join(screen, "\n"))
	return nil
}

// wantInOrder fails unless each wanted text is on a line, in order.
func wantInOrder(t *testing.T, lines []string, want ...string) {
	t.Helper()
	i := 0
	for _, l := range lines {
		if i < len(want) && strings.Contains(l, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("the screen lacks %q (after %q):\n%s", want[i], want[:i], strings.Join(lines, "\n"))
	}
}

// TestTerminalViewHelper is the scripted apply TestTerminalView runs in a
// tmux pane; on its own it skips.
func TestTerminalViewHelper(t *testing.T) {
	ctl := os.Getenv("KPROV_TERMVIEW_CTL")
	if ctl == "" {
		t.Skip("run by TestTerminalView inside tmux")
	}
	if err := terminalViewScript(ctl); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// terminalViewScript tells the view what an apply would: the plan, the
// question, then the events of two stages, waiting for the test (a line on
// ctl) where the test reads the screen.
func terminalViewScript(ctlPath string) error {
	ctl, err := os.Open(ctlPath)
	if err != nil {
		return err
	}
	defer ctl.Close()
	lines := bufio.NewScanner(ctl)
	wait := func() error {
		if !lines.Scan() {
			return errors.New("the test stopped talking")
		}
		return nil
	}

	g := &globalOptions{stdout: os.Stdout, stderr: os.Stderr, logLevel: "info", logFormat: "text"}
	if g.log, err = g.logger(); err != nil {
		return err
	}
	// On this terminal too, --log-format json and TERM=dumb get plain lines.
	json := *g
	json.logFormat = "json"
	if v := json.applyView(scriptCluster(), false); !isText(v) {
		return fmt.Errorf("apply picked %T on a terminal with --log-format json", v)
	}
	term := os.Getenv("TERM") // tmux's
	os.Setenv("TERM", "dumb")
	if v := g.applyView(scriptCluster(), false); !isText(v) {
		return fmt.Errorf("apply picked %T on a terminal with TERM=dumb", v)
	}
	os.Setenv("TERM", term)
	v := g.applyView(scriptCluster(), false)
	if _, ok := v.(*termView); !ok {
		return fmt.Errorf("apply picked %T on a terminal", v)
	}
	return playApply(v, wait)
}
