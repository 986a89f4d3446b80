package provision

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kprov/kprov/provision/pki"
	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
)

// TestScriptsGolden writes every command kprov runs on a host, with sample
// arguments, into one golden file: a reviewer reads there, in one sitting,
// everything kprov can do to a host as root, and any change to a command
// shows up in review as a diff of that file.
func TestScriptsGolden(t *testing.T) {
	probe, err := hostProbe{Files: []string{"/etc/kprov/kubeadm-init.yaml", "/usr/local/bin/kubelet"}, EtcdConfig: "/etc/etcd/etcd.yaml",
		EtcdDataDir: "/var/lib/etcd", KubeletConf: "/etc/kubernetes/kubelet.conf", APIServerManifest: "/etc/kubernetes/manifests/kube-apiserver.yaml", CNIBinDir: plan.CNIBinDir, Images: true, ImagesTimeout: DefaultProbeTimeout / 3}.script()
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
		{"etcd member restored already? (kprov restore)", scriptEtcdRestored("/var/lib/etcd", plan.EtcdRestoreMarkerPath, "kprov-lab-restore-0123abcd")},
		{"restore an etcd member from a snapshot (kprov restore)", scriptEtcdRestore(sampleRestoreStep, plan.EtcdRestoreMarkerPath, plan.EtcdRestoreSnapshotPath)},
		{"put a stacked member's restored data directory in place (kprov restore)", scriptEtcdRestoreArchive(sampleRestoreStep, plan.EtcdRestoreMarkerPath, plan.EtcdRestoreArchivePath, strings.Repeat("7", 64))},
		{"archive unpacked already?", scriptArchiveUnpacked(plan.CNIPluginsMarkerPath, strings.Repeat("5", 64))},
		{"unpack the cni-plugins archive", scriptUnpackArchive(plan.CNIBinDir+"/.kprov-archive.tgz", strings.Repeat("5", 64), plan.CNIBinDir, plan.CNIPluginsMarkerPath)},
		{"kubeadm already ran?", scriptExists("/etc/kubernetes/manifests/kube-apiserver.yaml")},
		{"kubeadm validate", scriptKubeadmValidate("/etc/kprov/kubeadm-join.yaml")},
		{"kubeadm", scriptKubeadm("kubeadm join --config /etc/kprov/kubeadm-join.yaml")},
		{"is kubeadm still running", scriptKubeadmRunning},
		{"create the bootstrap token (the token is a placeholder here)", scriptCreateBootstrapToken("abcdef", roles.RedactedBootstrapToken, pki.BootstrapTokenTTL)},
		{"upload the control-plane certificates (the certificate key is in the configuration)", scriptUploadCerts("/etc/kprov/kubeadm-init.yaml")},
		{"list nodes (read-only)", scriptListNodes},
		{"list containerd's images (read-only)", scriptListImages},
		{"make the image upload directory", scriptMakeImageDir},
		{"remove an uploaded image archive", scriptRemoveFile(plan.ImageImportPath(strings.Repeat("ab", 32)))},
		{"import an image archive", scriptImportImages(plan.ImageImportPath(strings.Repeat("ab", 32)), strings.Repeat("ab", 32), []plan.ImageRef{
			{Ref: "registry.k8s.io/kube-apiserver:v1.37.2", Digest: "sha256:" + strings.Repeat("1", 64)},
			{Ref: "registry.k8s.io/pause:3.10.2", Digest: "sha256:" + strings.Repeat("2", 64)}})},
		{"label a node", scriptLabelNode("infra-1", map[string]string{"node-role.kubernetes.io/infra": "", "zone": "a"})},
		{"taint a node", scriptTaintNode("infra-1", []string{"node-role.kubernetes.io/infra=:NoSchedule"})},
		{"a node's Ready condition", scriptNodeReady("infra-1")},
		{"delete a node the new inventory does not have (kprov restore)", scriptDeleteNode("worker-old-1")},
		{"take the cluster lock", scriptLockAcquire(plan.LockPath, "ops@laptop pid 42 since "+time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).Format(time.RFC3339))},
		{"break a stale cluster lock", scriptLockBreakStale(plan.LockPath, "ops@laptop pid 42 since 2026-12-01T12:00:00Z", DefaultLockStaleAfter)},
		{"refresh the cluster lock (heartbeat)", scriptLockRefresh(plan.LockPath, "ops@laptop pid 42 since 2026-12-01T12:00:00Z")},
		{"release the cluster lock", scriptLockRelease(plan.LockPath, "ops@laptop pid 42 since 2026-12-01T12:00:00Z")},
		{"kubeadm reset (kprov reset of the whole cluster)", scriptKubeadmReset("kubeadm reset -f --skip-phases remove-etcd-member")},
		{"remove the images kprov imported (kprov reset)", scriptRemoveImages([]plan.ImageRef{
			{Ref: "registry.k8s.io/pause:3.10", Digest: "sha256:" + strings.Repeat("cd", 32)}})},
		{"remove a rendered file (kprov reset)", scriptRemoveKprovFile(plan.KubeletPatchPath, "", plan.EmptyDirsAbove(plan.KubeletPatchPath))},
		{"remove a binary kprov installed, only with the artifact's checksum (kprov reset)", scriptRemoveKprovFile("/usr/local/bin/etcd", strings.Repeat("ef", 32), plan.EmptyDirsAbove("/usr/local/bin/etcd"))},
		{"drain a node (a node taken out of the inventory, kprov reset --host)", scriptDrainNode("compute-1")},
		{"delete a reset node's Node object (kprov reset --host)", scriptDeleteNodeIfPresent("compute-1")},
		{"renew kubeadm's certificates on a master (kprov certs renew)", roles.RenewKubeadmCertsCommand},
		{"restart a control-plane component for its renewed certificates (kprov certs renew)", roles.RestartComponentCommand("kube-apiserver")},
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
	start := time.Now()
	if got := sh(scriptLockAcquire(lock, "a")); got != "acquired" {
		t.Fatalf("first acquire: %q", got)
	}
	// The age is whole seconds by the host's clock: at most the seconds
	// since before the first acquire (on a loaded machine that can be 1 or more).
	got := sh(scriptLockAcquire(lock, "b"))
	var age int
	var holder string
	if n, err := fmt.Sscanf(got, "held %d\n%s", &age, &holder); n != 2 || err != nil || holder != "a" ||
		age < 0 || time.Duration(age)*time.Second > time.Since(start)+time.Second {
		t.Fatalf("second acquire: %q, want held by a for at most %s", got, time.Since(start).Round(time.Second))
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
	if _, err := os.Stat(filepath.Dir(lock)); !os.IsNotExist(err) {
		t.Fatalf("release left the lock or its directory: %v", err)
	}
	// A directory holding anything else stays.
	sh(scriptLockAcquire(lock, "c"))
	if err := os.WriteFile(filepath.Join(filepath.Dir(lock), "other"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(scriptLockRelease(lock, "c"))
	if _, err := os.Stat(filepath.Join(filepath.Dir(lock), "other")); err != nil {
		t.Fatalf("release removed more than the lock: %v", err)
	}
}

// TestWipeScriptRunsLocally runs the real wipe script under a local sh: it
// removes a member's data directory or an empty one, and refuses (exit 3,
// nothing removed) a symbolic link, a directory holding anything but
// member/, a member/ that is a link, and a file.
func TestWipeScriptRunsLocally(t *testing.T) {
	run := func(dir string) (string, error) {
		out, err := exec.Command("sh", "-c", scriptWipeDataDir(dir)).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	mk := func(t *testing.T, paths ...string) string {
		root := t.TempDir()
		for _, p := range paths {
			if strings.HasSuffix(p, "/") {
				if err := os.MkdirAll(filepath.Join(root, p), 0o700); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, p), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	t.Run("member data", func(t *testing.T) {
		root := mk(t, "etcd/member/wal/0.wal", "etcd/member/snap/db")
		if out, err := run(root + "/etcd"); err != nil || out != "changed" {
			t.Fatalf("%q, %v", out, err)
		}
		if _, err := os.Stat(root + "/etcd"); !os.IsNotExist(err) {
			t.Fatalf("still there: %v", err)
		}
	})
	t.Run("empty and absent", func(t *testing.T) {
		root := mk(t, "etcd/")
		if out, err := run(root + "/etcd"); err != nil || out != "changed" {
			t.Fatalf("empty: %q, %v", out, err)
		}
		if out, err := run(root + "/etcd"); err != nil || out != "" {
			t.Fatalf("absent: %q, %v", out, err)
		}
	})
	refused := func(t *testing.T, dir, want string, keep string) {
		t.Helper()
		out, err := run(dir)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(out, want) {
			t.Fatalf("%q, %v; want exit 3 saying %q", out, err, want)
		}
		if _, err := os.Stat(keep); err != nil {
			t.Fatalf("%s was removed: %v", keep, err)
		}
	}
	t.Run("other files", func(t *testing.T) {
		root := mk(t, "var/member/db", "var/log/syslog")
		refused(t, root+"/var", "holds more than an etcd member", root+"/var/log/syslog")
	})
	t.Run("symbolic link", func(t *testing.T) {
		root := mk(t, "real/member/db")
		if err := os.Symlink(root+"/real", root+"/etcd"); err != nil {
			t.Fatal(err)
		}
		refused(t, root+"/etcd", "is a symbolic link", root+"/real/member/db")
	})
	t.Run("member is a link", func(t *testing.T) {
		root := mk(t, "precious/db", "etcd/")
		if err := os.Symlink(root+"/precious", root+"/etcd/member"); err != nil {
			t.Fatal(err)
		}
		refused(t, root+"/etcd", "member is a symbolic link", root+"/precious/db")
	})
	t.Run("a file", func(t *testing.T) {
		root := mk(t, "etcd")
		refused(t, root+"/etcd", "not a directory", root+"/etcd")
	})
}

// TestFsyncProbeUsesPrivateDirectory: the fsync probe writes only inside a
// fresh directory of its own (mode 0700) beside the data directory, never a
// predictable name in a parent that may be shared (like /tmp), and removes
// it. A stand-in dd records where it was asked to write.
func TestFsyncProbeUsesPrivateDirectory(t *testing.T) {
	parent := t.TempDir()
	bin := t.TempDir()
	record := filepath.Join(t.TempDir(), "dd.log")
	fakeDD := `#!/bin/sh
for a in "$@"; do case "$a" in of=*) f="${a#of=}";; esac; done
d=$(dirname "$f")
echo "$d $(stat -c %a "$d")" >> ` + record + `
: > "$f"
`
	if err := os.WriteFile(filepath.Join(bin, "dd"), []byte(fakeDD), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", preflightScript(nil, filepath.Join(parent, "etcd-data")))
	cmd.Env = append(os.Environ(), "PATH="+bin+":/usr/bin:/bin")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("dd never ran: %v\n%s", err, out)
	}
	dir, mode, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	if filepath.Dir(dir) != parent || dir == parent || mode != "700" {
		t.Errorf("the probe wrote in %s (mode %s); want a fresh 0700 directory inside %s", dir, mode, parent)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("the probe left %v in %s", entries, parent)
	}
}

// TestImportImagesScriptRunsLocally runs the real import script under the
// local sh with a fake ctr and containerd on the PATH: it imports with
// --local into the snapshotter containerd's config names, checks and pins
// every image, and removes the archive whether the import worked or not.
func TestImportImagesScriptRunsLocally(t *testing.T) {
	for _, tool := range []string{"sh", "sha256sum", "awk", "sed", "grep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	want := []plan.ImageRef{{Ref: "registry.k8s.io/pause:3.10.2", Digest: "sha256:" + strings.Repeat("2", 64)}}
	for _, c := range []struct {
		name    string
		listed  string // the digest ctr lists after the import
		wantErr string
	}{
		{"imported", want[0].Digest, ""},
		{"wrong-digest", "sha256:" + strings.Repeat("9", 64), "after the import containerd does not list registry.k8s.io/pause:3.10.2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			os.Mkdir(bin, 0o755)
			calls := filepath.Join(dir, "calls")
			fake := map[string]string{
				"ctr": `#!/bin/sh
echo "ctr $*" >> ` + calls + `
case "$*" in
*"import --help"*) echo "   --local    run the import locally";;
*"images ls"*) printf 'REF TYPE DIGEST SIZE PLATFORMS LABELS\nregistry.k8s.io/pause:3.10.2 application/vnd.oci.image.manifest.v1+json ` + c.listed + ` 300.0 KiB linux/amd64 -\n';;
esac
`,
				"containerd": "#!/bin/sh\nprintf \"version = 3\\n[plugins.'io.containerd.cri.v1.images']\\n  snapshotter = 'native'\\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\\n  snapshotter = ''\\n\"\n",
			}
			for name, body := range fake {
				if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			archive := filepath.Join(dir, "upload.tar")
			os.WriteFile(archive, []byte("archive"), 0o600)
			cmd := exec.Command("sh", "-s")
			cmd.Env = append(os.Environ(), "PATH="+bin+":/usr/bin:/bin")
			cmd.Stdin = strings.NewReader(scriptImportImages(archive, sha256Hex([]byte("archive")), want))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			got, _ := os.ReadFile(calls)
			if c.wantErr == "" {
				if err != nil || strings.TrimSpace(string(out)) != "changed" {
					t.Fatalf("got %q, %v: %s", out, err, stderr.String())
				}
				wantCalls := "ctr images import --help\nctr -n k8s.io images import --local --snapshotter native " + archive + "\nctr -n k8s.io images ls\n" +
					"ctr -n k8s.io images label registry.k8s.io/pause:3.10.2 io.cri-containerd.pinned=pinned\n"
				if string(got) != wantCalls {
					t.Errorf("ctr calls:\n%s\nwant:\n%s", got, wantCalls)
				}
			} else if err == nil || !strings.Contains(stderr.String(), c.wantErr) {
				t.Errorf("got %v: %s; want %q", err, stderr.String(), c.wantErr)
			}
			if _, err := os.Stat(archive); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the archive is still there (%v)", err)
			}
		})
	}
}

var sampleRestoreStep = plan.Step{Op: plan.OpEtcdRestore, Host: "etcd-b1", Path: "/var/lib/etcd", Member: "etcd-b1", PeerURL: "https://10.0.9.21:2380",
	InitialCluster: "etcd-b1=https://10.0.9.21:2380,etcd-b2=https://10.0.9.22:2380", ClusterToken: "kprov-lab-restore-0123abcd"}

// TestEtcdRestoreScriptRunsLocally runs the real restore script under a
// local sh with an etcdutl that records its arguments and writes a member
// directory: the first run restores and writes the marker, a second run of
// the same restore changes nothing and does not call etcdutl, and a data
// directory that holds anything else is refused with nothing changed.
func TestEtcdRestoreScriptRunsLocally(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(dir, "calls")
	fake := "#!/bin/sh\necho \"$@\" >> " + calls + "\nwhile [ $# -gt 0 ]; do if [ \"$1\" = --data-dir ]; then mkdir -p \"$2/member/snap\"; fi; shift; done\n"
	if err := os.WriteFile(filepath.Join(bin, "etcdutl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	data, marker, snap := filepath.Join(dir, "etcd"), filepath.Join(dir, "kprov", "etcd-restored"), filepath.Join(dir, "snap.db")
	step := sampleRestoreStep
	step.Path = data
	run := func(script string) (string, error) {
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+bin+":/usr/bin:/bin")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if err := os.WriteFile(snap, []byte("snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := run(scriptEtcdRestored(data, marker, step.ClusterToken)); got != "" {
		t.Fatalf("restored before any restore: %q", got)
	}
	if got, err := run(scriptEtcdRestore(step, marker, snap)); err != nil || got != "changed" {
		t.Fatalf("first restore: %q, %v", got, err)
	}
	args, _ := os.ReadFile(calls)
	for _, want := range []string{"snapshot restore " + snap, "--name etcd-b1", "--initial-cluster " + step.InitialCluster,
		"--initial-cluster-token kprov-lab-restore-0123abcd", "--initial-advertise-peer-urls https://10.0.9.21:2380",
		"--data-dir " + data + ".kprov-restore", "--bump-revision 1000000000", "--mark-compacted"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("etcdutl called with %q, want %q in it", args, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(data, "member")); err != nil || !fi.IsDir() {
		t.Fatalf("no member directory after the restore: %v", err)
	}
	if fi, _ := os.Stat(data); fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v, want 0700", fi.Mode().Perm())
	}
	if _, err := os.Stat(snap); !os.IsNotExist(err) {
		t.Errorf("the uploaded snapshot was left behind: %v", err)
	}
	if got, _ := run(scriptEtcdRestored(data, marker, step.ClusterToken)); got != "restored" {
		t.Fatalf("restored check after the restore: %q", got)
	}
	if got, err := run(scriptEtcdRestore(step, marker, snap)); err != nil || got != "" {
		t.Fatalf("second run of the same restore: %q, %v; want nothing done", got, err)
	}
	if again, _ := os.ReadFile(calls); !bytes.Equal(again, args) {
		t.Errorf("etcdutl called again by the second run: %q", again)
	}
	// Another restore (another token) must not touch this data directory.
	other := step
	other.ClusterToken = "kprov-lab-restore-ffffffff"
	got, err := run(scriptEtcdRestore(other, marker, snap))
	if err == nil || !strings.Contains(got, "refusing to restore into "+data) || !strings.Contains(got, "wipe it or use a fresh host") {
		t.Fatalf("restore over another restore's data: %q, %v; want a refusal", got, err)
	}
	if again, _ := os.ReadFile(calls); !bytes.Equal(again, args) {
		t.Errorf("etcdutl called over a data directory it must not replace: %q", again)
	}
}
