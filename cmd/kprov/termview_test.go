//go:build unix

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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
// clock: each wait ends when the screen shows what it should (or the pane
// dies); the deadline only bounds a failing run.
func TestTerminalView(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tmux is missing: scripts/setup installs it")
		}
		t.Skip("tmux is not installed (scripts/setup installs it)")
	}
	dir := t.TempDir()
	ctlPath := filepath.Join(dir, "ctl")
	if err := syscall.Mkfifo(ctlPath, 0o600); err != nil {
		t.Fatal(err)
	}
	// Read-write, so opening never waits for the helper and a write never
	// fails while it has not opened its end yet.
	ctl, err := os.OpenFile(ctlPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	next := func() {
		if _, err := ctl.WriteString("next\n"); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g status off\nset -g history-limit 5000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "tmux.sock")
	tm := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(tmux, append([]string{"-S", sock, "-f", conf}, args...)...)
		cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "TMUX=") })
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A shell around the helper records its exit status in a file: tmux's
	// own pane_dead_status is not always filled in once the pane is dead.
	exitFile := filepath.Join(dir, "exit")
	tm("new-session", "-d", "-s", "kprov", "-x", "100", "-y", "40", "-e", "KPROV_TERMVIEW_CTL="+ctlPath,
		"sh", "-c", `"$0" -test.run='^TestTerminalViewHelper$'; echo $? >"$1.new" && mv "$1.new" "$1"`, self, exitFile)
	defer tm("kill-server")

	dead := func() bool { return strings.HasPrefix(tm("display-message", "-p", "-t", "kprov", "#{pane_dead}"), "1") }
	// screen is everything the pane shows and has scrolled away, one line
	// each, without the trailing blank lines.
	screen := func() []string {
		lines := strings.Split(tm("capture-pane", "-p", "-J", "-S", "-", "-t", "kprov"), "\n")
		for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
			lines = lines[:len(lines)-1]
		}
		return lines
	}
	waitFor := func(what string, ok func([]string) bool) []string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			over := dead() // before the look: a pane that died after it gets one more
			s := screen()
			if ok(s) {
				return s
			}
			if over || time.Now().After(deadline) {
				t.Fatalf("the screen never showed %s:\n%s", what, strings.Join(s, "\n"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	has := func(sub string) func([]string) bool {
		return func(s []string) bool {
			return slices.ContainsFunc(s, func(l string) bool { return strings.Contains(l, sub) })
		}
	}

	// The plan, then the question; typing yes starts the run.
	waitFor("the question", has("Apply? Only 'yes' is accepted."))
	tm("send-keys", "-t", "kprov", "yes", "Enter")

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
	cursor := strings.Fields(tm("display-message", "-p", "-t", "kprov", "#{cursor_flag} #{cursor_x}"))
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
