package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kprov/kprov/provision/plan"
)

// TestApplyImportImages: a host whose containerd lists every image of the
// archive with its digest gets nothing uploaded; one that lacks an image,
// or has it with another digest, gets the archive uploaded to its import
// path and imported; a failed upload leaves no archive behind.
func TestApplyImportImages(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "node.tar")
	os.WriteFile(archive, []byte("archive"), 0o644)
	s := sha256.Sum256([]byte("archive"))
	sum := hex.EncodeToString(s[:])
	d1, d2 := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("2", 64)
	images := []plan.ImageRef{{Ref: "registry.k8s.io/pause:3.10.2", Digest: d1}, {Ref: "registry.k8s.io/kube-proxy:v1.37.2", Digest: d2}}
	step := plan.Step{Op: plan.OpImportImages, Path: plan.ImageImportPath(sum), SHA256: sum, Source: archive, Images: images}
	list := func(lines ...string) applyCall {
		return applyCall{kind: "run", arg: scriptListImages, stdout: strings.Join(lines, "\n") + "\n"}
	}
	both := list("image=registry.k8s.io/pause:3.10.2 "+d1, "image=registry.k8s.io/kube-proxy:v1.37.2 "+d2, "image=docker.io/library/other:1 "+d1)
	imported := []applyCall{
		{kind: "run", arg: scriptMakeImageDir},
		{kind: "upload", arg: step.Path, changed: true},
		{kind: "run", arg: scriptImportImages(step.Path, sum, images), stdout: "changed\n"},
	}
	for _, c := range []struct {
		name    string
		calls   []applyCall
		changed bool
		err     string
	}{
		{name: "present", calls: []applyCall{both}},
		{name: "missing", calls: append([]applyCall{list("image=registry.k8s.io/pause:3.10.2 " + d1)}, imported...), changed: true},
		{name: "other-digest", calls: append([]applyCall{list("image=registry.k8s.io/pause:3.10.2 "+d2, "image=registry.k8s.io/kube-proxy:v1.37.2 "+d2)}, imported...), changed: true},
		{name: "upload-fails", calls: []applyCall{list(), {kind: "run", arg: scriptMakeImageDir},
			{kind: "upload", arg: step.Path, err: errors.New("disk full")}, {kind: "run", arg: scriptRemoveFile(step.Path)}}, err: "disk full"},
		{name: "containerd-down", calls: []applyCall{{kind: "run", arg: scriptListImages, err: errors.New("connection refused")}}, err: "is containerd running?"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newApplyHost(t, "a", c.calls...)
			a := newApplier(applyConnector{"a": h}, ApplyOptions{Inventory: applyInventory("a")})
			changed, err := a.importImages(context.Background(), h, step)
			if changed != c.changed || (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
				t.Errorf("changed %v, err %v; want %v, %q", changed, err, c.changed, c.err)
			}
		})
	}

	// A hand-edited plan cannot point the upload (and the removal) elsewhere.
	h := newApplyHost(t, "b")
	bad := step
	bad.Path = "/etc/passwd"
	if _, err := newApplier(applyConnector{"b": h}, ApplyOptions{Inventory: applyInventory("b")}).importImages(context.Background(), h, bad); err == nil {
		t.Error("an import to another path was accepted")
	}
}
