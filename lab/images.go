package lab

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/kprov/kprov/internal/atomicfile"
)

// Annotations on each manifest descriptor of an image archive's index.json:
// containerd names an imported image after the first, and the OCI
// image-layout spec defines the second. Both carry the full reference
// (registry.k8s.io/kube-apiserver:v1.37.2), as the contract with the
// import step says: an image's identity is (reference, manifest digest).
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// epoch is every timestamp in an image archive and in cni-plugins.tgz, so
// the same inputs give the same bytes (and the same manifest digest, which
// is what makes a re-apply import nothing).
var epoch = time.Unix(0, 0).UTC()

// imagePath is the PATH in every image. kubeadm's static pod manifests name
// the command without a directory (`kube-apiserver`, `etcd`), so the
// runtime looks it up here.
const imagePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// layerFile is one entry of an image's single layer.
type layerFile struct {
	Path   string // inside the image, absolute
	Mode   int64  // permission bits (and sticky), for files and directories
	Source string // a file on this machine to copy, or
	Data   []byte // the content, or
	Link   string // a symlink's target, or
	Dir    bool   // a directory
}

// imageSpec is one single-platform (linux/amd64) image with one layer.
type imageSpec struct {
	Ref        string // full reference: registry.k8s.io/kube-apiserver:v1.37.2
	Files      []layerFile
	Entrypoint []string
}

// baseFiles are in every image: users and groups for tools that look up
// uid 0, and a writable /tmp.
func baseFiles() []layerFile {
	return []layerFile{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "/tmp", Mode: 0o1777, Dir: true},
	}
}

// binaryImage is an image holding one static binary at
// /usr/local/bin/NAME, which is also its entrypoint (kubeadm overrides it
// with `command:` where it sets one; the pause and CoreDNS pods use it).
func binaryImage(ref, name, binary string, extra ...layerFile) imageSpec {
	files := append(baseFiles(), layerFile{Path: "/usr/local/bin/" + name, Mode: 0o755, Source: binary})
	return imageSpec{Ref: ref, Files: append(files, extra...), Entrypoint: []string{"/usr/local/bin/" + name}}
}

