package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPrepUnitGolden keeps the unit and the script every lab machine runs
// at boot as reviewable text (testdata/prep.golden; -update rewrites it).
func TestPrepUnitGolden(t *testing.T) {
	got := "# " + PrepUnit + "\n" + prepUnitText + "\n# " + prepScriptPath + "\n" + prepScript()
	golden := filepath.Join("testdata", "prep.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("boot unit differs from %s (go test ./lab -run PrepUnit -update):\n%s", golden, got)
	}
}

func TestPrepScript(t *testing.T) {
	script := prepScript()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	if out, err := exec.Command(sh, "-n", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	// The script writes under /proc/sys only through the per-namespace
	// net tree or the shown files: never a kernel-wide setting in place.
	for _, m := range regexp.MustCompile(`>\s*"?/proc/sys/[^\s"]*`).FindAllString(script, -1) {
		if m != `>"/proc/sys/$1` {
			t.Errorf("the script writes /proc/sys other than in set_net: %s", m)
		}
	}
	if n := strings.Count(script, `>"/proc/sys/$1"`); n != 1 {
		t.Errorf("%d writes to /proc/sys/$1, want only set_net's", n)
	}
	for _, s := range NetworkSettings {
		if !strings.HasPrefix(s.Key, "net/") {
			t.Errorf("%s is set in the machine but is not a per-network-namespace setting", s.Key)
		}
		if !strings.Contains(script, "set_net "+s.Key+" "+s.Value+"\n") {
			t.Errorf("the script does not set %s", s.Key)
		}
	}
	for _, s := range KubeletKernelSettings {
		if strings.HasPrefix(s.Key, "net/") {
			t.Errorf("%s is per network namespace: set it, do not show it", s.Key)
		}
		if !strings.Contains(script, "show "+s.Key+" "+s.Value+"\n") {
			t.Errorf("the script does not show kubelet %s", s.Key)
		}
	}
	// set_net writes to "/proc/sys/$1": only ever called with net/ keys.
	for _, m := range regexp.MustCompile(`(?m)^set_net (\S+)`).FindAllStringSubmatch(script, -1) {
		if !strings.HasPrefix(m[1], "net/") {
			t.Errorf("set_net %s", m[1])
		}
	}
}

func TestWritePrepUnit(t *testing.T) {
	root := t.TempDir()
	// Twice, as on a second boot of the same disk.
	for range 2 {
		if err := writePrepUnit(root); err != nil {
			t.Fatal(err)
		}
	}
	target, err := os.Readlink(filepath.Join(root, "etc/systemd/system/multi-user.target.wants", PrepUnit))
	if err != nil || target != "../"+PrepUnit {
		t.Errorf("unit enabled as %q, %v", target, err)
	}
	fi, err := os.Stat(filepath.Join(root, prepScriptPath))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("script: %v, %v", fi, err)
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system", PrepUnit))
	if err != nil || !strings.Contains(string(unit), "ExecStart="+prepScriptPath+"\n") {
		t.Errorf("unit: %s, %v", unit, err)
	}
}
