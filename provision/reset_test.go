package provision

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kprov/kprov/provision/plan"
	"github.com/kprov/kprov/roles"
)

// resetProbeFor expects node-1's fact probe with the files kprov reset
// looks at, and answers with the given lines.
func resetProbeFor(t *testing.T, c *Cluster, lines ...string) fakeRun {
	t.Helper()
	files, err := ManagedFiles(c)
	if err != nil {
		t.Fatal(err)
	}
	all := files["node-1"]
	for _, f := range roles.ResetFiles(c.Inventory, roles.ResetInput{})["node-1"] {
		if !slices.Contains(all, f) {
			all = append(all, f)
		}
	}
	return probeRun(t, "node-1", all, lines...)
}

// TestPipelineResetRefusesLastMaster: reset --host of the only master is
// refused after the facts, under the lock, with nothing shown, confirmed
// or run (the strict fake fails on any other command) and the lock released.
func TestPipelineResetRefusesLastMaster(t *testing.T) {
	c := singleCluster(t)
	host := newFakeHost(t, "node-1", lockRun("acquired"), resetProbeFor(t, c, freshHost("node-1")...), releaseRun())
	view := &recordingView{}
	res, err := newPipeline(c, host, view).Reset(context.Background(), ResetRequest{Hosts: []string{"node-1"}, LockOwner: testOwner})
	var refusal *roles.ResetRefusal
	if !errors.As(err, &refusal) || !strings.Contains(err.Error(), "the control plane's last master") {
		t.Fatalf("err = %v, want the last master refused", err)
	}
	if res.Plan != nil || res.Report != nil || len(view.events) != 0 {
		t.Errorf("result %+v, view %v: want nothing planned, shown or run", res, view.events)
	}
}

// TestPipelineResetUnknownHost: a --host the inventory does not have is
// refused before any connection.
func TestPipelineResetUnknownHost(t *testing.T) {
	c := singleCluster(t)
	host := newFakeHost(t, "node-1")
	_, err := newPipeline(c, host, &recordingView{}).Reset(context.Background(), ResetRequest{Hosts: []string{"node-9"}, LockOwner: testOwner})
	if err == nil || !strings.Contains(err.Error(), `no host "node-9" in inventory`) || !strings.Contains(err.Error(), "hosts: node-1") {
		t.Fatalf("err = %v, want node-9 named with the inventory's hosts", err)
	}
}

// TestPipelineResetNothingLeft: a host with nothing of kprov's is not
// reset: no plan shown, no confirmation asked, nothing run.
func TestPipelineResetNothingLeft(t *testing.T) {
	c := singleCluster(t)
	host := newFakeHost(t, "node-1", lockRun("acquired"), resetProbeFor(t, c, freshHost("node-1")...), releaseRun())
	view := &recordingView{}
	res, err := newPipeline(c, host, view).Reset(context.Background(), ResetRequest{LockOwner: testOwner})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed() || !res.Plan.Empty() || len(view.events) != 0 {
		t.Errorf("result %+v, view %v: want no changes", res, view.events)
	}
}

// TestPipelineResetRemovesFiles: what kprov left is shown, confirmed and
// removed, file by file with the directories kprov made; then the admin
// kubeconfig of the cluster that is gone leaves the state directory.
func TestPipelineResetRemovesFiles(t *testing.T) {
	c := singleCluster(t)
	kubeconfig := c.KubeconfigPath()
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := strings.Repeat("ab", 32)
	probe := append(freshHost("node-1"), "file="+sum+" "+plan.KubeadmInitPath, "file="+sum+" "+plan.KubeadmLogPath)
	host := newFakeHost(t, "node-1", lockRun("acquired"), resetProbeFor(t, c, probe...),
		fakeRun{cmd: scriptRemoveKprovFile(plan.KubeadmInitPath, "", []string{plan.KubeadmPatchesDir, "/etc/kprov"}), stdout: "changed\n"},
		fakeRun{cmd: scriptRemoveKprovFile(plan.KubeadmLogPath, "", []string{plan.ImageImportDir, "/var/lib/kprov"}), stdout: "changed\n"},
		releaseRun())
	view := &recordingView{}
	res, err := newPipeline(c, host, view).Reset(context.Background(), ResetRequest{LockOwner: testOwner, AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"plan " + res.Plan.Summary.String(), "stage reset",
		"changed node-1 remove-file " + plan.KubeadmInitPath, "changed node-1 remove-file " + plan.KubeadmLogPath, "stage reset"}
	if !slices.Equal(view.events, want) {
		t.Errorf("view events %q, want %q", view.events, want)
	}
	if res.RemovedKubeconfig != kubeconfig {
		t.Errorf("removed kubeconfig %q, want %q", res.RemovedKubeconfig, kubeconfig)
	}
	if _, err := os.Stat(kubeconfig); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there: %v", kubeconfig, err)
	}
	if _, err := os.Stat(filepath.Join(c.Inventory.Cluster.StateDir, "pki", "ca.crt")); err != nil {
		t.Errorf("the state directory's CA must stay: %v", err)
	}
}

// TestReadArchiveFiles: only the regular files at the archive's top level
// that the unpacking's glob moves, with their checksums; an archive with
// another checksum is refused.
func TestReadArchiveFiles(t *testing.T) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, typ byte, body string) {
		hdr := &tar.Header{Name: name, Typeflag: typ, Mode: 0o755, Size: int64(len(body))}
		if typ == tar.TypeSymlink {
			hdr.Linkname, hdr.Size = "bridge", 0
		}
		if typ == tar.TypeDir {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			tw.Write([]byte(body))
		}
	}
	add("./", tar.TypeDir, "")
	add("./bridge", tar.TypeReg, "bridge plugin")
	add("loopback", tar.TypeReg, "loopback plugin")
	add("./.hidden", tar.TypeReg, "not moved by *")
	add("./docs/", tar.TypeDir, "")
	add("./docs/README", tar.TypeReg, "nested")
	add("./link", tar.TypeSymlink, "")
	tw.Close()
	gz.Close()
	path := filepath.Join(t.TempDir(), "cni.tgz")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	whole := sha256.Sum256(buf.Bytes())
	got, err := ReadArchiveFiles(path, hex.EncodeToString(whole[:]))
	if err != nil {
		t.Fatal(err)
	}
	hash := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	want := []roles.ArchiveFile{{Name: "bridge", SHA256: hash("bridge plugin")}, {Name: "loopback", SHA256: hash("loopback plugin")}}
	if !slices.Equal(got, want) {
		t.Errorf("files %v, want %v", got, want)
	}
	if _, err := ReadArchiveFiles(path, strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "but the inventory says") {
		t.Errorf("another checksum: %v", err)
	}
}