// layerTar writes files as a tar in path order with fixed owners and
// times; directories the files need and that are not listed are added with
// mode 0755. A path listed twice is an error.
func layerTar(files []layerFile) ([]byte, error) {
	byPath := map[string]layerFile{}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			return nil, fmt.Errorf("layer: an entry without a path")
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("layer: %s listed twice", p)
		}
		f.Path = p
		byPath[p] = f
	}
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = layerFile{Path: d, Mode: 0o755, Dir: true}
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := byPath[p]
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: f.Mode, ModTime: epoch, Format: tar.FormatPAX}
		if f.Mode == 0 {
			h.Mode = 0o644
		}
		var content io.Reader
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case f.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		case f.Source != "":
			src, err := os.Open(f.Source)
			if err != nil {
				return nil, fmt.Errorf("layer: %w", err)
			}
			defer src.Close()
			fi, err := src.Stat()
			if err != nil {
				return nil, fmt.Errorf("layer: %w", err)
			}
			if !fi.Mode().IsRegular() {
				return nil, fmt.Errorf("layer: %s is not a regular file", f.Source)
			}
			h.Typeflag, h.Size, content = tar.TypeReg, fi.Size(), src
		default:
			h.Typeflag, h.Size, content = tar.TypeReg, int64(len(f.Data)), bytes.NewReader(f.Data)
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", p, err)
		}
		if content != nil {
			if n, err := io.Copy(tw, content); err != nil || n != h.Size {
				return nil, fmt.Errorf("layer: %s: copied %d of %d bytes: %v", p, n, h.Size, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

// buildImage assembles spec as an OCI image with go-containerregistry.
func buildImage(spec imageSpec) (v1.Image, error) {
	raw, err := layerTar(spec.Files)
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.ModTime = epoch // no name and mtime 0 in the header (a zero time.Time would be written as 2042)
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	compressed := gz.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "kprov lab artifacts"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Env = []string{imagePath}
	cf.Config.Entrypoint = spec.Entrypoint
	return mutate.ConfigFile(img, cf)
}

// writeImageArchive writes spec as an OCI image-layout tar at file
// (atomically) and returns the manifest digest. index.json comes right
// after oci-layout, so a reader finds the references without reading the
// blobs; containerd's import takes the entries in any order.
func writeImageArchive(file string, spec imageSpec) (string, error) {
	// Strict: the registry and the tag are spelled out, as kubeadm lists them.
	if tag, err := name.NewTag(spec.Ref, name.StrictValidation); err != nil || tag.Name() != spec.Ref {
		return "", fmt.Errorf("image %q: not a full reference", spec.Ref)
	}
	img, err := buildImage(spec)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	data, digest, err := imageLayoutTar(spec.Ref, img)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	if err := atomicfile.Write(file, data, 0o644); err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	return digest, nil
}

// imageLayoutTar renders img, named ref, as an OCI image-layout tar.
func imageLayoutTar(ref string, img v1.Image) ([]byte, string, error) {
	manifest, err := img.RawManifest()
	if err != nil {
		return nil, "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, "", err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return nil, "", err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, "", err
	}
	blobs := map[string][]byte{digest.Hex: manifest, cfgName.Hex: config}
	layers, err := img.Layers()
	if err != nil {
		return nil, "", err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return nil, "", err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, "", err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, "", err
		}
		blobs[h.Hex] = b
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType:   types.OCIManifestSchema1,
			Size:        int64(len(manifest)),
			Digest:      digest,
			Annotations: map[string]string{annotationContainerdName: ref, annotationRefName: ref},
			Platform:    &v1.Platform{OS: "linux", Architecture: "amd64"},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return nil, "", err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) error {
		h := &tar.Header{Name: name, Mode: 0o644, ModTime: epoch, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if data == nil {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", indexJSON},
		{"blobs/", nil},
		{"blobs/sha256/", nil},
	}
	hexes := make([]string, 0, len(blobs))
	for h := range blobs {
		hexes = append(hexes, h)
	}
	slices.Sort(hexes)
	for _, h := range hexes {
		entries = append(entries, struct {
			name string
			data []byte
		}{"blobs/sha256/" + h, blobs[h]})
	}
	for _, e := range entries {
		if err := add(e.name, e.data); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), digest.String(), nil
}

// archivedImage is one image an archive's index.json names.
type archivedImage struct {
	Ref    string
	Digest string // sha256:...
}

// readArchiveIndex returns the images named in an image archive's
// index.json, reading entries until it finds that file.
func readArchiveIndex(file string) ([]archivedImage, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no index.json", file)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if path.Clean(h.Name) != "index.json" {
			continue
		}
		var index v1.IndexManifest
		if err := json.NewDecoder(tr).Decode(&index); err != nil {
			return nil, fmt.Errorf("%s: index.json: %w", file, err)
		}
		var out []archivedImage
		for _, d := range index.Manifests {
			out = append(out, archivedImage{Ref: d.Annotations[annotationContainerdName], Digest: d.Digest.String()})
		}
		return out, nil
	}
}

// imageFileName is an archive's name in the cache: NAME_TAG.tar after the
// last element of the repository (coredns_v1.14.6.tar for
// registry.k8s.io/coredns/coredns:v1.14.6).
func imageFileName(ref string) (string, error) {
	repo, tag, ok := imageRepoTag(ref)
	if !ok {
		return "", fmt.Errorf("image %q: want REPOSITORY:TAG", ref)
	}
	return path.Base(repo) + "_" + tag + ".tar", nil
}

// imageRepoTag splits registry.k8s.io/pause:3.10.2 into its repository and tag.
func imageRepoTag(ref string) (repo, tag string, ok bool) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") || strings.Contains(ref, "@") {
		return "", "", false
	}
	repo, tag = ref[:i], ref[i+1:]
	return repo, tag, repo != "" && tag != "" && !strings.ContainsAny(tag, "/ ")
}
