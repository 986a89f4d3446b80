package provision

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/provision/plan"
)

// TestScriptsGolden writes every command kprov runs on a host, with sample
// arguments, into one golden file: a reviewer reads there, in one sitting,
// everything kprov can do to a host as root, and any change to a command
// shows up in review as a diff of that file.
func TestScriptsGolden(t *testing.T) {
	probe, err := hostProbe{Files: []string{"/etc/kprov/kubeadm-init.yaml", "/usr/local/bin/kubelet"}, EtcdConfig: "/etc/etcd/etcd.yaml",
		EtcdDataDir: "/var/lib/etcd", KubeletConf: "/etc/kubernetes/kubelet.conf", APIServerManifest: "/etc/kubernetes/manifests/kube-apiserver.yaml"}.script()
	if err != nil {
		t.Fatal(err)
	}
	scripts := []struct{ name, text string }{
		{"fact probe (read-only)", probe},
		{"preflight probe, etcd host", preflightScript([]string{"etcd", "etcdctl"}, "/var/lib/etcd")},
		{"preflight probe, node", preflightScript([]string{"kubeadm", "kubelet"}, "")},
		{"make upload directories", scriptMakeDirs([]string{"/etc/kprov", "/etc/etcd"})},
		{"start a unit", scriptStartService("etcd.service")},
		{"restart a unit", scriptRestartService("etcd.service")},
		{"stop a unit", scriptStopService("etcd.service")},
		{"wipe the etcd data directory", scriptWipeDataDir("/var/lib/etcd")},
		{"kubeadm already ran?", scriptExists("/etc/kubernetes/manifests/kube-apiserver.yaml")},
		{"kubeadm validate", scriptKubeadmValidate("/etc/kprov/kubeadm-join.yaml")},
		{"kubeadm", scriptKubeadm("kubeadm join --config /etc/kprov/kubeadm-join.yaml")},
		{"list nodes (read-only)", scriptListNodes},
		{"label a node", scriptLabelNode("infra-1", map[string]string{"node-role.kubernetes.io/infra": "", "zone": "a"})},
		{"taint a node", scriptTaintNode("infra-1", []string{"node-role.kubernetes.io/infra=:NoSchedule"})},
		{"take the cluster lock", scriptLockAcquire(plan.LockPath, "ops@laptop pid 42 since "+time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).Format(time.RFC3339))},
		{"break a stale cluster lock", scriptLockBreakStale(plan.LockPath, "ops@laptop pid 42 since 2026-12-01T12:00:00Z", DefaultLockStaleAfter)},
		{"refresh the cluster lock (heartbeat)", scriptLockRefresh(plan.LockPath, "ops@laptop pid 42 since 2026-12-01T12:00:00Z")},
		{"release the cluster lock", scriptLockRelease(plan.LockPath, "ops@laptop pid 42 since 2026-12-01T12:00:00Z")},
	}
	var b bytes.Buffer
	b.WriteString("# Every command kprov runs on a host (provision/scripts.go), with sample arguments.\n")
	b.WriteString("# go test ./provision -run TestScriptsGolden -update rewrites this file.\n")
	for _, s := range scripts {
		fmt.Fprintf(&b, "\n## %s\n%s\n", s.name, s.text)
	}
	golden := filepath.Join("testdata", "scripts.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("%s differs (go test ./provision -run TestScriptsGolden -update rewrites it); got:\n%s", golden, b.Bytes())
	}
}

// TestLockScriptsRunLocally runs the real lock scripts under a local sh on a
// lock file in a temporary directory: one holder at a time, the age read
// back, a live lock never broken, a stale one broken only while it is still
// the same holder's, the heartbeat noticing a lost lock, and release
// removing only the holder's own lock.
func TestLockScriptsRunLocally(t *testing.T) {
	lock := filepath.Join(t.TempDir(), "kprov", "apply.lock")
	sh := func(script string) string {
		t.Helper()
		out, err := exec.Command("sh", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := sh(scriptLockAcquire(lock, "a")); got != "acquired" {
		t.Fatalf("first acquire: %q", got)
	}
	if got := sh(scriptLockAcquire(lock, "b")); got != "held 0\na" {
		t.Fatalf("second acquire: %q, want held 0 by a", got)
	}
	if got := sh(scriptLockBreakStale(lock, "a", time.Hour)); got != "" {
		t.Fatalf("a live lock was broken: %q", got)
	}
	if got := sh(scriptLockRefresh(lock, "a")); got != "ok" {
		t.Fatalf("holder's heartbeat: %q", got)
	}
	if got := sh(scriptLockRefresh(lock, "b")); got != "lost" {
		t.Fatalf("another's heartbeat: %q", got)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(lock, old, old); err != nil {
		t.Fatal(err)
	}
	if got := sh(scriptLockAcquire(lock, "b")); !strings.HasPrefix(got, "held 36") {
		t.Fatalf("acquire over an hour-old lock: %q, want held 36xx", got)
	}
	if got := sh(scriptLockBreakStale(lock, "someone else", time.Minute)); got != "" {
		t.Fatalf("a stale lock of another holder than seen was broken: %q", got)
	}
	sh(scriptLockRelease(lock, "b"))
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("release by a non-holder removed the lock: %v", err)
	}
	if got := sh(scriptLockBreakStale(lock, "a", time.Minute)); got != "broken" {
		t.Fatalf("stale lock: %q, want broken", got)
	}
	if got := sh(scriptLockAcquire(lock, "b")); got != "acquired" {
		t.Fatalf("acquire after the break: %q", got)
	}
	sh(scriptLockRelease(lock, "b"))
	if _, err := os.Stat(lock); !os.IsNotExist(err) {
		t.Fatalf("release left the lock: %v", err)
	}
}
