package provision

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kprov/kprov/inventory"
	"github.com/kprov/kprov/provision/plan"
)

// testImage is one image of a test archive: its reference and the manifest
// bytes whose digest names it.
type testImage struct {
	ref      string
	manifest string
}

func (i testImage) digest() string {
	s := sha256.Sum256([]byte(i.manifest))
	return "sha256:" + hex.EncodeToString(s[:])
}

// writeOCIArchive writes an OCI image-layout tar the way kprov lab
// artifacts does (both annotations set to the full reference) and returns
// its path and SHA-256. edit may change the index before it is written.
func writeOCIArchive(t *testing.T, name string, images []testImage, edit func(index map[string]any)) (string, string) {
	t.Helper()
	var manifests []any
	for _, im := range images {
		manifests = append(manifests, map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json",
			"digest":    im.digest(),
			"size":      len(im.manifest),
			"annotations": map[string]string{
				"io.containerd.image.name":          im.ref,
				"org.opencontainers.image.ref.name": im.ref,
			},
		})
	}
	index := map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
	if edit != nil {
		edit(index)
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	for _, im := range images {
		add("blobs/sha256/"+strings.TrimPrefix(im.digest(), "sha256:"), []byte(im.manifest))
	}
	add("index.json", indexJSON)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return path, hex.EncodeToString(sum[:])
}

var (
	imgAPIServer = testImage{"registry.k8s.io/kube-apiserver:v1.37.2", `{"schemaVersion":2,"layers":["apiserver"]}`}
	imgPause     = testImage{"registry.k8s.io/pause:3.10.2", `{"schemaVersion":2,"layers":["pause"]}`}
)

func TestReadImageArchive(t *testing.T) {
	path, sum := writeOCIArchive(t, "cp.tar", []testImage{imgAPIServer, imgPause}, nil)
	ar, err := ReadImageArchive(path, sum)
	if err != nil {
		t.Fatal(err)
	}
	want := plan.ImageArchive{Path: path, SHA256: sum, Images: []plan.ImageRef{
		{Ref: imgAPIServer.ref, Digest: imgAPIServer.digest()},
		{Ref: imgPause.ref, Digest: imgPause.digest()},
	}}
	if fmt.Sprint(ar) != fmt.Sprint(want) {
		t.Errorf("got %+v\nwant %+v", ar, want)
	}
}

// TestReadImageArchiveRefuses: a wrong checksum is refused before the tar
// is read, and an archive kprov cannot name every image of is refused with
// what is wrong.
func TestReadImageArchiveRefuses(t *testing.T) {
	setAnn := func(key, val string) func(map[string]any) {
		return func(idx map[string]any) {
			m := idx["manifests"].([]any)[0].(map[string]any)
			ann := m["annotations"].(map[string]string)
			if val == "" {
				delete(ann, key)
			} else {
				ann[key] = val
			}
		}
	}
	for _, c := range []struct {
		name   string
		images []testImage
		edit   func(map[string]any)
		sum    string // "" means the archive's own
		want   string
	}{
		{name: "checksum", images: []testImage{imgPause}, sum: strings.Repeat("0", 64), want: "but the inventory says 0000"},
		{name: "no-name", images: []testImage{imgPause}, edit: func(idx map[string]any) {
			setAnn("io.containerd.image.name", "")(idx)
			setAnn("org.opencontainers.image.ref.name", "")(idx)
		}, want: "no io.containerd.image.name or org.opencontainers.image.ref.name annotation"},
		{name: "bare-tag", images: []testImage{imgPause}, edit: func(idx map[string]any) {
			setAnn("io.containerd.image.name", "")(idx)
			setAnn("org.opencontainers.image.ref.name", "3.10.2")(idx)
		}, want: `"3.10.2" is not a full image reference`},
		{name: "twice", images: []testImage{imgPause, {imgPause.ref, `{"other":1}`}}, want: "registry.k8s.io/pause:3.10.2 is named twice"},
		{name: "missing-blob", images: []testImage{imgPause}, edit: func(idx map[string]any) {
			idx["manifests"].([]any)[0].(map[string]any)["digest"] = "sha256:" + strings.Repeat("a", 64)
		}, want: "is not in the archive"},
		{name: "empty", images: nil, want: "names no image"},
		{name: "schema", images: []testImage{imgPause}, edit: func(idx map[string]any) { idx["schemaVersion"] = 1 }, want: "schemaVersion 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path, sum := writeOCIArchive(t, c.name+".tar", c.images, c.edit)
			if c.sum != "" {
				sum = c.sum
			}
			_, err := ReadImageArchive(path, sum)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("got %v, want an error naming %s with %q", err, path, c.want)
			}
		})
	}
}

// TestReadImageArchiveBounds: an index.json over the cap is refused without
// being read, and a tar that is not an OCI layout says so.
func TestReadImageArchiveBounds(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "oci-layout", Mode: 0o644, Typeflag: tar.TypeReg})
	big := bytes.Repeat([]byte(" "), maxIndexJSON+1)
	tw.WriteHeader(&tar.Header{Name: "./index.json", Mode: 0o644, Size: int64(len(big)), Typeflag: tar.TypeReg})
	tw.Write(big)
	tw.Close()
	for name, body := range map[string][]byte{"big": buf.Bytes(), "not-tar": []byte("hello")} {
		path := filepath.Join(t.TempDir(), name+".tar")
		os.WriteFile(path, body, 0o644)
		s := sha256.Sum256(body)
		_, err := ReadImageArchive(path, hex.EncodeToString(s[:]))
		if err == nil {
			t.Errorf("%s: read without error", name)
		} else if name == "big" && !strings.Contains(err.Error(), "more than the 1048576 kprov reads") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestReadImageArchivesConflict: two archives that give one reference two
// digests are refused.
func TestReadImageArchivesConflict(t *testing.T) {
	a, asum := writeOCIArchive(t, "a.tar", []testImage{imgPause}, nil)
	b, bsum := writeOCIArchive(t, "b.tar", []testImage{{imgPause.ref, `{"rebuilt":true}`}}, nil)
	inv := &inventory.Inventory{Images: []inventory.Artifact{{Name: "images", Path: a, SHA256: asum}, {Name: "images", Path: b, SHA256: bsum}}}
	if _, err := ReadImageArchives(inv); err == nil || !strings.Contains(err.Error(), "both hold registry.k8s.io/pause:3.10.2") {
		t.Errorf("got %v", err)
	}
	inv.Images = inv.Images[:1]
	got, err := ReadImageArchives(inv)
	if err != nil || len(got) != 1 || got[0].Images[0].Digest != imgPause.digest() {
		t.Errorf("got %+v, %v", got, err)
	}
}
