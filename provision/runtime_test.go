package provision

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kprov/kprov/provision/plan"
)

// tgz builds a .tgz of the given entries: a name ending in "/" is a
// directory, "->" makes a symbolic link, anything else a file (mode 0755).
func tgz(t *testing.T, entries ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e, Mode: 0o755, Typeflag: tar.TypeReg, Size: int64(len("#!/bin/sh\n" + e))}
		switch {
		case strings.HasSuffix(e, "/"):
			h.Typeflag, h.Size = tar.TypeDir, 0
		case strings.Contains(e, "->"):
			name, target, _ := strings.Cut(e, "->")
			h.Name, h.Linkname, h.Typeflag, h.Size = name, target, tar.TypeSymlink, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte("#!/bin/sh\n" + e)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestUnpackArchiveRunsLocally runs the real unpack script under a local sh
// and tar: the top-level files land in the directory, links, directories
// and deeper files do not, the marker records the checksum, the archive and
// the temporary directory are gone; a corrupt upload is refused with
// nothing unpacked.
func TestUnpackArchiveRunsLocally(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar")
	}
	dir := filepath.Join(t.TempDir(), "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, ".kprov-archive.tgz")
	marker := filepath.Join(dir, ".kprov-cni-plugins.sha256")
	data := tgz(t, "bridge", "./loopback", "sub/", "sub/deep", "evil->/etc/passwd")
	sum := hexSHA(data)
	sh := func(script string) (string, error) {
		out, err := exec.Command("sh", "-c", script).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	if out, _ := sh(scriptArchiveUnpacked(marker, sum)); out != "" {
		t.Fatalf("unpacked before anything ran: %q", out)
	}
	if err := os.WriteFile(archive, append([]byte("x"), data...), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := sh(scriptUnpackArchive(archive, sum, dir, marker)); err == nil || !strings.Contains(out, "refusing to unpack") {
		t.Fatalf("corrupt archive: %v %q", err, out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a refused archive left %v", entries)
	}

	if err := os.WriteFile(archive, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := sh(scriptUnpackArchive(archive, sum, dir, marker)); err != nil || out != "changed" {
		t.Fatalf("unpack: %v %q", err, out)
	}
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".kprov-cni-plugins.sha256 bridge loopback" {
		t.Errorf("directory holds %v", names)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bridge")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bridge: %v %v", fi, err)
	}
	if out, _ := sh(scriptArchiveUnpacked(marker, sum)); out != "present" {
		t.Errorf("after unpacking, the marker check says %q", out)
	}
	if b, _ := os.ReadFile(marker); string(b) != sum+"\n" {
		t.Errorf("marker %q", b)
	}
}

// The executor skips an archive whose marker is in place, and otherwise
// uploads it beside its target and unpacks it there; it refuses any other
// directory than the CNI one.
func TestApplyUnpackArchive(t *testing.T) {
	src := filepath.Join(t.TempDir(), "cni-plugins.tgz")
	data := tgz(t, "bridge")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := hexSHA(data)
	archive := plan.CNIBinDir + "/.kprov-archive.tgz"
	a := newApplyHost(t, "a",
		applyCall{kind: "run", arg: scriptArchiveUnpacked(plan.CNIPluginsMarkerPath, sum), stdout: "present\n"},
		applyCall{kind: "run", arg: scriptArchiveUnpacked(plan.CNIPluginsMarkerPath, sum)},
		applyCall{kind: "run", arg: scriptMakeDirs([]string{plan.CNIBinDir})},
		applyCall{kind: "upload", arg: archive, changed: true},
		applyCall{kind: "run", arg: scriptUnpackArchive(archive, sum, plan.CNIBinDir, plan.CNIPluginsMarkerPath), stdout: "changed\n"},
	)
	step := plan.Step{Op: plan.OpUnpackArchive, Host: "a", Path: plan.CNIBinDir, Source: src, SHA256: sum}
	pl := &plan.Plan{Stages: []plan.Stage{{Kind: plan.StagePrepare, Parallel: 1, Steps: []plan.Step{step}}}}
	for i, want := range []int{0, 1} {
		rep, err := Apply(context.Background(), pl, applyConnector{"a": a}, ApplyOptions{Inventory: applyInventory("a")})
		if err != nil || rep.Changed() != want {
			t.Fatalf("run %d: %v, %d changed, want %d", i+1, err, rep.Changed(), want)
		}
	}
	pl.Stages[0].Steps[0].Path = "/usr/local/bin"
	if _, err := Apply(context.Background(), pl, applyConnector{"a": a}, ApplyOptions{Inventory: applyInventory("a")}); err == nil || !strings.Contains(err.Error(), "refusing to unpack") {
		t.Errorf("unpack into /usr/local/bin: %v", err)
	}
}
