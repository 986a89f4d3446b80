//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestApplyOnTerminal runs kprov apply on the fault lab inside a real
// terminal (tmux on a private socket) and reads the screen as a person
// would, twice:
//
//   - while etcd-2 joins, the live area shows the stage with its place in
//     the run, the hosts and steps done, and etcd-2 busy with its current
//     step; finished stages are printed above it. Then compute-1's machine
//     is stopped, so a later stage fails: at the end the live area is gone,
//     the summary tables and the failure are on screen, and the cursor is
//     back;
//   - with compute-1 booted again, a second apply on a fresh terminal
//     converges: every node Ready, the tables and the kubeconfig line, and
//     again nothing left of the live area and the cursor shown.
//
// Every wait ends on what the screen shows; the deadline only bounds a
// failing run. Then kprov status exits 0 with every host up, and 1 with an
// etcd member's machine stopped.
// liveHeader is the live area's stage line, e.g. "(stage 3 of 9)".
var liveHeader = regexp.MustCompile(`\(stage \d+ of \d+\)`)

func TestApplyOnTerminal(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatal("tmux is missing: scripts/setup installs it")
	}
	l, inv, ctx := upFaultLab(t, 15*time.Minute)
	dir := t.TempDir()
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g status off\nset -g history-limit 20000\n"), 0o600); err != nil {
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
	defer func() {
		if out, err := exec.Command(tmux, "-S", sock, "kill-server").CombinedOutput(); err != nil {
			t.Logf("tmux kill-server: %v %s", err, out)
		}
	}()
	match := func(re string) func([]string) bool {
		r := regexp.MustCompile(re)
		return func(s []string) bool { return slices.ContainsFunc(s, r.MatchString) }
	}

	// apply starts kprov apply in a new 120x40 terminal (tmux session
	// name) and returns what reads its screen and its exit code. The shell
	// around kprov stays (sleeping, writing nothing) once kprov has ended:
	// with remain-on-exit, tmux hides a dead pane's cursor itself, so only a
	// live pane's cursor flag says what kprov left.
	apply := func(name string) (waitFor func(what string, ok func([]string) bool) []string, end func() (string, []string)) {
		exitFile := filepath.Join(dir, name+".exit")
		tm("new-session", "-d", "-s", name, "-x", "120", "-y", "40", "-e", "TERM=xterm-256color",
			"sh", "-c", `"$0" -f "$1" apply --auto-approve; echo $? >"$2.new" && mv "$2.new" "$2"; exec sleep 3600`, kprovBin, inv, exitFile)
		screen := func() []string {
			lines := strings.Split(tm("capture-pane", "-p", "-J", "-S", "-", "-t", name), "\n")
			for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
				lines = lines[:len(lines)-1]
			}
			return lines
		}
		finished := func() bool { _, err := os.Stat(exitFile); return err == nil }
		waitFor = func(what string, ok func([]string) bool) []string {
			t.Helper()
			for {
				over := finished()
				s := screen()
				if ok(s) {
					return s
				}
				if over || ctx.Err() != nil {
					t.Fatalf("the screen never showed %s:\n%s", what, strings.Join(s, "\n"))
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		end = func() (string, []string) {
			t.Helper()
			waitFor("the run's end", func([]string) bool { return finished() })
			code, _ := os.ReadFile(exitFile)
			return strings.TrimSpace(string(code)), screen()
		}
		return waitFor, end
	}
	// clean checks nothing of the live area is left and the cursor is shown.
	clean := func(name string, s []string) {
		t.Helper()
		for _, l := range s {
			if liveHeader.MatchString(l) || strings.Contains(l, "(step ") || strings.ContainsAny(l, "█░⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏") {
				t.Errorf("%s: the live area left %q on the screen", name, l)
			}
		}
		if cursor := strings.TrimSpace(tm("display-message", "-p", "-t", name, "#{cursor_flag}")); cursor != "1" {
			t.Errorf("%s: cursor flag %q after the run, want 1 (shown)", name, cursor)
		}
	}

	// 1. While etcd-2 joins: the stage, its counts, etcd-2's current step;
	// the stages before it printed above as done.
	waitFor, end := apply("failing")
	busy := `^\s*etcd-2\s+(etcd-add-learner|upload-file|start-service|wait-etcd-caught-up|etcd-promote|wait-etcd-healthy)\b.*\(step \d+/\d+, `
	s := waitFor("etcd-2 busy joining", func(s []string) bool {
		return match(`\[etcd\] adding member 2/3 \(etcd-2\) \(stage \d+ of \d+\)`)(s) && match(`\d+/1 hosts\s+\d+/\d+ steps`)(s) && match(busy)(s)
	})
	for _, want := range []string{`✓ \[prepare\] .*: done in .*, \d+ changed`, `✓ \[etcd\] starting member 1/3 \(etcd-1\) as a new cluster: done in `} {
		if !match(want)(s) {
			t.Errorf("the screen lacks %s above the live area:\n%s", want, strings.Join(s, "\n"))
		}
	}
	// compute-1's plug pulled: a later stage fails on it.
	if err := l.Stop(ctx, "compute-1", 0); err != nil {
		t.Fatal(err)
	}
	code, s := end()
	text := strings.Join(s, "\n")
	if code != "1" {
		t.Errorf("apply exited %q with compute-1 stopped, want 1:\n%s", code, text)
	}
	for _, want := range []string{"HOST", "ROLES", "CHANGED", "STAGE", "HOSTS", "STEPS", "apply failed on compute-1 at "} {
		if !strings.Contains(text, want) {
			t.Errorf("the final screen of the failed run lacks %q:\n%s", want, text)
		}
	}
	if !match(`✗ \[[a-z-]+\] .*: FAILED after `)(s) {
		t.Errorf("the failed stage is not printed:\n%s", text)
	}
	clean("failing", s)

	// 2. compute-1 back: the next apply converges, on a fresh terminal.
	if err := l.Start(ctx, "compute-1", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	_, end = apply("converging")
	code, s = end()
	text = strings.Join(s, "\n")
	if code != "0" {
		t.Errorf("apply exited %q after compute-1 came back, want 0:\n%s", code, text)
	}
	for _, want := range []string{"HOST", "STAGE", "Admin kubeconfig: "} {
		if !strings.Contains(text, want) {
			t.Errorf("the final screen of the converging run lacks %q:\n%s", want, text)
		}
	}
	if !match(`✓ \[nodes\] waiting for every node to be Ready: .*done in `)(s) {
		t.Errorf("the wait for Ready is not printed as done:\n%s", text)
	}
	clean("converging", s)

	// kprov status: every host answers and etcd's voters are healthy: 0;
	// with etcd-2's machine stopped: 1, naming it.
	if out, err := kprovErr(t, "-f", inv, "status"); exitCode(err) != 0 {
		t.Errorf("status on a healthy lab: %v\n%s", err, out)
	}
	if err := l.Stop(ctx, "etcd-2", 0); err != nil {
		t.Fatal(err)
	}
	out, err := kprovErr(t, "-f", inv, "status")
	if exitCode(err) != 1 || !strings.Contains(out, "etcd-2") {
		t.Errorf("status with etcd-2 stopped: %v, want exit 1 naming etcd-2\n%s", err, out)
	}
}
